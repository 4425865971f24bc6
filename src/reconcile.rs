//! The long-running loop of `runwarden run`: level-triggered passes on an interval and on policy
//! changes, keep-last-good policies, a controller-style error policy, graceful shutdown, and the
//! HTTP endpoints `/healthz`, `/readyz`, `/status` and `/metrics`.
//!
//! # Expected flow
//! A trigger (start, interval tick, debounced file change, SIGHUP, a backoff requeue) wakes the
//! loop. It reloads the policy directory; if the content is new and does not load, the bad
//! revision is reported as `Stalled` and the loop keeps reconciling against the last good
//! policies (so hand-made drift keeps being corrected). Then it runs one pass. Like kube-rs's
//! reconciler, the pass is never told why it runs: every pass checks everything.
//!
//! The directory may be a published bucket ([`crate::published`]): every wake-up, the interval
//! tick included, re-reads its `CURRENT`, so a newly published commit is loaded without file
//! events (a Cloud Storage mount sends none) and reported as the revision.
//!
//! # Error policy
//! * A transient failure (API unavailable, quota, a partial failure) requeues with exponential
//!   backoff, capped at the interval.
//! * A permanent failure (a guard tripped, a permission is missing) waits for the next policy
//!   change or SIGHUP: retrying the same thing on a timer would only repeat the same refusal.
//!
//! # Guarantees
//! Shutdown (the token is cancelled) lets the pass in flight finish its current write — the pass
//! receives the token and must start no new write — and then the loop returns, within
//! `shutdown_grace`.
//!
//! The loop knows nothing about plans or HTTP clients: it drives a [`Pass`], which the command
//! layer implements with load → read → plan → guard → apply.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;

use crate::plan::Finding;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::logging::rfc3339;
use crate::metrics::{self, Metrics};
use crate::policy::{is_policy_file, list_policy_files};
use crate::retry::{jittered, requeue_backoff};

/// Why the loop woke up. Only for logs and metrics: passes never depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Start,
    Interval,
    FileChange,
    Signal,
    Retry,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Interval => "interval",
            Trigger::FileChange => "file-change",
            Trigger::Signal => "signal",
            Trigger::Retry => "retry",
        }
    }
}

/// What one pass did, in the terms the loop reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PassReport {
    /// Changes applied, by kind (`add`, `remove`, `setting`).
    pub applied: BTreeMap<String, u64>,
    /// Changes planned but not applied (observe/warn modes, or left after failures).
    pub drift: u64,
    /// Per-service state, by `project/region/name`.
    pub services: BTreeMap<String, ServiceStatus>,
    /// Services whose part of the pass failed; the others still converged.
    pub failures: Vec<String>,
    /// Guard units held back by a trip (one line each: unit, services, trips); the other
    /// units converged. Reported on every pass until the policies change or an allowance
    /// (`guards.allowOnce`) lets the removals through.
    pub held: Vec<String>,
    /// The pass's findings: the same catalogue `plan` shows (plan engine, Auth0 hygiene,
    /// effective access), sorted.
    #[serde(skip)]
    pub findings: Vec<Finding>,
}

/// One service's state after a pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStatus {
    /// `InSync`, `Changed`, `Drifted` (changes not applied by mode), `Held` (a guard holds its
    /// changes), or `Failed`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The findings of the last pass about this service (`/status` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

impl ServiceStatus {
    /// A state, with a message, and no findings yet (the loop adds them).
    pub fn new(state: &str, message: Option<String>) -> ServiceStatus {
        ServiceStatus { state: state.to_string(), message, findings: Vec::new() }
    }
}

/// A pass that did not complete. Transient failures requeue with backoff; permanent ones wait
/// for a change.
#[derive(Debug, Clone, PartialEq)]
pub enum PassFailure {
    /// The live state could not be read (API unavailable, quota, ...): transient.
    ReadFailed(String),
    /// A guard refused the plan: permanent until the policies change.
    GuardTripped(String),
}

impl PassFailure {
    /// Retrying on a timer may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            PassFailure::ReadFailed(_) => true,
            PassFailure::GuardTripped(_) => false,
        }
    }

    /// The short machine-readable reason of the `Ready` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            PassFailure::ReadFailed(_) => "ReadFailed",
            PassFailure::GuardTripped(_) => "GuardTripped",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            PassFailure::ReadFailed(m) | PassFailure::GuardTripped(m) => m,
        }
    }
}

/// What the loop drives. `Desired` is the loaded policy model.
pub trait Pass: Send + Sync + 'static {
    type Desired: Send + Sync + 'static;

    /// Loads and validates the policy directory. The error is the rendered list of problems.
    fn load(&self, dir: &Path) -> Result<Self::Desired, String>;

    /// Runs one full pass against `desired`. It must start no new write once `shutdown` is
    /// cancelled.
    fn run(
        &self,
        desired: Arc<Self::Desired>,
        revision: String,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<PassReport, PassFailure>> + Send;
}

/// How the loop behaves.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub policies: PathBuf,
    pub interval: Duration,
    /// Fraction of the interval added at random (0.1 = up to +10%), so many replicas spread out.
    pub jitter: f64,
    pub backoff_min: Duration,
    /// How long after the last successful pass `/readyz` stays ready (default 3 intervals).
    pub ready_window: Duration,
    pub shutdown_grace: Duration,
    /// Debounce window for file changes.
    pub debounce: Duration,
    /// The registry `/metrics` exposes and the loop records into; give the same one to the
    /// clients (`GoogleConfig::metrics`) so their API calls are counted there too.
    pub metrics: Arc<Metrics>,
}

