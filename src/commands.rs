//! The commands that run a pass — `plan`, `apply` and `demo` — wired from the parts: load
//! ([`crate::pass`]), read ([`crate::live`]), plan and guard ([`crate::plan`]), apply
//! ([`crate::apply`]). Each returns the process exit code (Terraform's convention, see
//! [`crate::cli`]); errors are returned once, to be printed by `main`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::apply::{AuditContext, AuditSink, ApplyConfig, ApplyReport, Applier, PlanSource, ServiceOutcome, apply};
use crate::cli::{ApplyArgs, DemoArgs, EXIT_CHANGES, EXIT_ERROR, EXIT_GUARD, GlobalArgs, PlanArgs, PlanFormat};
use crate::logging::LogFormat;
use crate::pass::{Connection, load_policies, read, runtime};
use crate::plan::{Plan, PlanOptions, check_guards, plan, render_markdown, render_text};
use crate::progress::Progress;

/// `runwarden plan`.
pub fn cmd_plan(global: &GlobalArgs, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let now = crate::time::command_now();
    let source = crate::published::resolve(&args.policies.policies).map_err(anyhow::Error::msg)?;
    let Ok(desired) = load_policies(&source.dir, now) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let mut notes = Vec::new();
    // A base branch that does not load (the first pull request, or one that fixes a broken
    // main) still gets a plan: against the live state alone, and the plan says so.
    let base = match &args.base_policies {
        Some(dir) => match crate::policy::load_lenient(dir, now) {
            Ok(base) => Some(base.desired),
            Err(errors) => {
                eprintln!("warning: the base policies {} do not load ({} error(s)); planning against the live state alone", dir.display(), errors.errors.len());
                notes.push(base_not_loaded(dir, &errors));
                None
            }
        },
        None => None,
    };
    let mut connect_with = desired.settings.clone();
    if !args.settings_from.is_empty() {
        let trusted = trusted_settings(&args.settings_from, now)?;
        if trusted.auth0 != desired.settings.auth0 {
            notes.push(connection_from_base(&desired.settings.auth0, &trusted.auth0));
        }
        connect_with.auth0 = trusted.auth0;
    }
    let progress = Arc::new(Progress::for_terminal(global.log_format));
    let plan = runtime()?.block_on(async {
        // SIGINT/SIGTERM end a plan cleanly: nothing is written by a plan, so it just stops.
        let interrupted = CancellationToken::new();
        spawn_interrupt_watcher(interrupted.clone(), "plan", "no plan was made");
        let work = async {
            let conn = Connection::open(global, &connect_with).await?;
            let live = read(&desired, &conn, &progress).await?;
            let mut plan = plan(&desired, &live, &PlanOptions { now, base: base.as_ref() });
            plan.findings.extend(notes);
            // Auth0 hygiene is part of every plan (two more Management API reads); with the
            // workforce-pool mapping members were not read, so the audit reads them itself.
            let directory = live.directory.members_resolved.then_some(&live.directory);
            add_hygiene_to_plan(&mut plan, hygiene_findings(&desired, &conn, directory).await);
            Ok::<_, anyhow::Error>(Some(plan))
        };
        tokio::select! {
            plan = work => plan,
            _ = interrupted.cancelled() => {
                progress.finish();
                Ok(None)
            }
        }
    })?;
    let Some(mut plan) = plan else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    plan.policy_digest = Some(
        crate::policy::digest(&source.dir).with_context(|| format!("reading the policies under {}", source.dir.display()))?,
    );
    let trips = check_guards(&plan, &desired.settings, None);
    if let Some(out) = &args.out {
        std::fs::File::create(out)
            .and_then(|file| plan.write_json(file))
            .with_context(|| format!("writing the saved plan to {}", out.display()))?;
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut text = match args.format {
        PlanFormat::Text => {
            // Written as rendered: a plan of millions of changes is never held as text too.
            write_text_to_stdout(&plan, color).context("writing the plan to stdout")?;
            String::new()
        }
        PlanFormat::Markdown => render_markdown(&plan),
        PlanFormat::Json => String::new(),
    };
    if args.format == PlanFormat::Json {
        plan.write_json(std::io::stdout().lock()).context("writing the plan to stdout")?;
    } else if !trips.is_empty() {
        text.push_str(&crate::plan::render_guard_note(&trips, args.format == PlanFormat::Markdown));
    }
    print!("{text}");
    let _ = std::io::stdout().flush();
    let unread: Vec<&crate::plan::Finding> = plan.unread().collect();
    if !unread.is_empty() {
        report_unread(&unread);
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(exit_for_plan(&plan))
}

/// The Settings of the first `--settings-from` directory whose Settings document loads.
fn trusted_settings(dirs: &[std::path::PathBuf], now: std::time::SystemTime) -> anyhow::Result<crate::policy::model::Settings> {
    let mut problems = Vec::new();
    for dir in dirs {
        match crate::policy::load_settings(dir, now) {
            Ok(settings) => return Ok(settings),
            Err(errors) => {
                let first = errors.errors.first().map(|e| e.to_string()).unwrap_or_default();
                problems.push(format!("{}: {}", dir.display(), first.lines().next().unwrap_or("").trim()));
            }
        }
    }
    bail!(
        "--settings-from: no Settings document that loads ({}); the connection (Auth0 tenant, client and secret variable) must come from the base branch or another source the pull request cannot edit, never from the pull request: fix or add the Settings on the base branch first",
        problems.join("; ")
    )
}

/// The finding a plan carries when `--base-policies` did not load.
fn base_not_loaded(dir: &Path, errors: &crate::policy::PolicyErrors) -> crate::plan::Finding {
    let first = errors.errors.first().map(|e| e.to_string()).unwrap_or_default();
    crate::plan::Finding {
        service: None,
        code: "base-policies-not-loaded".into(),
        severity: crate::plan::Severity::Warning,
        message: format!(
            "the base policies {} do not load ({} error(s), first: {}); this plan compares the policies with the live state alone, so no change is marked [declared] or [drift]",
            dir.display(),
            errors.errors.len(),
            first.lines().next().unwrap_or("").trim()
        ),
        sources: vec![],
    }
}

/// The finding a plan carries when the pull request changes the Auth0 connection that
/// `--settings-from` took from the base branch.
fn connection_from_base(proposed: &crate::policy::model::Auth0Settings, trusted: &crate::policy::model::Auth0Settings) -> crate::plan::Finding {
    let show = |a: &crate::policy::model::Auth0Settings| format!("domain {}, clientId {}, clientSecretEnv {}", a.domain, a.client_id, a.client_secret_env);
    crate::plan::Finding {
        service: None,
        code: "connection-from-base".into(),
        severity: crate::plan::Severity::Warning,
        message: format!(
            "this change moves the Auth0 connection to {} (from {}); the plan connected with the base branch's, and the new connection is used only after the merge",
            show(proposed),
            show(trusted)
        ),
        sources: vec![],
    }
}

/// 2 when the plan has changes, else 0.
fn exit_for_plan(plan: &Plan) -> ExitCode {
    if plan.has_changes() { ExitCode::from(EXIT_CHANGES) } else { ExitCode::SUCCESS }
}


/// `runwarden apply`.
pub fn cmd_apply(global: &GlobalArgs, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let shard = match &args.shard {
        Some(text) => Some(crate::live::Shard::parse(text).map_err(|e| anyhow::anyhow!("--shard {e}"))?),
        None => crate::live::Shard::from_env(
            std::env::var("CLOUD_RUN_TASK_INDEX").ok().as_deref(),
            std::env::var("CLOUD_RUN_TASK_COUNT").ok().as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("CLOUD_RUN_TASK_INDEX/CLOUD_RUN_TASK_COUNT: {e}"))?,
    };
    let now = crate::time::command_now();
    let source = crate::published::resolve(&args.policies.policies).map_err(anyhow::Error::msg)?;
    let Ok(desired) = load_policies(&source.dir, now) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let saved = match &args.plan {
        Some(path) => Some(read_saved_plan(path, &source.dir)?),
        None => None,
    };
    let json = global.log_format == LogFormat::Json;
    let progress = Arc::new(Progress::for_terminal(global.log_format));
    let audit = AuditContext {
        // --revision, else the published commit, else the CI environment, else git.
        revision: crate::apply::revision(args.revision.as_deref().or(source.commit.as_deref()), &source.dir),
        actor: String::new(),
    };
    let config = ApplyConfig { allow_removals: args.allow_removals, ..ApplyConfig::default() };
    let interactive = !args.auto_approve;
    if interactive && !std::io::stdin().is_terminal() {
        bail!("refusing to apply without confirmation: stdin is not a terminal; review the plan with `runwarden plan`, then run `runwarden apply --auto-approve`");
    }
    runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        spawn_interrupt_watcher(shutdown.clone(), "apply", "finishing the writes in flight, starting no new one");
        // Every wait (pacer, server-requested pause, retry backoff) ends on shutdown.
        let clients = client_config(&shutdown);
        let conn = tokio::select! {
            conn = Connection::open_with(global, &desired.settings, &clients) => conn?,
            _ = shutdown.cancelled() => {
                eprintln!("runwarden apply: nothing was applied");
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        };
        let audit = AuditContext { actor: conn.actor.clone(), ..audit };
        let sink = AuditSink::new(json, Box::new(std::io::stdout()));
        if let Some(shard) = shard {
            tracing::info!(index = shard.index, count = shard.count, "applying one shard of the estate");
        }
        // A saved plan is re-derived too: its services are re-planned from the live state and
        // the current policies, and only what the policies produce is applied (plan::verify).
        let read = crate::pass::read_shard(&desired, &conn, &progress, shard);
        let live = tokio::select! {
            live = read => live?,
            _ = shutdown.cancelled() => {
                eprintln!("runwarden apply: nothing was applied");
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        };
        let fresh = plan(&desired, &live, &PlanOptions::at(now));
        let (plan, stale) = match saved {
            Some(mut saved) => {
                if let Some(shard) = shard {
                    saved.services.retain(|s| shard.contains(&s.service_id()));
                }
                match crate::plan::verify_saved(&saved, &fresh, &live) {
                    Ok(verified) => (verified.plan, verified.stale),
                    Err(mismatch) => {
                        eprintln!("error: {mismatch}");
                        return Ok(ExitCode::from(EXIT_ERROR));
                    }
                }
            }
            None => (fresh, Vec::new()),
        };
        let from_saved = args.plan.is_some();
        if !json {
            write_text_to_stdout(&plan, std::io::stdout().is_terminal()).context("writing the plan to stdout")?;
        }
        let trips = check_guards(&plan, &desired.settings, args.allow_removals);
        if !trips.is_empty() {
            for t in &trips {
                eprintln!("error: {}", crate::text::visible(&t.to_string()));
                tracing::error!(event = "guard-trip", guard = t.guard.as_str(), "{t}");
            }
            eprintln!("nothing was applied");
            crate::metrics::global().inc("runwarden_guard_trips_total", "Applies refused by a guard.", vec![], 1.0);
            return Ok(ExitCode::from(EXIT_GUARD));
        }
        // Services that could not be read, or that moved since the saved plan was made, are
        // failures of this apply (nothing was planned or written for them): the summary lists
        // them and the exit code is 1.
        let unread: Vec<&crate::plan::Finding> = plan.unread().collect();
        let mut unwritten: Vec<ServiceOutcome> = stale
            .into_iter()
            .map(|(service, message)| ServiceOutcome::Stale { service, message })
            .collect();
        unwritten.extend(unread.iter().map(|f| ServiceOutcome::Failed {
            service: f.service.clone().unwrap_or_default(),
            message: f.message.clone(),
            transient: true,
        }));
        let applicable = plan.services.iter().any(|s| s.is_applicable() && s.has_changes());
        if !applicable && unwritten.is_empty() {
            if json {
                // The summary entry is what a log-based "last success" metric counts
                // (deploy/monitoring/): a converged estate must not look like a stalled job.
                sink.summary(&ApplyReport::default(), &audit);
            } else {
                println!("Nothing to apply.");
            }
            return Ok(ExitCode::SUCCESS);
        }
        if applicable && interactive && !confirm()? {
            println!("Apply cancelled; nothing was changed.");
            return Ok(ExitCode::SUCCESS);
        }
        // A saved plan is never re-planned on a conflict: what was reviewed is applied or refused.
        let source = if from_saved { PlanSource::Saved } else { PlanSource::Fresh { desired: &desired, live: &live, now } };
        let applier = Applier {
            google: &conn.clients.google,
            settings: &desired.settings,
            config: &config,
            source,
            audit: &audit,
            sink: &sink,
            shutdown,
            progress: &progress,
        };
        let mut report = if applicable { apply(&plan, &applier).await } else { ApplyReport::default() };
        report.outcomes.extend(unwritten);
        report.outcomes.sort_by(|a, b| a.service().cmp(b.service()));
        sink.summary(&report, &audit);
        report_unread(&unread);
        Ok(exit_for_apply(&report))
    })
}

/// Reads a saved plan and checks it was made from the policies under `policies` as they are now.
fn read_saved_plan(path: &Path, policies: &Path) -> anyhow::Result<Plan> {
    let text = crate::files::read_to_string_capped(path, crate::plan::model::MAX_SAVED_PLAN_BYTES)
        .with_context(|| format!("reading the saved plan {}", path.display()))?;
    let saved = Plan::from_json(&text).with_context(|| format!("reading the saved plan {}", path.display()))?;
    let digest = crate::policy::digest(policies).with_context(|| format!("reading the policies under {}", policies.display()))?;
    match &saved.policy_digest {
        None => bail!(
            "the saved plan {} does not record the policies it was made from, so it cannot be checked against them; make it again with `runwarden plan --out PLAN.json`",
            path.display()
        ),
        Some(d) if *d != digest => bail!(
            "the policies under {} changed since the saved plan {} was made (policy digest {} → {}); nothing was applied; make a fresh plan with `runwarden plan --out PLAN.json`, review it, and apply that",
            policies.display(),
            path.display(),
            short(d),
            short(&digest)
        ),
        Some(_) => Ok(saved),
    }
}

/// The first 12 characters of a digest, for messages.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Names, on stderr, every governed service the pass could not read (nothing was planned or
/// written for them, so the pass cannot claim convergence).
fn report_unread(unread: &[&crate::plan::Finding]) {
    if unread.is_empty() {
        return;
    }
    eprintln!("error: {} governed service(s) could not be read, so nothing was planned or changed for them:", unread.len());
    for f in unread {
        eprintln!("  {}: {}", f.service.as_deref().unwrap_or("?"), f.message);
    }
}

/// SIGINT (Ctrl-C) and SIGTERM (what Cloud Run sends a job it stops) cancel `shutdown`: the
/// command finishes what is in flight, starts nothing new, and reports. The handlers are
/// installed before this returns (inside the runtime), so a signal that comes at once is caught.
fn spawn_interrupt_watcher(shutdown: CancellationToken, command: &'static str, consequence: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    let (term, int) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    tokio::spawn(async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("could not install the SIGTERM/SIGINT handlers ({e}); only Ctrl-C interrupts");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        eprintln!("runwarden {command}: interrupted; {consequence}");
        shutdown.cancel();
    });
}

