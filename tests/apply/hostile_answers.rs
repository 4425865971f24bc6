//! Hostile server answers, injected through the fault proxy (`tests/common/hostile.rs`) between
//! the real binary and the simulator: what runwarden does when Google or Auth0 answer something
//! broken or malicious.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::hostile::{Hostile, Rule};
use super::support::*;
use runwarden::sim::{RunningSim, World};
use serde_json::json;

/// The simulator on a runtime of its own, the hostile proxy in front of it, and the credentials
/// the binary needs to reach both through `--endpoint`.
pub struct Endpoint {
    pub sim: RunningSim,
    pub proxy: Hostile,
    key: PathBuf,
    secret: String,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Endpoint {
    pub fn demo() -> Endpoint {
        Endpoint::start(demo_world())
    }

    pub fn start(world: World) -> Endpoint {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (sim, proxy) = rt.block_on(async {
            let sim = runwarden::sim::spawn(world).await.expect("the simulator starts");
            sim.handle.set_operation_delay(Duration::from_millis(20));
            let proxy = Hostile::start(&sim.base_url).await;
            (sim, proxy)
        });
        let dir = tempfile::tempdir().unwrap();
        // The key file's token_uri is the proxy too: Google token requests can be faulted.
        let key = dir.path().join("key.json");
        std::fs::write(&key, sim.handle.key_file_json(&proxy.base_url)).unwrap();
        let secret = sim.auth0_client().1;
        Endpoint {
            sim,
            proxy,
            key,
            secret,
            _dir: dir,
            _rt: rt,
        }
    }

    /// The binary's arguments and environment to go through the proxy.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = crate::common::bin();
        cmd.arg("--endpoint")
            .arg(&self.proxy.base_url)
            .args(args)
            .current_dir(repo())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env("GOOGLE_APPLICATION_CREDENTIALS", &self.key)
            .env("AUTH0_CLIENT_SECRET", &self.secret)
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs `runwarden --endpoint PROXY ARGS` to the end.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("the runwarden binary runs"))
    }

    /// IAM writes that reached the simulator for `resource` (a Cloud Run or IAP resource name).
    pub fn writes_to(&self, resource: &str) -> usize {
        self.sim
            .handle
            .history()
            .iter()
            .filter(|w| w.resource == resource)
            .count()
    }

    /// `setIamPolicy` requests the simulator received whose path contains `fragment`.
    pub fn set_requests(&self, fragment: &str) -> usize {
        self.sim
            .handle
            .request_log()
            .iter()
            .filter(|r| r.path.contains(fragment) && r.path.ends_with(":setIamPolicy"))
            .count()
    }
}

const BILLING: &str = "projects/acme-prod/locations/europe-west1/services/billing-api";
const CONSOLE_IAP: &str = "iap_web/cloud_run-europe-west1/services/admin-console";

/// The services of the demo world that apply changes besides the faulted ones converge, and a
/// second plan (no faults) has only the faulted resource (and observe-mode drift) left.
fn assert_rest_converged(env: &Endpoint, faulted: &str) {
    for other in [
        "projects/acme-prod/locations/europe-west1/services/billing-worker",
        "projects/acme-prod/locations/us-central1/services/billing-reports",
    ] {
        assert_eq!(env.writes_to(other), 1, "{other} was written once");
    }
    env.proxy.clear();
    let again = env.run(&["plan"]);
    assert_eq!(again.code, 2, "{}", again.all());
    assert!(again.stdout.contains(faulted), "{}", again.stdout);
    // The changes (before the findings: a project-level bypass finding may name the service).
    let changes = again.stdout.split("\nFindings").next().unwrap_or_default();
    assert!(!changes.contains("billing-worker"), "{}", again.stdout);
}