impl LoopConfig {
    pub fn new(policies: PathBuf, interval: Duration) -> LoopConfig {
        LoopConfig {
            policies,
            interval,
            jitter: 0.1,
            backoff_min: Duration::from_secs(2).min(interval),
            ready_window: interval.saturating_mul(3),
            shutdown_grace: Duration::from_secs(30),
            debounce: Duration::from_millis(250),
            metrics: Arc::default(),
        }
    }
}

/// A status condition, Kubernetes style.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

/// The `/status` document.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub conditions: Vec<Condition>,
    /// Revision of the policies the last successful pass used: the published commit (see
    /// [`crate::published`]), else a content hash.
    pub last_applied_revision: Option<String>,
    /// Revision of the policies last seen in the directory, good or bad.
    pub last_attempted_revision: Option<String>,
    pub last_pass_time: Option<String>,
    pub last_success_time: Option<String>,
    pub passes: u64,
    pub services: BTreeMap<String, ServiceStatus>,
    /// The last pass's findings about no service, or about a service the loop does not
    /// govern (`ungoverned-service`); the others are under their service.
    pub findings: Vec<Finding>,
    #[serde(skip)]
    last_success: Option<Instant>,
    /// Every finding of the last completed pass: a finding is logged when it appears, and
    /// when it goes, never on every pass.
    #[serde(skip)]
    seen: BTreeSet<Finding>,
}

impl Status {
    fn set_condition(&mut self, kind: &str, status: bool, reason: &str, message: String) {
        let status = if status { "True" } else { "False" }.to_string();
        let now = rfc3339(SystemTime::now());
        match self.conditions.iter_mut().find(|c| c.kind == kind) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                c.reason = reason.to_string();
                c.message = message;
            }
            None => self.conditions.push(Condition {
                kind: kind.to_string(),
                status,
                reason: reason.to_string(),
                message,
                last_transition_time: now,
            }),
        }
    }

    /// The condition of this type, if set.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

/// Shared between the loop and the HTTP endpoints.
#[derive(Clone)]
pub struct Shared {
    status: Arc<RwLock<Status>>,
    ready_window: Duration,
    metrics: Arc<Metrics>,
}

impl Shared {
    /// A copy of the current status.
    pub fn status(&self) -> Status {
        self.status.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.write().unwrap_or_else(|e| e.into_inner()));
    }

    fn ready(&self) -> bool {
        let status = self.status.read().unwrap_or_else(|e| e.into_inner());
        status.last_success.is_some_and(|t| t.elapsed() <= self.ready_window)
    }
}

/// The HTTP endpoints of the loop.
pub fn router(shared: Shared) -> Router {
    declare_metrics(&shared.metrics);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics_text))
        .with_state(shared)
}

async fn readyz(State(shared): State<Shared>) -> Response {
    if shared.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no successful pass recently\n").into_response()
    }
}

async fn status_json(State(shared): State<Shared>) -> Response {
    axum::Json(shared.status()).into_response()
}

async fn metrics_text(State(shared): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        shared.metrics.render(),
    )
        .into_response()
}

/// What one look at the policy directory found.
struct Observed {
    /// The directory to load, or why it cannot be told (a bad `CURRENT`).
    dir: Result<PathBuf, String>,
    /// Identifies the content: a new key is loaded (or judged) once.
    key: String,
    /// What status and audit events report: the published commit when there is one, else the
    /// content hash.
    revision: String,
}

/// Resolves the published revision (re-reading `CURRENT` and `REVISION`; see
/// [`crate::published`]) and hashes the files it selects. The hash stays part of the key, so a
/// directory whose files change under an unchanged `REVISION` is still reloaded.
fn observe(root: &Path) -> Observed {
    match crate::published::resolve(root) {
        Ok(source) => {
            let hash = content_revision(&source.dir);
            let revision = source.commit.unwrap_or_else(|| hash.clone());
            Observed { key: format!("{revision} {hash}"), revision, dir: Ok(source.dir) }
        }
        Err(e) => Observed { key: format!("unresolved: {e}"), revision: "unresolved".into(), dir: Err(e) },
    }
}

/// A content hash of every policy file (path and bytes, in path order): the revision the status
/// reports, and how the loop tells new content from content it already judged.
pub fn content_revision(dir: &Path) -> String {
    // The loader's own walk: the revision changes exactly when the files a load reads do.
    let files = list_policy_files(dir);
    let mut hasher = DefaultHasher::new();
    for file in &files {
        file.hash(&mut hasher);
        // Capped like the loader: a huge file must not be read whole just to hash it (the
        // load that follows reports it).
        crate::files::read_capped(file, crate::policy::MAX_POLICY_FILE_BYTES)
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    format!("sha:{:016x}", hasher.finish())
}

/// Watches the policy directory and sends a `FileChange` trigger per debounced batch of relevant
/// events. The returned guard stops watching when dropped.
pub fn watch(
    dir: &Path,
    debounce: Duration,
    triggers: mpsc::Sender<Trigger>,
) -> notify::Result<impl Drop + use<>> {
    use notify::RecursiveMode;
    let mut debouncer = notify_debouncer_full::new_debouncer(
        debounce,
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            let relevant = match result {
                Ok(events) => events.iter().any(|e| {
                    !e.kind.is_access() && e.paths.iter().any(|p| is_policy_file(p) || p.is_dir())
                }),
                Err(_) => true, // the watcher lost events: a pass re-reads everything anyway
            };
            if relevant {
                let _ = triggers.try_send(Trigger::FileChange);
            }
        },
    )?;
    debouncer.watch(dir, RecursiveMode::Recursive)?;
    Ok(debouncer)
}