/// The clients' limits, with every wait ended by `shutdown`.
fn client_config(shutdown: &CancellationToken) -> crate::live::ClientConfig {
    let mut config = crate::live::ClientConfig::default();
    config.google.shutdown = shutdown.clone();
    config
}

/// Writes a text plan to stdout as it is rendered.
fn write_text_to_stdout(plan: &Plan, color: bool) -> std::io::Result<()> {
    /// `fmt::Write` onto a buffered `io::Write`, keeping the first I/O error.
    struct Out<W: Write> {
        inner: std::io::BufWriter<W>,
        error: Option<std::io::Error>,
    }
    impl<W: Write> std::fmt::Write for Out<W> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.inner.write_all(s.as_bytes()).map_err(|e| {
                self.error = Some(e);
                std::fmt::Error
            })
        }
    }
    let mut out = Out { inner: std::io::BufWriter::new(std::io::stdout().lock()), error: None };
    if crate::plan::write_text(plan, color, &mut out).is_err() {
        return Err(out.error.take().unwrap_or_else(|| std::io::Error::other("rendering the plan failed")));
    }
    out.inner.flush()
}

/// 0 when every service converged, 1 otherwise.
fn exit_for_apply(report: &ApplyReport) -> ExitCode {
    if report.failures().next().is_none() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) }
}

