//! Apply: carry out a [`Plan`] against the real APIs, losing nothing.
//!
//! # Expected flow
//! For every service whose part of the plan is applicable (mode `enforce`) and has changes,
//! concurrently within a bound, **make-before-break** so that no window opens in which callers
//! are locked out (see [`apply_service`]):
//! 1. every grant: the IAP resource's policy, then the service's own IAM policy (invokers, the
//!    IAP service agent, created first with Service Usage `generateServiceIdentity`),
//! 2. the service's settings: one `services.patch` with every changed field in its `updateMask`,
//!    then waiting for the long-running operation,
//! 3. every revoke, IAP policy then service policy.
//!
//! Without a settings change, steps 1 and 3 are one atomic write per IAM resource.
//!
//! Each IAM write is a read-modify-write: the member-level changes of the plan are applied to the
//! policy as it was read (the pass's snapshot, or for a saved plan a fresh read), and written
//! with that policy's etag. Every binding the plan does not name — foreign members, other roles,
//! unmanaged conditional bindings — is carried over untouched.
//!
//! # Conflicts
//! A `409 ABORTED` means someone wrote in between. Apply re-reads that resource, **re-plans that
//! service** from the fresh state (so a concurrent writer's bindings are judged by the same rules
//! as everything else: kept when foreign), re-checks the guards on the plan with the re-planned
//! service, and tries again, a bounded number of times. A saved plan is never re-planned: a
//! service whose live etag moved since the plan was made is refused (make a fresh plan). What
//! apply receives of a saved plan is the engine's fresh plan of its services, after
//! `crate::plan::verify` found it equal to the file: nothing in the file steers a write.
//!
//! # Guarantees
//! * At most one `setIamPolicy` per IAM resource and one `services.patch` per service per pass
//!   (two `setIamPolicy`, grants then revokes, when the settings change too), plus one more per
//!   conflict.
//! * Retries of 429/503/timeouts happen in `crate::retry` only.
//! * One service failing does not stop the others; every failure is reported with the API's
//!   message and what to do.
//! * Once `shutdown` is cancelled no new write starts; the write in flight finishes.
//! * One audit event per applied change.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::google::{GoogleClient, GoogleError, ServiceUpdate};
use crate::iam::{MAX_POLICY_GROUPS_AND_DOMAINS, MAX_POLICY_MEMBERS, Policy};
use crate::model::{LiveService, LiveState, ServiceId};
use crate::plan::{
    Action, MemberChange, Plan, ResourcePlan, ServicePlan, SettingChange, apply_changes,
    Replanner, check_guards, is_governed_setting,
};
use crate::policy::model::{Desired, Settings};
use crate::progress::Progress;
use crate::retry::{Classified, ErrorClass, Poll, PollEnd, RetryPolicy, retry};

/// Limits of one apply.
#[derive(Debug, Clone)]
pub struct ApplyConfig {
    /// Services written concurrently.
    pub concurrency: usize,
    /// Re-plans per resource after `409 ABORTED` before giving up on the service.
    pub max_conflicts: u32,
    /// How long to wait for a `services.patch` operation.
    pub operation_timeout: Duration,
    pub retry: RetryPolicy,
    /// `--allow-removals N` (replaces the removal guards for this run).
    pub allow_removals: Option<usize>,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            concurrency: 8,
            max_conflicts: 5,
            operation_timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            allow_removals: None,
        }
    }
}

/// Where the plan came from, which decides what a conflict means.
#[derive(Clone, Copy)]
pub enum PlanSource<'a> {
    /// Computed in this pass from `desired` and `live` at `now`: conflicts re-plan the service.
    Fresh { desired: &'a Desired, live: &'a LiveState, now: SystemTime },
    /// A saved plan (`apply PLAN.json`), already checked against a fresh plan of the current
    /// policies (`crate::plan::verify`): applied as approved, never re-planned, and refused per
    /// service where an etag moved before the write (or a write meets a 409).
    Saved,
}

/// Who and what an audit event names.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditContext {
    /// The git revision of the policies (`--revision`, or from the CI environment).
    pub revision: String,
    /// The identity that made the change (the credential's e-mail when known).
    pub actor: String,
}

/// One applied change, as written to the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// `project/region/name`.
    pub service: String,
    /// The IAM resource or the service resource name.
    pub resource: String,
    /// `add`, `remove` or `setting`.
    pub change: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub before: Value,
    pub after: Value,
    pub reason: String,
    /// Policy locations (`file:line`).
    pub sources: Vec<String>,
    /// Etag of the resource before and after the write.
    pub etag_before: String,
    pub etag_after: String,
    pub revision: String,
    pub actor: String,
    /// Who added the member this change removes, or who set the setting it reverts (Admin
    /// Activity audit log): `added by X (console) …`, `changed by X …`, or unknown and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
}

impl AuditEvent {
    /// One line for a person: `+ user:ada@acme.com roles/run.invoker on p/r/s (missing)`.
    /// Members, roles and conditions come from Auth0 and live policies: a control or
    /// bidirectional character in them is shown as its escape (`\u{202e}`), never obeyed.
    pub fn text(&self) -> String {
        let line = match self.change.as_str() {
            "setting" => format!(
                "~ {} {} → {} on {} ({})",
                self.field.as_deref().unwrap_or("?"),
                self.before,
                self.after,
                self.service,
                self.reason
            ),
            change => format!(
                "{} {} {}{} on {} ({})",
                if change == "add" { "+" } else { "-" },
                self.member.as_deref().unwrap_or("?"),
                self.role.as_deref().unwrap_or("?"),
                self.condition.as_ref().map(|c| format!(" [{c}]")).unwrap_or_default(),
                self.service,
                self.reason
            ),
        };
        let line = match &self.added_by {
            Some(a) => format!("{line} — {a}"),
            None => line,
        };
        crate::text::visible(&line).into_owned()
    }

    /// The Cloud Logging structured entry of this event.
    pub fn log_entry(&self) -> Value {
        let mut entry = serde_json::to_value(self).unwrap_or_default();
        if let Value::Object(map) = &mut entry {
            map.insert("severity".into(), "NOTICE".into());
            map.insert("message".into(), format!("runwarden applied: {}", self.text()).into());
            map.insert("time".into(), crate::logging::rfc3339(SystemTime::now()).into());
            map.insert("event".into(), "change-applied".into());
            map.insert(
                "logging.googleapis.com/labels".into(),
                json!({"app": "runwarden", "revision": self.revision}),
            );
        }
        entry
    }
}