/// The last policies that loaded, and the newest content that did not.
struct Policies<D> {
    /// (model, content key, reported revision).
    good: Option<(Arc<D>, String, String)>,
    judged_bad: Option<String>,
}

/// What one look at the policy directory changed.
enum PolicyEvent {
    /// Nothing new: the content was judged before and is still judged the same way.
    Unchanged,
    /// New content loaded, or the loop is back to the content already loaded (a bad commit
    /// reverted): not stalled any more.
    Loaded,
    /// New content that does not load: stalled, the last good policies stay.
    Invalid(String),
}

impl<D> Policies<D> {
    fn observe(&mut self, key: &str, revision: &str, load: impl FnOnce() -> Result<D, String>) -> PolicyEvent {
        if self.good.as_ref().is_some_and(|(_, k, _)| k == key) {
            return match self.judged_bad.take() {
                Some(_) => PolicyEvent::Loaded,
                None => PolicyEvent::Unchanged,
            };
        }
        if self.judged_bad.as_deref() == Some(key) {
            return PolicyEvent::Unchanged;
        }
        match load() {
            Ok(desired) => {
                self.good = Some((Arc::new(desired), key.to_string(), revision.to_string()));
                self.judged_bad = None;
                PolicyEvent::Loaded
            }
            Err(errors) => {
                self.judged_bad = Some(key.to_string());
                PolicyEvent::Invalid(errors)
            }
        }
    }
}

/// When the loop runs its next pass.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Next {
    /// After the (jittered) interval.
    Interval(Duration),
    /// After a backoff, since the last pass failed.
    Retry(Duration),
    /// Only on a policy change or SIGHUP: a timer would only repeat the same refusal. The
    /// duration is the interval, used only once no outside trigger can arrive any more.
    Parked(Duration),
}

impl Next {
    fn wait(self) -> Duration {
        match self {
            Next::Interval(d) | Next::Retry(d) | Next::Parked(d) => d,
        }
    }
}

/// The loop's error policy, as a pure state machine: a pass result in, when to run next out.
/// Consecutive failures back off exponentially from `backoff_min` (backon), capped at the
/// interval, with the configured jitter; a permanent failure parks the loop until
/// [`Requeue::unpark`].
struct Requeue {
    interval: Duration,
    jitter: f64,
    backoff_min: Duration,
    /// The backoff of the current run of failures; `None` after a success.
    backoff: Option<backon::ExponentialBackoff>,
    parked: bool,
}

impl Requeue {
    fn new(config: &LoopConfig) -> Requeue {
        Requeue { interval: config.interval, jitter: config.jitter, backoff_min: config.backoff_min, backoff: None, parked: false }
    }

    /// A policy change or a signal: the next pass runs whatever the last one said.
    fn unpark(&mut self) {
        self.parked = false;
    }

    /// Whether a pass may run now.
    fn may_run(&self) -> bool {
        !self.parked
    }

    /// When to wake up without a pass having run (no good policies yet, or parked).
    fn idle(&self) -> Next {
        let interval = jittered(self.interval, self.jitter);
        if self.parked {
            Next::Parked(interval)
        } else if self.backoff.is_some() {
            Next::Retry(interval)
        } else {
            Next::Interval(interval)
        }
    }

    fn on_result(&mut self, result: &Result<PassReport, PassFailure>) -> Next {
        match result {
            Ok(report) if report.failures.is_empty() => {
                self.backoff = None;
                Next::Interval(jittered(self.interval, self.jitter))
            }
            Ok(_) => Next::Retry(self.next_backoff()),
            Err(failure) if failure.is_transient() => Next::Retry(self.next_backoff()),
            Err(_) => {
                // Counts as a failure in a row: the wake-up after unparking is a retry.
                self.next_backoff();
                self.parked = true;
                Next::Parked(jittered(self.interval, self.jitter))
            }
        }
    }

    fn next_backoff(&mut self) -> Duration {
        let (min, interval) = (self.backoff_min.min(self.interval), self.interval);
        let delays = self.backoff.get_or_insert_with(|| requeue_backoff(min, interval));
        jittered(delays.next().unwrap_or(interval).min(interval), self.jitter)
    }
}

/// Runs the loop until `shutdown` is cancelled. `triggers` carries file changes and signals
/// from outside (see [`watch`]); the loop adds its own interval and retry wake-ups.
pub async fn run_loop<P: Pass>(
    config: LoopConfig,
    pass: Arc<P>,
    shared: Shared,
    mut triggers: mpsc::Receiver<Trigger>,
    shutdown: CancellationToken,
) {
    let mut policies: Policies<P::Desired> = Policies { good: None, judged_bad: None };
    let mut requeue = Requeue::new(&config);
    let mut trigger = Trigger::Start;
    declare_metrics(&shared.metrics);
    loop {
        // 1. Policies: reload when the content is new.
        let Observed { dir, key, revision } = observe(&config.policies);
        shared.update(|s| s.last_attempted_revision = Some(revision.clone()));
        match policies.observe(&key, &revision, || dir.and_then(|dir| pass.load(&dir))) {
            PolicyEvent::Unchanged => {}
            PolicyEvent::Loaded => {
                requeue.unpark();
                shared.update(|s| s.set_condition("Stalled", false, "PoliciesLoaded", String::new()));
            }
            PolicyEvent::Invalid(errors) => {
                tracing::error!(revision = %revision, "policy revision does not load; keeping the last good policies\n{errors}");
                shared.update(|s| s.set_condition("Stalled", true, "InvalidPolicies", errors));
            }
        }
        let stalled = if policies.judged_bad.is_some() { 1.0 } else { 0.0 };
        shared.metrics.set("runwarden_stalled", STALLED_HELP, vec![], stalled);
        if trigger == Trigger::FileChange || trigger == Trigger::Signal {
            requeue.unpark();
        }

        // 2. One pass against the last good policies.
        let next = match &policies.good {
            Some((desired, _, good_revision)) if requeue.may_run() => {
                let started = Instant::now();
                tracing::info!(trigger = trigger.as_str(), revision = %good_revision, "pass started");
                let result = pass.run(desired.clone(), good_revision.clone(), shutdown.clone()).await;
                // Milliseconds are precision enough for a log line (`3.595`, not `3.5951973600000002`).
                let seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
                record_pass_metrics(&shared.metrics, &result, seconds);
                let next = requeue.on_result(&result);
                report_pass(&shared, &result, good_revision, seconds, next);
                next
            }
            _ => requeue.idle(),
        };

        // 3. Wait for the next trigger.
        let Some(t) = next_trigger(&mut triggers, next, &shutdown).await else { break };
        trigger = t;
    }
    tracing::info!("reconcile loop stopped");
}