/// Asks on the terminal, like Terraform: only `yes` applies.
fn confirm() -> anyhow::Result<bool> {
    print!("\nDo you want to apply these changes? Only 'yes' will be accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// `runwarden demo`: the example policies against the embedded demo world — plan, apply, plan
/// again — printing what it does. No account, no network beyond loopback.
pub fn cmd_demo(global: &GlobalArgs, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    demo(&args.policies.policies, &args.world, global.log_format, &mut out)
}

/// The demo, writing to `out` (tests capture it).
pub fn demo(policies: &Path, world: &Path, log_format: LogFormat, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let now = crate::time::command_now();
    if !world.exists() {
        bail!("the demo world {} does not exist; run the demo from the repository's root, or pass --world FILE", world.display());
    }
    let Ok(desired) = load_policies(policies, now) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let progress = Arc::new(Progress::for_terminal(log_format));
    runtime()?.block_on(async {
        let conn = Connection::embedded(world, &desired.settings).await?;
        let sim = conn.sim().expect("an embedded connection has a simulator");
        writeln!(out, "runwarden demo: simulated Google Cloud Run and Auth0 on {} (world {}), policies from {}", sim.base_url, world.display(), policies.display())?;
        writeln!(out, "\n== 1. plan: what differs between the policies and the simulated estate\n")?;
        let live = read(&desired, &conn, &progress).await?;
        let first = plan(&desired, &live, &PlanOptions::at(now));
        write!(out, "{}", render_text(&first, false))?;

        writeln!(out, "\n== 2. apply: etag-guarded writes, one audit event per change\n")?;
        let trips = check_guards(&first, &desired.settings, None);
        if !trips.is_empty() {
            for t in &trips {
                writeln!(out, "error: {t}")?;
            }
            return Ok(ExitCode::from(EXIT_GUARD));
        }
        let audit = AuditContext { revision: "demo".into(), actor: conn.actor.clone() };
        let config = ApplyConfig::default();
        let (tx, events) = std::sync::mpsc::channel::<Vec<u8>>();
        let sink = AuditSink::new(false, Box::new(ChannelWriter(tx)));
        let applier = Applier {
            google: &conn.clients.google,
            settings: &desired.settings,
            config: &config,
            source: PlanSource::Fresh { desired: &desired, live: &live, now },
            audit: &audit,
            sink: &sink,
            shutdown: CancellationToken::new(),
            progress: &progress,
        };
        let report = apply(&first, &applier).await;
        sink.summary(&report, &audit);
        drop(sink);
        for chunk in events.try_iter() {
            out.write_all(&chunk)?;
        }

        writeln!(out, "\n== 3. plan again: nothing left to apply\n")?;
        let live = read(&desired, &conn, &progress).await?;
        let second = plan(&desired, &live, &PlanOptions::at(crate::time::command_now()));
        write!(out, "{}", render_text(&second, false))?;
        let left: usize = second
            .services
            .iter()
            .filter(|s| s.is_applicable() && s.has_changes())
            .count();
        let reported = second.services.iter().filter(|s| !s.is_applicable() && s.has_changes()).count();
        writeln!(out)?;
        if left == 0 && report.failures().next().is_none() {
            writeln!(out, "Converged: every enforced service matches its policies.")?;
            if reported > 0 {
                writeln!(out, "{reported} service(s) in warn/observe mode still differ: reported on every pass, never applied.")?;
            }
            writeln!(out, "\nTry it by hand: `runwarden sim` serves this world on loopback and prints the environment to point `runwarden plan` (or gcloud) at it.")?;
            Ok(ExitCode::SUCCESS)
        } else {
            writeln!(out, "Not converged: {left} enforced service(s) still differ.")?;
            Ok(ExitCode::from(EXIT_ERROR))
        }
    })
}

/// A writer that forwards what it is given to a channel (the audit sink needs `Send + 'static`).
struct ChannelWriter(std::sync::mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
        use crate::reconcile::{PassFailure, PassReport, ServiceStatus};
        let now = crate::time::command_now();
        let read = crate::live::ReadConfig { retry: crate::retry::RetryPolicy::default().until(&shutdown), ..Default::default() };
        let live = crate::live::read_live(&desired, &self.conn.clients, &read)
            .await
            .map_err(|e| PassFailure::ReadFailed(e.to_string()))?;
        let plan = plan(&desired, &live, &PlanOptions::at(now));
        let trips = check_guards(&plan, &desired.settings, self.config.allow_removals);
        if !trips.is_empty() {
            let message = trips.iter().map(|t| t.to_string()).collect::<Vec<_>>().join("; ");
            return Err(PassFailure::GuardTripped(message));
        }
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
        self.sink.summary(&report, &audit);
        let mut out = PassReport { applied: report.applied_by_kind(), drift: report.not_applied as u64, ..PassReport::default() };
        // Every governed service (the reader reads IAM for those only) starts in sync; the plan
        // and the apply report say otherwise where they must.
        for svc in live.services.values().filter(|s| s.iam.is_some() || s.read_error.is_some()) {
            let (state, message) = match &svc.read_error {
                Some(e) => ("Failed", Some(format!("read failed: {e}"))),
                None => ("InSync", None),
            };
            out.services.insert(svc.id.to_string(), ServiceStatus { state: state.into(), message });
        }
        for sp in &plan.services {
            let state = if !sp.has_changes() {
                "InSync"
            } else if sp.is_applicable() {
                "Changed"
            } else {
                "Drifted"
            };
            out.services.insert(sp.id.clone(), ServiceStatus { state: state.into(), message: None });
        }
        // A governed service that could not be read was not compared at all: the pass failed
        // for it (Ready is False, and the service is listed as Failed with the reason).
        for f in plan.unread() {
            let service = f.service.clone().unwrap_or_default();
            out.failures.push(format!("{service}: {}", f.message));
            out.services.insert(service, ServiceStatus { state: "Failed".into(), message: Some(f.message.clone()) });
        }
        for outcome in report.failures() {
            let message = match outcome {
                crate::apply::ServiceOutcome::Failed { message, .. } | crate::apply::ServiceOutcome::Stale { message, .. } => message.clone(),
                _ => "not written: shutting down".into(),
            };
            out.failures.push(format!("{}: {message}", outcome.service()));
            out.services.insert(outcome.service().to_string(), ServiceStatus { state: "Failed".into(), message: Some(message) });
        }
        Ok(out)
    }
}

/// `runwarden run`: reconcile on an interval and on policy changes; serve health, status and
/// metrics; stop cleanly on SIGTERM/SIGINT; SIGHUP forces a pass.
pub fn cmd_run(global: &GlobalArgs, args: &crate::cli::RunArgs) -> anyhow::Result<ExitCode> {
    use crate::reconcile::{LoopConfig, router, run_loop, shared, watch};
    let interval = crate::policy::parse_duration(&args.interval)
        .map_err(|e| anyhow::anyhow!("--interval {:?}: {e}; use e.g. 30s, 5m or 1h", args.interval))?;
    if interval < std::time::Duration::from_secs(1) {
        bail!("--interval {:?} is too short: passes read the whole estate; use at least 1s", args.interval);
    }
    if interval > MAX_INTERVAL {
        bail!(
            "--interval {:?} is too long: the loop passes at least once a week (use at most 7d); for rarer passes, schedule `runwarden apply --auto-approve` as a job",
            args.interval
        );
    }
    let listen: std::net::SocketAddr = args
        .listen
        .parse()
        .with_context(|| format!("--listen {:?} is not an address such as 127.0.0.1:8080", args.listen))?;
    // The connection is made from the policies as they are at start; a policy change that
    // moves the Auth0 tenant or client takes a restart (the loop says so).
    let source = crate::published::resolve(&args.policies.policies).map_err(anyhow::Error::msg)?;
    let Ok(desired) = load_policies(&source.dir, crate::time::command_now()) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        // Every wait (pacer, server-requested pause, retry backoff) ends on shutdown.
        let conn = Connection::open_with(global, &desired.settings, &client_config(&shutdown)).await?;
        if let Some(sim) = conn.sim() {
            eprintln!("runwarden run: embedded simulator on {} (inject drift there, e.g. with gcloud or {}/sim/faults)", sim.base_url, sim.base_url);
        }
        let sink = AuditSink::new(global.log_format == LogFormat::Json, Box::new(std::io::stdout()));
        let pass = Arc::new(LivePass::new(conn, ApplyConfig::default(), sink));
        let config = LoopConfig::new(args.policies.policies.clone(), interval);
        let status = shared(&config);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        // A published bucket (a Cloud Storage mount) delivers no file events: the loop re-reads
        // its CURRENT file on every tick instead.
        let watching = if source.published {
            format!("re-reading {} every tick", args.policies.policies.join(crate::published::CURRENT).display())
        } else {
            format!("watching {}", args.policies.policies.display())
        };
        eprintln!("runwarden run: every {}, {watching}; status on http://{}/status", args.interval, listener.local_addr()?);
        let server_stop = shutdown.clone();
        let app = router(status.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { server_stop.cancelled().await })
                .await
        });
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let _watcher = if source.published {
            None
        } else {
            Some(watch(&config.policies, config.debounce, tx.clone()).with_context(|| format!("watching {}", config.policies.display()))?)
        };
        spawn_signal_handlers(shutdown.clone(), tx);
        let grace = config.shutdown_grace;
        run_loop(config, pass, status, rx, shutdown.clone()).await;
        shutdown.cancel();
        let _ = tokio::time::timeout(grace, server).await;
        eprintln!("runwarden run: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// The longest `run --interval`: a week (the readiness window is three intervals, and a loop
/// that passes less often is a scheduled job in disguise).
const MAX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// SIGTERM/SIGINT cancel `shutdown` (the loop finishes the write in flight and stops); SIGHUP
/// forces a pass.
fn spawn_signal_handlers(shutdown: CancellationToken, triggers: tokio::sync::mpsc::Sender<crate::reconcile::Trigger>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
            tracing::warn!("could not install signal handlers; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: forcing a pass");
                    let _ = triggers.try_send(crate::reconcile::Trigger::Signal);
                }
            }
        }
        tracing::info!("shutting down: finishing the write in flight, starting no new one");
        shutdown.cancel();
    });
}

