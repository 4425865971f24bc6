//! Shared set-up of the apply tests: an in-process simulator on loopback with the real clients
//! wired to it (no pacing, quick retries), one pass's steps (read, plan, apply), the binary, and
//! the checks that read the simulator's IAM history.

use crate::common::copy_dir;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use runwarden::apply::{
    Applier, ApplyConfig, ApplyReport, AuditContext, AuditSink, PlanSource, ServiceOutcome, apply,
};
use runwarden::google::GoogleConfig;
use runwarden::iam::Policy;
use runwarden::live::{ClientConfig, Clients, LiveState, ReadConfig, ServiceId, read_live};
use runwarden::plan::{Plan, PlanOptions, plan};
use runwarden::policy::model::Desired;
use runwarden::progress::Progress;
use runwarden::retry::RetryPolicy;
use runwarden::sim::{IamWrite, RunningSim, World, Writer};
use tokio_util::sync::CancellationToken;

/// The repository root (where `policies/` and `deploy/local/world.yaml` live).
pub use crate::common::root as repo;

pub use crate::common::{demo_world, demo_world_path};

/// The demo world with `extra` YAML appended (e.g. a `faults` section).
pub fn demo_world_with(extra: &str) -> String {
    let text = std::fs::read_to_string(demo_world_path()).unwrap();
    format!("{text}\n{extra}\n")
}

/// Loads a policy directory at the current time.
pub fn load(dir: &Path) -> Desired {
    runwarden::policy::load_at(dir, SystemTime::now())
        .unwrap_or_else(|e| panic!("the policies under {} load: {e}", dir.display()))
}

pub use crate::common::example_policies as demo_desired;

/// Retries quick enough for tests; the server's `Retry-After` still wins.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 10,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(80),
        max_server_wait: Duration::from_secs(5),
        ..RetryPolicy::default()
    }
}

/// No client-side pacing: the simulator has no quota unless a test injects one.
pub fn unpaced() -> ClientConfig {
    ClientConfig {
        google: GoogleConfig {
            cloud_run_read_rate: runwarden::retry::Pace::Off,
            write_rate: runwarden::retry::Pace::Off,
            iap_rate: runwarden::retry::Pace::Off,
            resource_manager_rate: runwarden::retry::Pace::Off,
            ..GoogleConfig::default()
        },
        auth0_rate: runwarden::retry::Pace::Off,
        ..ClientConfig::default()
    }
}

pub fn config() -> ApplyConfig {
    ApplyConfig {
        retry: quick_retries(),
        operation_timeout: Duration::from_secs(20),
        ..ApplyConfig::default()
    }
}

/// A simulator and the clients of one pass, connected over loopback.
pub struct Env {
    pub sim: RunningSim,
    pub clients: Clients,
    pub desired: Desired,
    _dir: tempfile::TempDir,
}

impl Env {
    pub async fn start(world: World, desired: Desired) -> Env {
        let crate::read::support::Setup { sim, clients, dir } =
            crate::read::support::start(world, &desired.settings, &unpaced()).await;
        sim.handle.set_operation_delay(Duration::from_millis(20));
        Env {
            sim,
            clients,
            desired,
            _dir: dir,
        }
    }

    pub async fn demo() -> Env {
        Env::start(demo_world(), demo_desired()).await
    }

    pub fn handle(&self) -> &runwarden::sim::SimHandle {
        &self.sim.handle
    }

    pub async fn read(&self) -> LiveState {
        let config = ReadConfig {
            retry: quick_retries(),
            progress: None,
            shard: None,
        };
        read_live(&self.desired, &self.clients, &config)
            .await
            .expect("the live state reads")
    }

    pub fn plan(&self, live: &LiveState) -> Plan {
        plan(&self.desired, live, &PlanOptions::at(SystemTime::now()))
    }

    /// Applies a plan computed in this pass from `live`.
    pub async fn apply_fresh(
        &self,
        live: &LiveState,
        plan: &Plan,
        config: &ApplyConfig,
    ) -> ApplyReport {
        let source = PlanSource::Fresh {
            desired: &self.desired,
            live,
            now: SystemTime::now(),
        };
        self.apply_from(source, plan, config).await
    }

    /// Applies with shutdown already requested.
    pub async fn apply_cancelled(
        &self,
        live: &LiveState,
        plan: &Plan,
        config: &ApplyConfig,
    ) -> ApplyReport {
        let source = PlanSource::Fresh {
            desired: &self.desired,
            live,
            now: SystemTime::now(),
        };
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        self.apply_with(source, plan, config, shutdown).await
    }

    /// Applies a saved plan.
    pub async fn apply_saved(&self, plan: &Plan, config: &ApplyConfig) -> ApplyReport {
        self.apply_from(PlanSource::Saved, plan, config).await
    }

