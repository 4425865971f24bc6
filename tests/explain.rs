//! `explain` and `import` against the simulator: who can invoke what and why on the demo world,
//! and imported policies that reproduce live access (the first plan after adoption is empty),
//! on the demo world and on a generated one.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use support::*;

use crate::common::runwarden;
use runwarden::iam::{Binding, Member, Policy, RUN_INVOKER};
use runwarden::insight::explain::{
    AccessPath, GrantState, Query, QueryError, Reason, explain, parse_member,
};
use runwarden::insight::import::{ImportedInvoker, file_name, import, render_yaml};
use runwarden::live::{ReadConfig, read_live};
use runwarden::pass::Connection;
use runwarden::plan::{PlanOptions, expiry_condition, parse_rfc3339, plan};

const BILLING_API: &str = "acme-prod/europe-west1/billing-api";

fn policy_role(r: &Reason) -> Option<(&str, &[String])> {
    match r {
        Reason::Policy {
            auth0_role: Some(role),
            holds,
            ..
        } => Some((role.as_str(), holds.as_slice())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_api_lists_every_invoker_with_why_it_is_there() {
    let (desired, conn) = demo().await;
    let live = read_explain(&desired, &conn).await;
    let x = explain_service(&desired, &live, BILLING_API);
    let s = &x.services[0];
    assert_eq!(s.governed_by, vec!["billing".to_string()]);
    assert_eq!(
        s.exposure.ingress.as_deref(),
        Some("internal-and-cloud-load-balancing")
    );
    assert!(!s.exposure.public && !s.exposure.iap);
    assert_eq!(
        s.exposure.custom_audiences,
        vec!["https://billing.acme.com".to_string()]
    );

    // (member, state, what the single reason must say)
    type Check = fn(&Reason) -> bool;
    let cases: &[(&str, GrantState, Check)] = &[
        ("user:margaret@acme.com", GrantState::Live, |r| {
            policy_role(r) == Some(("billing-admin", &["group billing-team".to_string()][..]))
        }),
        ("user:ada@acme.com", GrantState::Live, |r| {
            policy_role(r).is_some_and(|(role, holds)| {
                role == "billing-admin" && holds.contains(&"direct".to_string())
            })
        }),
        ("user:contractor@partner.example", GrantState::Live, |r| {
            matches!(
                r,
                Reason::Foreign {
                    removed_by_plan: false
                }
            )
        }),
        (
            "user:break-glass@acme.com",
            GrantState::Live,
            |r| matches!(r, Reason::Keep { pattern, source } if pattern == "user:break-glass@acme.com" && source.contains("settings.yaml")),
        ),
        // Blocked in Auth0 (SCIM deprovisioning), though still assigned billing-admin.
        ("user:leaver@acme.com", GrantState::Live, |r| {
            matches!(r, Reason::Blocked)
        }),
        (
            "serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com",
            GrantState::Live,
            |r| matches!(r, Reason::Policy { auth0_role: None, machine: None, source, .. } if source.contains("billing.yaml")),
        ),
        // Before an apply, the time-boxed on-call grant is pending.
        ("user:grace@acme.com", GrantState::Pending, |r| {
            policy_role(r) == Some(("billing-oncall", &["direct".to_string()][..]))
        }),
    ];
    for (member, state, check) in cases {
        let e = entries(&x, member);
        assert_eq!(e.len(), 1, "{member}: {e:#?}");
        assert_eq!(e[0].state, *state, "{member}");
        assert_eq!(e[0].path, AccessPath::Invoker, "{member}");
        assert_eq!(e[0].reasons.len(), 1, "{member}: {:?}", e[0].reasons);
        assert!(check(&e[0].reasons[0]), "{member}: {:?}", e[0].reasons[0]);
    }
    let grace = entries(&x, "user:grace@acme.com")[0];
    assert_eq!(grace.expires.as_deref(), Some("2027-01-31T00:00:00Z"));
    assert!(
        grace
            .condition
            .as_ref()
            .is_some_and(|c| c.title == "runwarden-expires-2027-01-31T00:00:00Z")
    );
    assert!(
        grace
            .note
            .as_deref()
            .is_some_and(|n| n.contains("a plan would add it"))
    );
    // Nobody else: the ken (unverified) and bob (other domain) members of the roles are not there.
    assert_eq!(s.access.len(), cases.len(), "{:#?}", s.access);

    // After an apply the grant is live, in its runwarden-generated conditional binding.
    let sim = conn.sim().unwrap().handle.clone();
    let id = svc(BILLING_API);
    let mut policy = sim.iam_policy(&id).unwrap();
    policy.version = 3;
    policy.bindings.push(Binding {
        role: RUN_INVOKER.into(),
        members: BTreeSet::from([Member::parse("user:grace@acme.com").unwrap()]),
        condition: Some(expiry_condition(
            parse_rfc3339("2027-01-31T00:00:00Z").unwrap(),
        )),
    });
    sim.set_iam_policy_direct(&id, policy).unwrap();
    let live = read_explain(&desired, &conn).await;
    let x = explain_service(&desired, &live, BILLING_API);
    let grace = entries(&x, "user:grace@acme.com");
    assert_eq!(grace.len(), 1, "{grace:#?}");
    assert_eq!(grace[0].state, GrantState::Live);
    assert!(grace[0].effective);
    assert_eq!(grace[0].expires.as_deref(), Some("2027-01-31T00:00:00Z"));
    assert_eq!(
        policy_role(&grace[0].reasons[0]).map(|(r, _)| r),
        Some("billing-oncall")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_access_goes_through_iap_once_iap_is_on() {
    let (desired, conn) = demo().await;
    let live = read_explain(&desired, &conn).await;
    let x = explain_service(&desired, &live, "acme-prod/europe-west1/admin-console");
    let grace = entries(&x, "user:grace@acme.com");
    assert_eq!(grace.len(), 1);
    assert_eq!(
        (grace[0].path, grace[0].state),
        (AccessPath::Iap, GrantState::Live)
    );
    assert_eq!(grace[0].role, "roles/iap.httpsResourceAccessor");
    assert!(
        !grace[0].effective,
        "IAP is off in the demo world: the accessor grant does nothing yet"
    );
    assert_eq!(
        policy_role(&grace[0].reasons[0]).map(|(r, _)| r),
        Some("platform-admin")
    );
    let agent = entries(
        &x,
        "serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com",
    );
    assert_eq!(agent.len(), 1);
    assert_eq!(
        (agent[0].path, agent[0].state),
        (AccessPath::Invoker, GrantState::Pending)
    );
    assert!(matches!(
        agent[0].reasons[0],
        Reason::IapServiceAgent { .. }
    ));
    // The policy's `iap: true` is not live yet: the setting the next plan would patch.
    let pending = &x.services[0].pending_settings;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        (
            pending[0].field.as_str(),
            &pending[0].live,
            &pending[0].wanted
        ),
        (
            "iapEnabled",
            &serde_json::json!(false),
            &serde_json::json!(true)
        )
    );
    assert!(pending[0].sources[0].contains("platform.yaml"));

    // IAP switched on: the accessor grant is effective, the direct invoker grant is flagged.
    let sim = conn.sim().unwrap().handle.clone();
    let patch = runwarden::sim::ServicePatch {
        iap_enabled: Some(true),
        ..Default::default()
    };
    assert!(sim.update_service(&svc("acme-prod/europe-west1/admin-console"), &patch));
    let live = read_explain(&desired, &conn).await;
    let x = explain_service(&desired, &live, "acme-prod/europe-west1/admin-console");
    assert!(x.services[0].exposure.iap);
    assert!(x.services[0].pending_settings.is_empty());
    assert!(entries(&x, "user:grace@acme.com")[0].effective);
    let glass = entries(&x, "user:break-glass@acme.com");
    assert!(
        glass[0]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("IAP is on")),
        "{glass:?}"
    );
}

/// (service, path, state, the live member it comes through when not the queried one)
type Row = (String, AccessPath, GrantState, Option<String>);

fn rows(x: &runwarden::insight::Explanation) -> BTreeSet<Row> {
    x.services
        .iter()
        .flat_map(|s| {
            s.access.iter().map(move |a| {
                (
                    s.service.clone(),
                    a.path,
                    a.state,
                    a.as_member_of.as_ref().map(|_| a.member.to_string()),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_query_finds_every_service_it_can_invoke_by_email_or_auth0_user_id() {
    let (desired, conn) = demo().await;
    let live = read_explain(&desired, &conn).await;
    let now = SystemTime::now();
    let margaret = parse_member("margaret@acme.com", &live.directory).unwrap();
    assert_eq!(margaret.as_str(), "user:margaret@acme.com");
    let x = explain(&desired, &live, &Query::Member(margaret.clone()), now).unwrap();
    let r = |s: &str, p, st, via: Option<&str>| (s.to_string(), p, st, via.map(str::to_string));
    use AccessPath::Invoker;
    use GrantState::{Live, Pending};
    let expected: BTreeSet<Row> = [
        // In the billing-admin role through the billing-team group, granted by the billing policy.
        r(BILLING_API, Invoker, Live, None),
        r("acme-prod/us-central1/billing-reports", Invoker, Live, None),
        // billing-worker is public by drift; the billing policy's own grant is still to come.
        r(
            "acme-prod/europe-west1/billing-worker",
            Invoker,
            Live,
            Some("allUsers"),
        ),
        r(
            "acme-prod/europe-west1/billing-worker",
            Invoker,
            Pending,
            None,
        ),
        r(
            "acme-prod/us-central1/status-page",
            Invoker,
            Live,
            Some("allUsers"),
        ),
        // The staging policy grants billing-admin; live lacks her there.
        r(
            "acme-staging/europe-west1/billing-api",
            Invoker,
            Pending,
            None,
        ),
        r(
            "acme-staging/europe-west1/sandbox",
            Invoker,
            Live,
            Some("allAuthenticatedUsers"),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(rows(&x), expected);
    let sandbox = x
        .services
        .iter()
        .find(|s| s.service.ends_with("sandbox"))
        .unwrap();
    assert!(matches!(sandbox.access[0].reasons[0], Reason::Ungoverned));

    // The same answer for her Auth0 user id.
    let user_id = live.directory.roles["billing-admin"]
        .members
        .iter()
        .find(|u| u.email.as_deref() == Some("margaret@acme.com"))
        .unwrap()
        .user_id
        .clone();
    assert_eq!(parse_member(&user_id, &live.directory).unwrap(), margaret);
    let by_id = explain(&desired, &live, &Query::Member(margaret), now).unwrap();
    assert_eq!(by_id, x);
}

#[test]
fn member_and_service_queries_parse_or_say_what_is_wrong() {
    let dir = runwarden::live::Directory::default();
    for (text, want) in [
        ("user:ada@acme.com", Ok("user:ada@acme.com")),
        ("Ada@Acme.com", Ok("user:ada@acme.com")),
        (
            "serviceAccount:x@p.iam.gserviceaccount.com",
            Ok("serviceAccount:x@p.iam.gserviceaccount.com"),
        ),
        (
            "principalSet://iam.googleapis.com/locations/global/workforcePools/p/group/g",
            Ok("principalSet://iam.googleapis.com/locations/global/workforcePools/p/group/g"),
        ),
        ("auth0|nobody", Err("holds none of the roles")),
        ("ada", Err("is not a member")),
    ] {
        let got = parse_member(text, &dir)
            .map(|m| m.to_string())
            .map_err(|e| e.to_string());
        match (got, want) {
            (Ok(m), Ok(w)) => assert_eq!(m, w, "{text}"),
            (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }
    for (text, ok) in [
        (BILLING_API, true),
        (
            "projects/acme-prod/locations/europe-west1/services/billing-api",
            true,
        ),
        ("billing-api", false),
        ("a//b", false),
    ] {
        let got = runwarden::insight::explain::parse_service(text);
        assert_eq!(got.is_ok(), ok, "{text}: {got:?}");
        if ok {
            assert_eq!(got.unwrap().to_string(), BILLING_API);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_stable_and_an_unknown_service_is_an_error() {
    let (desired, conn) = demo().await;
    let live = read_explain(&desired, &conn).await;
    let now = SystemTime::now();
    let x = explain(&desired, &live, &Query::Service(svc(BILLING_API)), now).unwrap();
    let json: serde_json::Value = serde_json::from_str(&x.to_json()).unwrap();
    assert_eq!(json["query"]["service"], BILLING_API);
    let s = &json["services"][0];
    assert_eq!(
        s["exposure"]["ingress"],
        "internal-and-cloud-load-balancing"
    );
    assert_eq!(s["exposure"]["invokerIamDisabled"], false);
    let access = s["access"].as_array().unwrap();
    let margaret = access
        .iter()
        .find(|a| a["member"] == "user:margaret@acme.com")
        .unwrap();
    assert_eq!(margaret["path"], "invoker");
    assert_eq!(margaret["state"], "live");
    assert_eq!(margaret["reasons"][0]["kind"], "policy");
    assert_eq!(margaret["reasons"][0]["auth0Role"], "billing-admin");
    assert!(
        margaret["reasons"][0]["source"]
            .as_str()
            .unwrap()
            .contains("billing.yaml:")
    );
    // Sorted by (path, state, member): the same input gives the same bytes.
    let keys: Vec<(String, String, String)> = access
        .iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap().into(),
                a["state"].as_str().unwrap().into(),
                a["member"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(
        explain(&desired, &live, &Query::Service(svc(BILLING_API)), now)
            .unwrap()
            .to_json(),
        x.to_json()
    );

    let err = explain(
        &desired,
        &live,
        &Query::Service(svc("acme-prod/europe-west1/nope")),
        now,
    )
    .unwrap_err();
    assert!(matches!(err, QueryError::UnknownService { .. }), "{err}");
}

/// Imports (project, region) from `conn`, places the file next to `settings_yaml` (and nothing
/// else), re-reads live for those policies and plans: returns the imported file's text, the
/// services imported, those with changes, and the plan.
async fn import_and_plan(
    conn: &Connection,
    settings_yaml: &std::path::Path,
    project: &str,
    region: &str,
) -> (String, Vec<String>, Vec<String>, runwarden::plan::Plan) {
    let now = SystemTime::now();
    let base = runwarden::policy::load_at(settings_yaml.parent().unwrap(), now).unwrap();
    let live =
        runwarden::pass::read_for_import(&base.settings, conn, project, region, &hidden())
            .await
            .unwrap();
    let imported = import(&base.settings, &live, project, region, now);
    let text = render_yaml(&imported, now, "the test world");
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    copy_into(settings_yaml, &policies);
    std::fs::write(policies.join(file_name(project, region)), &text).unwrap();
    let desired = runwarden::policy::load_at(&policies, now)
        .unwrap_or_else(|e| panic!("the imported file must load: {e}\n{text}"));
    assert_eq!(desired.policies.len(), imported.policies.len());
    let live = read_live(&desired, &conn.clients, &ReadConfig::default())
        .await
        .unwrap();
    let p = plan(
        &desired,
        &live,
        &PlanOptions::at(now + Duration::from_secs(1)),
    );
    let ids: Vec<String> = imported
        .policies
        .iter()
        .map(|p| p.service.to_string())
        .collect();
    let changed: Vec<String> = p
        .services
        .iter()
        .filter(|s| s.has_changes() && ids.contains(&s.id))
        .map(|s| s.id.clone())
        .collect();
    (text, ids, changed, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_demo_world_reproduces_live_access_so_the_first_plan_is_empty() {
    let (desired, conn) = demo().await;
    let now = SystemTime::now();
    let live = runwarden::pass::read_for_import(
        &desired.settings,
        &conn,
        "acme-prod",
        "europe-west1",
        &hidden(),
    )
    .await
    .unwrap();
    let imported = import(&desired.settings, &live, "acme-prod", "europe-west1", now);
    let by_name: BTreeMap<String, Vec<ImportedInvoker>> = imported
        .policies
        .iter()
        .map(|p| {
            (
                p.service.name.clone(),
                p.invokers.iter().map(|(i, _)| i.clone()).collect(),
            )
        })
        .collect();
    let m = |s: &str| ImportedInvoker::Member(Member::parse(s).unwrap());
    // Members are mapped back to the roles whose members they are, machines to their names.
    assert!(by_name["billing-api"].contains(&ImportedInvoker::Auth0Role("billing-admin".into())));
    assert!(by_name["billing-api"].contains(&m("user:contractor@partner.example")));
    assert!(
        !by_name["billing-api"].contains(&m("user:margaret@acme.com")),
        "covered by billing-admin"
    );
    assert_eq!(
        by_name["payments-api"],
        vec![
            ImportedInvoker::Auth0Role("payments-engineer".into()),
            ImportedInvoker::Machine("ledger-sync".into())
        ]
    );
    let worker = imported
        .policies
        .iter()
        .find(|p| p.service.name == "billing-worker")
        .unwrap();
    assert!(worker.public, "allUsers is imported as public: true");

    let (text, ids, changed, _) = import_and_plan(
        &conn,
        &root().join("policies/settings.yaml"),
        "acme-prod",
        "europe-west1",
    )
    .await;
    assert_eq!(ids.len(), 4, "{text}");
    assert!(
        changed.is_empty(),
        "the first plan after import changes {changed:?}\n{text}"
    );
    assert!(
        text.starts_with("# yaml-language-server: $schema="),
        "{text}"
    );
    assert!(
        text.contains("Generated by `runwarden import --project acme-prod --region europe-west1`")
    );
    assert!(text.contains("mode: observe"));
}

const GEN_WORLD: &str = "generate: {seed: 21, projects: 1, regions: [europe-west1], servicesPerRegion: 8, users: 60, roles: 3, usersPerRole: 8, publicFraction: 0.25}\n";

const GEN_SETTINGS: &str = r#"apiVersion: runwarden.dev/v1
kind: Settings
metadata:
  name: gen
spec:
  auth0:
    domain: gen.auth0.example
    clientId: gen
    clientSecretEnv: RUNWARDEN_TEST_UNUSED_SECRET
  principals:
    mapping: users
    emailDomains: [gen.example]
  machines:
    - name: batch
      auth0ClientId: BatchClient
      serviceAccount: "serviceAccount:batch@gen-project-1.iam.gserviceaccount.com"
  scope:
    projects: [gen-project-1]
    regions: [europe-west1]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_generated_world_with_roles_expiries_iap_and_strays_plans_no_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("world.yaml"), GEN_WORLD).unwrap();
    let settings_dir = dir.path().join("settings");
    std::fs::create_dir_all(&settings_dir).unwrap();
    std::fs::write(settings_dir.join("settings.yaml"), GEN_SETTINGS).unwrap();
    let settings = runwarden::policy::load_at(&settings_dir, SystemTime::now())
        .unwrap()
        .settings;
    let conn = Connection::embedded(&dir.path().join("world.yaml"), &settings)
        .await
        .unwrap();
    let sim = conn.sim().unwrap().handle.clone();

    // Give some services access worth importing: a whole role plus strays, a time-boxed role
    // grant, a machine, an IAP-fronted service, a deleted member and an unmanaged condition.
    let live = runwarden::pass::read_for_import(
        &settings,
        &conn,
        "gen-project-1",
        "europe-west1",
        &hidden(),
    )
    .await
    .unwrap();
    let role_emails = |r: &str| -> Vec<String> {
        live.directory.roles[r]
            .members
            .iter()
            .map(|u| format!("user:{}", u.email.clone().unwrap()))
            .collect()
    };
    let members = |list: &[String]| -> BTreeSet<Member> {
        list.iter().map(|m| Member::parse(m).unwrap()).collect()
    };
    let id = |n: u32| svc(&format!("gen-project-1/europe-west1/svc-{n:05}"));
    let binding = |list: Vec<String>, condition| Binding {
        role: RUN_INVOKER.into(),
        members: members(&list),
        condition,
    };
    let mut role1 = role_emails("role-001");
    role1.push("user:stray@elsewhere.example".into());
    role1.push("serviceAccount:batch@gen-project-1.iam.gserviceaccount.com".into());
    let expires = parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
    sim.set_iam_policy_direct(
        &id(2),
        Policy {
            version: 3,
            etag: String::new(),
            bindings: vec![
                binding(role1, None),
                binding(role_emails("role-002"), Some(expiry_condition(expires))),
                binding(
                    vec!["user:audit@gen.example".into()],
                    Some(runwarden::iam::Condition {
                        title: "hand-made".into(),
                        description: None,
                        expression: "request.time < timestamp(\"2031-01-01T00:00:00Z\")".into(),
                    }),
                ),
            ],
        },
    )
    .unwrap();
    // Half of a role is not the role: explicit members.
    let half: Vec<String> = role_emails("role-003").into_iter().take(3).collect();
    sim.set_iam_policy_direct(
        &id(3),
        Policy {
            version: 1,
            etag: String::new(),
            bindings: vec![binding(half, None)],
        },
    )
    .unwrap();
    // IAP in front: accessors are the invokers, the service agent holds run.invoker.
    let number = sim.project_number("gen-project-1").unwrap();
    let agent = format!("serviceAccount:service-{number}@gcp-sa-iap.iam.gserviceaccount.com");
    assert!(sim.update_service(
        &id(4),
        &runwarden::sim::ServicePatch {
            iap_enabled: Some(true),
            custom_audiences: Some(vec!["https://gen.example/api".into()]),
            ..Default::default()
        }
    ));
    sim.set_iam_policy_direct(
        &id(4),
        Policy {
            version: 1,
            etag: String::new(),
            bindings: vec![binding(vec![agent], None)],
        },
    )
    .unwrap();
    sim.set_iap_policy_direct(
        &id(4),
        Policy {
            version: 1,
            etag: String::new(),
            bindings: vec![Binding {
                role: runwarden::iam::IAP_ACCESSOR.into(),
                members: members(&role_emails("role-001")),
                condition: None,
            }],
        },
    )
    .unwrap();

    // A deleted principal grants nothing and is not imported: removing it is the only change.
    let deleted = "deleted:user:gone@gen.example?uid=123456789";
    sim.set_iam_policy_direct(
        &id(5),
        Policy {
            version: 1,
            etag: String::new(),
            bindings: vec![binding(
                vec![deleted.into(), "user:user-000001@gen.example".into()],
                None,
            )],
        },
    )
    .unwrap();

    let (text, ids, changed, p) = import_and_plan(
        &conn,
        &settings_dir.join("settings.yaml"),
        "gen-project-1",
        "europe-west1",
    )
    .await;
    assert_eq!(
        changed,
        vec![id(5).to_string()],
        "the first plan after import changes {changed:?}\n{text}"
    );
    let only: Vec<_> = p
        .services
        .iter()
        .filter(|s| s.id == id(5).to_string())
        .flat_map(|s| s.member_changes())
        .filter(|c| c.action != runwarden::plan::Action::Keep)
        .collect();
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(
        (only[0].member.as_str(), only[0].reason),
        (deleted, runwarden::plan::Reason::Deleted)
    );
    for n in [2, 3, 4] {
        assert!(
            ids.contains(&id(n).to_string()),
            "svc-{n:05} is imported: {ids:?}\n{text}"
        );
    }
    // Services nobody may invoke cannot be a valid policy: they are listed, not imported.
    assert!(text.contains("Services not imported:"), "{text}");
    assert!(text.contains("auth0Role: role-001"), "{text}");
    assert!(
        text.contains("auth0Role: role-002\n      expires: \"2030-01-01T00:00:00Z\""),
        "{text}"
    );
    assert!(text.contains("machine: batch"), "{text}");
    assert!(
        text.contains("member: user:stray@elsewhere.example"),
        "{text}"
    );
    let doc3 = text
        .split("---\n")
        .find(|d| d.contains("name: svc-00003\n"))
        .unwrap();
    assert!(
        !doc3.contains("auth0Role:") && doc3.matches("member: user:").count() == 3,
        "part of a role stays explicit: {doc3}"
    );
    assert!(text.contains("conditional binding `hand-made`"), "{text}");
    assert!(!text.contains("member: deleted:"), "{text}");
    assert!(text.contains("iap: true"), "{text}");
}

#[test]
fn the_explain_command_prints_text_and_json_and_exits_1_for_an_unknown_service() {
    let (code, out, err) = runwarden(&[
        "--sim",
        "deploy/local/world.yaml",
        "explain",
        "--service",
        BILLING_API,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("acme-prod/europe-west1/billing-api  governed by billing (mode enforce)"),
        "{out}"
    );
    let margaret = out
        .lines()
        .find(|l| l.contains("user:margaret@acme.com"))
        .unwrap();
    assert!(
        margaret.contains("live invoker")
            && margaret.contains("via Auth0 role billing-admin [group billing-team]"),
        "{margaret}"
    );

    let (code, out, err) = runwarden(&[
        "--sim",
        "deploy/local/world.yaml",
        "explain",
        "--member",
        "margaret@acme.com",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["query"]["member"], "user:margaret@acme.com");
    assert!(json["services"].as_array().unwrap().len() >= 4, "{out}");

    let (code, _, err) = runwarden(&[
        "--sim",
        "deploy/local/world.yaml",
        "explain",
        "--service",
        "acme-prod/europe-west1/nope",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("acme-prod/europe-west1/nope was not found"),
        "{err}"
    );
}

#[test]
fn the_import_command_writes_a_file_under_out_and_refuses_to_overwrite_it_without_force() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("imported");
    let d = dir.to_str().unwrap();
    let args = [
        "--sim",
        "deploy/local/world.yaml",
        "import",
        "--project",
        "acme-prod",
        "--region",
        "europe-west1",
        "--out",
        d,
    ];
    let (code, stdout, err) = runwarden(&args);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("Wrote 4 policies"), "{stdout}");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files,
        vec![std::ffi::OsString::from("acme-prod-europe-west1.yaml")]
    );
    let (code, _, err) = runwarden(&args);
    assert_eq!(code, 1);
    assert!(err.contains("already exists; pass --force"), "{err}");
    let mut forced = args.to_vec();
    forced.push("--force");
    assert_eq!(runwarden(&forced).0, 0);
    // A region that is not a plain id cannot steer the file outside --out.
    let mut evil = args.to_vec();
    evil[6] = "../../escape";
    let (code, _, err) = runwarden(&evil);
    assert_eq!(code, 1, "{err}");
    assert!(
        !out.path().join("escape.yaml").exists()
            && !out.path().parent().unwrap().join("escape.yaml").exists()
    );
}

#[cfg(unix)]
#[test]
fn import_refuses_to_write_through_a_symlink_even_with_force() {
    let out = tempfile::tempdir().unwrap();
    let victim = out.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = out.path().join("acme-prod-europe-west1.yaml");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    // A dangling link too: `exists()` says false for it, and writing would create its target.
    let dangling_target = out.path().join("created-through-link.txt");
    let dangling = out.path().join("acme-prod-us-central1.yaml");
    std::os::unix::fs::symlink(&dangling_target, &dangling).unwrap();
    for (region, link) in [("europe-west1", &link), ("us-central1", &dangling)] {
        let d = out.path().to_str().unwrap();
        let (code, _, err) = runwarden(&[
            "--sim", "deploy/local/world.yaml", "import", "--project", "acme-prod",
            "--region", region, "--out", d, "--force",
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("is a symbolic link") && err.contains(&link.display().to_string()), "{err}");
        assert!(std::fs::symlink_metadata(link).unwrap().file_type().is_symlink());
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!dangling_target.exists());
}

#[test]
fn import_leaves_out_what_a_policy_may_not_say_and_its_comments_cannot_inject_yaml() {
    // Live state a policy file may not repeat: a member with quotes, an audience that is not a
    // URL, and a condition title whose line breaks would end the `# Note:` comment.
    let hostile = "services:
  - project: acme-prod
    region: europe-west1
    name: hostile
    customAudiences: [billing, https://ok.acme.com]
    iam:
      bindings:
        - role: roles/run.invoker
          members: ['user:\"q\"@acme.com', user:ada@acme.com]
        - role: roles/run.invoker
          members: [user:bob@acme.com]
          condition: {title: \"x\\nspec: {}\\u2028kind: Settings\", expression: \"true\"}
";
    let world = std::fs::read_to_string(root().join("deploy/local/world.yaml"))
        .unwrap()
        .replacen("services:\n", hostile, 1);
    let tmp = tempfile::tempdir().unwrap();
    let world_path = tmp.path().join("world.yaml");
    std::fs::write(&world_path, world).unwrap();
    let out = tmp.path().join("out");
    let (code, _, err) = runwarden(&[
        "--sim", world_path.to_str().unwrap(), "import", "--project", "acme-prod",
        "--region", "europe-west1", "--out", out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(out.join("acme-prod-europe-west1.yaml")).unwrap();
    assert!(text.contains("member \"user:\\\"q\\\"@acme.com\" is not imported"), "{text}");
    assert!(text.contains("custom audience \"billing\" is not imported"), "{text}");
    assert!(text.contains("`x\\u{a}spec: {}\\u{2028}kind: Settings`"), "{text}");
    // The file loads next to the Settings it was made with, with only what is valid in it.
    let dir = tempfile::tempdir().unwrap();
    copy_into(&root().join("policies/settings.yaml"), dir.path());
    std::fs::write(dir.path().join("imported.yaml"), &text).unwrap();
    let desired = runwarden::policy::load_at(dir.path(), SystemTime::now())
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let p = desired.policies.iter().find(|p| p.name == "hostile-europe-west1").unwrap();
    assert_eq!(p.exposure.audiences.as_deref(), Some(&["https://ok.acme.com".to_string()][..]));
    let members: Vec<String> = p.invokers.iter().map(|i| format!("{:?}", i.principal)).collect();
    assert_eq!(members.len(), 1, "{members:?}");
    assert!(members[0].contains("user:ada@acme.com"), "{members:?}");
}

#[test]
fn imported_yaml_quotes_what_needs_quoting_and_reads_back_exactly() {
    use runwarden::insight::import::{Imported, ImportedPolicy};
    use runwarden::policy::model::Principal;
    let odd_roles = [
        "Billing Admin: EU",
        "true",
        "123",
        "on-call #2",
        "'quoted'",
        "-dash",
        "a\"b\\c",
    ];
    let mut invokers: Vec<(ImportedInvoker, Option<String>)> = odd_roles
        .iter()
        .map(|r| (ImportedInvoker::Auth0Role(r.to_string()), None))
        .collect();
    invokers.push((
        ImportedInvoker::Member(
            Member::parse(
                "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/group/g",
            )
            .unwrap(),
        ),
        None,
    ));
    invokers.push((
        ImportedInvoker::Member(Member::parse("user:o'brien@acme.com").unwrap()),
        Some("2031-05-06T07:08:09Z".into()),
    ));
    let imported = Imported {
        project: "acme-prod".into(),
        region: "europe-west1".into(),
        policies: vec![ImportedPolicy {
            name: "odd-europe-west1".into(),
            service: svc("acme-prod/europe-west1/odd"),
            uri: None,
            ingress: Some("internal"),
            public: false,
            iap: false,
            // Valid audiences (full URLs) that still need quoting in YAML.
            audiences: vec!["https://odd.acme.com/a#b".into(), "https://odd.acme.com/x,y".into()],
            invokers,
            notes: vec!["a note: with a colon # and a hash".into()],
        }],
        skipped: vec![],
    };
    let now = SystemTime::now();
    let text = render_yaml(&imported, now, "a test");
    let dir = tempfile::tempdir().unwrap();
    copy_into(&root().join("policies/settings.yaml"), dir.path());
    std::fs::write(dir.path().join("odd.yaml"), &text).unwrap();
    let desired =
        runwarden::policy::load_at(dir.path(), now).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let p = &desired.policies[0];
    let roles: Vec<String> = p
        .invokers
        .iter()
        .filter_map(|i| match &i.principal {
            Principal::Auth0Role(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        roles,
        odd_roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "{text}"
    );
    let last = p.invokers.last().unwrap();
    assert_eq!(
        last.principal,
        Principal::Member(Member::parse("user:o'brien@acme.com").unwrap())
    );
    assert_eq!(last.expires, parse_rfc3339("2031-05-06T07:08:09Z"));
    assert_eq!(
        p.exposure.audiences.as_deref(),
        Some(&["https://odd.acme.com/a#b".to_string(), "https://odd.acme.com/x,y".to_string()][..])
    );
    assert_eq!(p.mode, runwarden::policy::model::Mode::Observe);
}

#[test]
fn with_a_workforce_pool_a_pool_group_of_an_existing_role_is_imported_as_that_role() {
    use runwarden::live::{Directory, LiveService, LiveState, Role, ServiceSettings};
    use runwarden::policy::model::PrincipalMapping;
    let mut settings = demo_policies().settings;
    settings.principals = PrincipalMapping::WorkforcePool {
        pool: "acme".into(),
    };
    let group = |r: &str| {
        format!("principalSet://iam.googleapis.com/locations/global/workforcePools/acme/group/{r}")
    };
    let other_pool = "principalSet://iam.googleapis.com/locations/global/workforcePools/other/group/billing-admin".to_string();
    let id = svc("acme-prod/europe-west1/console");
    let members = |list: &[String]| {
        list.iter()
            .map(|m| Member::parse(m).unwrap())
            .collect::<BTreeSet<_>>()
    };
    let accessor = |list: &[String]| Policy {
        version: 1,
        etag: "e".into(),
        bindings: vec![Binding {
            role: runwarden::iam::IAP_ACCESSOR.into(),
            members: members(list),
            condition: None,
        }],
    };
    let invoker = |list: &[String]| Policy {
        version: 1,
        etag: "e".into(),
        bindings: vec![Binding {
            role: RUN_INVOKER.into(),
            members: members(list),
            condition: None,
        }],
    };
    let agent =
        "serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com".to_string();
    let live = LiveState {
        services: BTreeMap::from([(
            id.clone(),
            LiveService {
                id: id.clone(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                settings: ServiceSettings {
                    ingress: None,
                    invoker_iam_disabled: false,
                    custom_audiences: vec![],
                    iap_enabled: true,
                },
                etag: "s".into(),
                uri: None,
                iam: Some(invoker(&[agent, "user:direct@acme.com".into()])),
                iap_iam: Some(accessor(&[
                    group("billing-admin"),
                    group("no-such-role"),
                    other_pool.clone(),
                ])),
                read_error: None,
            },
        )]),
        project_numbers: BTreeMap::from([("acme-prod".to_string(), 123456789012)]),
        directory: Directory {
            roles: BTreeMap::from([(
                "billing-admin".to_string(),
                Role {
                    id: "r1".into(),
                    name: "billing-admin".into(),
                    members: vec![],
                    empty_groups: vec![],
                },
            )]),
            members_resolved: false,
        },
        other_shards: BTreeMap::new(),
        project_parents: BTreeMap::new(),
    };
    let imported = import(
        &settings,
        &live,
        "acme-prod",
        "europe-west1",
        SystemTime::now(),
    );
    let p = &imported.policies[0];
    assert!(p.iap);
    let invokers: Vec<ImportedInvoker> = p.invokers.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(
        invokers,
        vec![
            ImportedInvoker::Auth0Role("billing-admin".into()),
            ImportedInvoker::Member(Member::parse(&group("no-such-role")).unwrap()),
            ImportedInvoker::Member(Member::parse(&other_pool).unwrap()),
        ]
    );
    // A direct invoker grant behind IAP cannot be expressed (the plan moves grants to IAP): said, not imported.
    assert!(
        p.notes.iter().any(|n| n.contains("user:direct@acme.com")),
        "{:?}",
        p.notes
    );
    assert!(
        !invokers
            .iter()
            .any(|i| matches!(i, ImportedInvoker::Member(m) if m.as_str().contains("gcp-sa-iap")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_judges_ownership_exactly_as_the_plan_even_for_a_member_granted_only_on_an_absent_service()
 {
    use runwarden::policy::model::{Invoker, Principal, ServiceTarget};
    let (mut desired, conn) = demo().await;
    let live = read_explain(&desired, &conn).await;
    // Injected: a policy granting the contractor (foreign on billing-api) on a service that
    // does not exist live. The plan owns every member any policy produces, anywhere.
    let mut elsewhere = desired.policies[0].clone();
    elsewhere.name = "elsewhere".into();
    elsewhere.services.truncate(1);
    elsewhere.services[0].target = ServiceTarget::Named("no-such-service".into());
    let source = elsewhere.source.clone();
    elsewhere.invokers = vec![Invoker {
        principal: Principal::Member(Member::parse("user:contractor@partner.example").unwrap()),
        expires: None,
        source,
    }];
    desired.policies.push(elsewhere);

    let p = plan(&desired, &live, &PlanOptions::at(SystemTime::now()));
    let billing = p.services.iter().find(|s| s.id == BILLING_API).unwrap();
    let removal = billing
        .iam
        .iter()
        .flat_map(|r| &r.changes)
        .find(|c| c.member.as_str() == "user:contractor@partner.example")
        .expect("the plan removes the contractor");
    assert_eq!(removal.reason, runwarden::plan::Reason::Unlisted);

    let x = explain_service(&desired, &live, BILLING_API);
    let e = entries(&x, "user:contractor@partner.example");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(matches!(e[0].reasons[..], [Reason::Unlisted]), "{:?}", e[0].reasons);
}

/// `import --out policies/imported` (as the README adopts an estate) writes a `$schema` line
/// that resolves from where the file lands: to the repository's `schemas/`, two levels up.
#[test]
fn the_imported_file_points_at_the_repositorys_schema_from_wherever_it_is_written() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("schemas")).unwrap();
    std::fs::copy(
        crate::common::root().join("schemas/accesspolicy.schema.json"),
        repo.path().join("schemas/accesspolicy.schema.json"),
    )
    .unwrap();
    let out = repo.path().join("policies/imported");
    let args = ["--sim", "deploy/local/world.yaml", "import", "--project", "acme-prod", "--region", "europe-west1", "--out"];
    let (code, _, err) = runwarden(&[&args[..], &[out.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{err}");
    let file = out.join("acme-prod-europe-west1.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let target = text.lines().next().unwrap().strip_prefix("# yaml-language-server: $schema=").unwrap();
    assert_eq!(target, "../../schemas/accesspolicy.schema.json");
    assert!(out.join(target).is_file(), "{target} resolves from {}", out.display());
}

/// A project or region outside the Settings' scope is refused before anything is read or
/// written (the reader looks only in the scope: the file would be empty, and its policies
/// would not load).
#[test]
fn importing_outside_the_scope_is_an_error_that_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let d = out.path().join("imported");
    for (project, region, says) in [
        ("acme-prod", "asia-east1", "region `asia-east1` is not in the scope of Settings `acme`"),
        ("other-project", "europe-west1", "project `other-project` is not in the scope of Settings `acme`"),
    ] {
        let args = ["--sim", "deploy/local/world.yaml", "import", "--project", project, "--region", region, "--out", d.to_str().unwrap()];
        let (code, _, err) = runwarden(&args);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(says), "{err}");
        assert!(!d.exists(), "nothing is written");
    }
}

#[test]
fn explain_member_says_why_the_group_only_unverified_and_blocked_users_of_the_demo_world_get_what_they_get() {
    let explain = |who: &str| {
        let (code, out, err) = runwarden(&["--sim", "deploy/local/world.yaml", "explain", "--member", who]);
        assert_eq!(code, 0, "{err}");
        out
    };
    // Held only through a group (whose members Auth0 lists by id): keeps access.
    let margaret = explain("margaret@acme.com");
    assert!(
        margaret.contains("holds role billing-admin (group billing-team): granted."),
        "{margaret}"
    );
    assert!(margaret.contains("live invoker"), "{margaret}");
    // Unverified, through the same group: nothing.
    let rita = explain("rita@acme.com");
    assert!(
        rita.contains("holds role billing-admin (group billing-team), but gets nothing through it: e-mail is not verified."),
        "{rita}"
    );
    // Only public services reach her (as `allUsers`); no grant names her, live or pending.
    assert!(
        !rita.lines().any(|l| l.contains("  user:rita@acme.com")),
        "{rita}"
    );
    // Blocked, still assigned the role and still bound: the binding goes, reason blocked.
    let leaver = explain("leaver@acme.com");
    assert!(
        leaver.contains("holds role billing-admin (direct), but gets nothing through it: is blocked in Auth0."),
        "{leaver}"
    );
    let line = leaver.lines().find(|l| l.contains("invoker  user:leaver@acme.com")).unwrap_or("");
    assert!(line.contains("blocked: the Auth0 user is blocked"), "{leaver}");
    assert!(line.contains("a plan would remove it"), "{leaver}");
}
