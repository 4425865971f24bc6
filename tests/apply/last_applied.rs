//! Issue 15 §1: deleting a policy line revokes what it granted. runwarden records what it granted
//! on the service (annotation `runwarden.dev/last-applied`), so a member it granted that no
//! policy grants any more is removed as `revoked`, while a member added by hand stays foreign.

use std::time::SystemTime;

use runwarden::iam::{Member, RUN_INVOKER};
use runwarden::model::LAST_APPLIED_ANNOTATION;
use runwarden::plan::{Action, Reason};

use super::support::*;
use crate::common::copy_dir;

const BOB: &str = "user:bob@partner.example";
const CAROL: &str = "user:carol@partner.example";
const BILLING_API: &str = "acme-prod/europe-west1/billing-api";

/// The example policies with one more line in billing's invokers.
fn policies_with_bob() -> (tempfile::TempDir, runwarden::policy::model::Desired) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("policies"), dir.path());
    let file = dir.path().join("teams/billing.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}    - member: {BOB}\n")).unwrap();
    let desired = runwarden::policy::load_at(dir.path(), SystemTime::now()).expect("policies load");
    (dir, desired)
}

fn invokers(env: &Env) -> Vec<String> {
    let policy = env.handle().iam_policy(&id(BILLING_API)).unwrap();
    policy
        .binding(RUN_INVOKER, None)
        .map(|b| b.members.iter().map(|m| m.as_str().to_string()).collect())
        .unwrap_or_default()
}