/// `runwarden check-token [--service S] < TOKEN`: verify a JWT against the configured Auth0
/// tenant's discovery document and JWKS, explain every reason a service would refuse it, and
/// name the policies its roles match. Exit 0 when the token would be accepted, 1 otherwise.
pub fn cmd_check_token(global: &GlobalArgs, args: &crate::cli::CheckTokenArgs) -> anyhow::Result<ExitCode> {
    use crate::audit::token::{Expectation, ServiceAudiences, check_token, render_text as render_report};
    use std::io::Read;
    let mut token = String::new();
    std::io::stdin().read_to_string(&mut token).context("reading the token from stdin")?;
    let token = token.trim().trim_start_matches("Bearer ").trim().to_string();
    if token.is_empty() {
        bail!("no token on stdin; pass it as `runwarden check-token < token.txt` (it is never printed)");
    }
    let Ok(desired) = load_policies(&args.policies.policies, crate::time::command_now()) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let service = args.service.as_deref().map(crate::insight::explain::parse_service).transpose()?;
    let report = runtime()?.block_on(async {
        let conn = Connection::open(global, &desired.settings).await?;
        let http = crate::endpoints::http_client(crate::endpoints::HttpTimeouts::default())?;
        let issuer_jwks = fetch_issuer(&http, &conn.auth0_base).await?;
        let audiences = match &service {
            Some(id) => {
                let live = crate::retry::retry(&crate::retry::RetryPolicy::default(), "services.get", || conn.clients.google.get_service(id))
                    .await
                    .with_context(|| format!("reading the service {id}"))?;
                let mut audiences: Vec<String> = live.uri.iter().cloned().collect();
                audiences.extend(live.settings.custom_audiences.iter().cloned());
                Some(ServiceAudiences { service: id.to_string(), audiences })
            }
            None => None,
        };
        let expectation = Expectation { issuer: issuer_jwks.0, jwks: issuer_jwks.1, service: audiences, now: crate::time::command_now() };
        Ok::<_, anyhow::Error>(check_token(&token, &expectation, Some(&desired)))
    })?;
    print!("{}", crate::text::visible_lines(&render_report(&report)));
    Ok(if report.accepted() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR) })
}