/// Where audit events go: stdout, as text lines or Cloud Logging JSON lines.
pub struct AuditSink {
    json: bool,
    out: Mutex<Box<dyn Write + Send>>,
}

impl AuditSink {
    pub fn new(json: bool, out: Box<dyn Write + Send>) -> AuditSink {
        AuditSink { json, out: Mutex::new(out) }
    }

    /// A sink that keeps nothing (tests that read events from the report instead).
    pub fn discard() -> AuditSink {
        AuditSink::new(false, Box::new(std::io::sink()))
    }

    /// Whether this sink writes JSON log entries (else text lines).
    pub fn is_json(&self) -> bool {
        self.json
    }

    pub fn emit(&self, event: &AuditEvent) {
        let line = if self.json { event.log_entry().to_string() } else { event.text() };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // On a terminal the progress line shares the screen: a change line starts on its own.
        crate::logging::clear_status_line();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// The pass's summary line.
    pub fn summary(&self, report: &ApplyReport, audit: &AuditContext) {
        let text = report.summary_line();
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        crate::logging::clear_status_line();
        let line = if self.json {
            let severity = if report.failures().next().is_some() { "ERROR" } else { "NOTICE" };
            json!({
                "severity": severity,
                "message": text,
                "time": crate::logging::rfc3339(SystemTime::now()),
                "event": "apply-summary",
                "servicesApplied": report.applied_services(),
                "servicesFailed": report.failures().count(),
                "changesApplied": report.events.len(),
                "revision": audit.revision,
                "actor": audit.actor,
                "logging.googleapis.com/labels": {"app": "runwarden", "revision": audit.revision},
            })
            .to_string()
        } else {
            text
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// What happened to one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum ServiceOutcome {
    /// Every change was written (possibly after re-planning).
    Applied { service: String, changes: usize },
    /// A conflict re-plan found nothing left to do.
    AlreadyConverged { service: String },
    /// The saved plan is stale for this service.
    Stale { service: String, message: String },
    /// A call failed; `message` has the API's words and what to do.
    Failed { service: String, message: String, transient: bool },
    /// Shutdown began before this service was written.
    Skipped { service: String },
}

impl ServiceOutcome {
    pub fn service(&self) -> &str {
        match self {
            ServiceOutcome::Applied { service, .. }
            | ServiceOutcome::AlreadyConverged { service }
            | ServiceOutcome::Stale { service, .. }
            | ServiceOutcome::Failed { service, .. }
            | ServiceOutcome::Skipped { service } => service,
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(self, ServiceOutcome::Stale { .. } | ServiceOutcome::Failed { .. } | ServiceOutcome::Skipped { .. })
    }
}

/// The result of an apply.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    /// One outcome per service that had applicable changes, sorted by service.
    pub outcomes: Vec<ServiceOutcome>,
    /// Every applied change, in the order applied per service (services sorted).
    pub events: Vec<AuditEvent>,
    /// Changes in `warn`/`observe` services that were not applied.
    pub not_applied: usize,
}

impl ApplyReport {
    pub fn failures(&self) -> impl Iterator<Item = &ServiceOutcome> {
        self.outcomes.iter().filter(|o| o.is_failure())
    }

    pub fn applied_services(&self) -> usize {
        self.outcomes.iter().filter(|o| matches!(o, ServiceOutcome::Applied { .. })).count()
    }

    /// Applied changes by kind (`add`, `remove`, `setting`).
    pub fn applied_by_kind(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for e in &self.events {
            *out.entry(e.change.clone()).or_insert(0) += 1;
        }
        out
    }

    /// `Apply complete: 3 services changed (5 added, 2 removed, 1 setting); 1 failed.`
    pub fn summary_line(&self) -> String {
        let kinds = self.applied_by_kind();
        let n = |k: &str| kinds.get(k).copied().unwrap_or(0);
        let failed = self.failures().count();
        let count = crate::text::count;
        let mut line = format!(
            "Apply {}: {} changed ({} added, {} removed, {})",
            if failed == 0 { "complete" } else { "incomplete" },
            count(self.applied_services(), "service"),
            n("add"),
            n("remove"),
            count(n("setting") as usize, "setting")
        );
        if self.not_applied > 0 {
            line.push_str(&format!("; {} not applied (warn/observe mode)", count(self.not_applied, "change")));
        }
        if failed > 0 {
            line.push_str(&format!("; {} failed:", count(failed, "service")));
            for f in self.failures() {
                let message = match f {
                    ServiceOutcome::Stale { message, .. } | ServiceOutcome::Failed { message, .. } => message.as_str(),
                    _ => "shutdown began before it was written; the next pass will converge it",
                };
                line.push_str(&format!("\n  {}: {message}", f.service()));
            }
        } else {
            line.push('.');
        }
        line
    }
}

/// Everything one apply needs from the outside.
pub struct Applier<'a> {
    pub google: &'a GoogleClient,
    pub settings: &'a Settings,
    pub config: &'a ApplyConfig,
    pub source: PlanSource<'a>,
    pub audit: &'a AuditContext,
    pub sink: &'a AuditSink,
    pub shutdown: CancellationToken,
    pub progress: &'a Progress,
}

impl Applier<'_> {
    /// The retry policy of every call: the configured one, its waits ended by shutdown (no
    /// write is retried after shutdown; the write in flight still finishes).
    fn retries(&self) -> RetryPolicy {
        self.config.retry.clone().until(&self.shutdown)
    }
}

/// What the services of one apply share: the plan as currently approved (conflict re-plans
/// replace their service in it and the guards are re-checked on the whole), and the re-planner,
/// prepared on the first conflict and reused by every later one.
struct Shared<'s> {
    approved: Mutex<Plan>,
    replanner: std::sync::OnceLock<Replanner<'s>>,
}

/// A failure of one service's part; each variant maps to one [`ServiceOutcome`].
#[derive(Debug)]
enum Failure {
    /// The saved plan no longer matches the live resource.
    Stale(String),
    /// A call failed in a way the next pass may get past (quota, unavailable, conflicts).
    Transient(String),
    /// A call failed in a way that needs a person (permission, invalid request, limits).
    Permanent(String),
    /// A conflict re-plan tripped a guard.
    Guard(String),
    /// Shutdown began before the write.
    Shutdown,
}

