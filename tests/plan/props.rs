//! Property tests over small random estates:
//! * a world built (independently of the planner) to be exactly at its desired state, plus
//!   foreign, protected and unmanaged noise, plans to no changes;
//! * applying any plan to its live state in memory yields a state whose plan has no changes, and
//!   applying that second plan changes nothing (convergence in one pass).

use proptest::prelude::*;

use runwarden::iam::{IAP_ACCESSOR, RUN_INVOKER};
use runwarden::live::LiveState;
use runwarden::plan::{self, PlanOptions, render_text};
use runwarden::policy::model::{Desired, ForeignMembers, Ingress, Mode};

use super::builders::*;

const USERS: [(&str, &str, bool); 6] = [
    ("auth0|u0", "u0@acme.com", true),
    ("auth0|u1", "u1@acme.com", true),
    ("auth0|u2", "u2@acme.com", true),
    ("auth0|u3", "u3@acme.com", false),
    ("auth0|u4", "u4@partner.example", true),
    ("auth0|u5", "u5@acme.com", true),
];
const LITERALS: [&str; 4] = [
    "serviceAccount:job@acme-prod.iam.gserviceaccount.com",
    "serviceAccount:ext@other.iam.gserviceaccount.com",
    "group:ops@acme.com",
    "user:guest@partner.example",
];
const EXPIRIES: [&str; 3] = [
    "2026-06-01T00:00:00Z",
    "2027-01-31T00:00:00Z",
    "2028-02-29T12:30:00Z",
];
const NOISE: [&str; 6] = [
    "user:u0@acme.com",
    "user:leaver@acme.com",
    "user:contractor@partner.example",
    "allUsers",
    "deleted:user:gone@acme.com?uid=1",
    "serviceAccount:old@acme-prod.iam.gserviceaccount.com",
];
const INGRESS: [Option<Ingress>; 4] = [
    None,
    Some(Ingress::All),
    Some(Ingress::Internal),
    Some(Ingress::InternalAndCloudLoadBalancing),
];

/// One random invoker: `(kind, index, expiry index or none)`; kind 0 = role, 1 = literal.
type Inv = (u8, usize, Option<usize>);

#[derive(Debug, Clone)]
struct SvcSpec {
    team: usize,
    ingress: Option<Ingress>,
    public: Option<bool>,
    iap: bool,
    audiences: Option<Vec<&'static str>>,
    invokers: Vec<Inv>,
    mode: Mode,
}

fn inv() -> impl Strategy<Value = Inv> {
    (0u8..2, 0usize..4, proptest::option::of(0usize..3))
}

fn svc_spec() -> impl Strategy<Value = SvcSpec> {
    (
        0usize..2,
        proptest::sample::select(INGRESS.to_vec()),
        proptest::option::of(any::<bool>()),
        any::<bool>(),
        proptest::option::of(proptest::sample::subsequence(
            vec!["https://a.acme.com", "https://b.acme.com"],
            0..=2,
        )),
        proptest::collection::vec(inv(), 0..4),
        proptest::sample::select(vec![Mode::Enforce, Mode::Warn, Mode::Observe]),
    )
        .prop_map(
            |(team, ingress, public, iap, audiences, invokers, mode)| SvcSpec {
                team,
                ingress,
                // A public service behind IAP is contradictory; keep generated estates meaningful.
                public: if iap { Some(false) } else { public },
                iap,
                audiences,
                invokers,
                mode,
            },
        )
}

/// Role `r{i}` has the users whose bit is set in `masks[i]`.
fn roles_strategy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0u8..64, 3)
}

fn svc_id(i: usize) -> String {
    format!("acme-prod/europe-west1/s{i}")
}