/// Logs a pass's result and records it in the status.
fn report_pass(shared: &Shared, result: &Result<PassReport, PassFailure>, revision: &str, seconds: f64, next: Next) {
    if let Ok(report) = result {
        let before = shared.status.read().unwrap_or_else(|e| e.into_inner()).seen.clone();
        log_finding_changes(&before, &report.findings);
        record_findings_metric(&shared.metrics, &before, &report.findings);
    }
    match result {
        Ok(report) if report.failures.is_empty() => {
            shared.update(|s| record_success(s, report, revision));
            tracing::info!(seconds, drift = report.drift, "pass finished");
        }
        Ok(report) => {
            let message = report.failures.join("; ");
            tracing::warn!(event = "pass-failed", failed = report.failures.len(), retry_in = ?next.wait(), "pass finished with failures");
            shared.update(|s| {
                record_pass(s, report);
                s.set_condition("Ready", false, "PartialFailure", message);
            });
        }
        Err(failure) => {
            tracing::error!(event = "pass-failed", reason = %failure.reason(), transient = failure.is_transient(), "pass failed: {}", failure.message());
            shared.update(|s| {
                s.passes += 1;
                s.last_pass_time = Some(rfc3339(SystemTime::now()));
                s.set_condition("Ready", false, failure.reason(), failure.message().to_string());
            });
        }
    }
}

/// Waits for an outside trigger or the timer `next` asks for; `None` on shutdown.
async fn next_trigger(triggers: &mut mpsc::Receiver<Trigger>, next: Next, shutdown: &CancellationToken) -> Option<Trigger> {
    let timer = match next {
        Next::Retry(_) => Trigger::Retry,
        Next::Interval(_) | Next::Parked(_) => Trigger::Interval,
    };
    let parked = matches!(next, Next::Parked(_));
    tokio::select! {
        _ = shutdown.cancelled() => None,
        t = triggers.recv() => match t {
            Some(t) => Some(t),
            None => { // no more outside triggers: run on the timer alone
                tokio::select! {
                    _ = shutdown.cancelled() => None,
                    _ = tokio::time::sleep(next.wait()) => Some(Trigger::Interval),
                }
            }
        },
        _ = tokio::time::sleep(next.wait()), if !parked => Some(timer),
    }
}

fn record_success(s: &mut Status, report: &PassReport, revision: &str) {
    record_pass(s, report);
    s.last_applied_revision = Some(revision.to_string());
    s.last_success = Some(Instant::now());
    s.last_success_time = s.last_pass_time.clone();
    s.set_condition("Ready", true, "Reconciled", String::new());
    let drifted = report.drift > 0;
    let message = if drifted {
        format!("{} planned but not applied (observe/warn mode)", crate::text::count(report.drift as usize, "change"))
    } else {
        String::new()
    };
    s.set_condition("Drifted", drifted, if drifted { "ChangesNotApplied" } else { "InSync" }, message);
    let held = !report.held.is_empty();
    let reason = if held { "GuardTripped" } else { "NothingHeld" };
    s.set_condition("Held", held, reason, report.held.join("\n"));
}

fn record_pass(s: &mut Status, report: &PassReport) {
    s.passes += 1;
    s.last_pass_time = Some(rfc3339(SystemTime::now()));
    s.services = report.services.clone();
    s.findings.clear();
    for f in &report.findings {
        match f.service.as_ref().and_then(|id| s.services.get_mut(id)) {
            Some(service) => service.findings.push(f.clone()),
            None => s.findings.push(f.clone()),
        }
    }
    s.seen = report.findings.iter().cloned().collect();
}

/// Logs every finding that is new since the last completed pass (`event = "finding"`, at its
/// severity, the line `plan` prints), and every one that went (`finding-resolved`).
fn log_finding_changes(seen: &BTreeSet<Finding>, now: &[Finding]) {
    use crate::plan::Severity;
    for f in now.iter().filter(|f| !seen.contains(*f)) {
        // The log level is the finding's severity (a `severity` field would clash with Cloud
        // Logging's own).
        let (code, service) = (f.code.as_str(), f.service.as_deref().unwrap_or(""));
        let line = crate::plan::render::finding_line(f);
        match f.severity {
            Severity::Error => tracing::error!(event = "finding", code, service, fix = %f.fix, "{line}"),
            Severity::Warning => tracing::warn!(event = "finding", code, service, fix = %f.fix, "{line}"),
            Severity::Info => tracing::info!(event = "finding", code, service, fix = %f.fix, "{line}"),
        }
    }
    let current: BTreeSet<&Finding> = now.iter().collect();
    for f in seen.iter().filter(|f| !current.contains(f)) {
        let (code, service) = (f.code.as_str(), f.service.as_deref().unwrap_or(""));
        tracing::info!(event = "finding-resolved", code, service, "resolved: {}", crate::plan::render::finding_line(f));
    }
}