impl Failure {
    fn into_outcome(self, service: String) -> ServiceOutcome {
        match self {
            Failure::Stale(message) => ServiceOutcome::Stale { service, message },
            Failure::Transient(message) => ServiceOutcome::Failed { service, message, transient: true },
            Failure::Permanent(message) | Failure::Guard(message) => {
                ServiceOutcome::Failed { service, message, transient: false }
            }
            Failure::Shutdown => ServiceOutcome::Skipped { service },
        }
    }
}

impl Failure {
    fn from_google(what: &str, err: &GoogleError) -> Failure {
        let todo = match err.class() {
            ErrorClass::PermissionDenied => "grant runwarden's identity the permission named above (see deploy/iam/)",
            ErrorClass::NotFound => "the service may have been deleted; the next pass re-lists it",
            ErrorClass::Quota | ErrorClass::Transient => "a temporary problem; the next pass retries",
            ErrorClass::Conflict => "someone keeps changing this resource; the next pass re-plans it",
            ErrorClass::Unauthenticated => "check runwarden's Google credentials",
            ErrorClass::Fatal => "the request was refused as invalid; report this with the message",
        };
        let message = format!("{what} failed: {err}; {todo}");
        match err.class() {
            ErrorClass::Quota | ErrorClass::Transient | ErrorClass::Conflict => Failure::Transient(message),
            _ => Failure::Permanent(message),
        }
    }
}

/// Applies `plan`. The plan must have passed the guards (see [`check_guards`]).
pub async fn apply(plan: &Plan, applier: &Applier<'_>) -> ApplyReport {
    let applicable: Vec<&ServicePlan> =
        plan.services.iter().filter(|s| s.is_applicable() && s.has_writes()).collect();
    let not_applied = plan
        .services
        .iter()
        .filter(|s| !s.is_applicable())
        .map(|s| s.count(Action::Add) + s.count(Action::Remove) + s.settings.len())
        .sum();
    applier.progress.start("applying", applicable.len() as u64);
    // The plan as currently approved: conflict re-plans replace their service in it and the
    // guards are re-checked on the whole.
    let shared = Shared { approved: Mutex::new(plan.clone()), replanner: std::sync::OnceLock::new() };
    // Collected first: a stream holding the closure would not be provably `Send` (rustc#102211).
    // Services planned for their last-applied record alone (no access change).
    let record_only: std::collections::BTreeSet<&str> =
        applicable.iter().filter(|sp| !sp.has_changes()).map(|sp| sp.id.as_str()).collect();
    let services: Vec<_> =
        interleave_regions(applicable).into_iter().map(|sp| apply_one(sp, applier, &shared)).collect();
    let mut results = run_bounded(services, applier.config.concurrency).await;
    // Back in service order (stable: a service's events keep their order).
    results.sort_by(|a, b| a.0.service().cmp(b.0.service()));
    applier.progress.finish();
    let mut report = ApplyReport { not_applied, ..ApplyReport::default() };
    for (outcome, events) in results {
        // A service planned for its last-applied record alone changes nobody's access: it is no
        // outcome of its own (a record that is not written is a warning on stderr, and the next
        // pass writes it), unless a conflict re-plan found access changes and applied them.
        if record_only.contains(outcome.service()) && events.is_empty() {
            continue;
        }
        report.outcomes.push(outcome);
        report.events.extend(events);
    }
    report
}

/// The services in an order that takes (project, region) groups in turn: Cloud Run counts
/// write quotas per project and region, and each region has its own pacer
/// (`google::GoogleClient`), so the services in flight at once spread over the regions instead
/// of queueing behind one region's quota while the others sit idle.
fn interleave_regions(services: Vec<&ServicePlan>) -> Vec<&ServicePlan> {
    let mut groups: Vec<((&str, &str), std::collections::VecDeque<&ServicePlan>)> = Vec::new();
    for sp in services {
        let key = (sp.project.as_str(), sp.region.as_str());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push_back(sp),
            None => groups.push((key, std::collections::VecDeque::from([sp]))),
        }
    }
    let mut out = Vec::new();
    while groups.iter().any(|(_, g)| !g.is_empty()) {
        out.extend(groups.iter_mut().filter_map(|(_, g)| g.pop_front()));
    }
    out
}

/// Applies one service's part and reports its outcome with the events it applied.
async fn apply_one<'s>(sp: &ServicePlan, applier: &Applier<'s>, shared: &Shared<'s>) -> (ServiceOutcome, Vec<AuditEvent>) {
    let started = Instant::now();
    let mut events = Vec::new();
    let result = apply_service(sp, applier, shared, &mut events).await;
    applier.progress.inc();
    let service = sp.id.clone();
    let outcome = match result {
        Ok(()) if events.is_empty() => ServiceOutcome::AlreadyConverged { service },
        Ok(()) => ServiceOutcome::Applied { service, changes: events.len() },
        Err(failure) => failure.into_outcome(service),
    };
    tracing::info!(service = %sp.id, outcome = ?outcome_name(&outcome), changes = events.len(),
        elapsed_ms = started.elapsed().as_millis() as u64, "service applied");
    (outcome, events)
}

fn outcome_name(o: &ServiceOutcome) -> &'static str {
    match o {
        ServiceOutcome::Applied { .. } => "applied",
        ServiceOutcome::AlreadyConverged { .. } => "already-converged",
        ServiceOutcome::Stale { .. } => "stale",
        ServiceOutcome::Failed { .. } => "failed",
        ServiceOutcome::Skipped { .. } => "skipped",
    }
}

/// Runs `futures` at most `limit` at a time, keeping their order. futures' `buffered` polls
/// only the futures that were woken, where a hand-written join re-polled all on every wake-up.
async fn run_bounded<F: std::future::Future>(futures: Vec<F>, limit: usize) -> Vec<F::Output> {
    use futures_util::StreamExt;
    futures_util::stream::iter(futures).buffered(limit.max(1)).collect().await
}

/// Which IAM resource of a service.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Iap,
    Service,
}

/// Which member changes of a resource plan one write carries (make-before-break, see
/// [`apply_service`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Every change in one write (no settings change: one atomic write per resource).
    All,
    /// Only what grants, before the settings patch.
    Grants,
    /// Only what revokes, after the settings patch (a re-plan after a conflict here carries
    /// everything it finds left to do).
    Revokes,
}

impl Phase {
    fn keeps(self, action: Action) -> bool {
        match self {
            Phase::All => true,
            Phase::Grants => action != Action::Remove,
            Phase::Revokes => action != Action::Add,
        }
    }

