//! `runwarden demo`: the example policies against the embedded demo world (plan, apply, plan
//! again), narrated on stdout. Needs the `sim` feature.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

#[cfg(feature = "sim")]
use std::sync::Arc;

#[cfg(feature = "sim")]
use anyhow::{Context, bail};
#[cfg(feature = "sim")]
use tokio_util::sync::CancellationToken;

#[cfg(feature = "sim")]
use crate::apply::{ApplyConfig, Applier, AuditContext, AuditSink, PlanSource, apply};
use crate::cli::{DemoArgs, GlobalArgs};
#[cfg(feature = "sim")]
use crate::cli::{EXIT_ERROR, EXIT_GUARD};
use crate::logging::LogFormat;
#[cfg(feature = "sim")]
use crate::pass::{Connection, load_policies, read, runtime};
#[cfg(feature = "sim")]
use crate::plan::{PlanOptions, check_guards, plan, render_text};
#[cfg(feature = "sim")]
use crate::progress::Progress;

/// `runwarden demo`: the example policies against the embedded demo world — plan, apply, plan
/// again — printing what it does. No account, no network beyond loopback.
pub(super) fn run(global: &GlobalArgs, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    demo(&args.policies.policies, &args.world, global.log_format, &mut out)
}

/// Without the simulator there is no demo world to run against.
#[cfg(not(feature = "sim"))]
fn demo(_: &Path, _: &Path, _: LogFormat, _: &mut dyn Write) -> anyhow::Result<ExitCode> {
    anyhow::bail!(super::connect::WITHOUT_SIM)
}

/// The demo, writing to `out`.
#[cfg(feature = "sim")]
fn demo(policies: &Path, world: &Path, log_format: LogFormat, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
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
        let sim = conn.sim().context("an embedded connection has a simulator")?;
        writeln!(out, "runwarden demo: simulated Google Cloud Run and Auth0 on {} (world {}), policies from {}", sim.base_url, world.display(), policies.display())?;
        writeln!(out, "\n== 1. plan: what differs between the policies and the simulated estate\n")?;
        let live = read(&desired, &conn, &progress).await?;
        let mut first = plan(&desired, &live, &PlanOptions::at(now));
        // The same findings as `plan` and `apply` show (one catalogue).
        crate::pass::findings::add_pass_findings(&mut first, &desired, &conn, &live, now).await;
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
        let later = crate::time::command_now();
        let mut second = plan(&desired, &live, &PlanOptions::at(later));
        crate::pass::findings::add_pass_findings(&mut second, &desired, &conn, &live, later).await;
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
                writeln!(out, "{} in warn/observe mode still {}: reported on every pass, never applied.", crate::text::count(reported, "service"), if reported == 1 { "differs" } else { "differ" })?;
            }
            writeln!(out, "\nTry it by hand: `runwarden sim` serves this world on loopback and prints the environment to point `runwarden plan` (or gcloud) at it.")?;
            Ok(ExitCode::SUCCESS)
        } else {
            writeln!(out, "Not converged: {} still {}.", crate::text::count(left, "enforced service"), if left == 1 { "differs" } else { "differ" })?;
            Ok(ExitCode::from(EXIT_ERROR))
        }
    })
}

#[cfg(feature = "sim")]
/// A writer that forwards what it is given to a channel (the audit sink needs `Send + 'static`).
struct ChannelWriter(std::sync::mpsc::Sender<Vec<u8>>);

#[cfg(feature = "sim")]
impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
