//! `runwarden apply`: load, read (one shard, when sharded), plan or verify a saved plan, guard,
//! confirm, apply; exit 0 when every service converged, 1 otherwise, 3 when a guard refused.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use super::connect;
use super::shared::{client_config, report_unread, spawn_interrupt_watcher, write_text_to_stdout};
use crate::apply::{ApplyConfig, ApplyReport, Applier, AuditContext, AuditSink, PlanSource, ServiceOutcome, apply};
use crate::cli::{ApplyArgs, EXIT_ERROR, EXIT_GUARD, GlobalArgs};
use crate::logging::LogFormat;
use crate::live::Shard;
use crate::model::LiveState;
use crate::pass::{Connection, load_policies, runtime};
use crate::policy::model::{Desired, Settings};
use crate::plan::{Plan, PlanOptions, check_guards, plan};
use crate::progress::Progress;

/// `runwarden apply`.
pub(super) fn run(global: &GlobalArgs, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let shard = shard_of(args)?;
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
        bail!("{}", refusal_without_terminal(args));
    }
    runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        spawn_interrupt_watcher(shutdown.clone(), "apply", "finishing the writes in flight, starting no new one");
        let Some((conn, live)) = connect_and_read(global, &desired, &progress, shard, &shutdown).await? else {
            eprintln!("runwarden apply: nothing was applied");
            return Ok(ExitCode::from(EXIT_ERROR));
        };
        let audit = AuditContext { actor: conn.actor.clone(), ..audit };
        let sink = AuditSink::new(json, Box::new(std::io::stdout()));
        let mut fresh = plan(&desired, &live, &PlanOptions::at(now));
        // The same findings as `plan` shows for this state (one catalogue, computed once).
        crate::pass::findings::add_pass_findings(&mut fresh, &desired, &conn, &live, now).await;
        let Some((mut plan, stale)) = plan_to_apply(saved, fresh, &live, shard) else {
            return Ok(ExitCode::from(EXIT_ERROR));
        };
        // Who added each drifted member (one audit-log query per drifted service; advice only).
        crate::pass::attribute_plan(&conn.clients.google, &mut plan, false).await;
        let from_saved = args.plan.is_some();
        if !json {
            write_text_to_stdout(&plan, crate::logging::colour(std::io::stdout().is_terminal())).context("writing the plan to stdout")?;
        }
        if refused_by_guards(&plan, &desired.settings, args.allow_removals) {
            return Ok(ExitCode::from(EXIT_GUARD));
        }
        // Services that could not be read, or that moved since the saved plan was made, are
        // failures of this apply (nothing was planned or written for them): the summary lists
        // them and the exit code is 1.
        let unread: Vec<&crate::plan::Finding> = plan.unread().collect();
        let unwritten = unwritten(stale, &unread);
        let applicable = plan.services.iter().any(|s| s.is_applicable() && s.has_writes());
        if !applicable && unwritten.is_empty() {
            nothing_to_apply(json, &sink, &audit);
            let errors = super::shared::report_error_findings(&plan, "apply");
            return Ok(if errors { ExitCode::from(EXIT_ERROR) } else { ExitCode::SUCCESS });
        }
        if applicable && interactive && !confirm()? {
            // Like Terraform: a declined apply is not a success (a script must not go on as if
            // the changes were made).
            println!("Apply cancelled; nothing was changed.");
            return Ok(ExitCode::from(EXIT_ERROR));
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
        // What is safe was applied; error findings remain (apply cannot fix them) and fail it.
        let errors = super::shared::report_error_findings(&plan, "apply");
        Ok(if errors { ExitCode::from(EXIT_ERROR) } else { exit_for_apply(&report) })
    })
}

/// Why `apply` does not ask without a terminal, and the command that applies what was meant:
/// the saved plan itself (`--auto-approve` alone would plan afresh and apply that instead).
fn refusal_without_terminal(args: &ApplyArgs) -> String {
    let policies = args.policies.policies.display();
    let next = match &args.plan {
        Some(plan) => format!(
            "to apply the saved plan as reviewed, run `runwarden apply --policies {policies} --auto-approve {}`",
            plan.display()
        ),
        None => format!(
            "review the plan with `runwarden plan --policies {policies} --out PLAN.json`, then apply exactly that with `runwarden apply --policies {policies} --auto-approve PLAN.json`"
        ),
    };
    format!("refusing to apply without confirmation: stdin is not a terminal; {next}")
}