    fn filter(self, plan: &ResourcePlan) -> ResourcePlan {
        ResourcePlan { changes: plan.changes.iter().filter(|c| self.keeps(c.action)).cloned().collect(), ..plan.clone() }
    }
}

/// One service, **make-before-break**: when its settings change, first every grant (IAP
/// accessors, the IAP agent's invoker binding, new invokers), then the settings patch and its
/// operation, then every revoke. Turning IAP on, accessors and the agent exist before the switch
/// and direct invokers go only after it; turning IAP off, the direct invokers exist before the
/// switch and the accessors and the agent go only after it. Without a settings change each IAM
/// resource gets one write (atomic). A failed step stops the service's later steps, and the
/// failure says what state the service was left in.
async fn apply_service<'s>(
    planned: &ServicePlan,
    a: &Applier<'s>,
    shared: &Shared<'s>,
    events: &mut Vec<AuditEvent>,
) -> Result<(), Failure> {
    let id = planned.service_id();
    if matches!(a.source, PlanSource::Saved) {
        check_saved_etags(&id, planned, a).await?;
    }
    // The service as this apply currently plans it; a conflict re-plan replaces it.
    let mut current = planned.clone();
    let mut known: [Option<Policy>; 2] = [None, None];
    let mut steps = Steps::default();
    if current.settings.is_empty() {
        write_policies(&id, Phase::All, &mut current, &mut known, a, shared, events).await.map_err(|f| steps.left_in(f))?;
        // The last-applied record alone: a patch that is not waited for and fails nothing.
        if current.record.is_some() {
            patch_settings(&id, &mut current, a, shared, events).await?;
        }
        return Ok(());
    }
    write_policies(&id, Phase::Grants, &mut current, &mut known, a, shared, events).await.map_err(|f| steps.left_in(f))?;
    steps.granted = true;
    patch_settings(&id, &mut current, a, shared, events).await.map_err(|f| steps.left_in(f))?;
    steps.patched = true;
    write_policies(&id, Phase::Revokes, &mut current, &mut known, a, shared, events).await.map_err(|f| steps.left_in(f))
}

/// The IAP policy, then the service policy, each with the changes `phase` keeps.
async fn write_policies<'s>(
    id: &ServiceId,
    phase: Phase,
    current: &mut ServicePlan,
    known: &mut [Option<Policy>; 2],
    a: &Applier<'s>,
    shared: &Shared<'s>,
    events: &mut Vec<AuditEvent>,
) -> Result<(), Failure> {
    for (i, which) in [Which::Iap, Which::Service].into_iter().enumerate() {
        let resource = match which {
            Which::Iap => &current.iap,
            Which::Service => &current.iam,
        };
        let Some(resource) = resource.as_ref().map(|r| phase.filter(r)) else { continue };
        if !resource.changes.iter().any(|c| c.action != Action::Keep) {
            continue;
        }
        if phase != Phase::Revokes && which == Which::Service {
            ensure_iap_agent(id, &resource, a).await?;
        }
        write_policy(id, which, phase, &resource, current, &mut known[i], a, shared, events).await?;
    }
    Ok(())
}

/// The project number of `member` when it is a project's IAP service agent
/// (`serviceAccount:service-NUMBER@gcp-sa-iap.iam.gserviceaccount.com`).
fn iap_agent_number(member: &str) -> Option<u64> {
    member
        .strip_prefix("serviceAccount:service-")?
        .strip_suffix("@gcp-sa-iap.iam.gserviceaccount.com")?
        .parse()
        .ok()
}

/// Before the IAP service agent is granted `roles/run.invoker`, makes sure it exists: Google
/// creates it lazily, and a grant to it before then is a 400 ("Service account ... does not
/// exist"). Service Usage `services.generateServiceIdentity` for `iap.googleapis.com` creates it
/// (idempotent; reference/google/serviceusage.v1beta1.json), as Google's Terraform modules do
/// with `google_project_service_identity` before granting the agent a role.
async fn ensure_iap_agent(id: &ServiceId, resource: &ResourcePlan, a: &Applier<'_>) -> Result<(), Failure> {
    let Some(number) = resource
        .changes
        .iter()
        .filter(|c| c.action == Action::Add)
        .find_map(|c| iap_agent_number(c.member.as_str()))
    else {
        return Ok(());
    };
    let what = format!("creating the IAP service agent of project {number} (for {id})");
    let mut op = retry(&a.retries(), "generateServiceIdentity", || a.google.generate_iap_identity(number))
        .await
        .map_err(|e| Failure::from_google(&what, &e))?;
    let mut poll = Poll::new(a.config.operation_timeout, &a.shutdown);
    while !op.done {
        if poll.ready().await.is_err() {
            return Err(Failure::Transient(format!("{what}: the operation {} did not finish in time; the next pass retries", op.name)));
        }
        let name = op.name.clone();
        op = retry(&a.retries(), "serviceusage operations.get", || a.google.get_service_usage_operation(&name))
            .await
            .map_err(|e| Failure::from_google(&what, &e))?;
    }
    match op.error {
        Some(error) => Err(Failure::Transient(format!("{what} failed: {error}; the next pass retries"))),
        None => Ok(()),
    }
}

/// A 400 "Service account ... does not exist" on a write that grants the IAP service agent: the
/// agent was just created and has not propagated yet. gcloud treats this 400 as "IAP service
/// agent not ready yet" and asks to wait a few minutes (`_HandleIap` in
/// googlecloudsdk/command_lib/run/serverless_operations.py), so it is transient here: the next
/// pass grants it.
fn agent_not_ready(plan: &ResourcePlan, err: &GoogleError) -> Option<Failure> {
    let agent = plan
        .changes
        .iter()
        .find(|c| c.action == Action::Add && iap_agent_number(c.member.as_str()).is_some())?;
    let GoogleError::Api { code: 400, message, .. } = err else { return None };
    message.contains("does not exist").then(|| {
        Failure::Transient(format!(
            "granting {} roles/run.invoker failed: {err}; the IAP service agent was just created and has not propagated yet; the next pass grants it (IAP stays off until then)",
            agent.member
        ))
    })
}

/// Which steps of a make-before-break sequence completed, for the failure message.
#[derive(Default)]
struct Steps {
    granted: bool,
    patched: bool,
}

