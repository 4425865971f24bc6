//! Where a command's calls go, as the global options say: an embedded simulator seeded from
//! `--sim WORLD` (builds with the `sim` feature), else the real APIs or every call to
//! `--endpoint`.

use crate::cli::GlobalArgs;
use crate::live::ClientConfig;
use crate::pass::Connection;
use crate::policy::model::Settings;

/// What a build without the simulator says when asked for it.
#[cfg(not(feature = "sim"))]
pub(super) const WITHOUT_SIM: &str = "this runwarden was built without the simulator (Cargo feature `sim`, left out of the production image); `demo`, `sim` and `--sim` need a build with it: `cargo build` or `cargo run -- demo` from the repository (the feature is on by default)";

/// [`open_with`] with the default client limits.
pub(super) async fn open(global: &GlobalArgs, settings: &Settings) -> anyhow::Result<Connection> {
    open_with(global, settings, &ClientConfig::default()).await
}

/// Connects as the global options say, with explicit client limits (e.g. a shutdown token in
/// `config.google.shutdown` that ends every pacer wait).
pub(super) async fn open_with(global: &GlobalArgs, settings: &Settings, config: &ClientConfig) -> anyhow::Result<Connection> {
    match &global.sim {
        #[cfg(feature = "sim")]
        Some(world) => Connection::embedded_with(world, settings, config).await,
        #[cfg(not(feature = "sim"))]
        Some(_) => anyhow::bail!(WITHOUT_SIM),
        None => Connection::connect(global.endpoint.as_deref(), settings, config).await,
    }
}
