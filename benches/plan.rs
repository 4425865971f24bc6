//! Planning 10,000 services in memory (DESIGN §9: "well under a second").
//!
//! Builds a synthetic estate in memory (2 projects × 2 regions × 2,500 services, teams of 20
//! services each governed by one selector policy, 200 Auth0 roles of 25 users, `users`
//! mapping), with drift on every tenth service, then times three plans: the drifted world, the
//! world after applying that plan, and the drifted world against base policies. Prints the wall
//! time of each and its ratio to a 1 s budget. Not a timed test: it never fails on speed.
//!
//! Then an estate that is not converged at all (every service lacks all 250 members of its
//! role: 2.5 M additions): prints the peak resident memory of planning it and writing the saved
//! plan (above the estate's own, measured with Linux's VmHWM after resetting it) and the saved
//! plan's size, each as a ratio to its budget.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runwarden::iam::{Binding, Member, Policy, RUN_INVOKER};
use runwarden::live::{Directory, LiveService, LiveState, Role, ServiceId, ServiceSettings, User};
use runwarden::plan::{self, PlanOptions};
use runwarden::policy::model::*;

const PROJECTS: [&str; 2] = ["gen-project-1", "gen-project-2"];
const REGIONS: [&str; 2] = ["europe-west1", "us-central1"];
const PER_REGION: usize = 2_500;
const PER_TEAM: usize = 20;
const ROLES: usize = 200;
const USERS_PER_ROLE: usize = 25;
const BUDGET: Duration = Duration::from_secs(1);
/// Members per role in the non-converged estate: 10,000 services × 250 = 2.5 M additions.
const ADOPTING_USERS_PER_ROLE: usize = 250;
/// Peak memory above the estate itself for planning 2.5 M additions and saving the plan.
const MEMORY_BUDGET: u64 = 512 * 1024 * 1024;
/// The saved plan of 2.5 M additions.
const SAVED_PLAN_BUDGET: u64 = 256 * 1024 * 1024;

/// A line of /proc/self/status in bytes (`VmRSS`, `VmHWM`); 0 where unavailable.
fn proc_status_bytes(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// Resets the peak (VmHWM) to the current resident set; false where Linux does not allow it.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Plans the non-converged estate and saves the plan, printing peak memory and plan size.
fn not_converged(now: SystemTime) {
    let (desired, live) = estate_with(ADOPTING_USERS_PER_ROLE, true);
    let baseline = proc_status_bytes("VmRSS:");
    let reset = reset_peak();
    let start = Instant::now();
    let plan = plan::plan(&desired, &live, &PlanOptions::at(now));
    let planned = start.elapsed();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("plan.json");
    plan.write_json(std::fs::File::create(&path).expect("the saved plan is created")).expect("the saved plan is written");
    let peak = proc_status_bytes("VmHWM:");
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let read_back = runwarden::plan::Plan::from_json(&std::fs::read_to_string(&path).unwrap()).expect("the saved plan reads back");
    assert_eq!(read_back, plan, "the saved plan round-trips");
    // What `apply PLAN.json` does with it: compare it with a fresh plan of the same state.
    let start = Instant::now();
    let verified = runwarden::plan::verify_saved(&read_back, &plan, &live).expect("an unedited plan verifies");
    assert!(verified.stale.is_empty() && verified.plan.services.len() == plan.services.len());
    let verifying = start.elapsed();
    // The text plan (what `runwarden plan` prints), written as rendered: counted, not kept.
    struct Count(u64);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len() as u64;
            Ok(())
        }
    }
    drop(read_back);
    let before_text = proc_status_bytes("VmRSS:");
    let text_reset = reset_peak();
    let mut text = Count(0);
    runwarden::plan::write_text(&plan, false, &mut text).expect("the text plan renders");
    let text_peak = proc_status_bytes("VmHWM:").saturating_sub(before_text);
    println!(
        "plan + save (not converged)               {} services  {} adds  wall {:>8.3} s",
        live.services.len(),
        plan.summary.members_to_add,
        planned.as_secs_f64()
    );
    let above = peak.saturating_sub(baseline);
    if reset {
        println!(
            "  peak memory above the estate {:>8.1} MiB  ratio to {:.0} MiB budget {:.3}",
            mib(above),
            mib(MEMORY_BUDGET),
            above as f64 / MEMORY_BUDGET as f64
        );
    } else {
        println!("  peak memory: not measurable here (no /proc/self/clear_refs)");
    }
    println!(
        "  saved plan {:>8.1} MiB ({} bytes)  ratio to {:.0} MiB budget {:.3}",
        mib(bytes),
        bytes,
        mib(SAVED_PLAN_BUDGET),
        bytes as f64 / SAVED_PLAN_BUDGET as f64
    );
    println!("  verifying it against a fresh plan (apply PLAN.json): wall {:.3} s", verifying.as_secs_f64());
    if text_reset {
        println!("  text plan {:.1} MiB, streamed: peak {:.1} MiB above the plan", mib(text.0), mib(text_peak));
    }
}