impl Steps {
    fn state(&self) -> &'static str {
        match (self.granted, self.patched) {
            (false, _) => "the service was left with its settings unchanged and nothing revoked (only grants written before the failure took effect; nobody lost access)",
            (true, false) => "the service was left with the new grants written but its settings and every revoke unchanged (nobody lost access)",
            (true, true) => "the service was left with the new grants and settings but the revokes not written (nobody lost access; some old access remains until the next pass)",
        }
    }

    fn left_in(&self, failure: Failure) -> Failure {
        let state = self.state();
        match failure {
            Failure::Stale(m) => Failure::Stale(format!("{m}; {state}")),
            Failure::Transient(m) => Failure::Transient(format!("{m}; {state}")),
            Failure::Permanent(m) => Failure::Permanent(format!("{m}; {state}")),
            Failure::Guard(m) => Failure::Guard(format!("{m}; {state}")),
            Failure::Shutdown => Failure::Shutdown,
        }
    }
}

/// A saved plan is refused per service as a whole: before the first write, every resource the
/// service's part would write (IAP policy, service policy, service settings) must still carry the
/// etag the plan was made from. Checking each resource only when its turn comes would write the
/// IAP policy and then refuse the service policy, leaving the service half applied.
async fn check_saved_etags(id: &ServiceId, planned: &ServicePlan, a: &Applier<'_>) -> Result<(), Failure> {
    for (which, resource) in [(Which::Iap, &planned.iap), (Which::Service, &planned.iam)] {
        let Some(r) = resource else { continue };
        if !r.changes.iter().any(|c| c.action != Action::Keep) {
            continue;
        }
        let fresh = read_policy(a, id, which, &r.resource).await?;
        if fresh.etag != r.etag {
            return Err(Failure::Stale(format!(
                "the IAM policy of {} changed since the plan was made (etag {} → {}); nothing was written for this service; run `runwarden plan --out PLAN.json` again",
                r.resource, r.etag, fresh.etag
            )));
        }
    }
    if !planned.settings.is_empty() {
        let fresh = retry(&a.retries(), "services.get", || a.google.get_service(id))
            .await
            .map_err(|e| Failure::from_google("re-reading the service", &e))?;
        if fresh.etag != planned.etag {
            return Err(Failure::Stale(format!(
                "the service {id} changed since the plan was made (etag {} → {}); nothing was written for this service; run `runwarden plan --out PLAN.json` again",
                planned.etag, fresh.etag
            )));
        }
    }
    Ok(())
}

/// The project number of an IAP resource name `projects/NUMBER/iap_web/...`.
fn iap_project_number(resource: &str) -> Option<u64> {
    resource.strip_prefix("projects/")?.split('/').next()?.parse().ok()
}

