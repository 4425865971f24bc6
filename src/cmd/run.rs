//! `runwarden run`: the reconcile loop, its status endpoint, file watching and signals.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::connect;
use super::shared::client_config;
use crate::apply::{ApplyConfig, AuditSink};
use crate::cli::{EXIT_ERROR, GlobalArgs, RunArgs};
use crate::logging::LogFormat;
use crate::pass::{LivePass, load_policies, runtime};

/// `runwarden run`: reconcile on an interval and on policy changes; serve health, status and
/// metrics; stop cleanly on SIGTERM/SIGINT; SIGHUP forces a pass.
pub(super) fn run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<ExitCode> {
    use crate::reconcile::{LoopConfig, router, run_loop, shared, watch};
    let (interval, listen) = (args.interval.duration, args.listen);
    // The connection is made from the policies as they are at start; a policy change that
    // moves the Auth0 tenant or client takes a restart (the loop says so).
    let source = crate::published::resolve(&args.policies.policies).map_err(anyhow::Error::msg)?;
    let Ok(desired) = load_policies(&source.dir, crate::time::command_now()) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        // Every wait (pacer, server-requested pause, retry backoff) ends on shutdown; the
        // clients count their calls in the registry `/metrics` exposes.
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let mut clients = client_config(&shutdown);
        clients.google.metrics = metrics.clone();
        let conn = connect::open_with(global, &desired.settings, &clients).await?;
        #[cfg(feature = "sim")]
        if let Some(sim) = conn.sim() {
            eprintln!("runwarden run: embedded simulator on {} (inject drift there, e.g. with gcloud or {}/sim/faults)", sim.base_url, sim.base_url);
        }
        let sink = AuditSink::new(global.log_format == LogFormat::Json, Box::new(std::io::stdout()));
        let pass = Arc::new(LivePass::new(conn, ApplyConfig::default(), sink));
        let config = LoopConfig { metrics, ..LoopConfig::new(args.policies.policies.clone(), interval) };
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
        eprintln!("runwarden run: every {}, {watching}; status on http://{}/status", args.interval.text, listener.local_addr()?);
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