fn src(file: &str, line: usize) -> Source {
    Source {
        file: PathBuf::from(file),
        line,
        column: 1,
    }
}

fn member(s: &str) -> Member {
    Member::parse(s).expect("valid member")
}

fn settings() -> Settings {
    Settings {
        name: "gen".into(),
        source: src("policies/settings.yaml", 1),
        auth0: Auth0Settings {
            domain: "gen.auth0.example".into(),
            client_id: "gen".into(),
            client_secret_env: "AUTH0_CLIENT_SECRET".into(),
            read_groups: true,
            issuers: vec![],
        },
        principals: PrincipalMapping::Users {
            email_domains: vec!["gen.example".into()],
        },
        machines: vec![],
        scope: Scope {
            projects: PROJECTS.iter().map(|s| s.to_string()).collect(),
            regions: REGIONS.iter().map(|s| s.to_string()).collect(),
        },
        foreign_members: ForeignMembers::Keep,
        owned: vec![],
        keep: vec![MemberPattern {
            pattern: "serviceAccount:service-*@gcp-sa-*.iam.gserviceaccount.com".into(),
            source: src("policies/settings.yaml", 9),
        }],
        allowed_roles: vec![RUN_INVOKER.into(), "roles/iap.httpsResourceAccessor".into()],
        guards: Guards {
            max_removals: 100_000,
            max_removal_ratio: 1.0,
            allow_once: Vec::new(),
        },
        audits: Audits {
            max_token_lifetime: Duration::from_secs(3600),
            max_signing_key_age: Duration::from_secs(86400 * 90),
            require_coverage: true,
        },
        pacing: Default::default(),
    }
}

fn estate() -> (Desired, LiveState) {
    estate_with(USERS_PER_ROLE, false)
}

