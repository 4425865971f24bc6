//! `runwarden plan`: load, read, plan (with the base branch's policies and the trusted
//! connection when given), print; exit 2 when there are changes.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::pass::findings::add_pass_findings;
use super::connect;
use super::shared::{report_unread, spawn_interrupt_watcher, write_text_to_stdout};
use crate::cli::{EXIT_CHANGES, EXIT_ERROR, GlobalArgs, PlanArgs, PlanFormat};
use crate::pass::{load_policies, read, runtime};
use crate::plan::{Finding, GuardTrip, Plan, PlanOptions, check_guards, plan, render_comment};
use crate::policy::model::{Desired, Settings};
use crate::progress::Progress;

/// `runwarden plan`.
pub(super) fn run(global: &GlobalArgs, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let now = crate::time::command_now();
    let source = crate::published::resolve(&args.policies.policies).map_err(anyhow::Error::msg)?;
    let Ok(desired) = load_policies(&source.dir, now) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let mut notes = Vec::new();
    let base = base_policies(args, now, &mut notes);
    let connect_with = connection_settings(args, &desired.settings, now, &mut notes)?;
    let progress = Arc::new(Progress::for_terminal(global.log_format));
    let plan = runtime()?.block_on(async {
        // SIGINT/SIGTERM end a plan cleanly: nothing is written by a plan, so it just stops.
        let interrupted = CancellationToken::new();
        spawn_interrupt_watcher(interrupted.clone(), "plan", "no plan was made");
        let work = async {
            let conn = connect::open(global, &connect_with).await?;
            let live = read(&desired, &conn, &progress).await?;
            let mut plan = plan(&desired, &live, &PlanOptions { now, base: base.as_ref() });
            plan.findings.extend(notes);
            add_pass_findings(&mut plan, &desired, &conn, &live, now).await;
            crate::pass::attribute_plan(&conn.clients.google, &mut plan, false).await;
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
    let revision = args.revision.as_deref().or(source.commit.as_deref());
    print_plan(&plan, &trips, args.format, revision)?;
    let unread: Vec<&crate::plan::Finding> = plan.unread().collect();
    if !unread.is_empty() {
        report_unread(&unread);
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    if super::shared::report_error_findings(&plan, "plan") {
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(exit_for_plan(&plan))
}

/// The `--base-policies`, when given and they load; when they do not, a note for the plan.
fn base_policies(args: &PlanArgs, now: SystemTime, notes: &mut Vec<Finding>) -> Option<Desired> {
    // A base branch that does not load (the first pull request, or one that fixes a broken
    // main) still gets a plan: against the live state alone, and the plan says so.
    let dir = args.base_policies.as_ref()?;
    match crate::policy::load_lenient(dir, now) {
        Ok(base) => Some(base.desired),
        Err(errors) => {
            eprintln!("warning: the base policies {} do not load ({} error(s)); planning against the live state alone", dir.display(), errors.errors.len());
            notes.push(base_not_loaded(dir, &errors));
            None
        }
    }
}

/// The Settings to connect with: the policies', with the Auth0 connection of `--settings-from`
/// when given (and a note when the pull request moves it).
fn connection_settings(args: &PlanArgs, settings: &Settings, now: SystemTime, notes: &mut Vec<Finding>) -> anyhow::Result<Settings> {
    let mut connect_with = settings.clone();
    if !args.settings_from.is_empty() {
        let trusted = trusted_settings(&args.settings_from, now)?;
        if trusted.auth0 != settings.auth0 {
            notes.push(connection_from_base(&settings.auth0, &trusted.auth0));
        }
        connect_with.auth0 = trusted.auth0;
    }
    Ok(connect_with)
}

/// Prints the plan in `format` on stdout, the note of the guards it would trip first.
fn print_plan(plan: &Plan, trips: &[GuardTrip], format: PlanFormat, revision: Option<&str>) -> anyhow::Result<()> {
    let color = crate::logging::colour(std::io::stdout().is_terminal());
    let text = match format {
        PlanFormat::Text => {
            if !trips.is_empty() {
                let note = crate::plan::render_guard_note(trips, false);
                println!("{}\n", note.trim());
            }
            // Written as rendered: a plan of millions of changes is never held as text too.
            write_text_to_stdout(plan, color).context("writing the plan to stdout")?;
            String::new()
        }
        PlanFormat::Markdown => render_comment(plan, revision, trips),
        PlanFormat::Json => {
            plan.write_json(std::io::stdout().lock()).context("writing the plan to stdout")?;
            String::new()
        }
    };
    print!("{text}");
    let _ = std::io::stdout().flush();
    Ok(())
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
    crate::plan::Finding::new(
        None,
        "base-policies-not-loaded",
        format!(
            "the base policies {} do not load ({} error(s), first: {}); this plan compares the policies with the live state alone, so no change is marked [declared] or [drift]",
            dir.display(),
            errors.errors.len(),
            first.lines().next().unwrap_or("").trim()
        ),
        vec![],
    )
}

/// The finding a plan carries when the pull request changes the Auth0 connection that
/// `--settings-from` took from the base branch.
fn connection_from_base(proposed: &crate::policy::model::Auth0Settings, trusted: &crate::policy::model::Auth0Settings) -> crate::plan::Finding {
    let show = |a: &crate::policy::model::Auth0Settings| format!("domain {}, clientId {}, clientSecretEnv {}", a.domain, a.client_id, a.client_secret_env);
    crate::plan::Finding::new(
        None,
        "connection-from-base",
        format!(
            "this change moves the Auth0 connection to {} (from {}); the plan connected with the base branch's, and the new connection is used only after the merge",
            show(proposed),
            show(trusted)
        ),
        vec![],
    )
}

/// 2 when the plan has changes, else 0 (error findings and unread services exit 1 before).
fn exit_for_plan(plan: &Plan) -> ExitCode {
    if plan.has_changes() { ExitCode::from(EXIT_CHANGES) } else { ExitCode::SUCCESS }
}