async fn read_policy(a: &Applier<'_>, id: &ServiceId, which: Which, resource: &str) -> Result<Policy, Failure> {
    match which {
        Which::Service => retry(&a.retries(), "getIamPolicy", || a.google.get_iam_policy(id))
            .await
            .map_err(|e| Failure::from_google("reading the IAM policy", &e)),
        Which::Iap => {
            let number = iap_project_number(resource)
                .ok_or_else(|| Failure::Permanent(format!("{resource} is not an IAP resource name")))?;
            retry(&a.retries(), "iap getIamPolicy", || a.google.get_iap_iam_policy(id, number))
                .await
                .map_err(|e| Failure::from_google("reading the IAP policy", &e))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_policy<'s>(
    id: &ServiceId,
    which: Which,
    phase: Phase,
    planned: &ResourcePlan,
    current: &mut ServicePlan,
    known: &mut Option<Policy>,
    a: &Applier<'s>,
    shared: &Shared<'s>,
    events: &mut Vec<AuditEvent>,
) -> Result<(), Failure> {
    let mut plan = planned.clone();
    // After this service's grants were written, the revokes apply to the policy as written.
    let mut policy = match known.take() {
        Some(p) => p,
        None => starting_policy(a, id, which, &plan).await?,
    };
    let mut conflicts = ConflictBudget::new(a.config.max_conflicts);
    loop {
        if a.shutdown.is_cancelled() {
            return Err(Failure::Shutdown);
        }
        let Some(after) = edited_policy(&plan, &policy)? else {
            *known = Some(policy);
            return Ok(());
        };
        match set_policy(a, id, which, &plan.resource, &after).await {
            Ok(written) => {
                for change in plan.changes.iter().filter(|c| c.action != Action::Keep) {
                    let event = member_event(id, &plan.resource, change, &policy.etag, &written.etag, a.audit);
                    a.sink.emit(&event);
                    events.push(event);
                }
                *known = Some(written);
                return Ok(());
            }
            Err(err) if err.class() == ErrorClass::Conflict => {}
            Err(err) => {
                return Err(agent_not_ready(&plan, &err).unwrap_or_else(|| Failure::from_google("writing the IAM policy", &err)));
            }
        }
        let inputs = on_conflict(
            a,
            &mut conflicts,
            || format!("the IAM policy of {} changed while applying the saved plan (409 ABORTED); run `runwarden plan --out PLAN.json` again", plan.resource),
            |n| format!("the IAM policy of {} kept changing under runwarden ({n} conflicts); the next pass re-plans it", plan.resource),
        )?;
        tracing::warn!(service = %id, resource = %plan.resource, conflicts = conflicts.seen, "409 ABORTED: re-reading and re-planning the service");
        let fresh_policy = read_policy(a, id, which, &plan.resource).await?;
        let Some(snapshot) = inputs.live.services.get(id) else {
            return Err(Failure::Permanent(format!("{id} is not in the pass's snapshot")));
        };
        let mut fresh: LiveService = snapshot.clone();
        // The other resource keeps what this apply already made of it.
        match which {
            Which::Service => fresh.iam = Some(fresh_policy.clone()),
            Which::Iap => fresh.iap_iam = Some(fresh_policy.clone()),
        }
        let Some(replanned) = replan(a, shared, inputs, &fresh)? else { return Ok(()) };
        let next = match which {
            Which::Service => replanned.iam.clone(),
            Which::Iap => replanned.iap.clone(),
        };
        *current = replanned;
        let Some(next) = next else { return Ok(()) };
        // Grants stay grants; after the patch, a re-plan carries everything left to do.
        plan = if phase == Phase::Grants { Phase::Grants.filter(&next) } else { next };
        policy = fresh_policy;
    }
}

/// The policy the changes apply to: the snapshot they were computed from, or (saved plan) a
/// fresh read that must still carry the planned etag.
async fn starting_policy(a: &Applier<'_>, id: &ServiceId, which: Which, plan: &ResourcePlan) -> Result<Policy, Failure> {
    match a.source {
        PlanSource::Fresh { live, .. } => {
            let svc = live.services.get(id);
            let snapshot = match which {
                Which::Service => svc.and_then(|s| s.iam.clone()),
                Which::Iap => svc.and_then(|s| s.iap_iam.clone()),
            };
            match snapshot {
                Some(p) if p.etag == plan.etag => Ok(p),
                _ => read_policy(a, id, which, &plan.resource).await,
            }
        }
        PlanSource::Saved => {
            let fresh = read_policy(a, id, which, &plan.resource).await?;
            if fresh.etag != plan.etag {
                return Err(Failure::Stale(format!(
                    "the IAM policy of {} changed since the plan was made (etag {} → {}); nothing was written for this service; run `runwarden plan --out PLAN.json` again",
                    plan.resource, plan.etag, fresh.etag
                )));
            }
            Ok(fresh)
        }
    }
}

/// `policy` with the plan's member changes made: `None` when that changes nothing worth a
/// write; an error when the result would exceed Google's member limit or its limit on groups and
/// domains (the plan reports both as findings first; this stops the write all the same).
fn edited_policy(plan: &ResourcePlan, policy: &Policy) -> Result<Option<Policy>, Failure> {
    let mut after = policy.clone();
    if !apply_changes(&plan.changes, &mut after) || after == policy_with_version(policy, after.version) {
        return Ok(None);
    }
    if after.member_count() > MAX_POLICY_MEMBERS {
        return Err(Failure::Permanent(format!(
            "the IAM policy of {} would hold {} members, above Google's limit of {MAX_POLICY_MEMBERS}; grant a group or a workforce pool group instead of individual members",
            plan.resource,
            after.member_count()
        )));
    }
    let groups = after.group_and_domain_count();
    if groups > MAX_POLICY_GROUPS_AND_DOMAINS && groups > policy.group_and_domain_count() {
        return Err(Failure::Permanent(format!(
            "the IAM policy of {} would hold {groups} groups and domains, above Google's limit of {MAX_POLICY_GROUPS_AND_DOMAINS}; nothing was written; grant fewer, larger groups",
            plan.resource
        )));
    }
    Ok(Some(after))
}

async fn set_policy(a: &Applier<'_>, id: &ServiceId, which: Which, resource: &str, after: &Policy) -> Result<Policy, GoogleError> {
    match which {
        Which::Service => retry(&a.retries(), "setIamPolicy", || a.google.set_iam_policy(id, after)).await,
        Which::Iap => {
            let number = iap_project_number(resource).unwrap_or_default();
            retry(&a.retries(), "iap setIamPolicy", || a.google.set_iap_iam_policy(id, number, after)).await
        }
    }
}

/// What a fresh plan was computed from: a conflict re-plans the service with the same inputs.
#[derive(Clone, Copy)]
struct PlanInputs<'s> {
    desired: &'s Desired,
    live: &'s LiveState,
    now: SystemTime,
}

/// The `409 ABORTED` answers one resource met in this apply, and what the next one means.
#[derive(Debug, Clone, Copy)]
struct ConflictBudget {
    seen: u32,
    max: u32,
}

/// What to do after a `409 ABORTED`.
#[derive(Debug, PartialEq, Eq)]
enum OnConflict {
    /// Re-read the resource and re-plan the service.
    Replan,
    /// A saved plan is never re-planned: the service is stale.
    Stale,
    /// The resource kept changing: give up on it for this pass after this many conflicts.
    Exhausted(u32),
}

impl ConflictBudget {
    fn new(max: u32) -> ConflictBudget {
        ConflictBudget { seen: 0, max }
    }

    fn on_conflict(&mut self, saved_plan: bool) -> OnConflict {
        self.seen += 1;
        if saved_plan {
            OnConflict::Stale
        } else if self.seen > self.max {
            OnConflict::Exhausted(self.seen - 1)
        } else {
            OnConflict::Replan
        }
    }
}

/// The one answer to a `409 ABORTED`, for IAM policies and settings alike (see
/// [`ConflictBudget`]): the inputs to re-plan with, or the failure.
fn on_conflict<'s>(
    a: &Applier<'s>,
    budget: &mut ConflictBudget,
    stale: impl FnOnce() -> String,
    exhausted: impl FnOnce(u32) -> String,
) -> Result<PlanInputs<'s>, Failure> {
    let saved = matches!(a.source, PlanSource::Saved);
    match (budget.on_conflict(saved), a.source) {
        (OnConflict::Replan, PlanSource::Fresh { desired, live, now }) => Ok(PlanInputs { desired, live, now }),
        (OnConflict::Exhausted(n), _) => Err(Failure::Transient(exhausted(n))),
        (OnConflict::Stale | OnConflict::Replan, _) => Err(Failure::Stale(stale())),
    }
}

/// Re-plans the service from `fresh` and re-checks the guards on the whole plan with it: `None`
/// when the service is no longer governed or enforced (nothing left to write).
fn replan<'s>(
    a: &Applier<'s>,
    shared: &Shared<'s>,
    inputs: PlanInputs<'s>,
    fresh: &LiveService,
) -> Result<Option<ServicePlan>, Failure> {
    let replanner = shared.replanner.get_or_init(|| Replanner::new(inputs.desired, inputs.live, inputs.now));
    let Some(replanned) = replanner.replan(fresh).filter(|s| s.is_applicable()) else {
        return Ok(None);
    };
    recheck_guards(a, &shared.approved, &replanned)?;
    Ok(Some(replanned))
}

/// `policy` as it would compare after an edit that changed only the version: an edit that only
/// bumps the version is not worth a write.
fn policy_with_version(policy: &Policy, version: u32) -> Policy {
    Policy { version, ..policy.clone() }
}

/// Replaces the service in the approved plan and re-checks every guard on the whole.
fn recheck_guards(a: &Applier<'_>, approved: &Mutex<Plan>, replanned: &ServicePlan) -> Result<(), Failure> {
    let mut plan = approved.lock().unwrap_or_else(|e| e.into_inner());
    let slot = plan.services.iter().position(|s| s.id == replanned.id);
    let previous = match slot {
        Some(i) => Some(std::mem::replace(&mut plan.services[i], replanned.clone())),
        None => {
            plan.services.push(replanned.clone());
            None
        }
    };
    let trips = check_guards(&plan, a.settings, a.config.allow_removals);
    if trips.is_empty() {
        return Ok(());
    }
    // Put the approved version back: the refused re-plan is not part of the plan.
    match (slot, previous) {
        (Some(i), Some(prev)) => plan.services[i] = prev,
        _ => {
            plan.services.pop();
        }
    }
    let messages: Vec<String> = trips.iter().map(|t| t.to_string()).collect();
    Err(Failure::Guard(format!(
        "after a concurrent change the re-planned service trips a guard, so nothing more was written for it: {}",
        messages.join("; ")
    )))
}