    async fn apply_from(
        &self,
        source: PlanSource<'_>,
        plan: &Plan,
        config: &ApplyConfig,
    ) -> ApplyReport {
        self.apply_with(source, plan, config, CancellationToken::new())
            .await
    }

    async fn apply_with(
        &self,
        source: PlanSource<'_>,
        plan: &Plan,
        config: &ApplyConfig,
        shutdown: CancellationToken,
    ) -> ApplyReport {
        let audit = AuditContext {
            revision: "test-rev".into(),
            actor: "serviceAccount:test@sim".into(),
        };
        let sink = AuditSink::discard();
        let progress = Progress::hidden();
        let applier = Applier {
            google: &self.clients.google,
            settings: &self.desired.settings,
            config,
            source,
            audit: &audit,
            sink: &sink,
            shutdown,
            progress: &progress,
        };
        apply(plan, &applier).await
    }

    /// One whole pass (read, plan, apply): returns the plan and the report.
    pub async fn pass(&self, config: &ApplyConfig) -> (Plan, ApplyReport) {
        let live = self.read().await;
        let plan = self.plan(&live);
        let report = self.apply_fresh(&live, &plan, config).await;
        (plan, report)
    }

    /// Services of a fresh plan that apply would still change.
    pub async fn left_to_apply(&self) -> Vec<String> {
        let live = self.read().await;
        applicable_changes(&self.plan(&live))
    }

    /// Runs the real binary against this test's simulator (`--endpoint`, the simulator's key
    /// file and Management API secret), so that several commands see one world and the test can
    /// look inside it between them. Runs off the async workers (the simulator lives on them).
    pub async fn runwarden(&self, args: &[&str]) -> Run {
        self.runwarden_via(&self.sim.base_url, args).await
    }

    /// [`Env::runwarden`] with every API call sent to `endpoint` (a proxy in front of the
    /// simulator); tokens still come from the simulator.
    pub async fn runwarden_via(&self, endpoint: &str, args: &[&str]) -> Run {
        let key = self.sim.write_credentials(self._dir.path()).expect("the key file is written");
        let (_, secret) = self.sim.auth0_client();
        let mut full = vec!["--endpoint".to_string(), endpoint.to_string()];
        full.extend(args.iter().map(|a| a.to_string()));
        let key = key.to_string_lossy().into_owned();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = full.iter().map(String::as_str).collect();
            runwarden_env(&args, &[("GOOGLE_APPLICATION_CREDENTIALS", &key), ("AUTH0_CLIENT_SECRET", &secret)])
        })
        .await
        .expect("the binary ran")
    }

    /// The real binary against this test's simulator, as [`Env::runwarden`], started with piped
    /// stdout and stderr and left running (tests that signal it).
    pub fn spawn_runwarden(&self, args: &[&str]) -> std::process::Child {
        self.spawn_runwarden_via(&self.sim.base_url, args)
    }

    /// [`Env::spawn_runwarden`] with every API call sent to `endpoint`.
    pub fn spawn_runwarden_via(&self, endpoint: &str, args: &[&str]) -> std::process::Child {
        let key = self.sim.write_credentials(self._dir.path()).expect("the key file is written");
        let (_, secret) = self.sim.auth0_client();
        crate::common::bin()
            .arg("--endpoint")
            .arg(endpoint)
            .args(args)
            .current_dir(repo())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env("GOOGLE_APPLICATION_CREDENTIALS", key)
            .env("AUTH0_CLIENT_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the runwarden binary starts")
    }

    /// IAM writes by runwarden (not by the console or a concurrent writer) in the history.
    pub fn client_writes(&self) -> usize {
        self.handle().history().iter().filter(|w| w.writer == Writer::Client).count()
    }

    /// `setIamPolicy` and `services.patch` requests served so far.
    pub fn write_requests(&self) -> usize {
        self.handle()
            .request_log()
            .iter()
            .filter(|r| is_write(&r.method, &r.path))
            .count()
    }
}

pub fn is_write(method: &str, path: &str) -> bool {
    (method == "POST" && path.ends_with(":setIamPolicy")) || method == "PATCH"
}

/// Ids of services whose changes apply would carry out.
pub fn applicable_changes(plan: &Plan) -> Vec<String> {
    plan.services
        .iter()
        .filter(|s| s.is_applicable() && s.has_changes())
        .map(|s| s.id.clone())
        .collect()
}

pub fn failures(report: &ApplyReport) -> Vec<&ServiceOutcome> {
    report.failures().collect()
}

/// A binding as a comparable value: (role, condition title and expression, members).
pub type BindingKey = (String, Option<(String, String)>);

