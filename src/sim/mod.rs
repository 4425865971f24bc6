//! The simulator: Google (Cloud Run v2, IAP, Resource Manager, OAuth) and Auth0 on one address.
//! (not built yet)

use crate::cli::{GlobalArgs, SimArgs};
use std::process::ExitCode;

/// `runwarden sim`.
pub fn cmd_sim(_global: &GlobalArgs, _args: &SimArgs) -> anyhow::Result<ExitCode> {
    crate::cli::not_built("sim", 3)
}
