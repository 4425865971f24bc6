//! `runwarden sim`: the simulated Google and Auth0 APIs on a local address (builds with the
//! `sim` feature).

use std::process::ExitCode;

use crate::cli::{GlobalArgs, SimArgs};

/// Without the simulator there is nothing to serve.
#[cfg(not(feature = "sim"))]
pub(super) fn run(_global: &GlobalArgs, _args: &SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(super::connect::WITHOUT_SIM)
}

/// `runwarden sim`: serves the world until SIGINT/SIGTERM and prints the `export` lines.
#[cfg(feature = "sim")]
pub(super) fn run(_global: &GlobalArgs, args: &SimArgs) -> anyhow::Result<ExitCode> {
    use crate::sim::{SimHandle, World, serve, write_key_file};
    use anyhow::Context;
    let world = World::from_file(&args.world)?;
    let addr = args.listen;
    if !addr.ip().is_loopback() && !args.allow_non_loopback {
        anyhow::bail!(
            "refusing to serve the simulator on {addr}: it issues fake tokens and accepts any \
             change, so it only listens on loopback (127.0.0.1 or ::1). Pass \
             --allow-non-loopback if you really mean to expose it"
        );
    }
    let handle = SimHandle::new(&world)?;
    handle.set_print_requests(args.log_requests);
    let runtime = tokio::runtime::Runtime::new().context("could not start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let base_url = format!("http://{bound}");
        let dir = std::env::temp_dir().join(format!("runwarden-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        let key_path = write_key_file(&handle, &base_url, &dir)?;
        let (client_id, client_secret) = handle.auth0_client();
        println!("export RUNWARDEN_ENDPOINT={base_url}");
        println!("export GOOGLE_APPLICATION_CREDENTIALS={}", key_path.display());
        println!("export AUTH0_CLIENT_ID={client_id}");
        println!("export AUTH0_CLIENT_SECRET={client_secret}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        eprintln!(
            "runwarden sim: serving {} on {base_url} until Ctrl-C; admin endpoints under {base_url}/sim/",
            args.world.display()
        );
        let result = serve(listener, handle, shutdown_signal()).await;
        let _ = std::fs::remove_dir_all(&dir);
        result.context("the simulator stopped with an error")?;
        eprintln!("runwarden sim: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(feature = "sim")]
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

