//! The reconcile loop (`runwarden run`) against the in-process simulator: it corrects drift
//! injected between passes, keeps the last good policies on a bad commit, serves status and
//! metrics, and shuts down cleanly.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::common::{copy_dir, root};
use runwarden::apply::{ApplyConfig, AuditSink};
use runwarden::pass::LivePass;
use runwarden::iam::Member;
use runwarden::live::ServiceId;
use runwarden::pass::Connection;
use runwarden::reconcile::{LoopConfig, Trigger, router, run_loop, shared};
use tokio_util::sync::CancellationToken;


/// A copy of the example policies the test may edit.
fn policies_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("policies"), dir.path());
    dir
}

/// Polls `condition` every 50 ms until it holds or `limit` passes (then fails with `what`).
async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loop running in-process over the demo world with the policies in `dir` (one metrics
/// registry for the clients and the loop, as `runwarden run` wires it), its HTTP endpoints on
/// loopback, after its first successful pass: the start-up the loop tests share.
struct RunningLoop {
    sim: runwarden::sim::SimHandle,
    status: runwarden::reconcile::Shared,
    addr: std::net::SocketAddr,
    tx: tokio::sync::mpsc::Sender<Trigger>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningLoop {
    async fn start(dir: &Path) -> RunningLoop {
        let desired = runwarden::policy::load_at(dir, SystemTime::now()).unwrap();
        let metrics = Arc::new(runwarden::metrics::Metrics::default());
        let mut clients = runwarden::live::ClientConfig::default();
        clients.google.metrics = metrics.clone();
        let conn = Connection::embedded_with(&root().join("deploy/local/world.yaml"), &desired.settings, &clients)
            .await
            .unwrap();
        let sim = conn.sim().unwrap().handle.clone();
        sim.set_operation_delay(Duration::from_millis(20));
        let pass = Arc::new(LivePass::new(conn, ApplyConfig::default(), AuditSink::discard()));
        let mut config = LoopConfig::new(dir.to_path_buf(), Duration::from_secs(1));
        config.backoff_min = Duration::from_millis(200);
        config.metrics = metrics;
        let status = shared(&config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(status.clone())).into_future());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_loop(config, pass, status.clone(), rx, stop.clone()));
        eventually("a first successful pass", Duration::from_secs(30), || {
            status.status().condition("Ready").is_some_and(|c| c.status == "True")
        })
        .await;
        RunningLoop { sim, status, addr, tx, stop, task }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_corrects_injected_drift_keeps_last_good_policies_and_reports_status() {
    let policies = policies_copy();
    let RunningLoop { sim, status, addr, tx, stop, task } = RunningLoop::start(policies.path()).await;
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
    assert_eq!(json["services"]["acme-prod/us-central1/status-page"]["state"], "InSync", "every governed service is listed: {body}");
    assert!(json["services"].get("acme-staging/europe-west1/sandbox").is_none(), "ungoverned services are not: {body}");
    assert!(json["passes"].as_u64().unwrap() >= 3, "{body}");
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("runwarden_changes_applied_total{kind=\"remove\"}"), "{metrics}");
    assert!(metrics.contains("runwarden_api_calls_total{api=\"cloudrun\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("runwarden_api_calls_total{api=\"auth0\",status=\"200\"}"), "the Auth0 client counts in the same registry: {metrics}");
    assert_eq!(reqwest::get(format!("http://{addr}/readyz")).await.unwrap().status(), 200);

    // Shutdown: the loop returns promptly.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("likely deadlocked").unwrap();
}

/// Issue 15 §3: a guard trip holds its unit (the services of one set of policies) while the
/// other units keep converging; the hold is reported per service on every pass, and an
/// allowance committed in the policies lets exactly the held removals through once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_trip_holds_its_unit_the_rest_converges_and_a_committed_allowance_releases_it() {
    let policies = policies_copy();
    let RunningLoop { sim, status, addr, tx, stop, task } = RunningLoop::start(policies.path()).await;

    // The guard is tightened, then two intruders land on billing-api, one on payments-api.
    let settings = policies.path().join("settings.yaml");
    let tight = std::fs::read_to_string(&settings).unwrap().replace("maxRemovals: 25", "maxRemovals: 1");
    std::fs::write(&settings, &tight).unwrap();
    let billing = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    let payments = ServiceId::new("acme-prod", "europe-west1", "payments-api");
    let inject = |id: &ServiceId, member: &str| {
        let mut policy = sim.iam_policy(id).unwrap();
        let binding = policy.bindings.iter_mut().find(|b| b.role == "roles/run.invoker" && b.condition.is_none()).unwrap();
        binding.members.insert(Member::parse(member).unwrap());
        sim.set_iam_policy_direct(id, policy).unwrap();
    };
    let holds = |id: &ServiceId, member: &str| {
        let m = Member::parse(member).unwrap();
        sim.iam_policy(id).unwrap().bindings.iter().any(|b| b.members.contains(&m))
    };
    inject(&billing, "user:intruder-1@acme.com");
    inject(&billing, "user:intruder-2@acme.com");
    inject(&payments, "user:intruder-3@acme.com");
    tx.send(Trigger::FileChange).await.unwrap();

    // payments converges; billing is held, and says so on every pass.
    eventually("the payments intruder is removed", Duration::from_secs(15), || !holds(&payments, "user:intruder-3@acme.com")).await;
    eventually("billing-api is Held", Duration::from_secs(10), || {
        status.status().services.get("acme-prod/europe-west1/billing-api").is_some_and(|s| s.state == "Held")
    })
    .await;
    assert!(holds(&billing, "user:intruder-1@acme.com") && holds(&billing, "user:intruder-2@acme.com"));
    let body = reqwest::get(format!("http://{addr}/status")).await.unwrap().text().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let message = json["services"]["acme-prod/europe-west1/billing-api"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("guard maxRemovals tripped") && message.contains("guards.allowOnce"), "{message}");
    assert_ne!(json["services"]["acme-prod/europe-west1/payments-api"]["state"], "Held", "{body}");
    let held = json["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Held").cloned().unwrap_or_default();
    assert_eq!(held["status"], "True", "{body}");
    assert_eq!(reqwest::get(format!("http://{addr}/readyz")).await.unwrap().status(), 200, "a held unit is not an outage");
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    // The registry is process-wide (other loop tests share it), so only presence and a count
    // that has moved are checked here; the value per pass is the number of Held services.
    assert!(metrics.contains("runwarden_held_services "), "{metrics}");
    assert!(!metrics.contains("runwarden_guard_trips_total 0\n"), "{metrics}");

    // A reviewer commits the allowance the hold names: exactly those removals go through.
    let start = message.find("\"billing@").expect("the allowance is named") + 1;
    let token = &message[start..start + message[start..].find('"').unwrap()];
    std::fs::write(&settings, tight.replace("maxRemovals: 1", &format!("maxRemovals: 1\n    allowOnce: [\"{token}\"]"))).unwrap();
    tx.send(Trigger::FileChange).await.unwrap();
    eventually("the held intruders are removed", Duration::from_secs(15), || {
        !holds(&billing, "user:intruder-1@acme.com") && !holds(&billing, "user:intruder-2@acme.com")
    })
    .await;
    eventually("Held clears", Duration::from_secs(10), || status.status().condition("Held").is_some_and(|c| c.status == "False")).await;

    // The allowance was for those removals only: two new intruders are held again.
    inject(&billing, "user:intruder-4@acme.com");
    inject(&billing, "user:intruder-5@acme.com");
    tx.send(Trigger::Signal).await.unwrap();
    eventually("billing-api is Held again", Duration::from_secs(10), || {
        status.status().services.get("acme-prod/europe-west1/billing-api").is_some_and(|s| s.state == "Held")
    })
    .await;
    assert!(holds(&billing, "user:intruder-4@acme.com"));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("likely deadlocked").unwrap();
}

/// The deploy files are syntax-checked, and every runwarden command line in them is one the
/// binary accepts (so a renamed flag cannot silently break a deployment).
mod deploy {
    use super::root;
    use clap::Parser;
    use serde_json::Value;

    fn yaml(path: &str) -> Value {
        let text = std::fs::read_to_string(root().join(path)).unwrap();
        let options = serde_saphyr::options! { strict_booleans: true, duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error };
        serde_saphyr::from_str_with_options(&text, options).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
    }

    fn accepts(args: &[&str]) {
        let mut argv = vec!["runwarden"];
        argv.extend_from_slice(args);
        if let Err(e) = runwarden::cli::Cli::try_parse_from(&argv) {
            panic!("runwarden does not accept {args:?}: {e}");
        }
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect()
    }

    #[test]
    fn the_cloud_run_job_applies_with_auto_approve_and_the_service_runs_the_loop() {
        let job = yaml("deploy/cloudrun/job.yaml");
        assert_eq!(job["kind"], "Job");
        let container = &job["spec"]["template"]["spec"]["template"]["spec"]["containers"][0];
        let args = strings(&container["args"]);
        assert!(args.contains(&"apply") && args.contains(&"--auto-approve"), "{args:?}");
        accepts(&args);
        assert!(container["env"].as_array().unwrap().iter().any(|e| e["name"] == "AUTH0_CLIENT_SECRET" && e["valueFrom"]["secretKeyRef"].is_object()),
            "the secret comes from Secret Manager, never a literal");

        let service = yaml("deploy/cloudrun/service.yaml");
        assert_eq!(service["kind"], "Service");
        let container = &service["spec"]["template"]["spec"]["containers"][0];
        let args = strings(&container["args"]);
        assert_eq!(args[0], "run");
        accepts(&args);
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    }

    #[test]
    fn the_custom_roles_are_least_privilege_and_the_planner_only_reads() {
        let planner = yaml("deploy/iam/runwarden-planner.yaml");
        let applier = yaml("deploy/iam/runwarden-applier.yaml");
        let planner = strings(&planner["includedPermissions"]);
        let applier = strings(&applier["includedPermissions"]);
        for p in &planner {
            assert!(p.ends_with(".get") || p.ends_with(".list") || p.ends_with(".getIamPolicy"), "planner may only read: {p}");
            assert!(applier.contains(p), "the applier reads what the planner reads: {p}");
        }
        for p in &applier {
            // run.services.create is the one exception: Google requires it to turn the invoker
            // IAM check back on (invokerIamDisabled: true -> false; issue 14).
            let create_needed = *p == "run.services.create";
            assert!(
                !p.contains(".delete") && (!p.contains(".create") || create_needed) && !p.starts_with("iam.") && !p.starts_with("resourcemanager.projects.set"),
                "the applier needs no {p}"
            );
        }
        for needed in ["run.services.setIamPolicy", "iap.webServices.setIamPolicy", "run.services.update", "run.services.create", "serviceusage.services.use"] {
            assert!(applier.iter().any(|p| *p == needed), "apply's writes need {needed}");
        }
    }

    #[test]
    fn the_github_workflow_plans_pull_requests_and_applies_on_merge_without_keys() {
        let wf = yaml("deploy/github/runwarden.yml");
        assert!(wf["on"]["pull_request"].is_object() && wf["on"]["push"].is_object());
        let text = std::fs::read_to_string(root().join("deploy/github/runwarden.yml")).unwrap();
        assert!(!text.contains("credentials_json"), "Workload Identity Federation only: no key files");
        for job in ["plan", "apply"] {
            assert_eq!(wf["jobs"][job]["permissions"]["id-token"], "write", "{job} needs an OIDC token for WIF");
        }
        // Every `runwarden …` line the workflow runs is accepted by the binary.
        let mut checked = 0;
        for line in text.lines().map(str::trim) {
            let line = line.trim_end_matches('\\').trim();
            let line = line.strip_prefix("run: ").unwrap_or(line);
            if let Some(rest) = line.strip_prefix("runwarden ") {
                let args: Vec<&str> = rest
                    .split_whitespace()
                    .take_while(|a| !a.starts_with('>'))
                    .map(|a| a.trim_matches('"'))
                    .collect();
                accepts(&args);
                checked += 1;
            }
        }
        assert!(checked >= 3, "found {checked} runwarden command lines");
    }

    #[test]
    fn the_job_and_the_service_read_policies_from_the_bucket_mount_and_the_image_bakes_none_in() {
        for (file, spec) in [
            ("deploy/cloudrun/job.yaml", "/spec/template/spec/template/spec"),
            ("deploy/cloudrun/service.yaml", "/spec/template/spec"),
        ] {
            let doc = yaml(file);
            let spec = doc.pointer(spec).unwrap();
            let volume = &spec["volumes"][0];
            assert_eq!(volume["csi"]["driver"], "gcsfuse.run.googleapis.com", "{file}");
            assert_eq!(volume["csi"]["readOnly"], true, "{file}");
            assert_eq!(volume["csi"]["volumeAttributes"]["mountOptions"], "implicit-dirs", "{file}: revisions/<commit>/ are implicit directories");
            let mount = &spec["containers"][0]["volumeMounts"][0];
            assert_eq!(mount["name"], volume["name"], "{file}");
            assert_eq!(mount["mountPath"], "/policies", "{file}");
            let args = strings(&spec["containers"][0]["args"]);
            assert!(args.windows(2).any(|w| w == ["--policies", "/policies"]), "{file}: {args:?}");
        }
        let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
        assert!(!dockerfile.lines().any(|l| l.trim_start().starts_with("COPY policies")), "policies are published, never baked in");
        let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect("a .dockerignore keeps target/ out of the build context");
        for entry in ["target/", ".git/", "policies/"] {
            assert!(ignore.lines().any(|l| l.trim() == entry), ".dockerignore lacks {entry}");
        }
        for copied in dockerfile.lines().filter_map(|l| l.strip_prefix("COPY ")).filter(|l| !l.starts_with("--from")) {
            for source in copied.split_whitespace().rev().skip(1) {
                assert!(!ignore.lines().any(|l| l.trim().trim_end_matches('/') == source.trim_end_matches('/')), "the Dockerfile copies {source}, which .dockerignore leaves out");
            }
        }
    }

    #[test]
    fn the_pull_request_flow_comments_once_per_commit_and_applies_only_the_reviewed_plan_then_publishes() {
        let text = std::fs::read_to_string(root().join("deploy/github/runwarden.yml")).unwrap();
        let wf = yaml("deploy/github/runwarden.yml");
        let steps = |job: &str| wf["jobs"][job]["steps"].as_array().unwrap().clone();
        let step = |job: &str, name: &str| steps(job).into_iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{job}: no step {name:?}"));
        // Plan: Settings (where credentials go) from the base branch; base policies for drift.
        let plan = step("plan", "Plan")["run"].as_str().unwrap().to_string();
        assert!(plan.contains("--settings-from base/policies --settings-from \"$trusted\"") && plan.contains("--base-policies base/policies"), "{plan}");
        assert!(plan.contains("--out plan.json"));
        // One comment, found by its marker, updated in place, naming the commit, also on failure.
        let comment = step("plan", "Post or update the plan comment");
        assert_eq!(comment["if"], "${{ !cancelled() }}", "validation and plan failures replace the old plan too");
        let script = comment["with"]["script"].as_str().unwrap();
        // A plan with error findings exits 1 after printing itself: the comment still shows it.
        assert!(plan.contains("printed=1") && comment["env"]["PRINTED"].is_string(), "{plan}");
        for needle in ["<!-- runwarden-plan -->", "updateComment", "pr.head.sha", "Validation failed", "Plan failed", "The plan has errors"] {
            assert!(script.contains(needle), "the comment script lacks {needle}");
        }
        // Merge: the reviewed plan (the artifact of the merged head's run) and nothing else.
        let apply = step("apply", "Apply the reviewed plan")["run"].as_str().unwrap().to_string();
        assert!(apply.contains("reviewed/plan.json") && apply.contains("plan-meta.json"), "{apply}");
        assert!(steps("apply").iter().any(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/download-artifact")) && s["with"]["run-id"].is_string()));
        let post = step("apply", "Post the result to the pull request");
        assert!(post["if"].as_str().unwrap().contains("always()"), "the result is posted whatever it is");
        let publish = step("apply", "Publish the merged policies to the job's bucket");
        assert_eq!(publish["if"], "steps.apply.outputs.code == '0'", "only what was applied is published");
        // The released binary, never a build from source.
        assert!(!text.contains("cargo "), "no run builds runwarden");
        assert!(text.contains("sha256sum --check"), "the downloaded binary is checked");
        let release = yaml("deploy/github/release.yml");
        let release_text = std::fs::read_to_string(root().join("deploy/github/release.yml")).unwrap();
        assert!(release["on"]["push"]["tags"].is_array());
        assert_eq!(release_text.matches("cargo build --release").count(), 1, "built once");
        assert!(release_text.contains("runwarden-x86_64-unknown-linux-gnu.tar.gz.sha256"));
        assert!(text.contains("runwarden-x86_64-unknown-linux-gnu.tar.gz"), "the workflow downloads what the release publishes");
    }

    #[test]
    fn the_first_pull_request_connects_with_the_repository_variables_and_never_with_its_own_settings() {
        // The document the Plan step writes from the repository variables: the second
        // --settings-from, used when the base branch's Settings do not load.
        let plan = super::setup_script::workflow_step("plan", "Plan");
        let body: String = plan
            .split("<<SETTINGS\n")
            .nth(1)
            .and_then(|rest| rest.split("\nSETTINGS\n").next())
            .expect("a SETTINGS here-document")
            .replace("${AUTH0_DOMAIN}", "tenant.eu.auth0.com")
            .replace("${AUTH0_CLIENT_ID}", "trusted-client");
        assert!(!body.contains('$'), "{body}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("settings.yaml"), &body).unwrap();
        let settings = runwarden::policy::load_settings(dir.path(), std::time::SystemTime::now())
            .unwrap_or_else(|e| panic!("the generated Settings do not load: {e}\n{body}"));
        assert_eq!(settings.auth0.domain, "tenant.eu.auth0.com");
        assert_eq!(settings.auth0.client_id, "trusted-client");
        assert_eq!(settings.auth0.client_secret_env, "AUTH0_CLIENT_SECRET");
    }

    #[test]
    fn the_monitoring_files_are_log_metrics_and_alert_policies_over_runwardens_events() {
        for name in ["runwarden-failed-passes", "runwarden-guard-trips", "runwarden-successful-passes"] {
            let metric = yaml(&format!("deploy/monitoring/metrics/{name}.yaml"));
            // LogMetric fields (reference/google/logging.v2.json).
            for key in metric.as_object().unwrap().keys() {
                assert!(["description", "filter", "metricDescriptor", "labelExtractors", "valueExtractor"].contains(&key.as_str()), "{name}: {key}");
            }
            let filter = metric["filter"].as_str().unwrap();
            assert!(filter.contains("labels.app=\"runwarden\"") && filter.contains("jsonPayload.event="), "{name}: {filter}");
            assert_eq!(metric["metricDescriptor"]["metricKind"], "DELTA");
        }
        let policies = ["runwarden-failed-passes", "runwarden-guard-trips", "runwarden-stale-success"];
        for name in policies {
            let policy = yaml(&format!("deploy/monitoring/policies/{name}.yaml"));
            assert!(policy["displayName"].as_str().unwrap().starts_with("runwarden: "));
            let condition = &policy["conditions"][0];
            let filter = condition["conditionThreshold"]["filter"].as_str().or(condition["conditionAbsent"]["filter"].as_str()).unwrap();
            let metric = filter.split("logging.googleapis.com/user/").nth(1).unwrap().trim_end_matches('"');
            assert!(root().join(format!("deploy/monitoring/metrics/{metric}.yaml")).exists(), "{name} watches {metric}, which is not shipped");
        }
        let stale = yaml("deploy/monitoring/policies/runwarden-stale-success.yaml");
        assert!(stale["conditions"][0]["conditionAbsent"].is_object(), "staleness is the absence of successes");
    }

    /// The README's Deploying walkthrough and the scripts say the same thing: every parameter it
    /// passes to setup.sh is one setup.sh reads, publish.sh gets its three arguments, and every
    /// repository variable it names is one the workflow uses (and the reverse).
    #[test]
    fn the_readme_walkthrough_matches_the_scripts_and_the_workflow() {
        let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
        let section = &readme[readme.find("## Deploying").unwrap()..readme.find("## Performance").unwrap()];
        let setup = std::fs::read_to_string(root().join("deploy/cloudrun/setup.sh")).unwrap();
        let workflow = std::fs::read_to_string(root().join("deploy/github/runwarden.yml")).unwrap();
        // The setup.sh invocation, joined across its continuation lines.
        let invocation = section
            .split("```sh")
            .filter_map(|block| block.split("```").next())
            .find(|block| block.contains("deploy/cloudrun/setup.sh"))
            .expect("the walkthrough runs setup.sh")
            .replace("\\\n", " ");
        let params: Vec<&str> = invocation.split_whitespace().filter_map(|w| w.split_once('=').map(|(k, _)| k)).collect();
        assert!(params.len() >= 5, "{invocation}");
        for p in params {
            assert!(setup.contains(&format!("#   {p} ")) || setup.contains(&format!("{p}:?")), "the README passes {p}, which setup.sh does not read");
        }
        for required in ["CONTROL_PROJECT", "REGION", "GOVERNED_PROJECTS", "GITHUB_REPOSITORY"] {
            assert!(invocation.contains(&format!("{required}=")), "the README's setup.sh call lacks {required}");
        }
        let publish = section
            .split("```sh")
            .filter_map(|block| block.split("```").next())
            .find(|block| block.contains("deploy/cloudrun/publish.sh"))
            .expect("the walkthrough publishes the first revision")
            .replace("\\\n", " ");
        let args: Vec<&str> = publish.split_whitespace().skip_while(|w| !w.ends_with("publish.sh")).skip(1).collect();
        assert!(args.len() >= 3 && args[0] == "acme-runwarden-runwarden-policies", "BUCKET DIR COMMIT: {args:?}");
        // Repository variables: the README names exactly those the workflow reads.
        let used: std::collections::BTreeSet<&str> = workflow
            .match_indices("vars.")
            .map(|(i, _)| workflow[i + 5..].split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap())
            .collect();
        for var in &used {
            assert!(section.contains(&format!("`{var}`")), "the README does not tell to set {var}");
        }
        let printed: Vec<&str> = setup.split("<<DONE").nth(1).unwrap().lines().filter_map(|l| l.trim().split_once('=').map(|(k, _)| k)).collect();
        for var in printed {
            assert!(used.contains(var), "setup.sh prints {var}, which the workflow does not read");
        }
    }

    #[test]
    fn the_setup_script_is_valid_bash() {
        let status = std::process::Command::new("bash")
            .arg("-n")
            .arg(root().join("deploy/cloudrun/setup.sh"))
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Sharded jobs (`apply --shard I/N`, as Cloud Run job tasks run it) partition a generated
/// estate exactly, each reads only its own services' policies, and together they converge it.
mod shards {
    use super::*;
    use runwarden::live::Shard;
    use runwarden::plan::{PlanOptions, check_guards, plan};
    use runwarden::progress::Progress;
    use std::collections::BTreeSet;
    use std::fmt::Write as _;

    const WORLD: &str = "generate:
  seed: 5
  projects: 2
  regions: [europe-west1, us-central1]
  servicesPerRegion: 20
  servicesPerTeam: 10
  users: 120
  roles: 3
  usersPerRole: 25
  publicFraction: 0.25
simulator:
  operationDelay: 10ms
";

    /// Settings for the generated tenant and one policy per team, every team governed.
    fn policies(dir: &Path) {
        std::fs::write(
            dir.join("settings.yaml"),
            "apiVersion: runwarden.dev/v1
kind: Settings
metadata: {name: gen}
spec:
  auth0: {domain: gen.auth0.example, clientId: gen, clientSecretEnv: GEN_AUTH0_SECRET}
  principals: {mapping: users, emailDomains: [gen.example]}
  scope: {projects: [gen-project-1, gen-project-2], regions: [europe-west1, us-central1]}
  guards: {maxRemovals: 10000, maxRemovalRatio: 1}
",
        )
        .unwrap();
        let mut text = String::new();
        for team in 0..8 {
            let _ = write!(
                text,
                "---
apiVersion: runwarden.dev/v1
kind: AccessPolicy
metadata: {{name: team-{team:02}}}
spec:
  services:
    - {{project: gen-project-1, region: \"*\", selector: {{team: team-{team:02}}}}}
    - {{project: gen-project-2, region: \"*\", selector: {{team: team-{team:02}}}}}
  exposure: {{public: false}}
  invokers:
    - auth0Role: role-00{}
",
                1 + team % 3
            );
        }
        std::fs::write(dir.join("teams.yaml"), text).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_a_shard_another_shards_services_are_never_reported_as_matching_no_live_service() {
        let desired = runwarden::policy::load_at(&root().join("policies"), SystemTime::now()).unwrap();
        let conn = Connection::embedded(&root().join("deploy/local/world.yaml"), &desired.settings).await.unwrap();
        let progress = Arc::new(Progress::hidden());
        let now = SystemTime::now();
        let unmatched = |p: &runwarden::plan::Plan| -> BTreeSet<String> {
            p.findings.iter().filter(|f| f.code == "unmatched-service").map(|f| f.evidence.clone()).collect()
        };
        let full = runwarden::pass::read(&desired, &conn, &progress).await.unwrap();
        let expected = unmatched(&plan(&desired, &full, &PlanOptions::at(now)));
        for index in 0..4 {
            let live = runwarden::pass::read_shard(&desired, &conn, &progress, Some(Shard { index, count: 4 })).await.unwrap();
            assert!(live.services.len() < full.services.len(), "shard {index} is a part");
            let got = unmatched(&plan(&desired, &live, &PlanOptions::at(now)));
            assert_eq!(got, expected, "shard {index}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sharded_applies_partition_the_estate_exactly_and_together_converge_it() {
        let dir = tempfile::tempdir().unwrap();
        policies(dir.path());
        let world_dir = tempfile::tempdir().unwrap();
        let world = world_dir.path().join("world.yaml");
        std::fs::write(&world, WORLD).unwrap();
        let now = SystemTime::now();
        let desired = runwarden::policy::load_at(dir.path(), now).unwrap();
        let mut client = runwarden::live::ClientConfig::default();
        client.google.write_rate = runwarden::retry::Pace::Off; // the simulator has no write quota here
        let conn = Connection::embedded_with(&world, &desired.settings, &client).await.unwrap();
        let sim = conn.sim().unwrap().handle.clone();
        let all: BTreeSet<ServiceId> = sim.service_ids().into_iter().collect();
        assert_eq!(all.len(), 80);
        let progress = Arc::new(Progress::hidden());
        let config = ApplyConfig::default();
        let sink = AuditSink::discard();

        let mut seen: BTreeSet<ServiceId> = BTreeSet::new();
        for index in 0..3 {
            let shard = Shard { index, count: 3 };
            sim.clear_log();
            let live = runwarden::pass::read_shard(&desired, &conn, &progress, Some(shard)).await.unwrap();
            let mine: BTreeSet<ServiceId> = live.services.keys().cloned().collect();
            assert!(!mine.is_empty(), "shard {index} is empty");
            assert!(mine.iter().all(|id| shard.contains(id)));
            assert!(seen.is_disjoint(&mine), "shards overlap");
            seen.extend(mine.iter().cloned());
            // Only this shard's IAM policies were read.
            for r in sim.request_log().iter().filter(|r| r.path.ends_with(":getIamPolicy")) {
                let id = ServiceId::parse(r.path.trim_start_matches("/v2/").trim_end_matches(":getIamPolicy")).unwrap();
                assert!(mine.contains(&id), "shard {index} read {id}");
            }
            let planned = plan(&desired, &live, &PlanOptions::at(now));
            let trips = check_guards(&planned, &desired.settings, None);
            assert!(trips.is_empty(), "{trips:?}");
            let applier = runwarden::apply::Applier {
                google: &conn.clients.google,
                settings: &desired.settings,
                config: &config,
                source: runwarden::apply::PlanSource::Fresh { desired: &desired, live: &live, now },
                audit: &Default::default(),
                sink: &sink,
                shutdown: CancellationToken::new(),
                progress: &progress,
            };
            let report = runwarden::apply::apply(&planned, &applier).await;
            assert_eq!(report.failures().count(), 0, "{}", report.summary_line());
        }
        assert_eq!(seen, all, "every service is in exactly one shard");

        let live = runwarden::pass::read(&desired, &conn, &progress).await.unwrap();
        let after = plan(&desired, &live, &PlanOptions::at(now));
        let left: Vec<&str> = after.services.iter().filter(|s| s.has_changes()).map(|s| s.id.as_str()).collect();
        assert!(left.is_empty(), "not converged: {left:?}");
    }

    #[test]
    fn shard_arguments_are_checked_and_cloud_run_task_variables_are_read() {
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Shard::from_env(Some("2"), Some("3")), Ok(Some(Shard { index: 2, count: 3 })));
        assert_eq!(Shard::from_env(Some("0"), Some("1")), Ok(None), "one task: no sharding");
        assert_eq!(Shard::from_env(None, None), Ok(None));
    }
}

/// The real binary: `runwarden --sim … run` serves its status, and SIGTERM stops it cleanly
/// (exit 0) within a bound.
#[test]
fn the_run_command_serves_status_and_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = crate::common::bin()
        .current_dir(root())
        .args(["--sim", "deploy/local/world.yaml", "run", "--interval", "2s", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // "runwarden run: every 2s, watching policies; status on http://127.0.0.1:PORT/status"
    let deadline = Instant::now() + Duration::from_secs(30);
    let status_url = loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the loop announces its status address");
        if let Some(at) = line.find("status on ") {
            break line[at + "status on ".len()..].trim().to_string();
        }
    };
    let ready_url = status_url.replace("/status", "/readyz");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&ready_url).await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(30), "never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status: serde_json::Value = reqwest::get(&status_url).await.unwrap().json().await.unwrap();
        assert_eq!(status["conditions"][0]["type"], "Ready");
    });
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `run --interval` with absurd values is refused with a clear error (exit 1), never a panic.
#[test]
fn an_absurd_interval_is_refused_with_a_clear_error_not_a_panic() {
    for (interval, says) in [
        ("30000000000000w", "is too long"),
        ("18446744073709551615s", "is too long"),
        ("8d", "is too long"),
        ("99999999999999999999s", "the number is too large"),
        ("0s", "is too short"),
    ] {
        let out = crate::common::bin()
            .current_dir(root())
            .args(["--sim", "deploy/local/world.yaml", "run", "--interval", interval, "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{interval}: {stderr}");
        assert!(stderr.contains(&format!("--interval \"{interval}\"")) && stderr.contains(says), "{interval}: {stderr}");
        assert!(!stderr.contains("panicked"), "{interval}: {stderr}");
    }
}

/// Shared by the binary tests below: a child process killed when the test ends, and its output
/// lines as they arrive.
mod child {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Child;
    use std::sync::mpsc::{Receiver, channel};

    pub struct Running(pub Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Every line of `from`, read on a thread (so the child never blocks on a full pipe).
    pub fn lines(from: impl Read + Send + 'static) -> Receiver<String> {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    }
}

/// Publishes a copy of the example policies as revision `name` the way the merge workflow does
/// (the tree with its REVISION file first, then CURRENT), with `edit` applied to the copy.
fn publish(bucket: &Path, name: &str, edit: impl FnOnce(&Path)) {
    let dir = bucket.join("revisions").join(name);
    copy_dir(&root().join("policies"), &dir);
    edit(&dir);
    std::fs::write(dir.join("REVISION"), format!("{name}\n")).unwrap();
    std::fs::write(bucket.join("CURRENT"), format!("{name}\n")).unwrap();
}

/// The binary with no CI variables, so the revision can only come from the published files.
fn runwarden() -> std::process::Command {
    let mut command = crate::common::bin();
    command.env("RUST_LOG", "warn");
    for var in ["GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT", "BUILD_SOURCEVERSION", "COMMIT_SHA"] {
        command.env_remove(var);
    }
    command
}

#[test]
fn the_job_applies_the_published_revision_and_records_its_commit_in_every_audit_event() {
    let bucket = tempfile::tempdir().unwrap();
    publish(bucket.path(), "1111aaa", |_| {});
    let out = runwarden()
        .args(["--sim", "deploy/local/world.yaml", "--log-format", "json", "apply", "--auto-approve", "--policies"])
        .arg(bucket.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let changes = events.iter().filter(|e| e["event"] == "change-applied").count();
    assert!(changes > 0, "the demo world has drift to correct: {stdout}");
    for e in &events {
        assert_eq!(e["revision"], "1111aaa", "{e}");
    }
    assert_eq!(events.last().unwrap()["event"], "apply-summary");

    // A CURRENT naming a revision that was never uploaded is refused, saying what to do.
    std::fs::write(bucket.path().join("CURRENT"), "2222bbb").unwrap();
    let out = runwarden()
        .args(["--sim", "deploy/local/world.yaml", "--log-format", "json", "apply", "--auto-approve", "--policies"])
        .arg(bucket.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("names revision 2222bbb") && stderr.contains("re-run"), "{stderr}");
    // ...and logs the event the failed-pass log metric counts.
    let failed = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "pass-failed")
        .unwrap_or_else(|| panic!("no pass-failed entry: {stderr}"));
    assert_eq!(failed["severity"], "ERROR");
}

#[test]
fn a_converged_job_still_logs_its_summary_for_the_last_success_metric() {
    let bucket = tempfile::tempdir().unwrap();
    publish(bucket.path(), "3333ccc", |_| {});
    // Settings alone govern nothing, so there is nothing to apply (each --sim process starts
    // from the drifted demo world, so "already converged" is made this way).
    let dir = bucket.path().join("revisions/3333ccc/teams");
    std::fs::remove_dir_all(&dir).unwrap();
    let out = runwarden()
        .args(["--sim", "deploy/local/world.yaml", "--log-format", "json", "apply", "--auto-approve", "--policies"])
        .arg(bucket.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap();
    assert_eq!(summary["event"], "apply-summary");
    assert_eq!(summary["servicesFailed"], 0);
    assert_eq!(summary["revision"], "3333ccc");
}

#[test]
fn the_loop_applies_a_newly_published_revision_without_a_restart_and_exports_metrics_from_the_first_scrape() {
    use std::process::Stdio;
    let bucket = tempfile::tempdir().unwrap();
    publish(bucket.path(), "1111aaa", |_| {});
    let mut process = runwarden()
        .args(["--sim", "deploy/local/world.yaml", "--log-format", "json", "run", "--interval", "1s", "--listen", "127.0.0.1:0", "--policies"])
        .arg(bucket.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child::lines(process.stdout.take().unwrap());
    let stderr = child::lines(process.stderr.take().unwrap());
    let _running = child::Running(process);
    let deadline = Instant::now() + Duration::from_secs(30);
    let base = loop {
        let line = stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the loop announces its status address");
        if let Some(at) = line.find("status on ") {
            assert!(line.contains("re-reading") && line.contains("CURRENT"), "no file watch on a bucket: {line}");
            break line[at + "status on ".len()..].trim().trim_end_matches("/status").to_string();
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let get = |path: &str| rt.block_on(async { reqwest::get(format!("{base}{path}")).await.unwrap().text().await.unwrap() });
    let metrics = get("/metrics");
    for series in [
        "runwarden_guard_trips_total 0",
        "runwarden_passes_total{outcome=\"permanent\"} 0",
        "runwarden_changes_applied_total{kind=\"setting\"}",
        "runwarden_last_success_timestamp_seconds ",
        "runwarden_stalled 0",
    ] {
        assert!(metrics.contains(series), "{series} missing from the first scrape:\n{metrics}");
    }
    let applied = |revision: &str| {
        let start = Instant::now();
        loop {
            let status: serde_json::Value = serde_json::from_str(&get("/status")).unwrap();
            if status["lastAppliedRevision"] == revision {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{revision} never applied: {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    applied("1111aaa");
    let last_success: f64 = get("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("runwarden_last_success_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - last_success).abs() < 60.0, "last success {last_success}, now {now}");

    // The merge of a new commit: a new invoker, published while the loop runs.
    publish(bucket.path(), "2222bbb", |dir| {
        let file = dir.join("teams/billing.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        let line = "    - member: serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com\n";
        assert!(text.contains(line));
        std::fs::write(&file, text.replace(line, &format!("{line}    - member: serviceAccount:newjob@acme-prod.iam.gserviceaccount.com\n"))).unwrap();
    });
    applied("2222bbb");
    let start = Instant::now();
    loop {
        let line = stdout.recv_timeout(Duration::from_secs(30)).expect("an audit event for the new invoker");
        if line.contains("newjob@acme-prod") {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(event["revision"], "2222bbb", "{event}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}

#[test]
fn the_loop_reports_the_plans_findings_in_status_and_metrics_and_logs_each_once_when_it_appears() {
    use std::process::Stdio;
    let mut process = runwarden()
        .args(["--sim", "deploy/local/world.yaml", "--log-format", "json", "run", "--interval", "1s", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdout = child::lines(process.stdout.take().unwrap());
    let stderr = child::lines(process.stderr.take().unwrap());
    let _running = child::Running(process);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut logs: Vec<serde_json::Value> = Vec::new();
    let mut base = None;
    while logs.iter().filter(|l| l["message"].as_str().is_some_and(|m| m.contains("pass finished"))).count() < 3 {
        let line = stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("three passes finish");
        if let Some(at) = line.find("status on ") {
            let url = line[at + "status on ".len()..].split('"').next().unwrap().trim().trim_end_matches("/status").to_string();
            base = Some(url);
        }
        if let Ok(entry) = serde_json::from_str(&line) {
            logs.push(entry);
        }
    }
    let base = base.expect("the loop announces its status address");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let get = |path: &str| rt.block_on(async { reqwest::get(format!("{base}{path}")).await.unwrap().text().await.unwrap() });
    let status: serde_json::Value = serde_json::from_str(&get("/status")).unwrap();
    let codes = |list: &serde_json::Value| -> Vec<String> {
        list.as_array().map(|a| a.iter().map(|f| f["code"].as_str().unwrap().to_string()).collect()).unwrap_or_default()
    };
    // Tenant-wide: the Auth0 hygiene warning, with its evidence and fix, as `plan` shows it.
    let tenant = &status["findings"];
    assert!(codes(tenant).contains(&"auth0-token-lifetime-too-long".to_string()), "{status}");
    let lifetime = tenant.as_array().unwrap().iter().find(|f| f["code"] == "auth0-token-lifetime-too-long").unwrap();
    assert!(lifetime["evidence"].as_str().unwrap().contains("86400s") && lifetime["fix"].as_str().unwrap().contains("token_lifetime"), "{lifetime}");
    // Per service: the effective-access bypass on billing-api sits under that service.
    let billing = &status["services"]["acme-prod/europe-west1/billing-api"];
    assert!(codes(&billing["findings"]).contains(&"invoke-bypass".to_string()), "{status}");
    // The metric counts by code and severity; every catalogue code exists, at 0 when absent.
    let metrics = get("/metrics");
    let value = |series: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(series)).unwrap_or_else(|| panic!("{series} in\n{metrics}")).trim().parse().unwrap()
    };
    let in_status = |code: &str| {
        let per_service: usize = status["services"].as_object().unwrap().values().map(|s| codes(&s["findings"]).iter().filter(|c| *c == code).count()).sum();
        (per_service + codes(tenant).iter().filter(|c| *c == code).count()) as f64
    };
    assert!(in_status("invoke-bypass") >= 1.0);
    assert_eq!(value("runwarden_findings{code=\"invoke-bypass\",severity=\"warning\"}"), in_status("invoke-bypass"), "the metric counts what /status shows");
    assert_eq!(value("runwarden_findings{code=\"auth0-token-lifetime-too-long\",severity=\"warning\"}"), 1.0);
    assert_eq!(value("runwarden_findings{code=\"unknown-role\",severity=\"error\"}"), 0.0);
    // Logged when it appears, not on every pass: three passes, one entry per finding.
    let logged: Vec<&serde_json::Value> = logs.iter().filter(|l| l["event"] == "finding").collect();
    let bypass: Vec<_> = logged.iter().filter(|l| l["code"] == "invoke-bypass" && l["service"] == "acme-prod/europe-west1/billing-api").collect();
    assert_eq!(bypass.len(), 1, "{logged:?}");
    assert_eq!(bypass[0]["severity"], "WARNING", "{}", bypass[0]);
    assert!(bypass[0]["fix"].as_str().unwrap().contains("remove-iam-policy-binding"), "{}", bypass[0]);
    let lifetime_logged = logged.iter().filter(|l| l["code"] == "auth0-token-lifetime-too-long").count();
    assert_eq!(lifetime_logged, 1, "{logged:?}");
}

/// Pull-request planning as deploy/github/runwarden.yml runs it.
mod pull_requests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_base_branch_whose_policies_do_not_load_still_gets_a_plan_against_live_state_alone_that_says_so() {
        let base = tempfile::tempdir().unwrap();
        copy_dir(&root().join("policies"), base.path());
        std::fs::write(base.path().join("teams/broken.yaml"), "apiVersion: runwarden.dev/v1\nkind: AccessPolicy\nspec: [\n").unwrap();
        let missing = base.path().join("no-such-dir");
        for base_dir in [base.path(), missing.as_path()] {
            let out = runwarden()
                .args(["--sim", "deploy/local/world.yaml", "plan", "--format", "markdown", "--policies", "policies", "--base-policies"])
                .arg(base_dir)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(2), "a plan with changes: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains("base-policies-not-loaded") && stdout.contains("live state alone"), "{stdout}");
            assert!(stdout.contains("billing-api"), "the plan itself is there: {stdout}");
        }
    }

    /// A running `runwarden sim` (the connection is then made from the Settings, as in
    /// production: --sim would hand the client its credentials itself).
    fn sim() -> (child::Running, BTreeMap<String, String>) {
        let mut process = runwarden()
            .args(["sim", "--world", "deploy/local/world.yaml", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let lines = child::lines(process.stdout.take().unwrap());
        let running = child::Running(process);
        let mut exports = BTreeMap::new();
        while exports.len() < 4 {
            let line = lines.recv_timeout(Duration::from_secs(30)).expect("the export lines");
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                exports.insert(k.to_string(), v.to_string());
            }
        }
        (running, exports)
    }

    #[test]
    fn a_pull_request_that_moves_the_auth0_connection_is_planned_with_the_base_branchs_connection() {
        let (_sim, exports) = sim();
        let base = tempfile::tempdir().unwrap();
        copy_dir(&root().join("policies"), base.path());
        // The base's access policies may be broken: only its Settings are trusted and read.
        std::fs::write(base.path().join("teams/broken.yaml"), "kind: AccessPolicy\nspec: [\n").unwrap();
        let pr = tempfile::tempdir().unwrap();
        copy_dir(&root().join("policies"), pr.path());
        let settings = pr.path().join("settings.yaml");
        let text = std::fs::read_to_string(&settings).unwrap()
            .replace("domain: acme.eu.auth0.com", "domain: attacker.example")
            .replace("clientId: rw-demo-client", "clientId: attacker-client")
            .replace("clientSecretEnv: AUTH0_CLIENT_SECRET", "clientSecretEnv: PR_CHOSEN_SECRET");
        std::fs::write(&settings, text).unwrap();
        let plan = |extra: &[&Path]| {
            let mut command = runwarden();
            command.envs(&exports).env("PR_CHOSEN_SECRET", "a-secret-the-pull-request-picked").args(["plan", "--policies"]).arg(pr.path());
            for dir in extra {
                command.arg("--settings-from").arg(dir);
            }
            command.output().unwrap()
        };
        let tokens = |endpoint: &str| -> Vec<u64> {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let log: serde_json::Value = rt.block_on(async { reqwest::get(format!("{endpoint}/sim/requests")).await.unwrap().json().await.unwrap() });
            let _ = rt.block_on(reqwest::Client::new().delete(format!("{endpoint}/sim/requests")).send());
            log.as_array().unwrap().iter().filter(|r| r["path"] == "/oauth/token").map(|r| r["status"].as_u64().unwrap()).collect()
        };
        let endpoint = exports["RUNWARDEN_ENDPOINT"].clone();

        // The fault: with the pull request's own Settings, its client and its secret are sent.
        let out = plan(&[]);
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(tokens(&endpoint).iter().any(|s| *s != 200), "the pull request's client was presented and refused");

        let out = plan(&[base.path()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("connection-from-base") && stdout.contains("attacker.example"), "the plan says so: {stdout}");
        let statuses = tokens(&endpoint);
        assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == 200), "only the base branch's client was presented: {statuses:?}");

        // Several sources: the first whose Settings load (here the second: the first has none).
        let empty = tempfile::tempdir().unwrap();
        let out = plan(&[empty.path(), base.path()]);
        assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(tokens(&endpoint).iter().all(|s| *s == 200));

        // No usable Settings anywhere: refused, never a fallback to the pull request's.
        let out = plan(&[empty.path()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("--settings-from") && stderr.contains("base branch"), "{stderr}");
        assert!(tokens(&endpoint).is_empty(), "nothing was sent");
    }
}

/// deploy/cloudrun/setup.sh against a recording stub `gcloud` first on PATH: every call is
/// checked against this machine's real gcloud (the command exists, each flag is in its
/// `--help`), and the script is run twice — from nothing, then with everything in place — to
/// show it deploys and can be re-run.
mod setup_script {
    use super::root;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const STUB: &str = r#"#!/usr/bin/env bash
# Records each call (arguments separated by US), answers like gcloud would for a project where
# nothing exists yet (STUB_EXISTING=0) or everything does (STUB_EXISTING=1).
{ printf 'gcloud'; for a in "$@"; do printf '\x1f%s' "$a"; done; printf '\n'; } >> "$STUB_DIR/calls"
for a in "$@"; do
  v="${a#--*=}"
  case "$v" in *.yaml) [ -f "$v" ] && cp "$v" "$STUB_DIR/$(basename "$v")" ;; esac
done
case " $* " in
  *" projects describe "*) echo 123456789012; exit 0 ;;
  *" versions add "*) cat > "$STUB_DIR/stdin"; exit 0 ;;
  *" cp - "*) cat > /dev/null; exit 0 ;;
  *" describe "*) if [ "$STUB_EXISTING" = 1 ]; then echo "name: existing"; exit 0; fi
                  echo "ERROR: (gcloud) NOT_FOUND: not found" >&2; exit 1 ;;
  *" list "*) if [ "$STUB_EXISTING" = 1 ]; then echo "projects/p/things/1"; fi; exit 0 ;;
esac
exit 0
"#;

    const SECRET: &str = "s3cr3t-value-never-in-argv";

    struct Run {
        status: std::process::ExitStatus,
        stderr: String,
        calls: Vec<Vec<String>>,
        dir: tempfile::TempDir,
    }

    fn run_setup(existing: bool, env: &[(&str, &str)]) -> Run {
        run_script(&[root().join("deploy/cloudrun/setup.sh").to_str().unwrap()], existing, env, |_| {})
    }

    /// `bash ARGS` in a fresh directory (prepared by `prepare`) with the stub first on PATH.
    fn run_script(args: &[&str], existing: bool, env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Run {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let stub = bin.join("gcloud");
        std::fs::write(&stub, STUB).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let mut command = Command::new("bash");
        command
            .args(args)
            .current_dir(dir.path()) // setup.sh finds its files itself, from any directory
            .env_clear()
            .env("PATH", path)
            .env("HOME", dir.path())
            .env("STUB_DIR", dir.path())
            .env("STUB_EXISTING", if existing { "1" } else { "0" });
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        let calls = std::fs::read_to_string(dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('\u{1f}').skip(1).map(str::to_string).collect())
            .collect();
        Run { status: out.status, stderr: String::from_utf8_lossy(&out.stderr).into_owned(), calls, dir }
    }

    const PARAMS: &[(&str, &str)] = &[
        ("CONTROL_PROJECT", "acme-runwarden"),
        ("REGION", "europe-west1"),
        ("GOVERNED_PROJECTS", "acme-prod acme-staging"),
        ("GITHUB_REPOSITORY", "acme/access-policies"),
        ("RUNTIME_SERVICE_ACCOUNTS", "billing@acme-prod.iam.gserviceaccount.com"),
        ("NOTIFICATION_CHANNELS", "projects/acme-runwarden/notificationChannels/42"),
    ];

    /// The real gcloud: its static command tree (to tell the command path from positional
    /// arguments) and, per command path, the flags its `--help` lists.
    struct Gcloud {
        tree: serde_json::Value,
        config: tempfile::TempDir,
    }

    impl Gcloud {
        fn new() -> Gcloud {
            let config = tempfile::tempdir().unwrap();
            let out = Command::new("gcloud")
                .args(["info", "--format=value(installation.sdk_root)"])
                .env("CLOUDSDK_CONFIG", config.path())
                .output()
                .expect("gcloud must be installed: the deploy test checks setup.sh against it");
            let sdk = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            let text = std::fs::read_to_string(sdk.join("data/cli/gcloud_completions.py"))
                .unwrap_or_else(|e| panic!("gcloud's command tree in {}: {e}", sdk.display()));
            let tree = serde_json::from_str(&text[text.find('{').unwrap()..]).expect("the command tree is JSON");
            Gcloud { tree, config }
        }

        /// The longest run of leading arguments that names a gcloud command.
        fn command_path(&self, args: &[String]) -> Vec<String> {
            let mut node = &self.tree;
            let mut path = Vec::new();
            for a in args {
                match node["commands"].get(a.as_str()) {
                    Some(next) => {
                        node = next;
                        path.push(a.clone());
                    }
                    None => break,
                }
            }
            assert!(
                node["commands"].as_object().is_some_and(|c| c.is_empty()) && !path.is_empty(),
                "`gcloud {}` is not a gcloud command (it resolves to the group `{}`)",
                args.join(" "),
                path.join(" ")
            );
            path
        }

        /// `gcloud PATH --help`: checks its NAME line and returns every flag it lists.
        fn help_flags(&self, path: &[String]) -> BTreeSet<String> {
            let out = Command::new("gcloud")
                .args(path)
                .arg("--help")
                .env("CLOUDSDK_CONFIG", self.config.path())
                .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
                .output()
                .unwrap();
            let raw = String::from_utf8_lossy(&out.stdout);
            let mut text = String::new();
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    text.push(c);
                }
            }
            assert!(out.status.success() && text.contains(&format!("gcloud {} - ", path.join(" "))), "gcloud {} --help:\n{text}", path.join(" "));
            let mut flags = BTreeSet::new();
            for (i, _) in text.match_indices("--") {
                let rest = &text[i + 2..];
                let (negatable, rest) = match rest.strip_prefix("[no-]") {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
                if !name.is_empty() {
                    if negatable {
                        flags.insert(format!("no-{name}"));
                    }
                    flags.insert(name);
                }
            }
            flags
        }
    }

    /// Checks every call against gcloud: one `--help` per distinct command path (of both runs
    /// together), three at a time (each costs a Python start-up).
    fn check_calls(gcloud: &Gcloud, calls: &[Vec<String>]) {
        let paths: BTreeMap<Vec<String>, ()> = calls.iter().map(|c| (gcloud.command_path(c), ())).collect();
        let paths: Vec<Vec<String>> = paths.into_keys().collect();
        let mut helps: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = paths
                .chunks(paths.len().div_ceil(3).max(1))
                .map(|chunk| s.spawn(move || chunk.iter().map(|p| (p.clone(), gcloud.help_flags(p))).collect::<Vec<_>>()))
                .collect();
            for h in handles {
                helps.extend(h.join().unwrap());
            }
        });
        for call in calls {
            let path = gcloud.command_path(call);
            let flags = &helps[&path];
            for arg in call.iter().filter(|a| a.starts_with("--")) {
                let name = arg[2..].split('=').next().unwrap();
                assert!(flags.contains(name), "`gcloud {}`: --{name} is not in `gcloud {} --help`", call.join(" "), path.join(" "));
            }
        }
    }

    fn paths(run: &Run, gcloud: &Gcloud) -> Vec<String> {
        run.calls.iter().map(|c| gcloud.command_path(c).join(" ")).collect()
    }

    fn yaml(path: &Path) -> serde_json::Value {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!text.contains("${"), "a parameter was left in {}:\n{text}", path.display());
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
    }

    #[test]
    fn setup_deploys_from_nothing_and_a_second_run_changes_nothing_it_should_not_with_every_call_checked_against_gcloud_help() {
        let gcloud = Gcloud::new();
        let mut env = PARAMS.to_vec();
        env.push(("AUTH0_CLIENT_SECRET", SECRET));
        let first = run_setup(false, &env);
        assert!(first.status.success(), "{}", first.stderr);
        let done = paths(&first, &gcloud);
        for expected in [
            "services enable",
            "artifacts repositories create",
            "builds submit",
            "iam service-accounts create",
            "iam roles create",
            "projects add-iam-policy-binding",
            "iam service-accounts add-iam-policy-binding",
            "secrets create",
            "secrets versions add",
            "secrets add-iam-policy-binding",
            "storage buckets create",
            "storage buckets add-iam-policy-binding",
            "iam workload-identity-pools create",
            "iam workload-identity-pools providers create-oidc",
            "run jobs replace",
            "run jobs add-iam-policy-binding",
            "scheduler jobs create http",
            "logging metrics create",
            "alpha monitoring policies create",
        ] {
            assert!(done.iter().any(|p| p == expected), "the first run never called `gcloud {expected}`: {done:#?}");
        }
        let all: Vec<String> = first.calls.iter().map(|c| c.join(" ")).collect();
        let has = |needle: &str| all.iter().any(|c| c.contains(needle));
        assert!(has("--role=roles/iam.serviceAccountUser") && has("billing@acme-prod.iam.gserviceaccount.com"), "actAs on the runtime accounts");
        assert!(has("--role=roles/iam.workloadIdentityUser"), "GitHub may impersonate");
        assert!(has("attribute.repository/acme/access-policies") && has("attribute.ref/refs/heads/main"));
        assert!(has("assertion.repository == 'acme/access-policies'"), "only this repository's tokens are accepted");
        assert!(has("run.googleapis.com") && has("secretmanager.googleapis.com") && has("sts.googleapis.com"));
        assert_eq!(all.iter().filter(|c| c.starts_with("iam service-accounts create")).count(), 4);
        assert_eq!(all.iter().filter(|c| c.starts_with("iam roles create")).count(), 4, "two roles in two projects");
        // The secret goes on stdin, never into an argument (which other users can see).
        assert!(!all.iter().any(|c| c.contains(SECRET)), "the secret was an argument");
        assert_eq!(std::fs::read_to_string(first.dir.path().join("stdin")).unwrap(), SECRET);
        // The job file gcloud received has every parameter filled in, and mounts the bucket.
        let job = yaml(&first.dir.path().join("job.yaml"));
        let spec = &job["spec"]["template"]["spec"]["template"]["spec"];
        assert_eq!(spec["serviceAccountName"], "runwarden-applier@acme-runwarden.iam.gserviceaccount.com");
        assert_eq!(spec["containers"][0]["image"], "europe-west1-docker.pkg.dev/acme-runwarden/runwarden/runwarden:v0.1.0");
        assert_eq!(spec["volumes"][0]["csi"]["volumeAttributes"]["bucketName"], "acme-runwarden-runwarden-policies");

        // Again, with everything in place (and no secret at hand): nothing is created twice.
        let mut env = PARAMS.to_vec();
        env.push(("RUNWARDEN_MODE", "service"));
        let second = run_setup(true, &env);
        assert!(second.status.success(), "{}", second.stderr);
        // Publishing (publish.sh, and the same step inlined in the merge workflow) is checked
        // with the same --help pass, and both issue exactly the same commands.
        let policies = |dir: &Path| super::copy_dir(&root().join("policies"), &dir.join("policies"));
        let env = [("POLICY_BUCKET", "acme-runwarden-runwarden-policies"), ("GITHUB_SHA", "0123abc")];
        let script = root().join("deploy/cloudrun/publish.sh");
        let by_script = run_script(&[script.to_str().unwrap(), "acme-runwarden-runwarden-policies", "policies", "0123abc"], false, &env, policies);
        assert!(by_script.status.success(), "{}", by_script.stderr);
        let workflow = workflow_step("apply", "Publish the merged policies to the job's bucket");
        let by_workflow = run_script(&["-euo", "pipefail", "-c", &workflow], false, &env, policies);
        assert!(by_workflow.status.success(), "{}", by_workflow.stderr);
        assert_eq!(by_script.calls, by_workflow.calls, "the workflow publishes as publish.sh does");
        let order: Vec<String> = by_script.calls.iter().map(|c| c.last().unwrap().clone()).collect();
        assert!(order.last().unwrap().ends_with("/CURRENT") && by_script.calls.len() == 3, "CURRENT is written last: {order:?}");
        let both: Vec<Vec<String>> = first.calls.iter().chain(&second.calls).chain(&by_script.calls).cloned().collect();
        check_calls(&gcloud, &both);
        let again = paths(&second, &gcloud);
        for p in &again {
            assert!(!p.ends_with("create") && !p.ends_with("create http") && !p.ends_with("create-oidc") && p != "secrets versions add" && p != "builds submit",
                "the second run called `gcloud {p}`");
        }
        for expected in ["iam roles update", "iam workload-identity-pools providers update-oidc", "logging metrics update", "alpha monitoring policies update", "run services replace"] {
            assert!(again.iter().any(|p| p == expected), "the second run never called `gcloud {expected}`: {again:#?}");
        }
        let service = yaml(&second.dir.path().join("service.yaml"));
        assert_eq!(service["spec"]["template"]["spec"]["volumes"][0]["csi"]["driver"], "gcsfuse.run.googleapis.com");
    }

    /// The `run:` script of one step of deploy/github/runwarden.yml.
    pub fn workflow_step(job: &str, name: &str) -> String {
        let text = std::fs::read_to_string(root().join("deploy/github/runwarden.yml")).unwrap();
        let wf: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let steps = wf["jobs"][job]["steps"].as_array().unwrap();
        let step = steps.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no step {name:?} in job {job}"));
        step["run"].as_str().unwrap().to_string()
    }

    #[test]
    fn setup_refuses_before_any_call_when_a_parameter_is_missing() {
        let env: Vec<_> = PARAMS.iter().copied().filter(|(k, _)| *k != "GITHUB_REPOSITORY").collect();
        let run = run_setup(false, &env);
        assert!(!run.status.success());
        assert!(run.stderr.contains("GITHUB_REPOSITORY"), "{}", run.stderr);
        assert!(run.calls.is_empty(), "{:?}", run.calls);
        // A first run without the secret at hand says which variable to set.
        let run = run_setup(false, PARAMS);
        assert!(!run.status.success());
        assert!(run.stderr.contains("AUTH0_CLIENT_SECRET"), "{}", run.stderr);
    }
}

/// The loop as a service runs it: logs to a pipe (no terminal), `NO_COLOR` unset. No ANSI
/// escape reaches the logs; the first pass prints its changes and one summary, and the idle
/// passes after it print no "Apply complete: 0 services changed" line; durations are rounded.
#[test]
fn the_loop_logs_to_a_pipe_without_colour_and_prints_no_summary_for_idle_passes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = crate::common::bin()
        .current_dir(root())
        .args(["--sim", "deploy/local/world.yaml", "run", "--interval", "1s", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("CI")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut logs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while logs.iter().filter(|l: &&String| l.contains("pass finished")).count() < 3 {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("three passes finish");
        logs.push(line);
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs = logs.join("\n");
    assert!(!logs.contains('\x1b'), "colour codes in logs written to a pipe:\n{logs:?}");
    assert!(!stdout.contains('\x1b'), "colour codes in output written to a pipe:\n{stdout:?}");
    let summaries: Vec<&str> = stdout.lines().filter(|l| l.starts_with("Apply ")).collect();
    assert_eq!(summaries.len(), 1, "one summary, for the pass that wrote:\n{stdout}");
    assert!(summaries[0].starts_with("Apply complete: 5 services changed"), "{}", summaries[0]);
    assert!(!stdout.contains("(s)"), "{stdout}");
    for line in logs.lines().filter(|l| l.contains("pass finished")) {
        let seconds = line.split("seconds=").nth(1).and_then(|s| s.split(' ').next()).expect("a duration");
        assert!(seconds.len() <= "123.456".len(), "a sane duration: {line}");
    }
}

/// An audit sink's output, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn events(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// One loop pass (`LivePass`, as `runwarden run` drives it) over the demo world with
/// `world_edit` applied, its JSON audit events, the entries.list calls it made, and how many
/// services the plan gives reverted drift (enforce mode: removals, settings).
async fn one_loop_pass(world_edit: impl FnOnce(String) -> String) -> (Vec<serde_json::Value>, usize, usize) {
    use runwarden::reconcile::Pass;
    let world_dir = tempfile::tempdir().unwrap();
    let world = world_dir.path().join("world.yaml");
    std::fs::write(&world, world_edit(std::fs::read_to_string(root().join("deploy/local/world.yaml")).unwrap())).unwrap();
    let policies = root().join("policies");
    let desired = runwarden::policy::load_at(&policies, SystemTime::now()).unwrap();
    let conn = Connection::embedded_with(&world, &desired.settings, &Default::default()).await.unwrap();
    let sim = conn.sim().unwrap().handle.clone();
    sim.set_operation_delay(Duration::from_millis(10));
    let captured = Captured::default();
    let pass = LivePass::new(conn, ApplyConfig::default(), AuditSink::new(true, Box::new(captured.clone())));
    let live = runwarden::live::read_live(&desired, &pass.connection().clients, &Default::default()).await.unwrap();
    let plan = runwarden::plan::plan(&desired, &live, &runwarden::plan::PlanOptions::at(SystemTime::now()));
    let enforced = |s: &&runwarden::plan::ServicePlan| s.mode == runwarden::plan::PlanMode::Enforce;
    let removes = |s: &&runwarden::plan::ServicePlan| {
        s.iam.iter().chain(s.iap.iter()).flat_map(|r| &r.changes).any(|c| c.action == runwarden::plan::Action::Remove)
    };
    let expected = plan.services.iter().filter(enforced).filter(removes).count()
        + plan.services.iter().filter(enforced).filter(|s| !s.settings.is_empty()).count();
    let observed_drift = plan.services.iter().filter(|s| !enforced(s)).filter(|s| removes(s) || !s.settings.is_empty()).count();
    assert!(observed_drift > 0, "the demo world has drift in an observe-mode service, which the loop must not query");
    sim.clear_log();
    let desired = Arc::new(pass.load(&policies).unwrap());
    pass.run(desired, "abc1234".into(), CancellationToken::new()).await.expect("the pass succeeds");
    let queries = sim.request_log().iter().filter(|r| r.method == "POST" && r.path == "/v2/entries:list").count();
    (captured.events(), queries, expected)
}

fn applied<'e>(events: &'e [serde_json::Value], key: &str, value: &str, service: &str) -> &'e serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == "change-applied" && e[key] == value && e["service"] == service)
        .unwrap_or_else(|| panic!("no applied change {key}={value} on {service}: {events:?}"))
}

/// Issue 18: the loop's audit events say whose change the reverted drift was (members and
/// settings), with one audit query per service whose drift is reverted and none for drift in
/// observe mode.
#[tokio::test]
async fn the_loops_audit_events_name_who_made_the_drift_they_revert() {
    let (events, queries, expected) = one_loop_pass(|w| w).await;
    assert_eq!(queries, expected, "one entries.list per reverted member drift and per reverted settings drift");
    let leaver = applied(&events, "member", "user:leaver@acme.com", "acme-prod/europe-west1/billing-api");
    assert_eq!(leaver["change"], "remove");
    assert_eq!(leaver["addedBy"], "added by platform-admin@acme.com (api) 2026-03-02 08:30 UTC", "{leaver}");
    assert_eq!(leaver["revision"], "abc1234");
    let ingress = applied(&events, "field", "ingress", "acme-prod/europe-west1/payments-api");
    assert_eq!(ingress["addedBy"], "changed by dev-lead@acme.com (console) 2026-11-28 16:45 UTC", "{ingress}");
    assert!(ingress["message"].as_str().unwrap().ends_with("— changed by dev-lead@acme.com (console) 2026-11-28 16:45 UTC"), "{ingress}");
    // Grants revert nothing: no attribution on them.
    let grant = events.iter().find(|e| e["change"] == "add").expect("the demo world has grants");
    assert!(grant.get("addedBy").is_none(), "{grant}");
}

/// Issue 18: a Logging API the credential may not read makes attribution unknown, with why,
/// and the pass still succeeds and reverts the drift.
#[tokio::test]
async fn an_unreadable_audit_log_leaves_attribution_unknown_and_the_pass_succeeds() {
    let (events, _, _) = one_loop_pass(|w| {
        w.replacen("\nsimulator:\n", "\nsimulator:\n  missingPermissions: [logging.logEntries.list]\n", 1)
    })
    .await;
    let leaver = applied(&events, "member", "user:leaver@acme.com", "acme-prod/europe-west1/billing-api");
    let why = leaver["addedBy"].as_str().unwrap();
    assert!(why.starts_with("added by: unknown (the audit log could not be read: ") && why.contains("logging.logEntries.list"), "{why}");
    let ingress = applied(&events, "field", "ingress", "acme-prod/europe-west1/payments-api");
    assert!(ingress["addedBy"].as_str().unwrap().starts_with("changed by: unknown (the audit log could not be read: "), "{ingress}");
}