/// The tenant's issuer (from its discovery document) and its published keys. Only the paths of
/// the discovery document's URLs are used: keys always come from the configured tenant, never
/// from a host a document (or a token) names.
async fn fetch_issuer(http: &reqwest::Client, base: &reqwest::Url) -> anyhow::Result<(String, jsonwebtoken::jwk::JwkSet)> {
    let discovery_url = crate::endpoints::join_segments(base, &[".well-known", "openid-configuration"]);
    let discovery: serde_json::Value = get_json(http, discovery_url).await?;
    let issuer = discovery["issuer"].as_str().context("the discovery document has no `issuer`")?.to_string();
    let jwks_path = discovery["jwks_uri"]
        .as_str()
        .and_then(|u| reqwest::Url::parse(u).ok())
        .map(|u| u.path().to_string())
        .unwrap_or_else(|| "/.well-known/jwks.json".into());
    let segments: Vec<&str> = jwks_path.split('/').filter(|s| !s.is_empty()).collect();
    let jwks: jsonwebtoken::jwk::JwkSet = get_json(http, crate::endpoints::join_segments(base, &segments)).await?;
    Ok((issuer, jwks))
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: reqwest::Url) -> anyhow::Result<T> {
    let response = http.get(url.clone()).send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    // A discovery document or a key set is a few KiB.
    let body = crate::endpoints::read_body(response, 1 << 20).await.with_context(|| format!("GET {url}"))?;
    serde_json::from_slice(&body).with_context(|| format!("GET {url}: unexpected answer"))
}

