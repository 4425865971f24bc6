//! Command-line definitions and dispatch, nothing else: each command's work lives in the module
//! that owns it, behind a `cmd_*` function that returns the process exit code.
//!
//! Exit codes follow Terraform: `0` success and no changes, `1` error, `2` the plan has changes,
//! `3` a guard refused the apply.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::logging::{self, LogFormat};

/// Exit code: an error (bad input, failed calls, a service not converged).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the plan has changes.
pub const EXIT_CHANGES: u8 = 2;
/// Exit code: a guard refused the apply.
pub const EXIT_GUARD: u8 = 3;

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn an_error_chain_is_printed_once_even_when_messages_quote_their_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("no credentials: {0}")]
        struct Outer(#[source] std::io::Error);
        let err = anyhow::Error::new(Outer(std::io::Error::other("no method found"))).context("connecting");
        assert_eq!(error_chain(&err), "connecting: no credentials: no method found");
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "runwarden",
    version,
    about = "Declarative, reviewable access to Cloud Run services for Auth0 roles",
    long_about = "runwarden reads YAML access policies that map Auth0 roles and machine identities \
                  to Google Cloud Run services, compares them with the live IAM policies and \
                  settings, and plans or applies the corrections."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Run against an embedded simulator seeded from this world file instead of the real APIs.
    #[arg(long, global = true, value_name = "WORLD.yaml")]
    pub sim: Option<PathBuf>,
    /// Send every Google and Auth0 call to this base URL (e.g. a running `runwarden sim`).
    /// Plain http:// is accepted only for loopback addresses.
    #[arg(long, global = true, env = "RUNWARDEN_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,
    /// Log format: human-readable text, or JSON with Cloud Logging fields.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the policy files and report every error with file:line:col.
    Validate(ValidateArgs),
    /// Write the JSON Schemas (policy kinds, saved plan, simulator world) into schemas/.
    Schema(SchemaArgs),
    /// Show what would change (exit 2 when there are changes).
    Plan(PlanArgs),
    /// Apply the corrections (from the policies, or exactly a saved plan).
    Apply(ApplyArgs),
    /// Reconcile in a loop; watch the policy directory; serve health, status and metrics.
    Run(RunArgs),
    /// Who can invoke what, and why.
    Explain(ExplainArgs),
    /// Write policies that reproduce today's live access of one project and region.
    Import(ImportArgs),
    /// Verify a JWT read from stdin and explain why a service would refuse it.
    CheckToken(CheckTokenArgs),
    /// Auth0 hygiene findings (audiences, token lifetimes, signing key age).
    Audit(AuditArgs),
    /// Serve the simulated Google and Auth0 APIs locally.
    Sim(SimArgs),
    /// Plan and apply the example policies on the embedded demo world, then plan again.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PoliciesArg {
    /// Directory of policy files (searched recursively for *.yaml and *.yml).
    #[arg(long, default_value = "policies", value_name = "DIR")]
    pub policies: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub policies: PoliciesArg,
    /// Directory given without --policies.
    #[arg(value_name = "DIR", conflicts_with = "policies")]
    pub dir: Option<PathBuf>,
}

impl ValidateArgs {
    /// The directory to validate: the positional argument wins over `--policies`.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.as_deref().unwrap_or(&self.policies.policies)
    }
}

#[derive(Debug, Clone, Args)]
pub struct SchemaArgs {
    /// Where to write the schemas.
    #[arg(long, default_value = "schemas", value_name = "DIR")]
    pub out: PathBuf,
    /// Do not write; exit 1 if the files in --out differ from what would be written.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PlanFormat {
    #[default]
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub policies: PoliciesArg,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Also save the plan as JSON (with the etags it was computed from) for `apply PLAN.json`.
    #[arg(long, value_name = "PLAN.json")]
    pub out: Option<PathBuf>,
    /// The pull request's base policies: changes they would make too are marked drift. When
    /// they do not load, the plan says so and compares with the live state alone.
    #[arg(long, value_name = "DIR")]
    pub base_policies: Option<PathBuf>,
    /// Connect with the Auth0 tenant and client (domain, clientId, clientSecretEnv) of the
    /// Settings in DIR (the base branch), never those of --policies: a pull request must not
    /// decide where a credential is sent. Only DIR's Settings document has to load. Repeatable:
    /// the first DIR whose Settings load is used (e.g. the base branch, then a fallback that an
    /// administrator controls).
    #[arg(long, value_name = "DIR")]
    pub settings_from: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub policies: PoliciesArg,
    /// A saved plan to apply exactly (refused per service when the live etag moved).
    #[arg(value_name = "PLAN.json")]
    pub plan: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Allow up to N removals for this run, overriding the removal guards.
    #[arg(long, value_name = "N")]
    pub allow_removals: Option<usize>,
    /// Only this shard of the services: I/N, 0-based (defaults from CLOUD_RUN_TASK_INDEX/COUNT).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Git revision recorded in audit events (defaults from the CI environment).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policies: PoliciesArg,
    /// Time between passes (a pass also runs when the policy files change).
    #[arg(long, default_value = "5m")]
    pub interval: String,
    /// Address of the health, status and metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
}