async fn patch_settings<'s>(
    id: &ServiceId,
    current: &mut ServicePlan,
    a: &Applier<'s>,
    shared: &Shared<'s>,
    events: &mut Vec<AuditEvent>,
) -> Result<(), Failure> {
    let mut settings: Vec<SettingChange> = current.settings.clone();
    let mut etag = current.etag.clone();
    let mut conflicts = ConflictBudget::new(a.config.max_conflicts);
    loop {
        let annotations = record_annotations(id, current, &a.audit.revision);
        if settings.is_empty() && annotations.is_none() {
            return Ok(());
        }
        // Only the governed fields, each under its own update-mask path, are ever patched.
        if let Some(c) = settings.iter().find(|c| !is_governed_setting(c)) {
            return Err(Failure::Permanent(format!(
                "refusing to patch `{}` (updateMask `{}`) of {id}: runwarden only changes {}; nothing was written for the settings",
                c.field,
                c.update_mask_path,
                crate::plan::GOVERNED_SETTINGS.join(", ")
            )));
        }
        if a.shutdown.is_cancelled() {
            return Err(Failure::Shutdown);
        }
        let mut update = ServiceUpdate {
            fields: settings.iter().map(|c| (c.update_mask_path.clone(), c.after.clone())).collect(),
            etag: etag.clone(),
        };
        // The `annotations` mask path replaces the whole map (AIP-161: a map field in a field
        // mask is replaced as a unit), so every annotation as read is sent back with the record.
        if let Some(all) = &annotations {
            update.fields.push(("annotations".into(), serde_json::json!(all)));
        }
        match retry(&a.retries(), "services.patch", || a.google.patch_service(id, &update)).await {
            // A record-only patch changes no setting: it is not waited for, and its failure
            // fails nothing (the IAM changes are in; what it loses is the memory of members
            // granted in this pass, said on stderr).
            Ok(_) if settings.is_empty() => return Ok(()),
            Ok(op) => return finish_patch(id, a, op, &settings, &etag, events).await,
            Err(err) if err.class() == ErrorClass::Conflict => {}
            Err(err) if settings.is_empty() => {
                eprintln!("warning: the last-applied record of {id} was not written ({err}); members granted in this pass will be judged foreign once no policy grants them");
                return Ok(());
            }
            Err(err) => return Err(Failure::from_google("changing the service's settings", &err)),
        }
        let inputs = on_conflict(
            a,
            &mut conflicts,
            || format!("the service {id} changed since the plan was made (409 ABORTED on services.patch); run `runwarden plan --out PLAN.json` again"),
            |_| format!("the service {id} kept changing under runwarden; the next pass re-plans it"),
        )?;
        let mut fresh = retry(&a.retries(), "services.get", || a.google.get_service(id))
            .await
            .map_err(|e| Failure::from_google("re-reading the service", &e))?;
        if let Some(snapshot) = inputs.live.services.get(id) {
            fresh.iam = snapshot.iam.clone();
            fresh.iap_iam = snapshot.iap_iam.clone();
        }
        let Some(replanned) = replan(a, shared, inputs, &fresh)? else { return Ok(()) };
        settings = replanned.settings.clone();
        etag = fresh.etag.clone();
        *current = replanned;
    }
}

/// The annotations to write with a service's changes: the plan's last-applied record stamped
/// with this revision, when it differs from the one read and fits Cloud Run's limit (a record
/// that does not fit is not written, with a warning: members granted since are not remembered).
fn record_annotations(
    id: &ServiceId,
    plan: &ServicePlan,
    revision: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let w = plan.record.as_ref()?;
    if plan.mode != crate::plan::PlanMode::Enforce {
        return None;
    }
    let text = w.record.encode(revision);
    if w.current.as_deref() == Some(text.as_str()) || (w.current.is_none() && w.record.grants.is_empty()) {
        return None;
    }
    match crate::model::annotations_with(&w.others, &text) {
        Ok(all) => Some(all),
        Err(size) => {
            eprintln!(
                "warning: the last-applied record of {id} is not written: the service's annotations would be {size} bytes, over Cloud Run's limit of {} (Kubernetes' annotation limit); members granted in this pass will be judged foreign once no policy grants them",
                crate::model::ANNOTATIONS_LIMIT_BYTES
            );
            None
        }
    }
}

/// Waits for the patch's operation and records one event per changed setting.
async fn finish_patch(
    id: &ServiceId,
    a: &Applier<'_>,
    op: crate::google::Operation,
    settings: &[SettingChange],
    etag: &str,
    events: &mut Vec<AuditEvent>,
) -> Result<(), Failure> {
    let op = wait_done(a, op).await?;
    if let Some(error) = op.error {
        let fields: Vec<&str> = settings.iter().map(|c| c.field.as_str()).collect();
        return Err(Failure::Transient(format!(
            "changing the settings of {id} ({}) failed: the operation {} reported: {error}; the settings are unchanged; check the service's latest revision, then let the next pass retry",
            fields.join(", "),
            op.name
        )));
    }
    for change in settings {
        let event = setting_event(id, change, etag, a.audit);
        a.sink.emit(&event);
        events.push(event);
    }
    Ok(())
}

/// Waits (bounded) until a `services.patch` operation is done: `operations.wait` calls spaced
/// by `retry::Poll` (an answer of "not done" at once is not re-asked at once), for at most
/// `operation_timeout`, and none after shutdown.
async fn wait_done(a: &Applier<'_>, mut op: crate::google::Operation) -> Result<crate::google::Operation, Failure> {
    let mut poll = Poll::new(a.config.operation_timeout, &a.shutdown);
    while !op.done {
        if let Err(end) = poll.ready().await {
            let why = match end {
                PollEnd::TimedOut => format!("did not finish within {}s", a.config.operation_timeout.as_secs()),
                PollEnd::ShuttingDown => "was not waited for: runwarden is shutting down".into(),
            };
            return Err(Failure::Transient(format!(
                "the operation {} {why}; the change may still complete; the next pass checks",
                op.name
            )));
        }
        let name = op.name.clone();
        let step = poll.left().min(Duration::from_secs(30));
        op = retry(&a.retries(), "operations.wait", || a.google.wait_operation(&name, step))
            .await
            .map_err(|e| Failure::from_google("waiting for the operation", &e))?;
    }
    Ok(op)
}

