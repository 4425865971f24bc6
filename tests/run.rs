//! The reconcile loop (`runwarden run`) against the in-process simulator: it corrects drift
//! injected between passes, keeps the last good policies on a bad commit, serves status and
//! metrics, and shuts down cleanly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use runwarden::apply::{ApplyConfig, AuditSink};
use runwarden::commands::LivePass;
use runwarden::iam::Member;
use runwarden::live::ServiceId;
use runwarden::pass::Connection;
use runwarden::reconcile::{LoopConfig, Trigger, router, run_loop, shared};
use tokio_util::sync::CancellationToken;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the example policies the test may edit.
fn policies_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("policies"), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Polls `condition` every 50 ms until it holds or `limit` passes (then fails with `what`).
async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_corrects_injected_drift_keeps_last_good_policies_and_reports_status() {
    let policies = policies_copy();
    let desired = runwarden::policy::load_at(policies.path(), SystemTime::now()).unwrap();
    let conn = Connection::embedded(&root().join("deploy/local/world.yaml"), &desired.settings)
        .await
        .unwrap();
    let sim = conn.sim().unwrap().handle.clone();
    sim.set_operation_delay(Duration::from_millis(20));
    let pass = Arc::new(LivePass::new(conn, ApplyConfig::default(), AuditSink::discard()));

    let mut config = LoopConfig::new(policies.path().to_path_buf(), Duration::from_secs(1));
    config.backoff_min = Duration::from_millis(200);
    let status = shared(&config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, router(status.clone())).into_future());
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_loop(config, pass, status.clone(), rx, stop.clone()));

    // The first pass converges the demo world.
    eventually("a first successful pass", Duration::from_secs(30), || {
        status.status().condition("Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    let billing = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    let leaver = Member::parse("user:leaver@acme.com").unwrap();
    assert!(!sim.iam_policy(&billing).unwrap().bindings.iter().any(|b| b.members.contains(&leaver)));

    // Someone grants access by hand: the next pass removes it (an owned acme.com member).
    let intruder = Member::parse("user:intruder@acme.com").unwrap();
    let inject = |member: &Member| {
        let mut policy = sim.iam_policy(&billing).unwrap();
        let binding = policy
            .bindings
            .iter_mut()
            .find(|b| b.role == "roles/run.invoker" && b.condition.is_none())
            .unwrap();
        binding.members.insert(member.clone());
        sim.set_iam_policy_direct(&billing, policy).unwrap();
    };
    let holds = |member: &Member| {
        sim.iam_policy(&billing).unwrap().bindings.iter().any(|b| b.members.contains(member))
    };
    inject(&intruder);
    assert!(holds(&intruder));
    eventually("the injected binding is removed", Duration::from_secs(15), || !holds(&intruder)).await;

    // A bad commit: reported as Stalled, and drift keeps being corrected with the last good
    // policies.
    let settings = policies.path().join("settings.yaml");
    let good = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(&settings, good.replace("maxRemovals: 25", "maxRemovals: lots")).unwrap();
    tx.send(Trigger::FileChange).await.unwrap();
    eventually("the bad revision is Stalled", Duration::from_secs(10), || {
        status.status().condition("Stalled").is_some_and(|c| c.status == "True")
    })
    .await;
    let stalled = status.status();
    assert!(stalled.condition("Stalled").unwrap().message.contains("settings.yaml"), "{:?}", stalled.conditions);
    assert_ne!(stalled.last_attempted_revision, stalled.last_applied_revision);
    let second = Member::parse("user:second-intruder@acme.com").unwrap();
    inject(&second);
    eventually("drift is corrected while stalled", Duration::from_secs(15), || !holds(&second)).await;

    // The fix arrives: Stalled clears.
    std::fs::write(&settings, &good).unwrap();
    tx.send(Trigger::FileChange).await.unwrap();
    eventually("the good revision clears Stalled", Duration::from_secs(10), || {
        status.status().condition("Stalled").is_some_and(|c| c.status == "False")
    })
    .await;

    // Status and metrics over HTTP.
    let body = reqwest::get(format!("http://{addr}/status")).await.unwrap().text().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["services"]["acme-staging/europe-west1/billing-api"]["state"], "Drifted", "{body}");
    assert!(json["passes"].as_u64().unwrap() >= 3, "{body}");
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("runwarden_changes_applied_total{kind=\"remove\"}"), "{metrics}");
    assert!(metrics.contains("runwarden_api_calls_total{api=\"cloudrun\",status=\"200\"}"), "{metrics}");
    assert_eq!(reqwest::get(format!("http://{addr}/readyz")).await.unwrap().status(), 200);

    // Shutdown: the loop returns promptly.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("likely deadlocked").unwrap();
}