/// The estate with `users_per_role` users per role; with `adopting`, no service has any of its
/// role's members yet (an estate runwarden has just been pointed at: every grant is an add).
fn estate_with(users_per_role: usize, adopting: bool) -> (Desired, LiveState) {
    let mut live = LiveState::default();
    let mut roles = BTreeMap::new();
    for r in 0..ROLES {
        let members = (0..users_per_role)
            .map(|u| {
                let n = r * users_per_role + u;
                User {
                    user_id: format!("auth0|{n:06}"),
                    email: Some(format!("user-{n:06}@gen.example")),
                    email_verified: true,
                    blocked: false,
                    via_groups: vec![],
                    direct: true,
                }
            })
            .collect();
        let name = format!("role-{r:03}");
        roles.insert(
            name.clone(),
            Role {
                id: format!("rol_{r}"),
                name,
                members,
                empty_groups: vec![],
            },
        );
    }
    live.directory = Directory {
        roles,
        members_resolved: true,
    };
    let mut policies = Vec::new();
    let mut n = 0usize;
    for (pi, project) in PROJECTS.iter().enumerate() {
        live.project_numbers
            .insert(project.to_string(), 100_000 + pi as u64);
        for region in REGIONS {
            for i in 1..=PER_REGION {
                let team = n / PER_TEAM;
                let id = ServiceId::new(project, region, &format!("svc-{i:05}"));
                let role = team % ROLES;
                // Live starts with the team's role members, plus drift on every tenth service.
                let mut members: BTreeSet<Member> = (0..users_per_role)
                    .filter(|_| !adopting)
                    .map(|u| {
                        member(&format!(
                            "user:user-{:06}@gen.example",
                            role * users_per_role + u
                        ))
                    })
                    .collect();
                if n % 10 == 0 && !adopting {
                    members.insert(member("allUsers"));
                    members.insert(member("user:leaver@gen.example"));
                    members.remove(&member(&format!(
                        "user:user-{:06}@gen.example",
                        role * users_per_role
                    )));
                }
                members.insert(member("user:contractor@partner.example"));
                members.insert(member(&format!(
                    "serviceAccount:team-{team:03}@{project}.iam.gserviceaccount.com"
                )));
                live.services.insert(
                    id.clone(),
                    LiveService {
                        id: id.clone(),
                        labels: [("team".to_string(), format!("team-{team:03}"))]
                            .into_iter()
                            .collect(),
                        annotations: Default::default(),
                        settings: ServiceSettings {
                            ingress: Some(Ingress::Internal),
                            invoker_iam_disabled: false,
                            custom_audiences: vec![],
                            iap_enabled: false,
                        },
                        etag: format!("s{n}"),
                        uri: None,
                        iam: Some(Policy {
                            version: 1,
                            etag: format!("i{n}"),
                            bindings: vec![Binding {
                                role: RUN_INVOKER.into(),
                                members,
                                condition: None,
                            }],
                        }),
                        iap_iam: None,
                        read_error: None,
                    },
                );
                if n % PER_TEAM == 0 {
                    let file = format!("policies/teams/team-{team:03}.yaml");
                    policies.push(AccessPolicy {
                        name: format!("team-{team:03}"),
                        source: src(&file, 1),
                        mode: Mode::Enforce,
                        services: vec![ServiceRef {
                            project: project.to_string(),
                            region: RegionRef::Any,
                            target: ServiceTarget::Selector([("team".to_string(), format!("team-{team:03}"))].into_iter().collect()),
                            source: src(&file, 6),
                        }],
                        exposure: Exposure { ingress: Some(Ingress::Internal), public: Some(false), iap: None, audiences: None, source: Some(src(&file, 10)), field_sources: Default::default() },
                        invokers: vec![
                            Invoker { principal: Principal::Auth0Role(format!("role-{role:03}")), expires: None, source: src(&file, 15) },
                            Invoker { principal: Principal::Member(member(&format!("serviceAccount:team-{team:03}@{project}.iam.gserviceaccount.com"))), expires: None, source: src(&file, 16) },
                        ],
                    });
                }
                n += 1;
            }
        }
    }
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    (
        Desired {
            settings: settings(),
            policies,
        },
        live,
    )
}

fn timed<T>(label: &str, services: usize, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let wall = start.elapsed();
    println!(
        "{label:<40} {services} services  wall {:>8.3} s  ratio to 1 s budget {:.3}",
        wall.as_secs_f64(),
        wall.as_secs_f64() / BUDGET.as_secs_f64()
    );
    out
}

fn main() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    // First, while the process is small: the non-converged estate's memory.
    if std::env::var_os("RUNWARDEN_BENCH_SKIP_ADOPTING").is_none() {
        not_converged(now);
    }
    let (desired, live) = estate();
    let services = live.services.len();
    let _ = SystemTime::now; // the clock is passed in, never read by the plan
    let drifted = timed("plan (drifted estate)", services, || {
        plan::plan(&desired, &live, &PlanOptions::at(now))
    });
    println!(
        "  {} services to change, {} adds, {} removes, {} settings, {} foreign kept, {} findings",
        drifted.summary.services_to_change,
        drifted.summary.members_to_add,
        drifted.summary.members_to_remove,
        drifted.summary.settings_to_change,
        drifted.summary.foreign_kept,
        drifted.findings.len()
    );
    let converged = plan::apply_to(&drifted, &live);
    let again = timed("plan (converged estate)", services, || {
        plan::plan(&desired, &converged, &PlanOptions::at(now))
    });
    assert!(
        !again.has_changes(),
        "the converged estate must plan no changes"
    );
    timed("plan (drifted, with --base-policies)", services, || {
        plan::plan(
            &desired,
            &live,
            &PlanOptions {
                now,
                base: Some(&desired),
            },
        )
    });
    let text = timed("render text", services, || {
        plan::render_text(&drifted, false)
    });
    let md = timed("render markdown", services, || {
        plan::render_markdown(&drifted)
    });
    let json = timed("render json", services, || plan::render_json(&drifted));
    println!(
        "  text {} bytes, markdown {} bytes, json {} bytes",
        text.len(),
        md.len(),
        json.len()
    );
}
