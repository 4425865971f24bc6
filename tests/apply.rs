//! `runwarden apply` against the in-process simulator on loopback: convergence, idempotence,
//! concurrent writers, injected faults, failed operations, stale saved plans, guards, audit
//! events, secrets, exit codes, and a reliability run over a generated world.
//!
//! The library is driven directly (read → plan → apply, as `cmd_apply` does) so a test can look
//! inside the simulator between steps; a few tests run the real binary for exit codes and output.

mod hostile_answers;
mod last_applied;
mod support;
mod transitions;

use std::collections::BTreeSet;

use runwarden::apply::{ApplyConfig, ServiceOutcome};
use runwarden::iam::{Binding, Member, RUN_INVOKER};
use runwarden::plan::{Action, GuardKind, Plan, apply_to, check_guards};
use runwarden::sim::{FaultsSpec, Writer};
use serde_json::Value;

use crate::common::{self, proxy};

use support::*;

const BILLING_API: &str = "acme-prod/europe-west1/billing-api";
const BILLING_WORKER: &str = "acme-prod/europe-west1/billing-worker";
const PAYMENTS_API: &str = "acme-prod/europe-west1/payments-api";
const ADMIN_CONSOLE: &str = "acme-prod/europe-west1/admin-console";
const BILLING_REPORTS: &str = "acme-prod/us-central1/billing-reports";

fn faults(yaml: &str) -> FaultsSpec {
    serde_saphyr::from_str(yaml).expect("a faults section")
}