/// Says that nothing is to be applied: on stdout, or with JSON logs as an empty summary entry.
fn nothing_to_apply(json: bool, sink: &AuditSink, audit: &AuditContext) {
    if json {
        // The summary entry is what a log-based "last success" metric counts
        // (deploy/monitoring/): a converged estate must not look like a stalled job.
        sink.summary(&ApplyReport::default(), audit);
    } else {
        println!("Nothing to apply.");
    }
}

/// `--shard`, else the shard Cloud Run gives a job's task (`CLOUD_RUN_TASK_INDEX`/`COUNT`).
fn shard_of(args: &ApplyArgs) -> anyhow::Result<Option<Shard>> {
    match args.shard {
        Some(shard) => Ok(Some(shard)),
        None => Shard::from_env(
            std::env::var("CLOUD_RUN_TASK_INDEX").ok().as_deref(),
            std::env::var("CLOUD_RUN_TASK_COUNT").ok().as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("CLOUD_RUN_TASK_INDEX/CLOUD_RUN_TASK_COUNT: {e}")),
    }
}

/// Connects and reads the live state (one shard's services, when sharded); `None` when a
/// signal came first.
async fn connect_and_read(
    global: &GlobalArgs,
    desired: &Desired,
    progress: &Arc<Progress>,
    shard: Option<Shard>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(Connection, LiveState)>> {
    // Every wait (pacer, server-requested pause, retry backoff) ends on shutdown.
    let clients = client_config(shutdown);
    let conn = tokio::select! {
        conn = connect::open_with(global, &desired.settings, &clients) => conn?,
        _ = shutdown.cancelled() => return Ok(None),
    };
    if let Some(shard) = shard {
        tracing::info!(index = shard.index, count = shard.count, "applying one shard of the estate");
    }
    // A saved plan is re-derived too: its services are re-planned from the live state and
    // the current policies, and only what the policies produce is applied (plan::verify).
    let live = tokio::select! {
        live = crate::pass::read_shard(desired, &conn, progress, shard) => live?,
        _ = shutdown.cancelled() => return Ok(None),
    };
    Ok(Some((conn, live)))
}

/// The plan to apply and the saved plan's services that moved since it was made: the fresh
/// plan, or the saved plan (this shard's part of it) verified against it. `None` (after
/// saying why) when the saved plan is not what the policies produce.
fn plan_to_apply(
    saved: Option<Plan>,
    fresh: Plan,
    live: &LiveState,
    shard: Option<Shard>,
) -> Option<(Plan, Vec<(String, String)>)> {
    let Some(mut saved) = saved else {
        return Some((fresh, Vec::new()));
    };
    if let Some(shard) = shard {
        saved.services.retain(|s| shard.contains(&s.service_id()));
    }
    match crate::plan::verify_saved(&saved, &fresh, live) {
        Ok(verified) => Some((verified.plan, verified.stale)),
        Err(mismatch) => {
            eprintln!("error: {mismatch}");
            None
        }
    }
}

/// Whether a guard refuses the plan (each trip is printed, and logged as a `guard-trip` event
/// for the log-based metric: a one-shot job exposes no `/metrics`).
fn refused_by_guards(plan: &Plan, settings: &Settings, allow_removals: Option<usize>) -> bool {
    let trips = check_guards(plan, settings, allow_removals);
    if trips.is_empty() {
        return false;
    }
    for t in &trips {
        eprintln!("error: {}", crate::text::visible(&t.to_string()));
        tracing::error!(event = "guard-trip", guard = t.guard.as_str(), "{t}");
    }
    eprintln!("nothing was applied");
    true
}

/// The outcomes of the services nothing is written for: stale in the saved plan, or unread.
fn unwritten(stale: Vec<(String, String)>, unread: &[&crate::plan::Finding]) -> Vec<ServiceOutcome> {
    let mut unwritten: Vec<ServiceOutcome> = stale
        .into_iter()
        .map(|(service, message)| ServiceOutcome::Stale { service, message })
        .collect();
    unwritten.extend(unread.iter().map(|f| ServiceOutcome::Failed {
        service: f.service.clone().unwrap_or_default(),
        message: f.evidence.clone(),
        transient: true,
    }));
    unwritten
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