/// The record on billing-api once the record-only patches in flight have landed (they are not
/// waited for), or `None` when none is there after a while.
async fn settled_record(env: &Env) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let annotations = env.handle().service(&id(BILLING_API)).unwrap().annotations;
        match annotations.get(LAST_APPLIED_ANNOTATION) {
            Some(r) => return Some(r.clone()),
            None if std::time::Instant::now() > deadline => return None,
            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_line_revokes_what_it_granted_and_a_hand_added_member_of_the_same_domain_stays() {
    let (_dir, with_bob) = policies_with_bob();
    let mut env = Env::start(demo_world(), with_bob).await;
    let (_, report) = env.pass(&config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    assert!(invokers(&env).contains(&BOB.to_string()), "bob was granted");
    let annotations = env.handle().service(&id(BILLING_API)).unwrap().annotations;
    let record = annotations.get(LAST_APPLIED_ANNOTATION).expect("the record is written");
    assert!(record.contains(&format!("\"{BOB}\":\"test-rev\"")), "{record}");

    // Someone adds carol by hand, same domain as bob.
    let mut policy = env.handle().iam_policy(&id(BILLING_API)).unwrap();
    let b = policy.bindings.iter_mut().find(|b| b.role == RUN_INVOKER && b.condition.is_none()).unwrap();
    b.members.insert(Member::parse(CAROL).unwrap());
    env.handle().set_iam_policy_direct(&id(BILLING_API), policy).unwrap();

    // The line is deleted.
    env.desired = demo_desired();
    let live = env.read().await;
    let plan = env.plan(&live);
    let svc = plan.services.iter().find(|s| s.id == BILLING_API).expect("billing-api is planned");
    let change = |m: &str| svc.member_changes().find(|c| c.member.as_str() == m).cloned();
    let bob = change(BOB).expect("bob is in the plan");
    assert_eq!((bob.action, bob.reason), (Action::Remove, Reason::Revoked));
    assert!(bob.note.as_deref().unwrap_or("").contains("revision test-rev"), "{bob:?}");
    let carol = change(CAROL).expect("carol is listed");
    assert_eq!((carol.action, carol.reason), (Action::Keep, Reason::Foreign));
    let text = runwarden::plan::render_text(&plan, false);
    assert!(text.contains("revoked"), "{text}");

    let report = env.apply_fresh(&live, &plan, &config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    let now = invokers(&env);
    assert!(!now.contains(&BOB.to_string()) && now.contains(&CAROL.to_string()), "{now:?}");
    // A record-only patch is not waited for: its operation finishes after apply returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let record = loop {
        let annotations = env.handle().service(&id(BILLING_API)).unwrap().annotations;
        let record = annotations[LAST_APPLIED_ANNOTATION].clone();
        if !record.contains(BOB) || std::time::Instant::now() > deadline {
            break record;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(!record.contains(BOB), "bob is no longer recorded: {record}");
    assert!(record.contains("invoicer@acme-prod"), "what policies still grant stays recorded: {record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_record_is_reported_and_never_revokes_anyone() {
    let env = Env::demo().await;
    let (_, report) = env.pass(&config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    // The pass's record write lands first, so it cannot overwrite the edit below.
    settled_record(&env).await.expect("the pass writes billing-api's record");
    let mut policy = env.handle().iam_policy(&id(BILLING_API)).unwrap();
    let b = policy.bindings.iter_mut().find(|b| b.role == RUN_INVOKER && b.condition.is_none()).unwrap();
    b.members.insert(Member::parse(CAROL).unwrap());
    env.handle().set_iam_policy_direct(&id(BILLING_API), policy).unwrap();
    let patch = runwarden::sim::ServicePatch {
        annotations: Some([(LAST_APPLIED_ANNOTATION.to_string(), format!("{{\"v\":1,\"grants\":{{\"{RUN_INVOKER}\":[\"{CAROL}\"]}}}}"))].into()),
        ..Default::default()
    };
    assert!(env.handle().update_service(&id(BILLING_API), &patch));

    let plan = env.plan(&env.read().await);
    assert!(plan.findings.iter().any(|f| f.code == "last-applied-unreadable"), "{:?}", plan.findings);
    let svc = plan.services.iter().find(|s| s.id == BILLING_API).unwrap();
    let carol = svc.member_changes().find(|c| c.member.as_str() == CAROL).unwrap();
    assert_eq!((carol.action, carol.reason), (Action::Keep, Reason::Foreign));
}

/// A service runwarden adopted already in sync (bob granted by hand before, and now by a
/// policy line; no record on the service): the plan has no access change, shows the record to
/// write, and apply writes it; deleting the line then revokes bob like any member runwarden
/// granted itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_adopted_in_sync_gets_its_record_and_deleting_a_line_then_revokes() {
    let (_dir, with_bob) = policies_with_bob();
    let mut env = Env::start(demo_world(), with_bob).await;
    let (_, report) = env.pass(&config()).await;
    assert!(failures(&report).is_empty(), "{}", report.summary_line());
    settled_record(&env).await.expect("the pass writes billing-api's record");
    // Adoption: the same access, but no record (as on a service runwarden never changed).
    let patch = runwarden::sim::ServicePatch { annotations: Some(Default::default()), ..Default::default() };
    assert!(env.handle().update_service(&id(BILLING_API), &patch));
    assert!(!env.handle().service(&id(BILLING_API)).unwrap().annotations.contains_key(LAST_APPLIED_ANNOTATION));

    let live = env.read().await;
    let plan = env.plan(&live);
    let svc = plan.services.iter().find(|s| s.id == BILLING_API).expect("billing-api is listed for its record");
    assert!(!svc.has_changes(), "no access change on billing-api: {svc:?}");
    assert_eq!(svc.record_members, Some(2), "bob and the invoicer service account are recorded");
    assert_eq!(plan.summary.records_to_write, 1);
    let text = runwarden::plan::render_text(&plan, false);
    assert!(text.contains("~ record runwarden.dev/last-applied: 2 members granted by the policies"), "{text}");
    assert!(text.contains("1 last-applied record to write"), "{text}");

    let report = env.apply_fresh(&live, &plan, &config()).await;
    assert!(failures(&report).is_empty() && report.events.is_empty(), "a record changes nobody's access: {}", report.summary_line());
    let record = settled_record(&env).await.expect("apply writes the record");
    assert!(record.contains(BOB), "{record}");
    let again = env.plan(&env.read().await);
    assert!(again.services.iter().all(|s| s.id != BILLING_API || !s.writes_record()), "written once, then in sync");

    // The line is deleted: bob is revoked (he would be kept as foreign without the record).
    env.desired = demo_desired();
    let plan = env.plan(&env.read().await);
    let svc = plan.services.iter().find(|s| s.id == BILLING_API).expect("billing-api is planned");
    let bob = svc.member_changes().find(|c| c.member.as_str() == BOB).expect("bob is in the plan");
    assert_eq!((bob.action, bob.reason), (Action::Remove, Reason::Revoked));
}

/// Observe and warn never write anything, the record included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_in_observe_mode_gets_no_record() {
    let env = Env::demo().await;
    let plan = env.plan(&env.read().await);
    for s in plan.services.iter().filter(|s| !s.is_applicable()) {
        assert!(!s.writes_record(), "{} is {:?}", s.id, s.mode);
    }
    assert!(plan.services.iter().any(|s| !s.is_applicable()), "the demo world has an observe-mode service");
}
