//! One pass as the commands run it: connect to the world (the real APIs, or every call to one
//! `--endpoint`), load the policies, read the live state; and [`LivePass`], the pass the
//! reconcile loop drives.
//!
//! This is the only place below the command layer that decides *where* calls go; everything
//! below it receives clients and base URLs already built, and the clock is read here once per
//! pass and passed down. The embedded simulator of `--sim` and `demo` is wired in the command
//! layer (`cmd::embedded`), which hands a [`Connection`] its clients and keeps the simulator
//! alive through [`Connection::with_attachment`]: nothing here names the simulator.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, anyhow};

use crate::apply::{ApplyConfig, AuditContext, AuditSink, Applier, PlanSource, apply};
use crate::live::{ClientConfig, Clients, ReadConfig, ReadProgress, read_live};
use crate::model::{LiveState, ServiceId};
use crate::plan::{PlanOptions, hold_tripped_units, plan};
use crate::policy::model::{Desired, Settings};
use crate::progress::Progress;
use tokio_util::sync::CancellationToken;

pub mod findings;

/// Whatever must live as long as a connection's clients (the embedded simulator and its key
/// file); opaque here.
type Attachment = Box<dyn Any + Send + Sync>;

/// The clients of one command, and what keeps them working.
pub struct Connection {
    pub clients: Clients,
    /// Where the Auth0 tenant's public endpoints (OIDC discovery, JWKS) are reached.
    pub auth0_base: reqwest::Url,
    /// The identity changes are made as (audit events): the credential's e-mail when known.
    pub actor: String,
    /// Ends every wait of these clients and of the reads made through this connection.
    pub shutdown: CancellationToken,
    /// Kept alive as long as the connection (see [`Connection::with_attachment`]).
    attachment: Option<Attachment>,
}

impl Connection {
    /// Connects to the real APIs, or sends every call to `endpoint` (`--endpoint`).
    pub async fn connect(endpoint: Option<&str>, settings: &Settings, config: &ClientConfig) -> anyhow::Result<Connection> {
        let clients = Clients::connect(settings, endpoint, config)
            .await
            .context("connecting to Google and Auth0")?;
        let auth0_base = crate::endpoints::Endpoints::from_override(endpoint)?.auth0_base(&settings.auth0.domain)?;
        Ok(Connection::from_clients(clients, auth0_base, ambient_actor(), config.google.shutdown.clone()))
    }

    /// A connection over clients built elsewhere.
    pub fn from_clients(clients: Clients, auth0_base: reqwest::Url, actor: String, shutdown: CancellationToken) -> Connection {
        Connection { clients, auth0_base, actor, shutdown, attachment: None }
    }

    /// Keeps `value` alive as long as the connection (e.g. the server its clients talk to).
    pub fn with_attachment<T: Any + Send + Sync>(mut self, value: T) -> Connection {
        self.attachment = Some(Box::new(value));
        self
    }

    /// The value given to [`Connection::with_attachment`], when it is a `T`.
    pub fn attachment<T: Any>(&self) -> Option<&T> {
        self.attachment.as_ref().and_then(|a| a.downcast_ref::<T>())
    }
}

/// The identity of ambient Google credentials, as far as it can be known without a call: the
/// `client_email` of a key file named by `GOOGLE_APPLICATION_CREDENTIALS`.
fn ambient_actor() -> String {
    std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
        .and_then(|path| std::fs::read(PathBuf::from(path)).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| v.get("client_email")?.as_str().map(|e| format!("serviceAccount:{e}")))
        .unwrap_or_else(|| "ambient Google credentials (metadata server or gcloud)".into())
}

/// A policy directory that did not load; the errors were already printed.
#[derive(Debug, thiserror::Error)]
#[error("{count} error(s) in the policy files under {dir}; nothing was read or changed")]
pub struct PoliciesInvalid {
    pub dir: PathBuf,
    pub count: usize,
}

/// Loads the policies for a pass, printing every error and warning to stderr (rustc style). A
/// time-boxed grant that ran out is a warning here (the plan removes it), not an error.
pub fn load_policies(dir: &Path, now: SystemTime) -> Result<Desired, PoliciesInvalid> {
    match crate::policy::load_lenient(dir, now) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            Ok(loaded.desired)
        }
        Err(errors) => {
            eprint!("{errors}");
            if !errors.to_string().ends_with('\n') {
                eprintln!();
            }
            Err(PoliciesInvalid { dir: dir.to_path_buf(), count: errors.errors.len() })
        }
    }
}