/// The non-empty bindings of a policy, keyed by role and condition.
pub fn bindings(policy: &Policy) -> BTreeMap<BindingKey, BTreeSet<String>> {
    let mut out: BTreeMap<BindingKey, BTreeSet<String>> = BTreeMap::new();
    for b in &policy.bindings {
        let key = (
            b.role.clone(),
            b.condition
                .as_ref()
                .map(|c| (c.title.clone(), c.expression.clone())),
        );
        out.entry(key)
            .or_default()
            .extend(b.members.iter().map(|m| m.as_str().to_string()));
    }
    out.retain(|_, m| !m.is_empty());
    out
}

/// One member's place in one IAM resource: (resource, role, condition title, member).
pub type Grant = (String, String, Option<String>, String);

fn grants(resource: &str, policy: &Policy) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for b in &policy.bindings {
        for m in &b.members {
            out.insert((
                resource.to_string(),
                b.role.clone(),
                b.condition.as_ref().map(|c| c.title.clone()),
                m.as_str().to_string(),
            ));
        }
    }
    out
}

/// Reasons for which runwarden may take a member away.
const REMOVAL_REASONS: [&str; 6] = ["unlisted", "public", "expired", "deleted", "blocked", "foreign"];

/// Removals the reports say were applied (with a reason that allows removal).
pub fn applied_removals<'a>(reports: impl IntoIterator<Item = &'a ApplyReport>) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for r in reports {
        for e in r.events.iter().filter(|e| e.change == "remove") {
            assert!(
                REMOVAL_REASONS.contains(&e.reason.as_str()),
                "a removal with reason {} was applied: {e:?}",
                e.reason
            );
            out.insert((
                e.resource.clone(),
                e.role.clone().unwrap(),
                e.condition.clone(),
                e.member.clone().unwrap(),
            ));
        }
    }
    out
}

/// The loss check of the reliability requirement, from the simulator's history:
/// * every member a client write took away is one the applied plans removed, and
/// * every member a concurrent writer or a direct (console) write added is still there now, or
///   was removed by a plan on purpose.
pub fn assert_nothing_lost(
    history: &[IamWrite],
    removed: &BTreeSet<Grant>,
    current: impl Fn(&str) -> Option<Policy>,
) {
    let mut client_writes = 0;
    for w in history {
        let before = grants(&w.resource, &w.before);
        let after = grants(&w.resource, &w.after);
        if w.writer == Writer::Client {
            client_writes += 1;
            for lost in before.difference(&after) {
                assert!(
                    removed.contains(lost),
                    "a client write removed {lost:?}, which no applied plan removed (write {w:?})"
                );
                assert!(
                    !lost.3.ends_with("@foreign.example"),
                    "a concurrently added member was removed: {lost:?}"
                );
            }
        } else {
            for added in after.difference(&before) {
                let now = current(&w.resource).unwrap_or_default();
                assert!(
                    grants(&w.resource, &now).contains(added) || removed.contains(added),
                    "{added:?}, added by {:?}, is gone from {}",
                    w.writer,
                    w.resource
                );
            }
        }
    }
    assert!(
        client_writes > 0,
        "the history shows no client write at all: nothing was checked"
    );
}

pub use crate::common::Run;

/// Runs `runwarden ARGS` in the repository root with stdin closed (not a terminal).
pub fn runwarden(args: &[&str]) -> Run {
    runwarden_env(args, &[])
}

/// [`runwarden`] with extra environment variables.
pub fn runwarden_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = crate::common::bin();
    cmd.args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for var in [
        "RUST_LOG",
        "AUTH0_CLIENT_SECRET",
        "GITHUB_SHA",
        "CI_COMMIT_SHA",
        "GIT_COMMIT",
        "BUILD_SOURCEVERSION",
        "COMMIT_SHA",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    Run::from(cmd.output().expect("the runwarden binary runs"))
}

/// A copy of `policies/` in a temporary directory, with `settings.yaml` edited by `edit`.
pub fn policies_with_settings(edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("policies"), dir.path());
    let path = dir.path().join("settings.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the settings edit changed nothing");
    std::fs::write(&path, edited).unwrap();
    dir
}

/// Writes `text` as a world file in `dir` and returns its path as a string.
pub fn write_world(dir: &Path, text: &str) -> String {
    let path = dir.join("world.yaml");
    std::fs::write(&path, text).unwrap();
    World::from_file(&path).expect("the test world loads");
    path.to_string_lossy().into_owned()
}

pub fn id(s: &str) -> ServiceId {
    let parts: Vec<&str> = s.split('/').collect();
    ServiceId::new(parts[0], parts[1], parts[2])
}

impl Env {
    /// The same simulator, with the clients going through `base_url` (a fault proxy in front
    /// of it) from now on.
    pub fn through(&mut self, base_url: &str) {
        let key = self.sim.write_credentials(self._dir.path()).unwrap();
        self.clients = Clients::for_simulator(
            &self.desired.settings,
            base_url,
            &key,
            self.sim.auth0_client(),
            &unpaced(),
        )
        .unwrap();
    }
}