fn build_desired(specs: &[SvcSpec], shared: &[Inv], foreign: ForeignMembers) -> Desired {
    let mut s = settings();
    s.foreign_members = foreign;
    let mut policies = Vec::new();
    let add_invokers = |mut p: P, invs: &[Inv]| {
        for (kind, idx, exp) in invs {
            p = match (kind, exp) {
                (0, None) => p.role(&format!("r{}", idx % 3)),
                (0, Some(e)) => p.role_until(&format!("r{}", idx % 3), EXPIRIES[*e]),
                (_, None) => p.member(LITERALS[*idx]),
                (_, Some(e)) => p.member_until(LITERALS[*idx], EXPIRIES[*e]),
            };
        }
        p
    };
    for (i, spec) in specs.iter().enumerate() {
        let mut p = policy(&format!("p{i}")).mode(spec.mode).service(&svc_id(i));
        if let Some(v) = spec.ingress {
            p = p.ingress(v);
        }
        if let Some(v) = spec.public {
            p = p.public(v);
        }
        p = p.iap(spec.iap);
        if let Some(a) = &spec.audiences {
            p = p.audiences(a);
        }
        policies.push(add_invokers(p, &spec.invokers));
    }
    // A policy without exposure that adds invokers to every team-0 service by selector.
    policies.push(add_invokers(
        policy("shared").selector("acme-prod", "*", &[("team", "t0")]),
        shared,
    ));
    desired(s, policies)
}

fn base_world(specs: &[SvcSpec], masks: &[u8]) -> W {
    let mut w = world();
    for (r, mask) in masks.iter().enumerate() {
        let members: Vec<(&str, &str, bool)> = USERS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, u)| *u)
            .collect();
        w = w.role(&format!("r{r}"), &members);
    }
    for (i, spec) in specs.iter().enumerate() {
        let team = format!("t{}", spec.team);
        w = w.svc(&svc_id(i), &[("team", team.as_str())]);
    }
    w
}

/// The members an invoker list should produce, computed the simple way (users mapping,
/// verified acme.com e-mails), keyed by condition title+expression (None = unconditional).
fn expected_members(invs: &[Inv], masks: &[u8]) -> Vec<(Option<&'static str>, String)> {
    let mut out = Vec::new();
    let now_ts = "2026-11-29T00:00:00Z";
    for (kind, idx, exp) in invs {
        let exp = exp.map(|e| EXPIRIES[e]);
        if exp.is_some_and(|e| e <= now_ts) {
            continue; // expired grants grant nothing
        }
        if *kind == 0 {
            let mask = masks[idx % 3];
            for (i, (_, email, verified)) in USERS.iter().enumerate() {
                if mask & (1 << i) != 0 && *verified && email.ends_with("@acme.com") {
                    out.push((exp, format!("user:{email}")));
                }
            }
        } else {
            out.push((exp, LITERALS[*idx].to_string()));
        }
    }
    out
}

/// A world exactly at the desired state of `specs` (built without the planner), plus noise the
/// planner must leave alone: unmanaged conditional bindings, other roles, kept members.
fn converged_world(specs: &[SvcSpec], shared: &[Inv], masks: &[u8]) -> LiveState {
    let mut w = base_world(specs, masks);
    for (i, spec) in specs.iter().enumerate() {
        let id = svc_id(i);
        let mut grants = expected_members(&spec.invokers, masks);
        if spec.team == 0 {
            grants.extend(expected_members(shared, masks));
        }
        let role = if spec.iap { IAP_ACCESSOR } else { RUN_INVOKER };
        let mut by_cond: std::collections::BTreeMap<Option<&str>, Vec<String>> = Default::default();
        for (exp, member) in grants {
            by_cond.entry(exp).or_default().push(member);
        }
        if spec.iap {
            w = w.iap_bind(&id, IAP_ACCESSOR, &[]);
        }
        let mut invoker: Vec<String> = vec!["user:break-glass@acme.com".into()];
        if spec.public == Some(true) {
            invoker.push("allUsers".into());
        }
        if spec.iap {
            invoker.push(
                "serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com".into(),
            );
        }
        for (exp, members) in by_cond {
            let refs: Vec<&str> = members.iter().map(String::as_str).collect();
            w = match (exp, spec.iap) {
                (None, false) => {
                    invoker.extend(members.iter().cloned());
                    w
                }
                (None, true) => w.with(&id, |s| {
                    let p = s.iap_iam.as_mut().unwrap();
                    p.bindings.push(runwarden::iam::Binding {
                        role: role.into(),
                        members: refs.iter().map(|r| m(r)).collect(),
                        condition: None,
                    });
                }),
                (Some(e), iap) => {
                    let title = format!("runwarden-expires-{e}");
                    let expr = format!("request.time < timestamp(\"{e}\")");
                    if iap {
                        w.with(&id, |s| {
                            let p = s.iap_iam.as_mut().unwrap();
                            p.bindings.push(runwarden::iam::Binding {
                                role: role.into(),
                                members: refs.iter().map(|r| m(r)).collect(),
                                condition: Some(runwarden::iam::Condition {
                                    title,
                                    description: None,
                                    expression: expr,
                                }),
                            });
                        })
                    } else {
                        w.bind_if(&id, RUN_INVOKER, &title, &expr, &refs)
                    }
                }
            };
        }
        let refs: Vec<&str> = invoker.iter().map(String::as_str).collect();
        w = w
            .bind(&id, RUN_INVOKER, &refs)
            .bind(&id, "roles/run.developer", &["user:leaver@acme.com"])
            .bind_if(
                &id,
                RUN_INVOKER,
                "office-hours",
                "request.time.getHours(\"UTC\") < 18",
                &["user:leaver@acme.com"],
            );
        let spec = spec.clone();
        w = w.with(&id, |s| {
            s.settings.ingress = spec.ingress.or(Some(Ingress::All));
            s.settings.iap_enabled = spec.iap;
            s.settings.custom_audiences = spec
                .audiences
                .iter()
                .flatten()
                .map(|a| a.to_string())
                .collect();
        });
    }
    w.build()
}