/// Reads the live state the policies are about, showing progress on a terminal.
pub async fn read(desired: &Desired, conn: &Connection, progress: &Arc<Progress>) -> anyhow::Result<LiveState> {
    read_shard(desired, conn, progress, None).await
}

/// [`read`], keeping (and reading) only one shard's services.
pub async fn read_shard(
    desired: &Desired,
    conn: &Connection,
    progress: &Arc<Progress>,
    shard: Option<crate::live::Shard>,
) -> anyhow::Result<LiveState> {
    let p = progress.clone();
    let config = ReadConfig {
        progress: Some(Arc::new(move |event: &ReadProgress| {
            if let ReadProgress::IamRead { done, started } = event {
                p.set("reading IAM policies", *done as u64, *started as u64);
            }
        })),
        shard,
        retry: crate::retry::RetryPolicy::default().until(&conn.shutdown),
    };
    let live = read_live(desired, &conn.clients, &config).await;
    progress.finish();
    live.map_err(|e| anyhow!(e)).context("reading the live state")
}

/// A multi-threaded runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

/// Reads what `explain` needs: every service of the Settings' scope and of the policies (plus
/// `extra` (project, region) pairs), governed or not, with its IAM and IAP policies, and the
/// members of every Auth0 role the policies name.
pub async fn read_for_explain(
    desired: &Desired,
    conn: &Connection,
    extra: &[(String, String)],
    progress: &Arc<Progress>,
) -> anyhow::Result<LiveState> {
    let mut targets: Vec<(String, String)> =
        crate::live::list_targets(desired).into_iter().collect();
    targets.extend(extra.iter().cloned());
    read(&crate::insight::read_scope(desired, &targets, &[]), conn, progress).await
}

/// Reads what `import` needs: every service of (`project`, `region`) with its IAM and IAP
/// policies, and the members of every Auth0 role of the tenant (to map bindings back to roles).
pub async fn read_for_import(
    settings: &crate::policy::model::Settings,
    conn: &Connection,
    project: &str,
    region: &str,
    progress: &Arc<Progress>,
) -> anyhow::Result<LiveState> {
    let settings_only = Desired {
        settings: settings.clone(),
        policies: vec![],
    };
    let roles = all_role_names(conn).await?;
    let target = [(project.to_string(), region.to_string())];
    read(&crate::insight::read_scope(&settings_only, &target, &roles), conn, progress).await
}

