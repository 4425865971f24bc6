//! The embedded simulator of `--sim` and `demo` (and of the tests): a simulator on a loopback
//! port, reached through the real client code (key file, token endpoint, Management API token).
//!
//! Only built with the `sim` feature. The constructors are an inherent `impl` of
//! [`Connection`] written here, in the command layer, so that `pass` (and everything below
//! it) never names the simulator; the running simulator rides in the connection as an opaque
//! attachment.

use std::path::Path;

use anyhow::Context;

use crate::live::{ClientConfig, Clients};
use crate::pass::Connection;
use crate::policy::model::Settings;
use crate::sim::{RunningSim, World};

/// What a connection to an embedded simulator keeps alive: the simulator and its key file.
struct Embedded {
    sim: RunningSim,
    _dir: tempfile::TempDir,
}

impl Connection {
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
        let clients = clients_for_sim(&sim, settings, dir.path(), config).context("connecting to the embedded simulator")?;
        let actor = format!("serviceAccount:{}", sim.handle.service_account());
        let auth0_base = crate::endpoints::parse_base_url(&sim.base_url)?;
        let conn = Connection::from_clients(clients, auth0_base, actor, config.google.shutdown.clone());
        Ok(conn.with_attachment(Embedded { sim, _dir: dir }))
    }

    /// The embedded simulator, when there is one.
    pub fn sim(&self) -> Option<&RunningSim> {
        self.attachment::<Embedded>().map(|e| &e.sim)
    }
}

/// Clients for a running simulator. Writes the simulator's service-account key file into
/// `dir` (keep the directory alive as long as the clients) and uses the Management API client
/// the simulator issued.
pub fn clients_for_sim(running: &RunningSim, settings: &Settings, dir: &Path, config: &ClientConfig) -> anyhow::Result<Clients> {
    let key_file = running
        .write_credentials(dir)
        .context("writing the simulator's service-account key file failed")?;
    let clients = Clients::for_simulator(settings, &running.base_url, &key_file, running.auth0_client(), config)?;
    Ok(clients)
}