/// Any live world: random members (from a pool of owned, foreign, public and deleted ones) in
/// each service's bindings, random settings.
fn drifted_world(specs: &[SvcSpec], masks: &[u8], noise: &[(u8, u8, bool, bool)]) -> LiveState {
    let mut w = base_world(specs, masks);
    for (i, (invoker_mask, iap_mask, iap_read, disabled)) in
        noise.iter().enumerate().take(specs.len())
    {
        let id = svc_id(i);
        let pick = |mask: u8| -> Vec<&str> {
            NOISE
                .iter()
                .enumerate()
                .filter(|(b, _)| mask & (1 << b) != 0)
                .map(|(_, s)| *s)
                .collect()
        };
        w = w.bind(&id, RUN_INVOKER, &pick(*invoker_mask));
        if invoker_mask & 0x40 != 0 {
            w = w.bind_if(
                &id,
                RUN_INVOKER,
                "runwarden-expires-2026-06-01T00:00:00Z",
                "request.time < timestamp(\"2026-06-01T00:00:00Z\")",
                &["user:u1@acme.com"],
            );
        }
        if *iap_read {
            w = w.iap_bind(&id, IAP_ACCESSOR, &pick(*iap_mask));
        }
        let (ingress, disabled) = (INGRESS[(*invoker_mask as usize) % 4], *disabled);
        w = w.with(&id, |s| {
            s.settings.ingress = ingress;
            s.settings.invoker_iam_disabled = disabled;
            s.settings.custom_audiences = if disabled {
                vec!["https://c.acme.com".into()]
            } else {
                vec![]
            };
        });
    }
    w.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_world_at_its_desired_state_plans_no_changes(
        specs in proptest::collection::vec(svc_spec(), 1..4),
        shared in proptest::collection::vec(inv(), 0..3),
        masks in roles_strategy(),
    ) {
        let d = build_desired(&specs, &shared, ForeignMembers::Keep);
        let live = converged_world(&specs, &shared, &masks);
        let plan = plan::plan(&d, &live, &PlanOptions::at(now()));
        prop_assert!(!plan.has_changes(), "{}", render_text(&plan, false));
    }

    #[test]
    fn applying_a_plan_converges_in_one_pass(
        specs in proptest::collection::vec(svc_spec(), 1..4),
        shared in proptest::collection::vec(inv(), 0..3),
        masks in roles_strategy(),
        noise in proptest::collection::vec((0u8..128, 0u8..64, any::<bool>(), any::<bool>()), 3),
        remove_foreign in any::<bool>(),
    ) {
        let foreign = if remove_foreign { ForeignMembers::Remove } else { ForeignMembers::Keep };
        let d = build_desired(&specs, &shared, foreign);
        let live = drifted_world(&specs, &masks, &noise);
        let first = plan::plan(&d, &live, &PlanOptions::at(now()));
        let after = plan::apply_to(&first, &live);
        let second = plan::plan(&d, &after, &PlanOptions::at(now()));
        prop_assert!(!second.has_changes(), "first:\n{}\nsecond:\n{}", render_text(&first, false), render_text(&second, false));
        prop_assert_eq!(plan::apply_to(&second, &after), after);
    }
}