/// Every Auth0 role name of the tenant.
async fn all_role_names(conn: &Connection) -> Result<Vec<String>, crate::insight::InsightError> {
    let mut names = Vec::new();
    let policy = crate::retry::RetryPolicy::default();
    for page in 0u32..1000 {
        let answer = crate::retry::retry(&policy, "list roles", || {
            conn.clients.auth0.roles_page(page)
        })
        .await
        .map_err(|source| crate::insight::InsightError::ListRoles {
            page,
            source: Box::new(source),
        })?;
        let n = answer.items.len() as u64;
        names.extend(answer.items.into_iter().map(|r| r.name));
        let more = match answer.total {
            Some(total) => (names.len() as u64) < total && n > 0,
            None => n > 0 && n == conn.clients.auth0.config().page_size as u64,
        };
        if !more {
            break;
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Drift attribution: for every governed service whose plan removes or keeps a live member no
/// policy grants, one Admin Activity query (Cloud Logging `entries.list`), and each such change
/// gets `added_by` (who, how, when; or unknown and why); then the same for settings changes
/// (see [`attribute_settings`]). At most [`crate::live::MAX_QUERIES`] queries in all. With
/// `reverted_only` (the loop), only what apply reverts: removals and settings of enforced
/// services. Never fails: attribution is advice.
pub async fn attribute_plan(google: &crate::google::GoogleClient, plan: &mut crate::plan::Plan, reverted_only: bool) {
    use crate::plan::{Action, PlanMode};
    let counted = |c: &crate::plan::MemberChange| match c.action {
        Action::Remove => true,
        Action::Keep => !reverted_only,
        _ => false,
    };
    let mut drifted: std::collections::BTreeMap<ServiceId, Vec<(String, String)>> = Default::default();
    for s in plan.services.iter().filter(|s| !reverted_only || s.mode == PlanMode::Enforce) {
        let id = ServiceId::new(&s.project, &s.region, &s.name);
        for c in s.iam.iter().chain(s.iap.iter()).flat_map(|r| &r.changes).filter(|c| counted(c)) {
            drifted.entry(id.clone()).or_default().push((c.role.to_string(), c.member.as_str().to_string()));
        }
    }
    let found = if drifted.is_empty() { Default::default() } else { crate::live::read_attribution(google, &drifted).await };
    for s in &mut plan.services {
        let id = ServiceId::new(&s.project, &s.region, &s.name);
        for c in s.iam.iter_mut().chain(s.iap.iter_mut()).flat_map(|r| r.changes.iter_mut()) {
            let key = (id.clone(), c.role.to_string(), c.member.as_str().to_string());
            if let Some(f) = found.get(&key) {
                let suffix = crate::insight::access::attribution_suffix(f);
                c.added_by = Some(suffix.trim_start_matches("— ").to_string());
            }
        }
    }
    let budget = crate::live::MAX_QUERIES.saturating_sub(drifted.len());
    attribute_settings(google, plan, reverted_only, budget).await;
}

/// Settings-drift attribution: one query of `UpdateService` Admin Activity entries per service
/// with settings changes (at most `budget`), and each change gets `added_by` (`changed by X
/// (console) …`, or unknown and why): who set the live value apply replaces.
pub async fn attribute_settings(
    google: &crate::google::GoogleClient,
    plan: &mut crate::plan::Plan,
    reverted_only: bool,
    budget: usize,
) {
    let mut drifted: std::collections::BTreeMap<ServiceId, Vec<(String, serde_json::Value)>> = Default::default();
    for s in plan.services.iter().filter(|s| !reverted_only || s.mode == crate::plan::PlanMode::Enforce) {
        let id = ServiceId::new(&s.project, &s.region, &s.name);
        for c in &s.settings {
            drifted.entry(id.clone()).or_default().push((c.field.clone(), c.before.clone()));
        }
    }
    if drifted.is_empty() {
        return;
    }
    let found = crate::live::read_setting_attribution(google, &drifted, budget).await;
    for s in &mut plan.services {
        let id = ServiceId::new(&s.project, &s.region, &s.name);
        for c in &mut s.settings {
            if let Some(f) = found.get(&(id.clone(), c.field.clone())) {
                let suffix = crate::insight::access::setting_suffix(f);
                c.added_by = Some(suffix.trim_start_matches("— ").to_string());
            }
        }
    }
}

/// The pass the loop drives: read → plan → guard → apply, against one connection that lives as
/// long as the loop (so `--sim` keeps one simulated world, and tokens stay cached).
pub struct LivePass {
    conn: Connection,
    config: ApplyConfig,
    sink: AuditSink,
    progress: Progress,
    actor: String,
}

impl LivePass {
    /// A pass over `conn`, writing audit events to `sink`.
    pub fn new(conn: Connection, config: ApplyConfig, sink: AuditSink) -> LivePass {
        let actor = conn.actor.clone();
        LivePass { conn, config, sink, progress: Progress::hidden(), actor }
    }

    /// The connection (tests reach the embedded simulator through it).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl crate::reconcile::Pass for LivePass {
    type Desired = crate::policy::model::Desired;

    fn load(&self, dir: &Path) -> Result<Self::Desired, String> {
        crate::policy::load_lenient(dir, crate::time::command_now()).map(|l| l.desired).map_err(|e| e.to_string())
    }

    async fn run(
        &self,
        desired: Arc<Self::Desired>,
        revision: String,
        shutdown: CancellationToken,
    ) -> Result<crate::reconcile::PassReport, crate::reconcile::PassFailure> {
        use crate::reconcile::PassFailure;
        let now = crate::time::command_now();
        let read = crate::live::ReadConfig { retry: crate::retry::RetryPolicy::default().until(&shutdown), ..Default::default() };
        let live = crate::live::read_live(&desired, &self.conn.clients, &read)
            .await
            .map_err(|e| PassFailure::ReadFailed(e.to_string()))?;
        let mut plan = plan(&desired, &live, &PlanOptions::at(now));
        // The same catalogue `plan` shows, every pass (the loop logs a finding when it appears).
        findings::add_pass_findings(&mut plan, &desired, &self.conn, &live, now).await;
        // A trip holds its guard unit (the services of one set of policies); the rest converges.
        let held = hold_tripped_units(&plan, &desired.settings, self.config.allow_removals);
        let mut out = planned_statuses(&live, &plan);
        let held_ids = report_holds(&held, &mut out);
        plan.services.retain(|s| !held_ids.contains(&s.id));
        // The audit events of reverted drift say whose change it was (bounded; never fails).
        attribute_plan(&self.conn.clients.google, &mut plan, true).await;
        let audit = AuditContext { revision, actor: self.actor.clone() };
        let applier = Applier {
            google: &self.conn.clients.google,
            settings: &desired.settings,
            config: &self.config,
            source: PlanSource::Fresh { desired: &desired, live: &live, now },
            audit: &audit,
            sink: &self.sink,
            shutdown,
            progress: &self.progress,
        };
        let report = apply(&plan, &applier).await;
        // An idle pass (nothing written, nothing failed) prints no "Apply complete: 0 services
        // changed" line: the loop's "pass finished" log line carries the warn/observe drift.
        // JSON logs keep their summary entry, which log-based "last success" metrics count
        // (deploy/monitoring/).
        let idle = report.outcomes.is_empty() && report.events.is_empty();
        if !idle || self.sink.is_json() {
            self.sink.summary(&report, &audit);
        }
        out.applied = report.applied_by_kind();
        out.drift = report.not_applied as u64;
        report_failures(&plan, &report, &mut out);
        out.findings = std::mem::take(&mut plan.findings);
        Ok(out)
    }
}

/// Every governed service's state before apply: it starts in sync (the reader reads IAM for
/// governed services only), the plan says where it is not; an unreadable one has failed.
fn planned_statuses(live: &LiveState, plan: &crate::plan::Plan) -> crate::reconcile::PassReport {
    use crate::reconcile::{PassReport, ServiceStatus};
    let mut out = PassReport::default();
    for svc in live.services.values().filter(|s| s.iam.is_some() || s.read_error.is_some()) {
        let (state, message) = match &svc.read_error {
            Some(e) => ("Failed", Some(format!("read failed: {e}"))),
            None => ("InSync", None),
        };
        out.services.insert(svc.id.to_string(), ServiceStatus::new(state, message));
    }
    for sp in &plan.services {
        let state = if !sp.has_changes() {
            "InSync"
        } else if sp.is_applicable() {
            "Changed"
        } else {
            "Drifted"
        };
        out.services.insert(sp.id.clone(), ServiceStatus::new(state, None));
    }
    out
}

/// Reports every held guard unit (logs, `/status` per service, the pass's `held` list) and
/// returns the ids of the services it holds, which this pass does not write.
fn report_holds(held: &[crate::plan::HeldUnit], out: &mut crate::reconcile::PassReport) -> std::collections::BTreeSet<String> {
    use crate::reconcile::ServiceStatus;
    let mut held_ids = std::collections::BTreeSet::new();
    for unit in held {
        let message = unit.trips.iter().map(|t| t.to_string()).collect::<Vec<_>>().join("; ");
        for t in &unit.trips {
            tracing::error!(event = "guard-trip", guard = t.guard.as_str(), unit = unit.unit.as_str(), "held {}: {t}", unit.unit);
        }
        for id in &unit.services {
            held_ids.insert(id.clone());
            out.services.insert(id.clone(), ServiceStatus::new("Held", Some(message.clone())));
        }
        out.held.push(format!("{} ({}): {message}", unit.unit, crate::text::count(unit.services.len(), "service")));
    }
    held_ids
}

/// The pass's failures: a governed service that could not be read was not compared at all
/// (Ready is False, and the service is listed as Failed with the reason), and every service
/// apply could not converge.
fn report_failures(plan: &crate::plan::Plan, report: &crate::apply::ApplyReport, out: &mut crate::reconcile::PassReport) {
    use crate::reconcile::ServiceStatus;
    for f in plan.unread() {
        let service = f.service.clone().unwrap_or_default();
        out.failures.push(format!("{service}: {}", f.evidence));
        out.services.insert(service, ServiceStatus::new("Failed", Some(f.evidence.clone())));
    }
    for outcome in report.failures() {
        let message = match outcome {
            crate::apply::ServiceOutcome::Failed { message, .. } | crate::apply::ServiceOutcome::Stale { message, .. } => message.clone(),
            _ => "not written: shutting down".into(),
        };
        out.failures.push(format!("{}: {message}", outcome.service()));
        out.services.insert(outcome.service().to_string(), ServiceStatus::new("Failed", Some(message)));
    }
}