const FINDINGS_HELP: &str = "Findings of the last completed pass, by code and severity (the catalogue `plan` shows).";

/// `runwarden_findings{code, severity}`: the last pass's count for every catalogue code (0
/// when absent, so an alert on a code sees the series from the first scrape), and 0 for any
/// series an earlier pass set that this one does not have.
fn record_findings_metric(m: &Metrics, before: &BTreeSet<Finding>, now: &[Finding]) {
    let mut counts: BTreeMap<(String, &'static str), f64> = crate::plan::catalogue::CATALOGUE
        .iter()
        .map(|e| ((e.code.to_string(), e.severity.as_str()), 0.0))
        .collect();
    for f in before {
        counts.insert((f.code.clone(), f.severity.as_str()), 0.0);
    }
    for f in now {
        *counts.entry((f.code.clone(), f.severity.as_str())).or_default() += 1.0;
    }
    for ((code, severity), n) in counts {
        m.set("runwarden_findings", FINDINGS_HELP, vec![("code", code), ("severity", severity.to_string())], n);
    }
}

const STALLED_HELP: &str = "1 while the newest policy revision does not load (the loop keeps the last good one).";
const LAST_SUCCESS_HELP: &str = "Unix time of the last successful pass (0: none since start).";
const PASSES_HELP: &str = "Reconcile passes by outcome.";
const APPLIED_HELP: &str = "Applied changes by kind.";
const GUARD_TRIPS_HELP: &str = "Applies refused by a guard (in the loop: guard units held, per pass).";
const HELD_HELP: &str = "Services whose changes a guard held in the last pass.";

/// Every series an alert may watch exists from the first scrape, at zero: an absent counter
/// cannot be told from a scrape that failed, and `rate()` over it never fires.
fn declare_metrics(m: &Metrics) {
    for outcome in ["ok", "partial", "transient", "permanent"] {
        m.inc("runwarden_passes_total", PASSES_HELP, vec![("outcome", outcome.into())], 0.0);
    }
    for kind in ["add", "remove", "setting"] {
        m.inc("runwarden_changes_applied_total", APPLIED_HELP, vec![("kind", kind.into())], 0.0);
    }
    m.inc("runwarden_guard_trips_total", GUARD_TRIPS_HELP, vec![], 0.0);
    for e in crate::plan::catalogue::CATALOGUE {
        if m.get("runwarden_findings", &[("code", e.code), ("severity", e.severity.as_str())]).is_none() {
            m.set("runwarden_findings", FINDINGS_HELP, vec![("code", e.code.to_string()), ("severity", e.severity.as_str().to_string())], 0.0);
        }
    }
    // Gauges: declared, never reset (a second call must not hide a stalled loop).
    for (name, help) in [("runwarden_stalled", STALLED_HELP), ("runwarden_last_success_timestamp_seconds", LAST_SUCCESS_HELP), ("runwarden_held_services", HELD_HELP)] {
        if m.get(name, &[]).is_none() {
            m.set(name, help, vec![], 0.0);
        }
    }
}

fn record_pass_metrics(m: &Metrics, result: &Result<PassReport, PassFailure>, seconds: f64) {
    let outcome = match result {
        Ok(r) if r.failures.is_empty() => "ok",
        Ok(_) => "partial",
        Err(f) if f.is_transient() => "transient",
        Err(_) => "permanent",
    };
    m.inc("runwarden_passes_total", PASSES_HELP, vec![("outcome", outcome.into())], 1.0);
    if outcome == "ok" {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        m.set("runwarden_last_success_timestamp_seconds", LAST_SUCCESS_HELP, vec![], now.as_secs_f64().floor());
    }
    m.set("runwarden_last_pass_seconds", "Duration of the last pass in seconds.", vec![], seconds);
    m.inc("runwarden_pass_seconds_total", "Total time spent in passes, in seconds.", vec![], seconds);
    if let Ok(report) = result {
        for (kind, n) in &report.applied {
            m.inc("runwarden_changes_applied_total", APPLIED_HELP, vec![("kind", kind.clone())], *n as f64);
        }
        m.set("runwarden_drift", "Changes planned but not applied in the last pass.", vec![], report.drift as f64);
        // Every pass that holds a unit counts a trip per unit, so the alert keeps firing.
        m.inc("runwarden_guard_trips_total", GUARD_TRIPS_HELP, vec![], report.held.len() as f64);
        let held = report.services.values().filter(|s| s.state == "Held").count();
        m.set("runwarden_held_services", HELD_HELP, vec![], held as f64);
    }
    if let Err(PassFailure::GuardTripped(_)) = result {
        {
            m.inc("runwarden_guard_trips_total", GUARD_TRIPS_HELP, vec![], 1.0);
        }
    }
}

/// A fresh shared status for a loop with this configuration.
pub fn shared(config: &LoopConfig) -> Shared {
    let mut status = Status::default();
    status.set_condition("Ready", false, "Starting", "no pass has run yet".into());
    Shared { status: Arc::new(RwLock::new(status)), ready_window: config.ready_window, metrics: config.metrics.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A pass whose policies are the text of `policy.yaml` (load fails when it contains "bad"),
    /// and whose outcomes are scripted.
    struct Scripted {
        outcomes: Mutex<Vec<Result<PassReport, PassFailure>>>,
        runs: Mutex<Vec<String>>,
        /// The revision each run was given (what its audit events record).
        revisions: Mutex<Vec<String>>,
        loads: AtomicUsize,
    }

    impl Scripted {
        fn new(outcomes: Vec<Result<PassReport, PassFailure>>) -> Arc<Scripted> {
            Arc::new(Scripted { outcomes: Mutex::new(outcomes), runs: Mutex::new(vec![]), revisions: Mutex::new(vec![]), loads: AtomicUsize::new(0) })
        }
    }

    impl Pass for Scripted {
        type Desired = String;
        fn load(&self, dir: &Path) -> Result<String, String> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            let text = std::fs::read_to_string(dir.join("policy.yaml")).map_err(|e| e.to_string())?;
            if text.contains("bad") { Err(format!("policy.yaml:1:1: error: {text}")) } else { Ok(text) }
        }
        async fn run(&self, desired: Arc<String>, revision: String, _s: CancellationToken) -> Result<PassReport, PassFailure> {
            self.runs.lock().unwrap().push((*desired).clone());
            self.revisions.lock().unwrap().push(revision);
            let mut outcomes = self.outcomes.lock().unwrap();
            if outcomes.is_empty() { Ok(PassReport::default()) } else { outcomes.remove(0) }
        }
    }

    fn setup(text: &str) -> (tempfile::TempDir, LoopConfig) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.yaml"), text).unwrap();
        let mut config = LoopConfig::new(dir.path().to_path_buf(), Duration::from_secs(60));
        config.jitter = 0.0;
        (dir, config)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_reconciling_with_the_last_good_policies_after_a_bad_commit() {
        let (dir, config) = setup("good-v1");
        let pass = Scripted::new(vec![]);
        let shared = shared(&config);
        let (tx, rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_loop(config, pass.clone(), shared.clone(), rx, stop.clone()));
        settle().await;
        assert_eq!(*pass.runs.lock().unwrap(), vec!["good-v1"]);

        std::fs::write(dir.path().join("policy.yaml"), "bad-v2").unwrap();
        tx.send(Trigger::FileChange).await.unwrap();
        settle().await;
        let status = shared.status();
        assert_eq!(status.condition("Stalled").unwrap().status, "True");
        assert!(status.condition("Stalled").unwrap().message.contains("bad-v2"));
        assert_eq!(*pass.runs.lock().unwrap(), vec!["good-v1", "good-v1"], "drift is still corrected");
        assert_ne!(status.last_attempted_revision, status.last_applied_revision);

        // The same bad content is judged once, not re-loaded on every tick.
        let loads = pass.loads.load(Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(61)).await;
        settle().await;
        assert_eq!(pass.loads.load(Ordering::SeqCst), loads);
        assert_eq!(pass.runs.lock().unwrap().len(), 3);

        std::fs::write(dir.path().join("policy.yaml"), "good-v3").unwrap();
        tx.send(Trigger::FileChange).await.unwrap();
        settle().await;
        let status = shared.status();
        assert_eq!(status.condition("Stalled").unwrap().status, "False");
        assert_eq!(pass.runs.lock().unwrap().last().unwrap(), "good-v3");
        assert_eq!(status.last_attempted_revision, status.last_applied_revision);

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("likely deadlocked").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_finding_that_goes_away_leaves_status_and_its_metric_goes_to_zero() {
        let (_dir, config) = setup("good");
        let metrics = config.metrics.clone();
        let bypass = Finding::new(Some("p/r/s".into()), "invoke-bypass", "group:g can invoke".into(), vec![]);
        let tenant = Finding::new(None, "auth0-rbac-not-enforced", "API x".into(), vec![]);
        let mut first = PassReport::default();
        first.services.insert("p/r/s".into(), ServiceStatus::new("InSync", None));
        first.findings = vec![bypass.clone(), tenant.clone()];
        let mut second = PassReport::default();
        second.services.insert("p/r/s".into(), ServiceStatus::new("InSync", None));
        let pass = Scripted::new(vec![Ok(first), Ok(second)]);
        let shared = shared(&config);
        let (tx, rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_loop(config, pass.clone(), shared.clone(), rx, stop.clone()));
        let gauge = |code: &str, severity: &str| metrics.get("runwarden_findings", &[("code", code), ("severity", severity)]);
        settle().await;
        // Declared for every catalogue code (at zero when absent).
        assert!(crate::plan::catalogue::CATALOGUE.iter().all(|e| gauge(e.code, e.severity.as_str()).is_some()));
        assert_eq!(gauge("unknown-role", "error"), Some(0.0));
        let status = shared.status();
        assert_eq!(status.services["p/r/s"].findings, vec![bypass], "a service's finding sits under it");
        assert_eq!(status.findings, vec![tenant], "a tenant-wide finding sits at the top");
        assert_eq!(gauge("invoke-bypass", "warning"), Some(1.0));
        assert_eq!(gauge("auth0-rbac-not-enforced", "error"), Some(1.0));

        tx.send(Trigger::FileChange).await.unwrap();
        settle().await;
        let status = shared.status();
        assert!(status.findings.is_empty() && status.services["p/r/s"].findings.is_empty(), "{status:?}");
        assert_eq!(gauge("invoke-bypass", "warning"), Some(0.0));
        assert_eq!(gauge("auth0-rbac-not-enforced", "error"), Some(0.0));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("likely deadlocked").unwrap();
    }

    /// Publishes `text` as revision `name` the way the merge workflow does: the tree first,
    /// then `CURRENT`.
    fn publish(root: &Path, name: &str, text: &str) {
        let dir = root.join("revisions").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.yaml"), text).unwrap();
        std::fs::write(dir.join("REVISION"), format!("{name}\n")).unwrap();
        std::fs::write(root.join("CURRENT"), name).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_newly_published_revision_is_applied_at_the_next_tick_without_a_file_event_or_restart() {
        let root = tempfile::tempdir().unwrap();
        publish(root.path(), "c0ffee1", "good-1");
        let mut config = LoopConfig::new(root.path().to_path_buf(), Duration::from_secs(60));
        config.jitter = 0.0;
        let pass = Scripted::new(vec![]);
        let shared = shared(&config);
        let (_tx, rx) = mpsc::channel(8); // no file events: a Cloud Storage mount sends none
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_loop(config, pass.clone(), shared.clone(), rx, stop.clone()));
        settle().await;
        assert_eq!(*pass.runs.lock().unwrap(), vec!["good-1"]);
        assert_eq!(*pass.revisions.lock().unwrap(), vec!["c0ffee1"], "the pass records the commit");
        assert_eq!(shared.status().last_applied_revision.as_deref(), Some("c0ffee1"));

        publish(root.path(), "beef002", "good-2");
        tokio::time::advance(Duration::from_secs(61)).await;
        settle().await;
        assert_eq!(pass.runs.lock().unwrap().last().unwrap(), "good-2");
        assert_eq!(pass.revisions.lock().unwrap().last().unwrap(), "beef002");
        assert_eq!(shared.status().last_applied_revision.as_deref(), Some("beef002"));

        // CURRENT naming a revision whose tree is missing: Stalled, the last good one is kept.
        std::fs::write(root.path().join("CURRENT"), "dead003").unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        settle().await;
        let status = shared.status();
        let stalled = status.condition("Stalled").unwrap();
        assert_eq!(stalled.status, "True");
        assert!(stalled.message.contains("dead003"), "{}", stalled.message);
        assert_eq!(pass.revisions.lock().unwrap().last().unwrap(), "beef002", "drift is still corrected with the last good revision");
        assert_eq!(status.last_applied_revision.as_deref(), Some("beef002"));

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("likely deadlocked").unwrap();
    }

    fn requeue(interval_s: u64, backoff_min_s: u64) -> Requeue {
        let mut config = LoopConfig::new(PathBuf::from("unused"), Duration::from_secs(interval_s));
        config.jitter = 0.0;
        config.backoff_min = Duration::from_secs(backoff_min_s);
        Requeue::new(&config)
    }

    fn partial() -> Result<PassReport, PassFailure> {
        Ok(PassReport { failures: vec!["p/r/s: 503".into()], ..PassReport::default() })
    }

    #[test]
    fn consecutive_failures_back_off_exponentially_capped_at_the_interval() {
        let mut r = requeue(60, 2);
        let (transient, partial) = (Err(PassFailure::ReadFailed("503".into())), partial());
        let waits: Vec<Next> = (0..7).map(|i| r.on_result(if i % 2 == 0 { &transient } else { &partial })).collect();
        let secs = |s| Next::Retry(Duration::from_secs(s));
        assert_eq!(waits, vec![secs(2), secs(4), secs(8), secs(16), secs(32), secs(60), secs(60)]);
    }

    #[test]
    fn a_success_resets_the_backoff_and_waits_the_interval() {
        let mut r = requeue(60, 2);
        r.on_result(&partial());
        r.on_result(&partial());
        assert_eq!(r.on_result(&Ok(PassReport::default())), Next::Interval(Duration::from_secs(60)));
        assert_eq!(r.idle(), Next::Interval(Duration::from_secs(60)));
        assert_eq!(r.on_result(&partial()), Next::Retry(Duration::from_secs(2)));
    }

    #[test]
    fn a_permanent_failure_parks_until_unparked_and_the_wake_up_is_a_retry() {
        let mut r = requeue(60, 2);
        let next = r.on_result(&Err(PassFailure::GuardTripped("too many removals".into())));
        assert_eq!(next, Next::Parked(Duration::from_secs(60)));
        assert!(!r.may_run());
        assert_eq!(r.idle(), Next::Parked(Duration::from_secs(60)));
        r.unpark();
        assert!(r.may_run());
        assert_eq!(r.idle(), Next::Retry(Duration::from_secs(60)));
        // The parked failure counted: the next transient one backs off further.
        assert_eq!(r.on_result(&Err(PassFailure::ReadFailed("503".into()))), Next::Retry(Duration::from_secs(4)));
    }

    #[test]
    fn a_backoff_minimum_above_the_interval_is_capped_at_the_interval() {
        let mut r = requeue(10, 30);
        assert_eq!(r.on_result(&partial()), Next::Retry(Duration::from_secs(10)));
    }

    #[test]
    fn the_configured_jitter_lengthens_a_backoff_by_at_most_that_fraction() {
        let mut config = LoopConfig::new(PathBuf::from("unused"), Duration::from_secs(100));
        config.jitter = 0.5;
        let mut r = Requeue::new(&config);
        let wait = r.on_result(&partial()).wait();
        assert!(wait >= Duration::from_secs(2) && wait <= Duration::from_secs(3), "{wait:?}");
    }

    #[test]
    fn a_reverted_bad_commit_reloads_nothing_and_ends_the_stall() {
        let mut p: Policies<String> = Policies { good: None, judged_bad: None };
        assert!(matches!(p.observe("a", "rev-a", || Ok("A".into())), PolicyEvent::Loaded));
        assert!(matches!(p.observe("b", "rev-b", || Err("bad".into())), PolicyEvent::Invalid(e) if e == "bad"));
        assert!(matches!(p.observe("b", "rev-b", || panic!("a bad revision is judged once")), PolicyEvent::Unchanged));
        assert!(matches!(p.observe("a", "rev-a", || panic!("the good revision is kept, not reloaded")), PolicyEvent::Loaded));
        assert!(matches!(p.observe("a", "rev-a", || panic!("not reloaded")), PolicyEvent::Unchanged));
        assert_eq!(p.good.as_ref().map(|(d, _, r)| (d.as_str(), r.as_str())), Some(("A", "rev-a")));
    }

    #[test]
    fn only_a_guard_trip_is_permanent() {
        assert!(PassFailure::ReadFailed("503".into()).is_transient());
        assert!(!PassFailure::GuardTripped("x".into()).is_transient());
        assert_eq!(PassFailure::GuardTripped("x".into()).reason(), "GuardTripped");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_requeue_with_backoff_and_permanent_ones_wait_for_a_change() {
        let (_dir, config) = setup("good");
        let transient = PassFailure::ReadFailed("503".into());
        let permanent = PassFailure::GuardTripped("too many removals".into());
        let pass = Scripted::new(vec![Err(transient.clone()), Err(transient), Err(permanent)]);
        let shared = shared(&config);
        let (tx, rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_loop(config, pass.clone(), shared.clone(), rx, stop.clone()));
        settle().await;
        assert_eq!(pass.runs.lock().unwrap().len(), 1);
        // First retry after ~2 s (backoff_min), second after ~4 s: well before the interval.
        tokio::time::advance(Duration::from_millis(2300)).await;
        settle().await;
        assert_eq!(pass.runs.lock().unwrap().len(), 2);
        tokio::time::advance(Duration::from_millis(4500)).await;
        settle().await;
        assert_eq!(pass.runs.lock().unwrap().len(), 3);
        assert_eq!(shared.status().condition("Ready").unwrap().reason, "GuardTripped");
        // Parked: several intervals pass, nothing runs.
        tokio::time::advance(Duration::from_secs(300)).await;
        settle().await;
        assert_eq!(pass.runs.lock().unwrap().len(), 3);
        // SIGHUP forces a pass.
        tx.send(Trigger::Signal).await.unwrap();
        settle().await;
        assert_eq!(pass.runs.lock().unwrap().len(), 4);
        assert_eq!(shared.status().condition("Ready").unwrap().status, "True");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("likely deadlocked").unwrap();
    }

    #[tokio::test]
    async fn status_endpoints_report_readiness_conditions_and_metrics() {
        let (_dir, config) = setup("good");
        let shared = shared(&config);
        let app = router(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let get = |path: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get("/healthz").await.0, 200);
        assert_eq!(get("/readyz").await.0, 503, "not ready before a pass");

        let mut report = PassReport::default();
        report.drift = 2;
        report.services.insert("p/r/s".into(), ServiceStatus::new("Drifted", None));
        shared.update(|s| record_success(s, &report, "sha:1"));
        record_pass_metrics(&shared.metrics, &Ok(report), 0.5);
        assert_eq!(get("/readyz").await.0, 200);
        let (code, body) = get("/status").await;
        assert_eq!(code, 200);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["lastAppliedRevision"], "sha:1");
        assert_eq!(status["services"]["p/r/s"]["state"], "Drifted");
        let drifted = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Drifted").unwrap();
        assert_eq!(drifted["status"], "True");
        let (_, metrics) = get("/metrics").await;
        // The loop's own registry (passed in, not process-wide): exact values.
        assert!(metrics.contains("runwarden_passes_total{outcome=\"ok\"} 1.0\n"), "{metrics}");
        assert!(metrics.contains("runwarden_passes_total{outcome=\"transient\"} 0.0\n"), "{metrics}");
        assert!(metrics.contains("# TYPE runwarden_drift gauge\nrunwarden_drift 2.0\n"), "{metrics}");
        assert_eq!(config.metrics.get("runwarden_drift", &[]), Some(2.0), "the registry given is the one exposed");
    }

    #[test]
    fn editor_temporary_files_are_not_policy_files() {
        for (name, yes) in [
            ("a.yaml", true), ("b.yml", true), (".a.yaml.swp", false), ("a.yaml~", false),
            (".#a.yaml", false), ("#a.yaml#", false), ("4913", false), ("a.json", false),
        ] {
            assert_eq!(is_policy_file(Path::new(name)), yes, "{name}");
        }
    }

    #[tokio::test]
    async fn a_file_change_is_seen_within_a_second() {
        let (dir, _config) = setup("v1");
        let (tx, mut rx) = mpsc::channel(8);
        let _guard = watch(dir.path(), Duration::from_millis(100), tx).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(dir.path().join("policy.yaml"), "v2").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
        assert_eq!(got.expect("no file change trigger within a second"), Some(Trigger::FileChange));
    }

    #[test]
    fn the_content_revision_does_not_read_a_huge_policy_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x: 1\n").unwrap();
        let before = content_revision(dir.path());
        // Sparse: 64 GiB that reading whole would try to allocate.
        let huge = std::fs::File::create(dir.path().join("huge.yaml")).unwrap();
        huge.set_len(64 << 30).unwrap();
        let after = content_revision(dir.path());
        assert!(after.starts_with("sha:"), "{after}");
        assert_ne!(before, after, "the new file's path still changes the revision");
    }
}