#[test]
fn an_iam_policy_answer_without_an_etag_is_a_failed_read_and_nothing_is_written() {
    let leaver = "user:leaver@acme.com";
    for (case, answer, says) in [
        ("{}", json!({}), "has no etag"),
        ("[]", json!([]), "an IAM policy is a JSON object, the answer is an array"),
        (
            "bindings, no etag",
            json!({"version": 1, "bindings": [{"role": "roles/run.invoker", "members": [leaver]}]}),
            "has no etag",
        ),
        ("empty etag", json!({"etag": "", "bindings": []}), "has no etag"),
    ] {
        let env = Endpoint::demo();
        let before = env.sim.handle.policy(BILLING).unwrap();
        env.proxy.add(
            Rule::path_contains(&format!("/v2/{BILLING}:getIamPolicy"))
                .method("GET")
                .json(200, answer),
        );
        let plan = env.run(&["plan"]);
        assert!(
            plan.all().contains(says) && plan.all().contains("acme-prod/europe-west1/billing-api"),
            "{case}: the plan names the unreadable resource and why\n{}",
            plan.all()
        );
        let apply = env.run(&["apply", "--auto-approve"]);
        assert!(apply.all().contains(says), "{case}: {}", apply.all());
        assert_eq!(apply.code, 1, "{case}: an unreadable service fails the apply\n{}", apply.all());
        assert_eq!(env.writes_to(BILLING), 0, "{case}: billing-api was written");
        assert_eq!(env.set_requests("billing-api"), 0, "{case}: a setIamPolicy was sent");
        assert_eq!(env.sim.handle.policy(BILLING).unwrap(), before, "{case}");
        assert_rest_converged(&env, "billing-api");
    }
}

#[test]
fn an_iap_policy_answer_without_an_etag_is_a_failed_read_and_nothing_is_written() {
    let env = Endpoint::demo();
    env.proxy.add(
        Rule::path_contains(&format!("/{CONSOLE_IAP}:getIamPolicy"))
            .method("POST")
            .json(200, json!({"bindings": [{"role": "roles/iap.httpsResourceAccessor", "members": ["user:ada@acme.com"]}]})),
    );
    let apply = env.run(&["apply", "--auto-approve"]);
    assert!(apply.all().contains("has no etag"), "{}", apply.all());
    assert!(apply.all().contains("admin-console"), "{}", apply.all());
    assert_eq!(apply.code, 1, "an unreadable IAP policy fails the apply\n{}", apply.all());
    assert_eq!(env.set_requests("admin-console"), 0, "nothing written to admin-console");
    assert_rest_converged(&env, "admin-console");
}

/// Google's quota error, as Cloud Run answers it, with `details`.
fn resource_exhausted(details: serde_json::Value) -> serde_json::Value {
    json!({"error": {"code": 429, "message": "Quota exceeded for quota metric 'Read requests'",
        "status": "RESOURCE_EXHAUSTED", "details": details}})
}

/// Runs `args` and asserts the process ended by itself, not by a panic.
fn assert_no_panic(case: &str, run: &Run) {
    assert_ne!(run.code, 101, "{case}: the process panicked\n{}", run.all());
    assert!(!run.stderr.contains("panicked"), "{case}: {}", run.stderr);
}

