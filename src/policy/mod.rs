//! Policy files → the validated desired model. (loader not built yet)

pub mod model;

use crate::cli::{GlobalArgs, SchemaArgs, ValidateArgs};
use std::process::ExitCode;

/// `runwarden validate`.
pub fn cmd_validate(_global: &GlobalArgs, _args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    crate::cli::not_built("validate", 2)
}

/// `runwarden schema`.
pub fn cmd_schema(_global: &GlobalArgs, _args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    crate::cli::not_built("schema", 2)
}
