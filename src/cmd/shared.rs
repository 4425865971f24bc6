//! Helpers several commands share: interrupt handling, client limits, writing plans.

use std::io::Write;

use tokio_util::sync::CancellationToken;

use crate::plan::Plan;

/// Names, on stderr, every governed service the pass could not read (nothing was planned or
/// written for them, so the pass cannot claim convergence).
pub(super) fn report_unread(unread: &[&crate::plan::Finding]) {
    if unread.is_empty() {
        return;
    }
    eprintln!("error: {} could not be read, so nothing was planned or changed for them:", crate::text::count(unread.len(), "governed service"));
    for f in unread {
        eprintln!("  {}: {}", f.service.as_deref().unwrap_or("?"), f.evidence);
    }
}

/// Says on stderr, when the plan has `error` findings, that they make `command` exit 1 (so a
/// pull request or a scheduled job with one fails), naming their codes; true when it did.
/// Warnings and infos never change an exit code.
pub(super) fn report_error_findings(plan: &Plan, command: &str) -> bool {
    let errors: Vec<&crate::plan::Finding> = plan.findings.iter().filter(|f| f.severity == crate::plan::Severity::Error).collect();
    if errors.is_empty() {
        return false;
    }
    let mut codes: Vec<&str> = errors.iter().map(|f| f.code.as_str()).collect();
    codes.sort();
    codes.dedup();
    eprintln!(
        "error: the plan has {} ({}); `runwarden {command}` exits 1 until {} fixed (each finding says how)",
        crate::text::count(errors.len(), "error finding"),
        codes.join(", "),
        if errors.len() == 1 { "it is" } else { "they are" }
    );
    true
}

/// SIGINT (Ctrl-C) and SIGTERM (what Cloud Run sends a job it stops) cancel `shutdown`: the
/// command finishes what is in flight, starts nothing new, and reports. The handlers are
/// installed before this returns (inside the runtime), so a signal that comes at once is caught.
pub(super) fn spawn_interrupt_watcher(shutdown: CancellationToken, command: &'static str, consequence: &'static str) {
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
pub(super) fn client_config(shutdown: &CancellationToken) -> crate::live::ClientConfig {
    let mut config = crate::live::ClientConfig::default();
    config.google.shutdown = shutdown.clone();
    config
}

/// Writes a text plan to stdout as it is rendered.
pub(super) fn write_text_to_stdout(plan: &Plan, color: bool) -> std::io::Result<()> {
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