/// Reads what the hygiene audit needs from the tenant: the roles the policies name (with
/// members), the APIs and the signing keys; then audits.
async fn hygiene_findings(
    desired: &crate::policy::model::Desired,
    conn: &Connection,
    directory: Option<&crate::live::Directory>,
) -> anyhow::Result<Vec<crate::audit::hygiene::HygieneFinding>> {
    use crate::audit::hygiene::{Tenant, audit};
    use crate::retry::{RetryPolicy, retry};
    let policy = RetryPolicy::default();
    let auth0 = &conn.clients.auth0;
    let read;
    let directory = match directory {
        Some(d) => d,
        None => {
            let mut request = crate::live::directory_request(desired);
            // Hygiene reports empty roles, so it needs members whatever the mapping.
            request.resolve_members = true;
            read = crate::identity::read_directory(auth0, &request, &policy).await?.0;
            &read
        }
    };
    let apis = retry(&policy, "resource-servers", || auth0.resource_servers()).await?;
    let keys = retry(&policy, "keys/signing", || auth0.signing_keys()).await?;
    let tenant = Tenant { resource_servers: &apis, signing_keys: &keys, directory };
    Ok(audit(desired, &tenant, crate::time::command_now()))
}

/// Hygiene findings as plan findings (they appear in every plan).
fn add_hygiene_to_plan(plan: &mut Plan, findings: Result<Vec<crate::audit::hygiene::HygieneFinding>, anyhow::Error>) {
    use crate::audit::hygiene::Severity as H;
    use crate::plan::{Finding, Severity};
    let extra: Vec<Finding> = match findings {
        Ok(findings) => findings
            .into_iter()
            .map(|f| Finding {
                service: None,
                code: format!("auth0-{}", f.code),
                severity: match f.severity {
                    H::Error => Severity::Error,
                    H::Warning => Severity::Warning,
                    H::Info => Severity::Info,
                },
                message: format!("{}; fix: {}", f.message, f.fix),
                sources: f.sources,
            })
            .collect(),
        Err(e) => vec![Finding {
            service: None,
            code: "auth0-audit-skipped".into(),
            severity: Severity::Warning,
            message: format!("the Auth0 hygiene audit could not read the tenant ({e:#}); grant the Management API client read:resource_servers and read:signing_keys"),
            sources: vec![],
        }],
    };
    plan.findings.extend(extra);
    plan.findings.sort();
    plan.findings.dedup();
    plan.summary.findings = plan.findings.len();
}

/// `runwarden audit`: Auth0 hygiene findings alone. Exit 0 when there are none, 2 when there are.
pub fn cmd_audit(global: &GlobalArgs, args: &crate::cli::AuditArgs) -> anyhow::Result<ExitCode> {
    let Ok(desired) = load_policies(&args.policies.policies, crate::time::command_now()) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let findings = runtime()?.block_on(async {
        let conn = Connection::open(global, &desired.settings).await?;
        hygiene_findings(&desired, &conn, None).await
    })?;
    match args.format {
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
        _ => {
            for f in &findings {
                let severity = match f.severity {
                    crate::audit::hygiene::Severity::Error => "error",
                    crate::audit::hygiene::Severity::Warning => "warning",
                    crate::audit::hygiene::Severity::Info => "info",
                };
                let v = crate::text::visible;
                println!("{severity} [{}] {}", f.code, v(&f.message));
                println!("  fix: {}", v(&f.fix));
                for s in &f.sources {
                    println!("  at: {}", v(s));
                }
            }
            println!("Audit: {} finding(s).", findings.len());
        }
    }
    Ok(if findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_CHANGES) })
}