fn member_event(
    id: &ServiceId,
    resource: &str,
    change: &MemberChange,
    etag_before: &str,
    etag_after: &str,
    audit: &AuditContext,
) -> AuditEvent {
    let add = change.action == Action::Add;
    AuditEvent {
        service: id.to_string(),
        resource: resource.to_string(),
        change: if add { "add" } else { "remove" }.into(),
        role: Some(change.role.to_string()),
        condition: change.condition.as_ref().map(|c| c.title.clone()),
        member: Some(change.member.to_string()),
        field: None,
        before: if add { "absent" } else { "present" }.into(),
        after: if add { "present" } else { "absent" }.into(),
        reason: change.reason.as_str().into(),
        sources: change.sources.to_vec(),
        etag_before: etag_before.into(),
        etag_after: etag_after.into(),
        revision: audit.revision.clone(),
        actor: audit.actor.clone(),
        added_by: change.added_by.clone(),
    }
}

fn setting_event(id: &ServiceId, change: &SettingChange, etag_before: &str, audit: &AuditContext) -> AuditEvent {
    AuditEvent {
        service: id.to_string(),
        resource: id.resource_name(),
        change: "setting".into(),
        role: None,
        condition: None,
        member: None,
        field: Some(change.field.clone()),
        before: change.before.clone(),
        after: change.after.clone(),
        reason: change.reason.as_str().into(),
        sources: change.sources.clone(),
        etag_before: etag_before.into(),
        etag_after: String::new(),
        revision: audit.revision.clone(),
        actor: audit.actor.clone(),
        added_by: change.added_by.clone(),
    }
}

/// The git revision for audit events: `--revision`, else the CI's variables, else `git
/// rev-parse HEAD` in the policy directory, else `unknown`.
pub fn revision(given: Option<&str>, policies: &std::path::Path) -> String {
    if let Some(r) = given.filter(|r| !r.is_empty()) {
        return r.to_string();
    }
    for var in ["GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT", "BUILD_SOURCEVERSION", "COMMIT_SHA"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    std::process::Command::new("git")
        .arg("-C")
        .arg(policies)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_in_flight_take_the_project_region_groups_in_turn() {
        let plan = |id: &str| -> ServicePlan {
            let parts: Vec<&str> = id.split('/').collect();
            serde_json::from_value(serde_json::json!({
                "id": id, "project": parts[0], "region": parts[1], "name": parts[2],
                "mode": "enforce", "policies": [], "etag": "e",
            }))
            .unwrap()
        };
        let ids = ["p/a/1", "p/a/2", "p/a/3", "p/b/1", "p/b/2", "q/a/1"];
        let plans: Vec<ServicePlan> = ids.iter().map(|id| plan(id)).collect();
        let order: Vec<&str> = interleave_regions(plans.iter().collect()).iter().map(|s| s.id.as_str()).collect();
        assert_eq!(order, ["p/a/1", "p/b/1", "q/a/1", "p/a/2", "p/b/2", "p/a/3"]);
    }

    #[test]
    fn an_audit_line_shows_a_bidi_override_in_a_member_as_an_escape() {
        let event = AuditEvent {
            service: "p/r/s".into(),
            resource: "projects/p/locations/r/services/s".into(),
            change: "add".into(),
            role: Some("roles/run.invoker".into()),
            condition: None,
            member: Some("user:ada\u{202e}moc.live@acme.com".into()),
            field: None,
            before: Value::Null,
            after: Value::Null,
            reason: "missing".into(),
            sources: vec![],
            etag_before: "a".into(),
            etag_after: "b".into(),
            revision: String::new(),
            actor: String::new(),
            added_by: None,
        };
        assert_eq!(
            event.text(),
            "+ user:ada\\u{202e}moc.live@acme.com roles/run.invoker on p/r/s (missing)"
        );
    }

    #[test]
    fn iap_resource_names_carry_the_project_number() {
        assert_eq!(iap_project_number("projects/123456789012/iap_web/cloud_run-europe-west1/services/s"), Some(123456789012));
        assert_eq!(iap_project_number("projects/acme/locations/r/services/s"), None);
    }

    #[tokio::test]
    async fn services_run_concurrently_within_the_bound_and_keep_their_order() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let started = std::time::Instant::now();
        let out = run_bounded(
            (0..6u64).map(|i| {
                let (running, most) = (&running, &most);
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(60 - i * 10)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                }
            })
            .collect(),
            3,
        )
        .await;
        assert_eq!(out, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(most.load(Ordering::SeqCst), 3, "the bound is reached and never exceeded");
        assert!(started.elapsed() < Duration::from_millis(250), "ran one after another");
    }

    #[test]
    fn a_conflict_replans_a_fresh_plan_until_max_conflicts_then_gives_up() {
        let mut budget = ConflictBudget::new(2);
        assert_eq!(budget.on_conflict(false), OnConflict::Replan);
        assert_eq!(budget.on_conflict(false), OnConflict::Replan);
        assert_eq!(budget.on_conflict(false), OnConflict::Exhausted(2));
    }

    #[test]
    fn a_conflict_on_a_saved_plan_is_stale_at_once() {
        assert_eq!(ConflictBudget::new(5).on_conflict(true), OnConflict::Stale);
    }

    #[test]
    fn no_conflicts_allowed_gives_up_at_the_first() {
        assert_eq!(ConflictBudget::new(0).on_conflict(false), OnConflict::Exhausted(0));
    }

    #[test]
    fn summary_lists_every_failure_with_its_message() {
        let report = ApplyReport {
            outcomes: vec![
                ServiceOutcome::Applied { service: "p/r/a".into(), changes: 2 },
                ServiceOutcome::Failed { service: "p/r/b".into(), message: "HTTP 403 PERMISSION_DENIED".into(), transient: false },
            ],
            events: vec![],
            not_applied: 1,
        };
        let line = report.summary_line();
        assert!(line.starts_with("Apply incomplete: 1 service changed"), "{line}");
        assert!(line.contains("p/r/b: HTTP 403 PERMISSION_DENIED"), "{line}");
        assert!(line.contains("1 change not applied"), "{line}");
    }
}