#[test]
fn absurd_server_waits_never_panic_and_fail_only_the_call_that_got_them() {
    const HUGE: &str = "18446744073709551615";
    let billing = format!("/v2/{BILLING}:getIamPolicy");
    let cases: Vec<(&str, Rule)> = vec![
        (
            "Retry-After: u64::MAX on a 429",
            Rule::path_contains(&billing)
                .json(429, resource_exhausted(json!([])))
                .header("retry-after", HUGE),
        ),
        (
            "Retry-After beyond u64 on a 429",
            Rule::path_contains(&billing)
                .json(429, resource_exhausted(json!([])))
                .header("retry-after", "99999999999999999999999999999"),
        ),
        (
            "RetryInfo retryDelay 1e20s",
            Rule::path_contains(&billing).json(
                429,
                resource_exhausted(json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1e20s"}])),
            ),
        ),
    ];
    for (case, rule) in cases {
        let env = Endpoint::demo();
        env.proxy.add(rule);
        let run = env.run(&["apply", "--auto-approve"]);
        assert_no_panic(case, &run);
        assert!(run.all().contains("429"), "{case}: {}", run.all());
        assert_eq!(env.writes_to(BILLING), 0, "{case}");
        assert_eq!(
            env.proxy.hits(&billing),
            1,
            "{case}: a wait longer than runwarden waits is not waited for, and not retried at once"
        );
        assert_rest_converged(&env, "billing-api");
    }
}

#[test]
fn an_absurd_auth0_rate_limit_reset_never_panics_even_on_a_success() {
    const HUGE: &str = "18446744073709551615";
    // On a 200 (the budget header every answer carries), and with the budget exhausted.
    for remaining in ["100", "0"] {
        let env = Endpoint::demo();
        env.proxy.add(
            Rule::path_prefix("/api/v2/roles")
                .method("GET")
                .header("x-ratelimit-limit", "50")
                .header("x-ratelimit-remaining", remaining)
                .header("x-ratelimit-reset", HUGE),
        );
        let run = env.run(&["apply", "--auto-approve"]);
        assert_no_panic(remaining, &run);
        assert_eq!(run.code, 0, "remaining {remaining}: converges\n{}", run.all());
        assert_eq!(env.writes_to(BILLING), 1, "remaining {remaining}");
    }
    // On a 429: the wait is too long to honour, so the directory read fails at once.
    let env = Endpoint::demo();
    env.proxy.add(
        Rule::path_prefix("/api/v2/roles")
            .method("GET")
            .json(429, json!({"statusCode": 429, "error": "Too Many Requests", "message": "Global limit has been reached", "errorCode": "too_many_requests"}))
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", HUGE),
    );
    let started = Instant::now();
    let run = env.run(&["apply", "--auto-approve"]);
    assert_no_panic("429", &run);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains("Global limit has been reached"), "{}", run.all());
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert_eq!(env.sim.handle.history().len(), 0, "nothing written without the directory");
}

/// Starts `runwarden ARGS` through the proxy, waits until `ready` holds, sends `signal` and
/// returns how long the process took to exit and its stderr.
fn interrupt(env: &Endpoint, args: &[&str], signal: &str, ready: impl Fn() -> bool) -> (Duration, String) {
    use std::io::Read;
    let mut child = env
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < Duration::from_secs(30), "never got to the wait");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Well into the wait.
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
    let signalled = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if signalled.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: still running 20 s after {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = signalled.elapsed();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (took, stderr)
}

#[test]
fn a_signal_during_a_long_server_requested_wait_stops_the_process_promptly() {
    let list = "/v2/projects/acme-prod/locations/europe-west1/services?";
    // 100 s: below max_server_wait (120 s), so it is honoured, by the retry and the pacer.
    let throttled = || {
        Rule::path_prefix(list)
            .method("GET")
            .json(429, resource_exhausted(json!([])))
            .header("retry-after", "100")
    };
    for (args, signal) in [
        (&["run", "--interval", "1h", "--listen", "127.0.0.1:0"][..], "-TERM"),
        (&["apply", "--auto-approve"][..], "-INT"),
    ] {
        let env = Endpoint::demo();
        env.proxy.add(throttled());
        let (took, stderr) = interrupt(&env, args, signal, || env.proxy.hits(list) >= 1);
        assert!(took < Duration::from_secs(5), "{args:?}: {took:?} after {signal}\n{stderr}");
        assert_eq!(env.proxy.hits(list), 1, "{args:?}: no attempt after the signal");
    }
}

#[tokio::test]
async fn an_operation_that_answers_not_done_at_once_is_polled_spaced_and_bounded() {
    let mut env = Env::demo().await;
    let proxy = Hostile::start(&env.sim.base_url).await;
    env.through(&proxy.base_url);
    proxy.add(
        Rule::path_contains(":wait")
            .method("POST")
            .json(200, json!({"name": "projects/acme-prod/locations/europe-west1/operations/op-1", "done": false})),
    );
    let config = runwarden::apply::ApplyConfig {
        operation_timeout: Duration::from_secs(5),
        ..super::support::config()
    };
    let started = Instant::now();
    let (_, report) = env.pass(&config).await;
    let polls = proxy.hits(":wait");
    // Two services are patched (payments-api, admin-console), each polled at 0, 1, 2.5 and
    // 4.75 s until the 5 s deadline (with no spacing: thousands of calls).
    assert!((4..=10).contains(&polls), "{polls} operations.wait calls in 5 s");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    let failed: Vec<String> = failures(&report).iter().map(|f| format!("{f:?}")).collect();
    let timed_out = failed.iter().filter(|f| f.contains("did not finish within 5s")).count();
    assert_eq!(timed_out, 2, "{failed:?}");
}