#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct ExplainTarget {
    /// A member (user:..., an e-mail, or an Auth0 user id).
    #[arg(long)]
    pub member: Option<String>,
    /// A service (project/region/name or its resource name).
    #[arg(long)]
    pub service: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub policies: PoliciesArg,
    #[command(flatten)]
    pub target: ExplainTarget,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub policies: PoliciesArg,
    #[arg(long)]
    pub project: String,
    #[arg(long)]
    pub region: String,
    /// Where to write the generated policy files.
    #[arg(long, default_value = "imported", value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite the generated file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CheckTokenArgs {
    #[command(flatten)]
    pub policies: PoliciesArg,
    /// The service the token is meant for.
    #[arg(long)]
    pub service: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub policies: PoliciesArg,
    /// text for people, json for machines.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
}

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// World file to seed the simulator from.
    #[arg(long, default_value = "deploy/local/world.yaml", value_name = "FILE")]
    pub world: PathBuf,
    /// Address to serve on (loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub listen: String,
    /// Print every request the simulator serves (method, path, status, latency) to stderr.
    #[arg(long)]
    pub log_requests: bool,
    /// Serve on a non-loopback address (the simulator issues fake tokens: think twice).
    #[arg(long)]
    pub allow_non_loopback: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub policies: PoliciesArg,
    /// World file of the embedded simulator.
    #[arg(long, default_value = "deploy/local/world.yaml", value_name = "FILE")]
    pub world: PathBuf,
}

/// Entry point of the binary: parse, set up logging, dispatch, print an error once.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates on stdout; its routine log lines would only interleave with it.
    let level = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    logging::init(cli.global.log_format, level);
    // A scheduled `apply` that fails says so in one structured entry, whatever failed (policies
    // that do not load, a read, a service): what the log-based metric of failed passes counts
    // (deploy/monitoring/). The loop logs the same event for its own passes.
    let failed_event = cli.global.log_format == LogFormat::Json && matches!(cli.command, Command::Apply(_));
    let (code, error) = match run(cli) {
        Ok(code) => (code, None),
        Err(err) => (ExitCode::from(EXIT_ERROR), Some(error_chain(&err))),
    };
    if let Some(error) = &error {
        eprintln!("error: {error}");
    }
    if failed_event && code == ExitCode::from(EXIT_ERROR) {
        let message = match &error {
            Some(e) => format!("runwarden apply failed: {e}"),
            None => "runwarden apply failed; the entries above say why".to_string(),
        };
        let entry = serde_json::json!({
            "severity": "ERROR",
            "message": message,
            "time": logging::rfc3339(std::time::SystemTime::now()),
            "event": "pass-failed",
            "logging.googleapis.com/labels": {"app": "runwarden"},
        });
        eprintln!("{entry}");
    }
    code
}

/// An error and its causes on one line, `outer: cause: root`, leaving out a cause whose text the
/// line already holds (many errors quote their source in their own message).
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Dispatches one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match &cli.command {
        Command::Validate(a) => crate::policy::cmd_validate(g, a),
        Command::Schema(a) => crate::policy::cmd_schema(g, a),
        Command::Sim(a) => crate::sim::cmd_sim(g, a),
        Command::Plan(a) => crate::commands::cmd_plan(g, a),
        Command::Apply(a) => crate::commands::cmd_apply(g, a),
        Command::Run(a) => crate::commands::cmd_run(g, a),
        Command::Explain(a) => crate::insight::cmd_explain(g, a),
        Command::Import(a) => crate::insight::cmd_import(g, a),
        Command::CheckToken(a) => crate::commands::cmd_check_token(g, a),
        Command::Audit(a) => crate::commands::cmd_audit(g, a),
        Command::Demo(a) => crate::commands::cmd_demo(g, a),
    }
}
