//! One pass as the commands run it: connect to the world (the real APIs, one `--endpoint`, or
//! an embedded simulator for `--sim`), load the policies, read the live state.
//!
//! This is the only place that decides *where* calls go; everything below it receives clients
//! and base URLs already built, and the clock is read here once per pass and passed down.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, anyhow};

use crate::cli::GlobalArgs;
use crate::live::{ClientConfig, Clients, ReadConfig, ReadProgress, read_live};
use crate::model::LiveState;
use crate::policy::model::{Desired, Settings};
use crate::progress::Progress;
use crate::sim::{RunningSim, World};

/// The clients of one command, and what keeps them working.
pub struct Connection {
    pub clients: Clients,
    /// Where the Auth0 tenant's public endpoints (OIDC discovery, JWKS) are reached.
    pub auth0_base: reqwest::Url,
    /// The identity changes are made as (audit events): the credential's e-mail when known.
    pub actor: String,
    /// Ends every wait of these clients and of the reads made through this connection.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The embedded simulator of `--sim` (and its key file), alive as long as the connection.
    embedded: Option<Embedded>,
}

struct Embedded {
    sim: RunningSim,
    _dir: tempfile::TempDir,
}

impl Connection {
    /// Connects as the global options say: `--sim WORLD` starts an embedded simulator seeded
    /// from the world file; otherwise the real APIs, or every call to `--endpoint`.
    pub async fn open(global: &GlobalArgs, settings: &Settings) -> anyhow::Result<Connection> {
        Connection::open_with(global, settings, &ClientConfig::default()).await
    }

    /// [`Connection::open`] with explicit client limits (e.g. a shutdown token in
    /// `config.google.shutdown` that ends every pacer wait).
    pub async fn open_with(global: &GlobalArgs, settings: &Settings, config: &ClientConfig) -> anyhow::Result<Connection> {
        match &global.sim {
            Some(world) => Connection::embedded_with(world, settings, config).await,
            None => {
                let clients = Clients::connect(settings, global.endpoint.as_deref(), config)
                    .await
                    .context("connecting to Google and Auth0")?;
                let auth0_base = crate::endpoints::Endpoints::from_override(global.endpoint.as_deref())?
                    .auth0_base(&settings.auth0.domain)?;
                Ok(Connection { clients, auth0_base, actor: ambient_actor(), shutdown: config.google.shutdown.clone(), embedded: None })
            }
        }
    }

    /// Starts a simulator seeded from `world` on a loopback port and connects to it through
    /// the real client code (key file, token endpoint, Management API token).
    pub async fn embedded(world: &Path, settings: &Settings) -> anyhow::Result<Connection> {
        Connection::embedded_with(world, settings, &ClientConfig::default()).await
    }

    /// [`Connection::embedded`] with explicit client limits (tests relax the write pacing that
    /// protects a real project's quota).
    pub async fn embedded_with(world: &Path, settings: &Settings, config: &ClientConfig) -> anyhow::Result<Connection> {
        let world = World::from_file(world)?;
        let sim = crate::sim::spawn(world).await?;
        let dir = tempfile::Builder::new()
            .prefix("runwarden-sim-")
            .tempdir()
            .context("creating a directory for the simulator's key file")?;
        let key = sim.write_credentials(dir.path())?;
        let clients = Clients::for_simulator(settings, &sim.base_url, &key, sim.auth0_client(), config)
            .context("connecting to the embedded simulator")?;
        let actor = format!("serviceAccount:{}", sim.handle.service_account());
        let auth0_base = crate::endpoints::parse_base_url(&sim.base_url)?;
        Ok(Connection { clients, auth0_base, actor, shutdown: config.google.shutdown.clone(), embedded: Some(Embedded { sim, _dir: dir }) })
    }

    /// The embedded simulator, when there is one.
    pub fn sim(&self) -> Option<&RunningSim> {
        self.embedded.as_ref().map(|e| &e.sim)
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