#[test]
fn a_412_precondition_failed_on_a_write_is_a_conflict_re_read_and_re_planned_like_a_409() {
    // Terraform's Google provider treats 412 like 409 in its IAM read-modify-write loop; so does
    // runwarden (src/google/mod.rs, `classify`).
    let env = Endpoint::demo();
    let set = format!("/v2/{BILLING}:setIamPolicy");
    env.proxy.add(Rule::path_contains(&set).times(1).json(
        412,
        json!({"error": {"code": 412, "message": "Precondition check failed.", "status": "FAILED_PRECONDITION"}}),
    ));
    let run = env.run(&["apply", "--auto-approve"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(env.proxy.hits(&set), 2, "refused once, then written after a fresh read");
    assert_eq!(env.writes_to(BILLING), 1, "{}", run.all());
    assert!(run.all().contains("Apply complete"), "{}", run.all());
}

#[test]
fn a_member_in_a_form_runwarden_does_not_know_is_kept_and_the_service_is_still_planned() {
    // Issue 14: one member of an unknown form used to make the whole policy unreadable, and the
    // service was silently skipped on every pass. It is now kept as an opaque foreign member.
    let env = Endpoint::demo();
    let live = env.sim.handle.policy(BILLING).unwrap();
    let mut bindings: Vec<serde_json::Value> = live
        .bindings
        .iter()
        .map(|b| json!({"role": b.role, "members": b.members.iter().map(|m| m.as_str()).collect::<Vec<_>>()}))
        .collect();
    bindings.push(json!({"role": "roles/run.invoker", "members": ["futureKind:robot-7@acme.com"]}));
    env.proxy.add(
        Rule::path_contains(&format!("/v2/{BILLING}:getIamPolicy"))
            .method("GET")
            .json(200, json!({"version": 1, "etag": live.etag, "bindings": bindings})),
    );
    let plan = env.run(&["plan"]);
    let out = plan.all();
    assert!(!out.contains("read-failed"), "{out}");
    assert!(out.contains("futureKind:robot-7@acme.com") && out.contains("foreign (kept)"), "listed as a kept foreign member:\n{out}");
    assert!(out.contains("user:leaver@acme.com"), "billing-api is planned as usual:\n{out}");
}

#[test]
fn an_iap_agent_that_has_not_propagated_yet_leaves_iap_off_and_the_next_pass_switches_it_on() {
    // After generateServiceIdentity Google may still answer a grant to the new agent with 400
    // "Service account ... does not exist" for a while (gcloud: "IAP service agent not ready
    // yet"). The demo switches IAP on for admin-console in a project that never used IAP.
    let env = Endpoint::demo();
    let console = "projects/acme-prod/locations/europe-west1/services/admin-console";
    let set = format!("/v2/{console}:setIamPolicy");
    env.proxy.add(Rule::path_contains(&set).times(1).json(400, json!({"error": {
        "code": 400,
        "message": "Service account service-123456789012@gcp-sa-iap.iam.gserviceaccount.com does not exist.",
        "status": "INVALID_ARGUMENT"}})));
    let first = env.run(&["apply", "--auto-approve"]);
    let out = first.all();
    assert_eq!(first.code, 1, "{out}");
    assert!(out.contains("has not propagated yet") && out.contains("IAP stays off until then"), "{out}");
    assert!(out.contains("settings unchanged and nothing revoked"), "the state is reported: {out}");
    assert_eq!(env.proxy.hits("iap.googleapis.com:generateServiceIdentity"), 1, "the agent was created first");
    let id = runwarden::model::ServiceId::new("acme-prod", "europe-west1", "admin-console");
    assert!(!env.sim.handle.service(&id).unwrap().iap_enabled, "IAP is not switched on without the agent");
    assert!(!env.sim.handle.request_log().iter().any(|r| r.method == "PATCH" && r.path.ends_with("admin-console")));
    let second = env.run(&["apply", "--auto-approve"]);
    assert_eq!(second.code, 0, "{}", second.all());
    assert!(env.sim.handle.service(&id).unwrap().iap_enabled, "the next pass switches IAP on");
}