// ---------------------------------------------------------------------------------------------
// Convergence and idempotence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pass_converges_the_demo_world_to_exactly_what_the_plan_described() {
    let env = Env::demo().await;
    let live = env.read().await;
    let first = env.plan(&live);
    let planned = applicable_changes(&first);
    assert!(
        planned.len() >= 4,
        "the demo world has drift to apply: {planned:?}"
    );

    let report = env.apply_fresh(&live, &first, &config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    let applied: Vec<&str> = report.outcomes.iter().map(|o| o.service()).collect();
    assert_eq!(
        applied, planned,
        "one outcome per service with applicable changes"
    );
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| matches!(o, ServiceOutcome::Applied { .. })),
        "{:?}",
        report.outcomes
    );
    // One audit event per planned add, remove and setting change of enforced services.
    let expected_events: usize = first
        .services
        .iter()
        .filter(|s| s.is_applicable())
        .map(|s| s.count(Action::Add) + s.count(Action::Remove) + s.settings.len())
        .sum();
    assert_eq!(report.events.len(), expected_events);
    assert!(
        report.not_applied > 0,
        "the observe-mode staging service is counted as not applied"
    );

    assert_eq!(
        env.left_to_apply().await,
        Vec::<String>::new(),
        "a fresh plan has nothing left to apply"
    );

    // The simulator now holds exactly what the plan said the world would become.
    let model = apply_to(&first, &live);
    let h = env.handle();
    for sp in first.services.iter().filter(|s| s.is_applicable()) {
        let sid = sp.service_id();
        let want = &model.services[&sid];
        assert_eq!(
            bindings(&h.iam_policy(&sid).unwrap()),
            bindings(want.iam.as_ref().unwrap()),
            "service IAM of {sid}"
        );
        if let Some(iap) = &want.iap_iam {
            assert_eq!(
                bindings(&h.iap_policy(&sid).unwrap()),
                bindings(iap),
                "IAP IAM of {sid}"
            );
        }
        let got = h.service(&sid).unwrap();
        assert_eq!(
            got.iap_enabled, want.settings.iap_enabled,
            "iapEnabled of {sid}"
        );
        assert_eq!(
            got.custom_audiences, want.settings.custom_audiences,
            "customAudiences of {sid}"
        );
        assert_eq!(
            Some(got.ingress.as_str()),
            want.settings.ingress.map(|i| i.api_value()),
            "ingress of {sid}"
        );
    }
    // Observe mode is never applied: staging still has what it had.
    let staging = id("acme-staging/europe-west1/billing-api");
    assert_eq!(
        bindings(&h.iam_policy(&staging).unwrap()),
        bindings(live.services[&staging].iam.as_ref().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_apply_writes_nothing() {
    let env = Env::demo().await;
    let (_, report) = env.pass(&config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    assert!(env.write_requests() > 0, "the first pass wrote");

    env.handle().clear_log();
    let (second_plan, second) = env.pass(&config()).await;
    assert_eq!(applicable_changes(&second_plan), Vec::<String>::new());
    assert!(
        second.outcomes.is_empty() && second.events.is_empty(),
        "{second:?}"
    );
    assert!(
        !env.handle().request_log().is_empty(),
        "the second pass did read"
    );
    assert_eq!(
        env.write_requests(),
        0,
        "no setIamPolicy and no services.patch in the second pass"
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrent writers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_added_between_read_and_write_survives_and_the_service_is_replanned() {
    let env = Env::demo().await;
    // ada joins platform-admin, so admin-console's IAP policy is written too.
    assert!(env.handle().add_role_user("platform-admin", "ada@acme.com"));
    // Every read arms the concurrent writer; it strikes before the next write of that resource.
    env.handle()
        .set_faults_spec(&faults("concurrentWriter: 1.0"))
        .unwrap();
    let live = env.read().await;
    env.handle()
        .set_faults_spec(&FaultsSpec::default())
        .unwrap();
    let plan = env.plan(&live);

    let report = env.apply_fresh(&live, &plan, &config()).await;
    assert!(
        failures(&report).is_empty(),
        "one conflict is re-planned and written: {}",
        report.summary_line()
    );

    let history = env.handle().history();
    let struck: Vec<_> = history
        .iter()
        .filter(|w| w.writer == Writer::ConcurrentWriter)
        .collect();
    let iam_services: BTreeSet<&str> = plan
        .services
        .iter()
        .filter(|s| s.is_applicable() && s.member_changes().any(|c| c.action != Action::Keep))
        .map(|s| s.id.as_str())
        .collect();
    let iap_written = plan.services.iter().any(|s| {
        s.id == ADMIN_CONSOLE
            && s.iap
                .as_ref()
                .is_some_and(|r| r.changes.iter().any(|c| c.action == Action::Add))
    });
    assert!(iap_written, "the plan writes an IAP policy");
    assert_eq!(
        struck.len(),
        iam_services.len() + 1,
        "the writer struck once per IAM resource written (IAP included)"
    );
    assert!(struck.iter().any(|w| w.resource.contains("/iap_web/")));
    let removed = applied_removals([&report]);
    assert_nothing_lost(&history, &removed, |r| env.handle().policy(r));
    for w in &struck {
        let now = env.handle().policy(&w.resource).unwrap();
        assert!(
            now.bindings.iter().any(|b| b
                .members
                .iter()
                .any(|m| m.as_str().ends_with("@foreign.example"))),
            "the concurrent member survives on {}",
            w.resource
        );
    }
    assert_eq!(
        env.left_to_apply().await,
        Vec::<String>::new(),
        "converged in this pass"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_strikes_on_every_attempt_exhausts_the_conflict_budget_and_loses_nothing() {
    let env = Env::demo().await;
    env.handle()
        .set_faults_spec(&faults("concurrentWriter: 1.0"))
        .unwrap();
    let config = ApplyConfig {
        max_conflicts: 2,
        ..config()
    };
    let (plan, first) = env.pass(&config).await;

    let conflicted: Vec<&ServiceOutcome> = failures(&first);
    assert!(
        !conflicted.is_empty(),
        "the writer never let a write through"
    );
    for f in &conflicted {
        match f {
            ServiceOutcome::Failed {
                message,
                transient: true,
                ..
            } => {
                assert!(message.contains("kept changing"), "{message}")
            }
            other => panic!("expected a transient failure, got {other:?}"),
        }
    }
    // The settings-only service is not an IAM resource: the writer cannot touch it.
    assert!(
        first
            .outcomes
            .iter()
            .any(|o| o.service() == PAYMENTS_API && !o.is_failure())
    );

    env.handle()
        .set_faults_spec(&FaultsSpec::default())
        .unwrap();
    let (_, second) = env.pass(&config).await;
    assert!(failures(&second).is_empty(), "{}", second.summary_line());
    assert_eq!(
        env.left_to_apply().await,
        Vec::<String>::new(),
        "converged on the second pass"
    );
    assert!(applicable_changes(&plan).len() > conflicted.len());

    let history = env.handle().history();
    assert!(
        history
            .iter()
            .filter(|w| w.writer == Writer::ConcurrentWriter)
            .count()
            >= conflicted.len() * 3
    );
    let removed = applied_removals([&first, &second]);
    assert_nothing_lost(&history, &removed, |r| env.handle().policy(r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_edits_between_plan_and_apply_are_replanned_never_overwritten() {
    let env = Env::demo().await;
    let h = env.handle();
    let live = env.read().await;
    let plan = env.plan(&live);
    let model = apply_to(&plan, &live);
    let contractor = Member::parse("user:temp@partner.example").unwrap();

    // payments-api: someone relabels it (its etag moves; the ingress change is still needed).
    let labels = [
        ("team".to_string(), "payments".to_string()),
        ("tier".to_string(), "1".to_string()),
    ]
    .into();
    assert!(h.update_service(
        &id(PAYMENTS_API),
        &runwarden::sim::ServicePatch {
            labels: Some(labels),
            ..Default::default()
        }
    ));
    // admin-console: someone already did everything the plan wanted, by hand.
    let console = id(ADMIN_CONSOLE);
    h.set_iam_policy_direct(&console, model.services[&console].iam.clone().unwrap())
        .unwrap();
    assert!(h.update_service(
        &console,
        &runwarden::sim::ServicePatch {
            iap_enabled: Some(true),
            ..Default::default()
        }
    ));
    // billing-reports: someone adds a foreign member.
    let reports = id("acme-prod/us-central1/billing-reports");
    let mut edited = h.iam_policy(&reports).unwrap();
    edited.bindings.push(Binding {
        role: RUN_INVOKER.into(),
        members: [contractor.clone()].into(),
        condition: None,
    });
    h.set_iam_policy_direct(&reports, edited).unwrap();
    // billing-worker: someone already wrote the planned policy.
    let worker = id(BILLING_WORKER);
    h.set_iam_policy_direct(&worker, model.services[&worker].iam.clone().unwrap())
        .unwrap();

    let report = env.apply_fresh(&live, &plan, &config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    let outcome = |s: &str| {
        report
            .outcomes
            .iter()
            .find(|o| o.service() == s)
            .unwrap()
            .clone()
    };
    let cases: [(&str, bool); 5] = [
        (PAYMENTS_API, true),
        (ADMIN_CONSOLE, false),
        ("acme-prod/us-central1/billing-reports", true),
        (BILLING_WORKER, false),
        (BILLING_API, true),
    ];
    for (service, writes) in cases {
        match (outcome(service), writes) {
            (ServiceOutcome::Applied { .. }, true)
            | (ServiceOutcome::AlreadyConverged { .. }, false) => {}
            (other, _) => panic!(
                "{service}: expected {}, got {other:?}",
                if writes {
                    "Applied"
                } else {
                    "AlreadyConverged"
                }
            ),
        }
    }
    assert_eq!(
        h.service(&id(PAYMENTS_API)).unwrap().ingress.as_str(),
        "INGRESS_TRAFFIC_INTERNAL_ONLY"
    );
    assert_eq!(
        h.service(&id(PAYMENTS_API))
            .unwrap()
            .labels
            .get("tier")
            .map(String::as_str),
        Some("1"),
        "the relabel survives"
    );
    assert!(
        h.iam_policy(&reports)
            .unwrap()
            .bindings
            .iter()
            .any(|b| b.members.contains(&contractor)),
        "the foreign member survives"
    );
    assert_nothing_lost(&h.history(), &applied_removals([&report]), |r| h.policy(r));
    assert_eq!(env.left_to_apply().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replan_after_a_conflict_that_trips_a_guard_writes_nothing_for_that_service() {
    // maxRemovals 2: exactly the demo plan's two removals pass.
    let policies = policies_with_settings(|t| t.replace("maxRemovals: 25", "maxRemovals: 2"));
    let env = Env::start(demo_world(), load(policies.path())).await;
    let h = env.handle();
    let live = env.read().await;
    let plan = env.plan(&live);
    assert!(check_guards(&plan, &env.desired.settings, None).is_empty());

    // Between plan and apply, someone makes billing-reports public: its re-plan removes a third member.
    let reports = id("acme-prod/us-central1/billing-reports");
    let mut p = h.iam_policy(&reports).unwrap();
    p.bindings.push(Binding {
        role: RUN_INVOKER.into(),
        members: [Member::parse("allUsers").unwrap()].into(),
        condition: None,
    });
    h.set_iam_policy_direct(&reports, p).unwrap();
    let edited = h.iam_policy(&reports).unwrap();

    let report = env.apply_fresh(&live, &plan, &config()).await;
    let failed: Vec<_> = failures(&report);
    assert_eq!(failed.len(), 1, "{}", report.summary_line());
    match failed[0] {
        ServiceOutcome::Failed {
            service,
            message,
            transient: false,
        } => {
            assert_eq!(service, "acme-prod/us-central1/billing-reports");
            assert!(message.contains("guard maxRemovals tripped"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.iam_policy(&reports).unwrap(),
        edited,
        "nothing was written after the guard tripped"
    );
    assert!(report.outcomes.iter().filter(|o| !o.is_failure()).count() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_the_plan_does_not_name_are_carried_over_conditions_included() {
    let env = Env::demo().await;
    let h = env.handle();
    let reports = id("acme-prod/us-central1/billing-reports");
    let mut p = h.iam_policy(&reports).unwrap();
    p.bindings.push(Binding {
        role: RUN_INVOKER.into(),
        members: [Member::parse("user:auditor@partner.example").unwrap()].into(),
        condition: Some(runwarden::iam::Condition {
            title: "audit-window".into(),
            description: Some("hand-made".into()),
            expression: "request.time < timestamp(\"2030-01-01T00:00:00Z\")".into(),
        }),
    });
    p.bindings.push(Binding {
        role: "roles/run.developer".into(),
        members: [Member::parse("group:reports-devs@acme.com").unwrap()].into(),
        condition: None,
    });
    h.set_iam_policy_direct(&reports, p).unwrap();
    let before = bindings(&h.iam_policy(&reports).unwrap());

    let (plan, report) = env.pass(&config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    assert!(
        applicable_changes(&plan).contains(&"acme-prod/us-central1/billing-reports".to_string())
    );
    let after = bindings(&h.iam_policy(&reports).unwrap());
    for (key, members) in &before {
        let kept = after.get(key).cloned().unwrap_or_default();
        assert!(
            kept.is_superset(members),
            "{key:?} lost members: {members:?} -> {kept:?}"
        );
    }
    assert!(
        after.len() > before.len(),
        "the planned conditional grant was added alongside"
    );
}

const SMALL_WORLD: &str = r#"
projects:
  - {id: proj-one, number: 111111111111}
services:
  - {project: proj-one, region: europe-west1, name: console, labels: {team: ops}}
auth0:
  domain: small.auth0.example
  managementClient: {clientId: small-client}
  users:
    - {email: ann@small.example}
    - {email: ben@small.example}
  roles:
    - {name: ops, users: [ann@small.example, ben@small.example]}
"#;

const SMALL_POLICIES: &str = r#"apiVersion: runwarden.dev/v1
kind: Settings
metadata: {name: small}
spec:
  auth0: {domain: small.auth0.example, clientId: small-client, clientSecretEnv: RW_TEST_UNUSED}
  principals: {mapping: users, emailDomains: [small.example]}
  scope: {projects: [proj-one], regions: [europe-west1]}
  foreignMembers: keep
  allowedRoles: [roles/run.invoker, roles/iap.httpsResourceAccessor]
  guards: {maxRemovals: 5, maxRemovalRatio: 0.5}
  audits: {maxTokenLifetime: 1h, maxSigningKeyAge: 90d, requireCoverage: true}
---
apiVersion: runwarden.dev/v1
kind: AccessPolicy
metadata: {name: console}
spec:
  mode: enforce
  services:
    - {project: proj-one, region: europe-west1, name: console}
  exposure: {ingress: all, public: false, iap: true}
  invokers:
    - auth0Role: ops
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iap_is_switched_on_for_a_service_whose_iap_policy_was_never_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policies.yaml"), SMALL_POLICIES).unwrap();
    let world =
        runwarden::sim::World::from_yaml(SMALL_WORLD, std::path::Path::new("small.yaml")).unwrap();
    let env = Env::start(world, load(dir.path())).await;
    let (plan, report) = env.pass(&config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    assert_eq!(
        report.applied_by_kind().get("add"),
        Some(&3),
        "two IAP accessors and the IAP service agent: {plan:?}"
    );
    let console = id("proj-one/europe-west1/console");
    let iap = bindings(&env.handle().iap_policy(&console).unwrap());
    let accessors = &iap[&("roles/iap.httpsResourceAccessor".to_string(), None)];
    assert_eq!(
        accessors,
        &BTreeSet::from([
            "user:ann@small.example".to_string(),
            "user:ben@small.example".to_string()
        ])
    );
    assert!(env.handle().service(&console).unwrap().iap_enabled);
    // The accessors were written before IAP was switched on (no lock-out window).
    let order: Vec<String> = env
        .handle()
        .request_log()
        .iter()
        .filter(|r| is_write(&r.method, &r.path))
        .map(|r| r.path.clone())
        .collect();
    assert!(
        order.first().is_some_and(|p| p.contains("/iap_web/")),
        "{order:?}"
    );
    assert!(
        order.last().is_some_and(|p| !p.contains(":setIamPolicy")),
        "the settings patch comes last: {order:?}"
    );
    assert_eq!(env.left_to_apply().await, Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Injected errors

async fn converges_despite(spec: &str, expect_status: u16) {
    let env = Env::demo().await;
    env.handle().set_faults_spec(&faults(spec)).unwrap();
    let (_, report) = env.pass(&config()).await;
    assert!(
        failures(&report).is_empty(),
        "{spec}: {}",
        report.summary_line()
    );
    env.handle()
        .set_faults_spec(&FaultsSpec::default())
        .unwrap();
    let log = env.handle().request_log();
    assert!(
        log.iter().any(|r| r.status == expect_status),
        "{spec}: no {expect_status} was injected, so nothing was tested"
    );
    assert!(
        log.iter()
            .any(|r| r.status == expect_status && is_write(&r.method, &r.path))
            || log.iter().filter(|r| r.status == expect_status).count() > 1,
        "{spec}: too few injected errors"
    );
    assert_eq!(
        env.left_to_apply().await,
        Vec::<String>::new(),
        "{spec}: converged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_503s_are_retried_and_the_pass_converges() {
    converges_despite(r#"errorRates: {"503": 0.3}"#, 503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_429_are_waited_out_and_the_pass_converges() {
    converges_despite("bursts: {every: 7, length: 2}", 429).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_quota_is_waited_out_and_the_pass_converges() {
    converges_despite("rateLimits: {cloudRunWrite: 2/s}", 429).await;
}

// ---------------------------------------------------------------------------------------------
// Failed operations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operations_wait_that_returns_before_the_operation_is_done_is_polled_spaced_and_bounded() {
    // run.v2.json, operations.wait: "It may return the latest state before the specified timeout
    // (including immediately)". Apply must keep asking, a bounded number of times.
    let env = Env::demo().await;
    env.handle().set_operation_delay(std::time::Duration::from_millis(2500));
    env.handle().set_faults_spec(&faults("earlyWait: true")).unwrap();
    let (_, report) = env.pass(&config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    let log = env.handle().request_log();
    // Settings patches are waited for; a record-only patch (updateMask=annotations alone) is not.
    let patches = log.iter().filter(|r| r.method == "PATCH" && r.query != "updateMask=annotations").count();
    let waits = log.iter().filter(|r| r.path.ends_with(":wait")).count();
    assert!(patches > 0, "the demo pass patches settings");
    assert!(waits > patches, "the early answers were not done, so they were asked again: {waits} waits for {patches} patches");
    // 2.5 s at intervals of 1 s, 1.5 s, 2.25 s ...: about 3 polls per operation, never a busy loop.
    assert!(waits <= patches * 5, "{waits} waits for {patches} patches");
    assert_eq!(env.left_to_apply().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_operation_fails_only_its_service_with_the_operations_message() {
    let env = Env::demo().await;
    env.handle()
        .set_faults_spec(&faults("operationFailureRate: 1.0"))
        .unwrap();
    let (plan, report) = env.pass(&config()).await;
    let with_settings: BTreeSet<&str> = plan
        .services
        .iter()
        .filter(|s| s.is_applicable() && !s.settings.is_empty())
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(with_settings, BTreeSet::from([ADMIN_CONSOLE, PAYMENTS_API]));
    for o in &report.outcomes {
        if with_settings.contains(o.service()) {
            match o {
                ServiceOutcome::Failed { message, .. } => {
                    assert!(
                        message.contains("simulated operation failure"),
                        "the API's message is kept: {message}"
                    );
                    assert!(message.contains("next pass"), "says what to do: {message}");
                }
                other => panic!("{} should have failed: {other:?}", o.service()),
            }
        } else {
            assert!(matches!(o, ServiceOutcome::Applied { .. }), "{o:?}");
        }
    }
    assert!(
        report.summary_line().starts_with("Apply incomplete"),
        "{}",
        report.summary_line()
    );
    assert!(
        !report.events.iter().any(|e| e.change == "setting"),
        "no audit event for a setting that did not change"
    );
    assert_eq!(
        env.handle()
            .service(&id(PAYMENTS_API))
            .unwrap()
            .ingress
            .as_str(),
        "INGRESS_TRAFFIC_ALL"
    );

    env.handle()
        .set_faults_spec(&FaultsSpec::default())
        .unwrap();
    let live = env.read().await;
    let left = env.plan(&live);
    for sp in left
        .services
        .iter()
        .filter(|s| s.is_applicable() && s.has_changes())
    {
        assert!(
            with_settings.contains(sp.id.as_str()),
            "{} should have converged",
            sp.id
        );
        assert!(
            sp.member_changes().all(|c| c.action == Action::Keep),
            "only settings are left on {}",
            sp.id
        );
    }
}

#[test]
fn the_cli_exits_1_when_an_operation_fails() {
    let dir = tempfile::tempdir().unwrap();
    let world = write_world(
        dir.path(),
        &demo_world_with("faults:\n  operationFailureRate: 1.0"),
    );
    let run = runwarden(&["--sim", &world, "apply", "--auto-approve"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("Apply incomplete"), "{}", run.stdout);
    assert!(
        run.stdout.contains(PAYMENTS_API) && run.stdout.contains("simulated operation failure"),
        "{}",
        run.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Saved plans

fn roundtrip(plan: &Plan) -> Plan {
    Plan::from_json(&plan.to_json()).expect("a saved plan reads back")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_is_refused_for_services_that_changed_since_and_applied_elsewhere() {
    let env = Env::demo().await;
    let live = env.read().await;
    let saved = roundtrip(&env.plan(&live));

    // Someone edits billing-worker's IAM in the console, and payments-api's settings.
    let worker = id(BILLING_WORKER);
    let mut edited = env.handle().iam_policy(&worker).unwrap();
    edited.bindings.push(Binding {
        role: RUN_INVOKER.into(),
        members: [Member::parse("user:console-edit@acme.com").unwrap()].into(),
        condition: None,
    });
    env.handle().set_iam_policy_direct(&worker, edited).unwrap();
    let after_edit = env.handle().iam_policy(&worker).unwrap();
    env.handle().update_service(
        &id(PAYMENTS_API),
        &runwarden::sim::ServicePatch {
            labels: None,
            ..Default::default()
        },
    );

    let report = env.apply_saved(&saved, &config()).await;
    for o in &report.outcomes {
        match o.service() {
            BILLING_WORKER | PAYMENTS_API => match o {
                ServiceOutcome::Stale { message, .. } => {
                    assert!(
                        message.contains("runwarden plan"),
                        "says to make a fresh plan: {message}"
                    )
                }
                other => panic!("{other:?} should be stale"),
            },
            _ => assert!(matches!(o, ServiceOutcome::Applied { .. }), "{o:?}"),
        }
    }
    assert_eq!(
        env.handle().iam_policy(&worker).unwrap(),
        after_edit,
        "nothing was written to the stale service"
    );
    assert_eq!(report.failures().count(), 2, "{}", report.summary_line());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_writes_nothing_for_a_service_whose_settings_moved_since() {
    let env = Env::demo().await;
    let live = env.read().await;
    let saved = roundtrip(&env.plan(&live));
    let console = id(ADMIN_CONSOLE);
    let sp = saved
        .services
        .iter()
        .find(|s| s.id == ADMIN_CONSOLE)
        .unwrap();
    assert!(
        sp.iam.is_some() && !sp.settings.is_empty(),
        "admin-console has IAM and settings changes"
    );

    // Only the service itself moved (e.g. a deploy); its IAM policy did not.
    env.handle()
        .update_service(&console, &runwarden::sim::ServicePatch::default());
    let before = env.handle().iam_policy(&console).unwrap();
    let report = env.apply_saved(&saved, &config()).await;
    let outcome = report
        .outcomes
        .iter()
        .find(|o| o.service() == ADMIN_CONSOLE)
        .unwrap();
    assert!(
        matches!(outcome, ServiceOutcome::Stale { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        env.handle().iam_policy(&console).unwrap(),
        before,
        "a stale service is refused whole, not half applied"
    );
    assert!(
        report.events.iter().all(|e| e.service != ADMIN_CONSOLE),
        "{:?}",
        report.events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_meeting_a_concurrent_write_is_refused_not_replanned() {
    let env = Env::demo().await;
    let live = env.read().await;
    let saved = roundtrip(&env.plan(&live));
    env.handle()
        .set_faults_spec(&faults("concurrentWriter: 1.0"))
        .unwrap();
    let report = env.apply_saved(&saved, &config()).await;
    for o in &report.outcomes {
        let sp = saved.services.iter().find(|s| s.id == o.service()).unwrap();
        let writes_iam = sp.member_changes().any(|c| c.action != Action::Keep);
        match o {
            ServiceOutcome::Stale { message, .. } if writes_iam => {
                assert!(
                    message.contains("409") && message.contains("runwarden plan"),
                    "{message}"
                )
            }
            ServiceOutcome::Applied { .. } if !writes_iam => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    let history = env.handle().history();
    assert!(
        !history.iter().any(|w| w.writer == Writer::Client),
        "no IAM write from a saved plan that met a conflict: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_shutdown_has_begun_no_write_starts() {
    let env = Env::demo().await;
    let live = env.read().await;
    let plan = env.plan(&live);
    env.handle().clear_log();
    let report = env.apply_cancelled(&live, &plan, &config()).await;
    assert_eq!(report.outcomes.len(), applicable_changes(&plan).len());
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| matches!(o, ServiceOutcome::Skipped { .. })),
        "{:?}",
        report.outcomes
    );
    assert_eq!(env.write_requests(), 0);
    assert!(
        report
            .summary_line()
            .contains("the next pass will converge it"),
        "{}",
        report.summary_line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_saved_plan_applies_fully() {
    let env = Env::demo().await;
    let live = env.read().await;
    let saved = roundtrip(&env.plan(&live));
    let report = env.apply_saved(&saved, &config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    assert_eq!(report.outcomes.len(), applicable_changes(&saved).len());
    assert_eq!(env.left_to_apply().await, Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Guards

/// `apply` on the demo world with edited settings: (exit code, output).
fn apply_with_settings(edit: impl Fn(&str) -> String, extra: &[&str]) -> Run {
    let policies = policies_with_settings(edit);
    let dir = policies.path().to_string_lossy().into_owned();
    let mut args = vec![
        "--sim",
        "deploy/local/world.yaml",
        "--log-format",
        "json",
        "apply",
        "--auto-approve",
        "--policies",
        &dir,
    ];
    args.extend_from_slice(extra);
    runwarden(&args)
}

fn assert_refused_before_any_write(run: &Run, guard: &str) {
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains(&format!("guard {guard} tripped")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing was applied"), "{}", run.stderr);
    assert!(
        !run.stdout.contains("change-applied"),
        "an audit event means a write: {}",
        run.stdout
    );
}

#[test]
fn max_removals_refuses_the_whole_apply_and_allow_removals_lets_it_through() {
    let set = |t: &str| t.replace("maxRemovals: 25", "maxRemovals: 0");
    let refused = apply_with_settings(set, &[]);
    assert_refused_before_any_write(&refused, "maxRemovals");
    assert!(
        refused.stderr.contains("--allow-removals 2"),
        "names the override with the number: {}",
        refused.stderr
    );

    let allowed = apply_with_settings(set, &["--allow-removals", "2"]);
    assert_eq!(allowed.code, 0, "{}", allowed.all());
    assert!(allowed.stdout.contains("change-applied"));

    let too_few = apply_with_settings(set, &["--allow-removals", "1"]);
    assert_refused_before_any_write(&too_few, "maxRemovals");
}

#[test]
fn a_plan_the_guards_would_refuse_says_so_before_anything_else() {
    let policies = policies_with_settings(|t| t.replace("maxRemovals: 25", "maxRemovals: 0"));
    let dir = policies.path().to_string_lossy().into_owned();
    let text = runwarden(&["--sim", "deploy/local/world.yaml", "plan", "--policies", &dir]);
    assert_eq!(text.code, 2, "{}", text.all());
    assert!(text.stdout.starts_with("Apply would refuse this plan:"), "{}", text.stdout);
    let md = runwarden(&["--sim", "deploy/local/world.yaml", "plan", "--policies", &dir, "--format", "markdown", "--revision", "3f2a9c1"]);
    assert!(md.stdout.starts_with("**runwarden plan** at `3f2a9c1`"), "{}", md.stdout);
    let caution = md.stdout.find("[!CAUTION]").expect("the guard note");
    assert!(caution < md.stdout.find("| Service |").unwrap(), "{}", md.stdout);
}

#[test]
fn max_removal_ratio_refuses_the_whole_apply() {
    let run = apply_with_settings(
        |t| t.replace("maxRemovalRatio: 0.5", "maxRemovalRatio: 0.01"),
        &[],
    );
    assert_refused_before_any_write(&run, "maxRemovalRatio");
}

#[test]
fn a_settings_file_that_disallows_the_iap_role_is_rejected_by_the_loader_before_anything_is_read() {
    // platform-console uses IAP, which grants roles/iap.httpsResourceAccessor: the loader refuses
    // the policies, so the allowedRoles guard is reached only by a hand-edited saved plan (below).
    let run = apply_with_settings(
        |t| {
            t.replace(
                "allowedRoles: [roles/run.invoker, roles/iap.httpsResourceAccessor]",
                "allowedRoles: [roles/run.invoker]",
            )
        },
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("allowedRoles does not allow it"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("change-applied"), "{}", run.stdout);
}

/// `runwarden plan --out` against the test's simulator: the saved plan, as JSON, and the
/// directory it is in.
async fn saved_plan(env: &Env) -> (Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let run = env.runwarden(&["plan", "--out", path.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.all());
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(json["policyDigest"].as_str().is_some_and(|d| d.len() == 64), "the plan records its policies: {json}");
    (json, dir)
}

/// A real saved plan of the demo world, edited as JSON by `edit` (which returns how many things
/// it edited), is refused whole by `apply PLAN.json --auto-approve --allow-removals 100`: exit 1,
/// every message in `names` on stderr, and the simulator sees no write at all.
async fn edited_saved_plan_is_refused(edit: impl Fn(&mut Value) -> usize, names: &[&str]) -> Value {
    let env = Env::demo().await;
    let (mut json, dir) = saved_plan(&env).await;
    assert!(edit(&mut json) > 0, "the edit found something to edit");
    let path = dir.path().join("edited.json");
    std::fs::write(&path, json.to_string()).unwrap();
    env.handle().clear_log();
    let run = env
        .runwarden(&["--log-format", "json", "apply", path.to_str().unwrap(), "--auto-approve", "--allow-removals", "100"])
        .await;
    assert_eq!(run.code, 1, "{}", run.all());
    for name in names {
        assert!(run.stderr.contains(name), "the refusal names {name:?}: {}", run.stderr);
    }
    assert!(run.stderr.contains("nothing was applied"), "{}", run.stderr);
    assert!(!run.stdout.contains("change-applied"), "an audit event means a write: {}", run.stdout);
    assert_eq!(env.write_requests(), 0, "no setIamPolicy or services.patch reached the simulator");
    assert_eq!(env.client_writes(), 0, "{:?}", env.handle().history());
    json
}

fn service_json<'a>(json: &'a mut Value, service: &str) -> &'a mut Value {
    json["services"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["id"] == service)
        .unwrap_or_else(|| panic!("{service} is in the demo plan"))
}

fn service_iam_changes<'a>(json: &'a mut Value, service: &str) -> &'a mut Vec<Value> {
    service_json(json, service)
        .get_mut("iam")
        .and_then(|r| r.get_mut("changes"))
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("{service} has IAM changes in the demo plan"))
}

/// Takes `member` out of the (grouped) change entry that lists it on the service's IAM policy
/// and returns that change for it alone, to be edited and pushed back.
fn take_member(json: &mut Value, service: &str, member: &str) -> Value {
    let changes = service_iam_changes(json, service);
    let at = changes
        .iter()
        .position(|c| c["members"].as_array().unwrap().iter().any(|m| m == member))
        .unwrap_or_else(|| panic!("{member} is in the plan of {service}"));
    let members = changes[at]["members"].as_array_mut().unwrap();
    members.retain(|m| m != member);
    let mut single = changes[at].clone();
    single["members"] = serde_json::json!([member]);
    if changes[at]["members"].as_array().unwrap().is_empty() {
        changes.remove(at);
    }
    single
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_edited_to_remove_a_foreign_member_is_refused_naming_the_removal() {
    edited_saved_plan_is_refused(
        |json| {
            let mut change = take_member(json, BILLING_API, "user:contractor@partner.example");
            assert_eq!(change["action"], "keep", "foreign members are kept by the demo settings");
            change["action"] = "remove".into();
            service_iam_changes(json, BILLING_API).push(change);
            1
        },
        &[BILLING_API, "remove user:contractor@partner.example roles/run.invoker (foreign)", "which the current policies do not produce"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_edited_to_remove_an_unmanaged_roles_binding_is_refused() {
    edited_saved_plan_is_refused(
        |json| {
            service_iam_changes(json, BILLING_API).push(serde_json::json!({
                "action": "remove", "role": "roles/run.developer", "members": ["group:billing-devs@acme.com"], "reason": "unlisted"
            }));
            1
        },
        &["remove group:billing-devs@acme.com roles/run.developer (unlisted)"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_edited_to_grant_an_attacker_is_refused_naming_the_grant() {
    edited_saved_plan_is_refused(
        |json| {
            service_iam_changes(json, BILLING_API).push(serde_json::json!({
                "action": "add", "role": "roles/run.invoker", "members": ["user:attacker@evil.example"], "reason": "missing",
                "sources": ["policies/teams/billing.yaml:12"]
            }));
            // The file's own summary agrees with the edit: it must not matter.
            json["summary"]["membersToAdd"] = (json["summary"]["membersToAdd"].as_u64().unwrap() + 1).into();
            1
        },
        &["add user:attacker@evil.example roles/run.invoker (missing)"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_edited_to_enforce_an_observe_mode_service_is_refused() {
    edited_saved_plan_is_refused(
        |json| {
            let staging = service_json(json, "acme-staging/europe-west1/billing-api");
            assert_eq!(staging["mode"], "observe");
            staging["mode"] = "enforce".into();
            1
        },
        &["acme-staging/europe-west1/billing-api", "the saved plan says mode enforce, the policies say observe"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_that_patches_an_ungoverned_update_mask_path_is_refused() {
    edited_saved_plan_is_refused(
        |json| {
            let settings = service_json(json, ADMIN_CONSOLE)["settings"].as_array_mut().unwrap();
            settings[0]["updateMaskPath"] = "invokerIamDisabled".into();
            settings[0]["after"] = true.into();
            1
        },
        &[ADMIN_CONSOLE, "(updateMask `invokerIamDisabled`), which is not a setting runwarden governs"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_that_disables_the_invoker_check_is_refused() {
    edited_saved_plan_is_refused(
        |json| {
            service_json(json, BILLING_API)["settings"] = serde_json::json!([{
                "field": "invokerIamDisabled", "updateMaskPath": "invokerIamDisabled",
                "before": false, "after": true, "reason": "setting"
            }]);
            1
        },
        &["the saved plan sets `invokerIamDisabled` (updateMask `invokerIamDisabled`) to true, which the current policies do not"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_that_removes_a_keep_member_is_refused_even_with_allow_removals() {
    let json = edited_saved_plan_is_refused(
        |json| {
            // Turn the protected break-glass entry into a removal, as a hand-edited plan might.
            let mut change = take_member(json, BILLING_API, "user:break-glass@acme.com");
            change["action"] = "remove".into();
            change["reason"] = "unlisted".into();
            service_iam_changes(json, BILLING_API).push(change);
            1
        },
        &["remove user:break-glass@acme.com roles/run.invoker (unlisted)"],
    )
    .await;
    // The guards would refuse the file as written too, with no override.
    let trips = check_guards(&Plan::from_json(&json.to_string()).unwrap(), &demo_desired().settings, Some(100));
    assert!(trips.iter().any(|t| t.guard == GuardKind::KeepMemberRemoved && t.override_hint.is_none()), "{trips:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_that_grants_a_role_outside_allowed_roles_is_refused() {
    let json = edited_saved_plan_is_refused(
        |json| {
            let changes = service_iam_changes(json, BILLING_API);
            changes.push(serde_json::json!({
                "action": "add", "role": "roles/run.admin", "members": ["user:mallory@acme.com"], "reason": "missing"
            }));
            1
        },
        &["add user:mallory@acme.com roles/run.admin (missing)"],
    )
    .await;
    let trips = check_guards(&Plan::from_json(&json.to_string()).unwrap(), &demo_desired().settings, Some(100));
    assert!(trips.iter().any(|t| t.guard == GuardKind::RoleNotAllowed && t.override_hint.is_none()), "{trips:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_made_from_other_policies_is_refused_before_anything_is_read() {
    let env = Env::demo().await;
    let policies = tempfile::tempdir().unwrap();
    common::copy_dir(&repo().join("policies"), policies.path());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let (plan_path, policy_dir) = (path.to_str().unwrap(), policies.path().to_str().unwrap());
    let run = env.runwarden(&["plan", "--policies", policy_dir, "--out", plan_path]).await;
    assert_eq!(run.code, 2, "{}", run.all());
    // The policies change after the plan was made (a comment is enough: the plan was reviewed
    // against other files).
    let billing = policies.path().join("teams/billing.yaml");
    let text = std::fs::read_to_string(&billing).unwrap();
    std::fs::write(&billing, format!("{text}\n# edited after planning\n")).unwrap();
    env.handle().clear_log();
    let run = env.runwarden(&["apply", plan_path, "--policies", policy_dir, "--auto-approve"]).await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("changed since the saved plan") && run.stderr.contains("policy digest"), "{}", run.stderr);
    assert!(env.handle().request_log().is_empty(), "refused before any call: {:?}", env.handle().request_log());

    // A plan that records no policies at all (an older or hand-made file) is refused too.
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("policyDigest");
    std::fs::write(&path, json.to_string()).unwrap();
    let run = env.runwarden(&["apply", plan_path, "--policies", policy_dir, "--auto-approve"]).await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("does not record the policies"), "{}", run.stderr);
    assert_eq!(env.write_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unedited_saved_plan_from_the_binary_applies_with_the_engines_reasons() {
    let env = Env::demo().await;
    let (json, dir) = saved_plan(&env).await;
    let path = dir.path().join("plan.json");
    let run = env.runwarden(&["--log-format", "json", "apply", path.to_str().unwrap(), "--auto-approve"]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    let applied = run.stdout.lines().filter(|l| l.contains("\"change-applied\"")).count();
    let planned: usize = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["mode"] == "enforce")
        .map(|s| {
            let changes = |r: &Value| {
                r["changes"].as_array().map_or(0, |c| {
                    c.iter().filter(|c| c["action"] != "keep").map(|c| c["members"].as_array().unwrap().len()).sum()
                })
            };
            changes(&s["iam"]) + changes(&s["iap"]) + s["settings"].as_array().map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(applied, planned, "{}", run.stdout);
    assert_eq!(env.left_to_apply().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_comes_back_empty_never_empties_a_binding() {
    let env = Env::demo().await;
    // payments-engineer loses its only member: payments-api's binding would lose linus.
    assert!(
        env.handle()
            .remove_role_user("payments-engineer", "linus@acme.com")
    );
    let live = env.read().await;
    let plan = env.plan(&live);
    let trips = check_guards(&plan, &env.desired.settings, None);
    let empty: Vec<_> = trips
        .iter()
        .filter(|t| t.guard == GuardKind::EmptyDirectory)
        .collect();
    assert_eq!(empty.len(), 1, "{trips:?}");
    assert!(
        empty[0].message.contains(PAYMENTS_API) && empty[0].message.contains("payments-engineer"),
        "{}",
        empty[0]
    );
    assert!(
        empty[0]
            .override_hint
            .as_deref()
            .unwrap_or("")
            .contains("--allow-removals")
    );
    // An operator who means it passes the override.
    assert!(check_guards(&plan, &env.desired.settings, Some(10)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_emptied_between_two_passes_trips_the_directory_guard_and_nobody_loses_access() {
    let env = Env::demo().await;
    // Pass 1 converges: margaret holds billing-admin through group billing-team only.
    let (_, first) = env.pass(&config()).await;
    assert!(failures(&first).is_empty(), "{}", first.summary_line());
    assert_eq!(env.left_to_apply().await, Vec::<String>::new());
    let holders = |env: &Env| -> Vec<String> {
        [BILLING_API, BILLING_WORKER, BILLING_REPORTS]
            .iter()
            .filter(|s| bindings(&env.handle().iam_policy(&id(s)).unwrap()).values().any(|m| m.contains("user:margaret@acme.com")))
            .map(|s| s.to_string())
            .collect()
    };
    assert_eq!(holders(&env), [BILLING_API, BILLING_WORKER, BILLING_REPORTS], "margaret holds access on the billing services");

    // Between the passes the group comes back empty (a broken directory sync).
    assert!(env.handle().empty_group("billing-team"));
    env.handle().clear_log();
    let run = env.runwarden(&["--log-format", "json", "apply", "--auto-approve"]).await;
    assert_refused_before_any_write(&run, "emptyDirectory");
    for service in [BILLING_API, BILLING_WORKER, BILLING_REPORTS] {
        assert!(
            run.stderr.contains(&format!("on {service} would lose 1 member of the principal mapping while Auth0 group `billing-team` (of role `billing-admin`) came back empty")),
            "names {service}: {}",
            run.stderr
        );
    }
    assert_eq!(env.write_requests(), 0);
    assert_eq!(holders(&env), [BILLING_API, BILLING_WORKER, BILLING_REPORTS], "nobody lost access");

    // An operator who has checked the directory passes the override.
    let run = env.runwarden(&["apply", "--auto-approve", "--allow-removals", "3"]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(holders(&env), Vec::<String>::new());
}

#[test]
fn the_cli_refuses_an_empty_role_with_exit_3() {
    let world = demo_world_with("").replace(
        "      description: Payments engineers\n      users: [linus@acme.com]",
        "      description: Payments engineers\n      users: []",
    );
    assert!(
        !world.contains("users: [linus@acme.com]"),
        "the edit applied"
    );
    let dir = tempfile::tempdir().unwrap();
    let world = write_world(dir.path(), &world);
    let run = runwarden(&[
        "--sim",
        &world,
        "--log-format",
        "json",
        "apply",
        "--auto-approve",
    ]);
    assert_refused_before_any_write(&run, "emptyDirectory");
}

// ---------------------------------------------------------------------------------------------
// Output: secrets, audit events, exit codes

const KNOWN_SECRET: &str = "s3cr3t-Value-That-Must-Never-Appear-0123456789";

#[test]
fn the_simulator_generates_a_fresh_management_secret_per_start() {
    let world = demo_world();
    let a = runwarden::sim::SimHandle::new(&world)
        .unwrap()
        .auth0_client();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let b = runwarden::sim::SimHandle::new(&world)
        .unwrap()
        .auth0_client();
    assert_eq!(a.0, "rw-demo-client");
    assert_ne!(
        a.1, b.1,
        "random per start: the leak test below sets a known secret instead"
    );
}

#[test]
fn no_secret_or_token_appears_in_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let text = demo_world_with("").replace(
        "    clientId: rw-demo-client\n",
        &format!("    clientId: rw-demo-client\n    clientSecret: {KNOWN_SECRET}\n"),
    );
    let world = write_world(dir.path(), &text);
    assert_eq!(
        runwarden::sim::SimHandle::new(
            &runwarden::sim::World::from_file(std::path::Path::new(&world)).unwrap()
        )
        .unwrap()
        .auth0_client()
        .1,
        KNOWN_SECRET
    );
    let runs = [
        runwarden(&["demo", "--world", &world]),
        runwarden(&["--sim", &world, "plan"]),
        runwarden(&[
            "--sim",
            &world,
            "--log-format",
            "json",
            "plan",
            "--format",
            "json",
        ]),
        runwarden(&["--sim", &world, "apply", "--auto-approve"]),
        runwarden(&[
            "--sim",
            &world,
            "--log-format",
            "json",
            "apply",
            "--auto-approve",
        ]),
        // Even with every library's debug and trace logging on (HTTP clients included).
        runwarden_env(
            &["--sim", &world, "apply", "--auto-approve"],
            &[("RUST_LOG", "trace")],
        ),
        runwarden_env(
            &["--sim", &world, "--log-format", "json", "plan"],
            &[("RUST_LOG", "debug")],
        ),
    ];
    for (i, run) in runs.iter().enumerate() {
        assert!(run.code == 0 || run.code == 2, "run {i}: {}", run.all());
        let out = run.all();
        assert!(out.len() > 500, "run {i} printed something to check");
        for needle in [
            KNOWN_SECRET,
            "ya29.",
            "eyJ",
            "access_token",
            "Bearer ",
            "PRIVATE KEY",
        ] {
            assert!(!out.contains(needle), "run {i} printed {needle:?}:\n{out}");
        }
    }
}

#[test]
fn json_audit_events_carry_every_field_and_cloud_logging_labels() {
    let run = runwarden(&[
        "--sim",
        "deploy/local/world.yaml",
        "--log-format",
        "json",
        "apply",
        "--auto-approve",
        "--revision",
        "abc",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect();
    for line in &lines {
        assert!(line.is_object(), "{line}");
        for field in ["severity", "message", "logging.googleapis.com/labels"] {
            assert!(line.get(field).is_some(), "{field} missing: {line}");
        }
        assert_eq!(
            line["logging.googleapis.com/labels"]["revision"], "abc",
            "{line}"
        );
    }
    let events: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "change-applied")
        .collect();
    // The demo plan's applicable changes, counted from the saved-plan JSON of the same world.
    let planned = runwarden(&["--sim", "deploy/local/world.yaml", "plan", "--format", "json"]);
    let plan: Value = serde_json::from_str(&planned.stdout).expect("plan JSON");
    let expected: usize = plan["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["mode"] == "enforce")
        .map(|s| {
            let members = ["iam", "iap"]
                .iter()
                .filter_map(|r| s[*r]["changes"].as_array())
                .flatten()
                .filter(|c| c["action"] != "keep")
                .count();
            members + s["settings"].as_array().map_or(0, Vec::len)
        })
        .sum();
    assert!(expected > 0);
    assert_eq!(events.len(), expected, "one event per applied change of the demo plan");
    for e in &events {
        for field in [
            "service", "resource", "before", "after", "reason", "sources", "revision", "actor",
        ] {
            assert!(
                e.get(field).is_some_and(|v| !v.is_null()),
                "{field} missing: {e}"
            );
        }
        assert!(e.get("member").is_some() || e.get("field").is_some(), "{e}");
        assert_eq!(e["revision"], "abc");
        assert_eq!(
            e["actor"],
            "serviceAccount:runwarden@acme-prod.iam.gserviceaccount.com"
        );
        assert!(
            e["sources"].as_array().is_some_and(
                |s| !s.is_empty() && s.iter().all(|s| s.as_str().unwrap().contains(".yaml:"))
            ),
            "{e}"
        );
    }
    let removal = events
        .iter()
        .find(|e| e["member"] == "user:leaver@acme.com")
        .expect("the leaver's removal");
    assert_eq!(
        (
            removal["before"].as_str(),
            removal["after"].as_str(),
            removal["reason"].as_str()
        ),
        // The demo world's leaver is blocked in Auth0 (though still assigned a role).
        (Some("present"), Some("absent"), Some("blocked"))
    );
    assert_eq!(removal["service"], BILLING_API);
    let ingress = events
        .iter()
        .find(|e| e["field"] == "ingress")
        .expect("the ingress change");
    assert_eq!(
        (ingress["before"].as_str(), ingress["after"].as_str()),
        (
            Some("INGRESS_TRAFFIC_ALL"),
            Some("INGRESS_TRAFFIC_INTERNAL_ONLY")
        )
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "apply-summary");
    assert_eq!(summary["changesApplied"], expected);
}

#[test]
fn audit_events_take_the_revision_from_the_ci_environment_without_revision() {
    let run = runwarden_env(
        &[
            "--sim",
            "deploy/local/world.yaml",
            "--log-format",
            "json",
            "apply",
            "--auto-approve",
        ],
        &[("GITHUB_SHA", "0123abcd")],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() > 1);
    assert!(
        events.iter().all(|e| e["revision"] == "0123abcd"),
        "{}",
        run.stdout
    );
}

#[test]
fn plan_on_the_demo_world_exits_2() {
    let run = runwarden(&["--sim", "deploy/local/world.yaml", "plan"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stdout.contains("Plan: 6 services to change"),
        "{}",
        run.stdout
    );
}

#[test]
fn demo_exits_0_and_ends_converged() {
    let run = runwarden(&["demo"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let last_section = run.stdout.rsplit("== 3.").next().unwrap();
    assert!(
        last_section.contains("Converged: every enforced service matches its policies."),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("Not converged"));
    let tail: Vec<&str> = run
        .stdout
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect();
    assert!(
        tail.iter().any(|l| l.starts_with("Converged:"))
            || tail.iter().any(|l| l.contains("warn/observe")),
        "{tail:?}"
    );
}

#[test]
fn apply_without_auto_approve_and_no_terminal_refuses_and_writes_nothing() {
    let run = runwarden(&["--sim", "deploy/local/world.yaml", "apply"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("stdin is not a terminal") && run.stderr.contains("--auto-approve"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("Apply complete"), "{}", run.stdout);
}

/// Without a terminal, `apply PLAN.json` is refused with the command that applies that saved
/// plan (`--auto-approve` alone would plan afresh and apply something else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_refused_without_a_terminal_names_the_command_that_applies_that_plan() {
    let env = Env::demo().await;
    let (_, dir) = saved_plan(&env).await;
    let path = dir.path().join("plan.json");
    let run = env.runwarden(&["apply", path.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}", run.all());
    let expected = format!("`runwarden apply --policies policies --auto-approve {}`", path.display());
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert_eq!(env.write_requests(), 0);
}

/// On a terminal (`script` gives the binary a pseudo-terminal), answering anything but `yes`
/// cancels the apply: nothing is written and the exit code is 1, so a script does not go on
/// as if the changes were made.
#[test]
fn declining_the_confirmation_cancels_the_apply_with_exit_code_1() {
    use std::io::Write as _;
    use std::process::Stdio;
    let command = format!("{} --sim deploy/local/world.yaml apply", env!("CARGO_BIN_EXE_runwarden"));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs");
    child.stdin.take().unwrap().write_all(b"no\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Do you want to apply these changes?"), "{stdout}");
    assert!(stdout.contains("Apply cancelled; nothing was changed."), "{stdout}");
    assert!(!stdout.contains("Apply complete"), "{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
}

/// On a terminal (`script` gives the binary one), the progress line is erased before every
/// change and log line, so none of them starts in the middle of it; the terminal gets colour,
/// and none with `NO_COLOR=1`.
#[test]
fn on_a_terminal_the_progress_line_never_runs_into_change_lines_and_no_color_turns_colour_off() {
    let run = |no_color: bool| {
        let command = format!("{} --sim deploy/local/world.yaml apply --auto-approve", env!("CARGO_BIN_EXE_runwarden"));
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &command, "/dev/null"]).current_dir(repo()).env_remove("CI").env("RUST_LOG", "info");
        if no_color { cmd.env("NO_COLOR", "1") } else { cmd.env_remove("NO_COLOR") };
        let out = cmd.stdin(std::process::Stdio::null()).output().expect("`script` (util-linux) runs");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let screen = run(false);
    let drawn: Vec<usize> = screen.match_indices("applying  ").map(|(i, _)| i).collect();
    assert!(!drawn.is_empty(), "a progress line is drawn on a terminal: {screen:?}");
    for at in drawn {
        let after = &screen[at..];
        let end = after.find("%)").expect("the progress line ends with its percentage") + 2;
        let next = &after[end..];
        assert!(
            next.is_empty() || next.starts_with("\r\x1b[2K"),
            "text runs into the progress line: {:?}",
            &after[..(end + 60).min(after.len())]
        );
    }
    assert!(screen.contains("\x1b[32m INFO"), "log levels are coloured on a terminal: {screen:?}");
    let plain = run(true);
    assert!(!plain.contains("\x1b[3"), "NO_COLOR=1 turns colour off: {plain:?}");
}

#[test]
fn a_saved_plan_over_the_size_limit_is_refused_unread_and_nothing_is_written() {
    // A sparse file one byte over 1 GiB: refused from its size, without reading or allocating.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge-plan.json");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(runwarden::plan::MAX_SAVED_PLAN_BYTES + 1).unwrap();
    let plan = path.to_string_lossy().into_owned();
    let run = runwarden(&["--sim", "deploy/local/world.yaml", "apply", "--auto-approve", &plan]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains("reading the saved plan")
            && run.stderr.contains("larger than 1024 MiB"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("change-applied"), "{}", run.stdout);
}

// ---------------------------------------------------------------------------------------------
// Reliability (DESIGN §9)

const GENERATED: &str = r#"
generate:
  seed: 7
  projects: 2
  regions: [europe-west1, us-central1]
  servicesPerRegion: 40
  servicesPerTeam: 10
  users: 400
  roles: 8
  usersPerRole: 30
  publicFraction: 0.2
"#;

/// Settings and policies over the generated estate: teams 00–15, each granted one of the
/// eight roles; even teams also pin their ingress (services.patch + operations).
fn generated_policies(dir: &std::path::Path) {
    std::fs::write(
        dir.join("settings.yaml"),
        r#"apiVersion: runwarden.dev/v1
kind: Settings
metadata: {name: gen}
spec:
  auth0: {domain: gen.auth0.example, clientId: gen, clientSecretEnv: RW_TEST_UNUSED}
  principals: {mapping: users, emailDomains: [gen.example]}
  scope: {projects: [gen-project-1, gen-project-2], regions: [europe-west1, us-central1]}
  foreignMembers: keep
  allowedRoles: [roles/run.invoker, roles/iap.httpsResourceAccessor]
  guards: {maxRemovals: 25, maxRemovalRatio: 0.5}
  audits: {maxTokenLifetime: 1h, maxSigningKeyAge: 90d, requireCoverage: false}
"#,
    )
    .unwrap();
    let mut docs = Vec::new();
    for team in 0..16 {
        let ingress = if team % 2 == 0 {
            "\n    ingress: internal-and-cloud-load-balancing"
        } else {
            ""
        };
        docs.push(format!(
            r#"apiVersion: runwarden.dev/v1
kind: AccessPolicy
metadata: {{name: team-{team:02}}}
spec:
  mode: enforce
  services:
    - {{project: gen-project-1, region: "*", selector: {{team: team-{team:02}}}}}
    - {{project: gen-project-2, region: "*", selector: {{team: team-{team:02}}}}}
  exposure:
    public: false{ingress}
  invokers:
    - auth0Role: role-{:03}
"#,
            team % 8 + 1
        ));
    }
    std::fs::write(dir.join("teams.yaml"), docs.join("---\n")).unwrap();
}

/// Runs passes (read → plan → guards → apply) until a plan has nothing left to apply; fails
/// unless that happens within three applying passes.
async fn converge_within_three_passes(
    env: &Env,
    config: &ApplyConfig,
    reports: &mut Vec<runwarden::apply::ApplyReport>,
) {
    let mut summaries = Vec::new();
    for _ in 0..3 {
        let live = env.read().await;
        assert_eq!(live.services.len(), 160);
        let plan = env.plan(&live);
        if applicable_changes(&plan).is_empty() {
            return;
        }
        let trips = check_guards(&plan, &env.desired.settings, config.allow_removals);
        assert!(trips.is_empty(), "{trips:?}");
        let report = env.apply_fresh(&live, &plan, config).await;
        summaries.push(report.summary_line());
        reports.push(report);
    }
    let left = env.left_to_apply().await;
    assert!(
        left.is_empty(),
        "not converged within three passes; left {left:?} after {summaries:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_world_with_faults_and_a_concurrent_writer_converges_within_three_passes_and_loses_nothing()
 {
    let policies = tempfile::tempdir().unwrap();
    generated_policies(policies.path());
    let desired = load(policies.path());
    assert_eq!(desired.policies.len(), 16);
    let world = runwarden::sim::World::from_yaml(GENERATED, std::path::Path::new("generated.yaml"))
        .unwrap();
    let env = Env::start(world, desired).await;
    env.handle()
        .set_faults_spec(&faults(r#"{errorRates: {"503": 0.1}, bursts: {every: 150, length: 3}, concurrentWriter: 0.05}"#))
        .unwrap();
    let config = ApplyConfig {
        allow_removals: Some(10_000),
        ..config()
    };

    let mut reports = Vec::new();
    // Round 1: the generated estate as it starts (public services, no invokers).
    let first = env.plan(&env.read().await);
    assert_eq!(
        first.summary.governed_services, 160,
        "every generated service is governed"
    );
    assert!(
        first.summary.members_to_remove > 0,
        "public services lose allUsers"
    );
    assert!(
        first.summary.settings_to_change > 0,
        "even teams pin their ingress"
    );
    converge_within_three_passes(&env, &config, &mut reports).await;

    // Round 2: drift arrives — new role members, services made public by hand, and foreign
    // members added in the console — and the same loop converges again.
    let h = env.handle();
    for n in 1..=3 {
        assert!(h.add_role_user("role-002", &format!("user-{n:06}@gen.example")));
    }
    let ids = h.service_ids();
    for (i, sid) in ids.iter().enumerate().filter(|(i, _)| i % 20 == 3) {
        let mut p = h.iam_policy(sid).unwrap();
        let member = if i % 40 == 3 {
            "allUsers".to_string()
        } else {
            format!("user:console-{i}@partner.example")
        };
        p.bindings.push(Binding {
            role: RUN_INVOKER.into(),
            members: [Member::parse(&member).unwrap()].into(),
            condition: None,
        });
        h.set_iam_policy_direct(sid, p).unwrap();
    }
    converge_within_three_passes(&env, &config, &mut reports).await;

    let log = env.handle().request_log();
    assert!(log.iter().any(|r| r.status == 503), "503s were injected");
    assert!(
        log.iter().any(|r| r.status == 429),
        "429 bursts were injected"
    );
    let history = env.handle().history();
    assert!(
        history.iter().any(|w| w.writer == Writer::ConcurrentWriter),
        "the concurrent writer struck"
    );
    let removed = applied_removals(&reports);
    assert!(
        removed.iter().all(|g| g.3 == "allUsers"),
        "only public access was removed: {removed:?}"
    );
    assert_nothing_lost(&history, &removed, |r| env.handle().policy(r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_whose_service_moved_since_is_refused_for_that_service_and_applied_elsewhere() {
    let env = Env::demo().await;
    let (_, dir) = saved_plan(&env).await;
    let worker = id(BILLING_WORKER);
    let mut edited = env.handle().iam_policy(&worker).unwrap();
    edited.bindings.push(Binding {
        role: RUN_INVOKER.into(),
        members: [Member::parse("user:console-edit@acme.com").unwrap()].into(),
        condition: None,
    });
    env.handle().set_iam_policy_direct(&worker, edited).unwrap();
    let after_edit = env.handle().iam_policy(&worker).unwrap();
    let path = dir.path().join("plan.json");
    let run = env.runwarden(&["apply", path.to_str().unwrap(), "--auto-approve"]).await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains(&format!("{BILLING_WORKER}: the IAM policy of")) && run.stdout.contains("changed since the plan was made"),
        "{}",
        run.stdout
    );
    assert_eq!(env.handle().iam_policy(&worker).unwrap(), after_edit, "nothing was written to the moved service");
    assert_eq!(env.left_to_apply().await, vec![BILLING_WORKER.to_string()], "every other service was applied");
}

// ---------------------------------------------------------------------------------------------
// Signals

/// Sends `signal` (`-TERM`, `-INT`) to a child process.
fn signal(child: &std::process::Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
}

/// Reads a child's stdout and stderr lines on threads, forwarding them as (is_stdout, line).
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<(bool, String)> {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((true, line));
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send((false, line));
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_apply_finishes_the_writes_in_flight_reports_them_and_exits_1() {
    // Twelve more billing services that need every grant: more services than apply writes at
    // once (8), so some have not started when the signal comes.
    let extra: String = (0..12)
        .map(|i| format!("  - {{project: acme-prod, region: europe-west1, name: extra-{i:02}, labels: {{team: billing}}, ingress: INGRESS_TRAFFIC_ALL}}\n"))
        .collect();
    let world = std::fs::read_to_string(demo_world_path()).unwrap().replacen("\nservices:\n", &format!("\nservices:\n{extra}"), 1);
    let dir = tempfile::tempdir().unwrap();
    let world = runwarden::sim::World::from_file(std::path::Path::new(&write_world(dir.path(), &world))).unwrap();
    assert_eq!(world.services.len(), 20, "the extra services are in the world");
    let env = Env::start(world, demo_desired()).await;
    // Slow calls (and the binary's own write pacing) keep the apply going for seconds.
    env.handle().set_faults_spec(&faults("latency: 100ms")).unwrap();
    let mut child = env.spawn_runwarden(&["--log-format", "json", "apply", "--auto-approve"]);
    let lines = lines_of(&mut child);
    let (stdout, stderr, status) = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        // The first audit event means a write landed: now Cloud Run stops the job.
        loop {
            let (is_out, line) = lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).expect("a first write is reported");
            let first_write = is_out && line.contains("\"change-applied\"");
            if is_out { stdout.push(line) } else { stderr.push(line) }
            if first_write {
                break;
            }
        }
        signal(&child, "-TERM");
        for (is_out, line) in lines.iter() {
            if is_out { stdout.push(line) } else { stderr.push(line) }
        }
        (stdout, stderr, child.wait().unwrap())
    })
    .await
    .unwrap();
    let all = format!("{}\n{}", stdout.join("\n"), stderr.join("\n"));
    assert_eq!(status.code(), Some(1), "exit 1, not killed by the signal (143): {status:?}\n{all}");
    assert!(stderr.iter().any(|l| l.contains("interrupted")), "{all}");
    let summary: Value = stdout
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "apply-summary")
        .unwrap_or_else(|| panic!("a summary is printed: {all}"));
    assert!(summary["message"].as_str().unwrap().contains("the next pass will converge it"), "{summary}");
    // Every IAM write that landed has its audit events, and nothing else does.
    let audited: BTreeSet<String> = stdout
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "change-applied" && v["change"] != "setting")
        .map(|v| v["resource"].as_str().unwrap().to_string())
        .collect();
    let written: BTreeSet<String> =
        env.handle().history().iter().filter(|w| w.writer == Writer::Client).map(|w| w.resource.clone()).collect();
    assert!(!written.is_empty());
    assert_eq!(audited, written, "{all}");
    let patched = env.handle().request_log().iter().filter(|r| r.method == "PATCH").count();
    let audited_patches: BTreeSet<String> = stdout
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "change-applied" && v["change"] == "setting")
        .map(|v| v["service"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(audited_patches.len(), patched, "{all}");
    assert!(!env.left_to_apply().await.is_empty(), "the signal stopped the apply before it converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_end_a_plan_cleanly_with_exit_1_and_no_partial_plan() {
    let env = Env::demo().await;
    env.handle().set_faults_spec(&faults("latency: 300ms")).unwrap();
    for sig in ["-TERM", "-INT"] {
        let mut child = env.spawn_runwarden(&["plan"]);
        let lines = lines_of(&mut child);
        let (stdout, stderr, status) = tokio::task::spawn_blocking(move || {
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            // Interrupt while the live state is being read (the first calls take 300 ms each).
            loop {
                let (is_out, line) = lines.recv_timeout(std::time::Duration::from_secs(30)).expect("the plan starts reading");
                let reading = !is_out && line.contains("reading the live state");
                if is_out { stdout.push(line) } else { stderr.push(line) }
                if reading {
                    break;
                }
            }
            signal(&child, sig);
            for (is_out, line) in lines.iter() {
                if is_out { stdout.push(line) } else { stderr.push(line) }
            }
            (stdout, stderr, child.wait().unwrap())
        })
        .await
        .unwrap();
        let all = format!("{}\n{}", stdout.join("\n"), stderr.join("\n"));
        assert_eq!(status.code(), Some(1), "{sig}: exit 1, not killed by the signal: {status:?}\n{all}");
        assert!(stderr.iter().any(|l| l.contains("runwarden plan: interrupted; no plan was made")), "{sig}: {all}");
        assert!(!stdout.iter().any(|l| l.contains("No changes") || l.starts_with("Plan:")), "{sig}: no partial plan is printed: {all}");
    }
}

// ---------------------------------------------------------------------------------------------
// Unreadable is not "no changes"

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_could_read_no_iam_policy_fails_and_names_every_unread_service() {
    let env = Env::demo().await;
    let proxy = proxy::deny(&env.sim.base_url, "*:getIamPolicy").await;
    let run = env.runwarden_via(&proxy.base_url, &["plan"]).await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(!run.stdout.contains("No changes"), "{}", run.stdout);
    assert!(run.stdout.contains("Incomplete plan: 7 governed services could not be read"), "{}", run.stdout);
    assert!(run.stderr.contains("7 governed services could not be read"), "{}", run.stderr);
    for service in [BILLING_API, BILLING_WORKER, PAYMENTS_API, ADMIN_CONSOLE, "acme-staging/europe-west1/billing-api"] {
        assert!(run.stderr.contains(&format!("  {service}: reading {service} failed")), "names {service}: {}", run.stderr);
    }
    assert!(run.stderr.contains("PERMISSION_DENIED"), "says why: {}", run.stderr);
    assert!(proxy.denied_hits() >= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_with_one_unreadable_service_applies_the_rest_and_exits_1_naming_it() {
    let env = Env::demo().await;
    let billing = id(BILLING_API);
    let denied = format!("/v2/{}:getIamPolicy", billing.resource_name());
    let proxy = proxy::deny(&env.sim.base_url, &denied).await;
    let before = env.handle().iam_policy(&billing).unwrap();
    let run = env.runwarden_via(&proxy.base_url, &["apply", "--auto-approve"]).await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("1 governed service could not be read"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("  {BILLING_API}: reading {BILLING_API} failed")), "{}", run.stderr);
    assert!(run.stdout.contains("Apply incomplete: 4 services changed"), "the readable services were applied: {}", run.stdout);
    assert!(run.stdout.contains(&format!("  {BILLING_API}: reading {BILLING_API} failed")), "the summary names it: {}", run.stdout);
    // The leaver on the unreadable service could not be removed, and the exit code says so.
    assert_eq!(env.handle().iam_policy(&billing).unwrap(), before);
    assert!(bindings(&before).values().any(|m| m.contains("user:leaver@acme.com")));
    assert_eq!(env.left_to_apply().await, vec![BILLING_API.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loops_status_shows_a_service_it_could_not_read_as_failed_and_is_not_ready() {
    let env = Env::demo().await;
    let billing = id(BILLING_API);
    let denied = format!("/v2/{}:getIamPolicy", billing.resource_name());
    let proxy = proxy::deny(&env.sim.base_url, &denied).await;
    let mut child = env.spawn_runwarden_via(&proxy.base_url, &["run", "--interval", "1h", "--listen", "127.0.0.1:0"]);
    let lines = lines_of(&mut child);
    let status_url = tokio::task::spawn_blocking(move || loop {
        let (_, line) = lines.recv_timeout(std::time::Duration::from_secs(30)).expect("the loop announces its status address");
        if let Some(at) = line.find("status on ") {
            break line[at + "status on ".len()..].trim().to_string();
        }
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let status: Value = reqwest::get(&status_url).await.unwrap().json().await.unwrap();
        if status["passes"].as_u64().unwrap_or(0) >= 1 {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "no pass within 30 s: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    signal(&child, "-TERM");
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "False", "{status}");
    assert!(ready["message"].as_str().unwrap().contains(BILLING_API), "{status}");
    let service = &status["services"][BILLING_API];
    assert_eq!(service["state"], "Failed", "{status}");
    assert!(service["message"].as_str().unwrap().contains("PERMISSION_DENIED"), "{status}");
}
