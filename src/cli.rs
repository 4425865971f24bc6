//! Command-line definitions and parsing, nothing else: clap parses and validates every value
//! (durations, shards, listen addresses), so the commands (`crate::cmd`, one file each) receive
//! values that are already checked. This module imports no command.
//!
//! Exit codes follow Terraform: `0` success and no changes, `1` error, `2` the plan has changes,
//! `3` a guard refused the apply.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::live::Shard;
use crate::logging::LogFormat;

/// Exit code: an error (bad input, failed calls, a service not converged).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the plan has changes.
pub const EXIT_CHANGES: u8 = 2;
/// Exit code: a guard refused the apply.
pub const EXIT_GUARD: u8 = 3;

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
    /// The commit the plan is made at, named at the top of the Markdown comment (the
    /// pull-request workflow passes the head SHA); defaults to the published commit, if any.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
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
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Git revision recorded in audit events (defaults from the CI environment).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policies: PoliciesArg,
    /// Time between passes (a pass also runs when the policy files change).
    #[arg(long, default_value = "5m", value_parser = parse_interval)]
    pub interval: Interval,
    /// Address of the health, status and metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_run_listen)]
    pub listen: SocketAddr,
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
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR", value_parser = parse_sim_listen)]
    pub listen: SocketAddr,
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

/// `run --interval`: the duration, and the text it was given as (messages quote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub text: String,
    pub duration: Duration,
}

/// The longest `run --interval`: a week (the readiness window is three intervals, and a loop
/// that passes less often is a scheduled job in disguise).
pub const MAX_INTERVAL: Duration = Duration::from_secs(7 * 86_400);

/// A value one of runwarden's own parsers refused; the message names the option and the fix.
/// Such a command line is bad input like any other (exit 1, `error: ...`), not a usage error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn parse_interval(text: &str) -> Result<Interval, InvalidValue> {
    let duration = crate::policy::parse_duration(text)
        .map_err(|e| InvalidValue(format!("--interval {text:?}: {e}; use e.g. 30s, 5m or 1h")))?;
    if duration < Duration::from_secs(1) {
        return Err(InvalidValue(format!(
            "--interval {text:?} is too short: passes read the whole estate; use at least 1s"
        )));
    }
    if duration > MAX_INTERVAL {
        return Err(InvalidValue(format!(
            "--interval {text:?} is too long: the loop passes at least once a week (use at most 7d); for rarer passes, schedule `runwarden apply --auto-approve` as a job"
        )));
    }
    Ok(Interval { text: text.to_string(), duration })
}

fn parse_shard(text: &str) -> Result<Shard, InvalidValue> {
    Shard::parse(text).map_err(|e| InvalidValue(format!("--shard {e}")))
}

fn parse_listen(text: &str, example: &str) -> Result<SocketAddr, InvalidValue> {
    text.parse()
        .map_err(|e| InvalidValue(format!("--listen {text:?} is not an address such as {example}: {e}")))
}

fn parse_run_listen(text: &str) -> Result<SocketAddr, InvalidValue> {
    parse_listen(text, "127.0.0.1:8080")
}

fn parse_sim_listen(text: &str) -> Result<SocketAddr, InvalidValue> {
    parse_listen(text, "127.0.0.1:8787")
}

/// A command line whose value one of runwarden's parsers refused.
#[derive(Debug)]
pub struct Refused {
    /// What was wrong and how to fix it.
    pub error: InvalidValue,
    /// The command line asked for `apply` with JSON logs (its failure is logged as an event).
    pub apply_json: bool,
}

/// Parses the process's arguments. Help, version and usage errors are clap's (printed, and the
/// process exits as clap does); a value refused by runwarden's own parsers is returned, so
/// that it fails like any other bad input (exit 1).
pub fn parse() -> Result<Cli, Refused> {
    parse_from(std::env::args_os())
}

/// [`parse`] over explicit arguments (the first is the program name).
pub fn parse_from<I, T>(args: I) -> Result<Cli, Refused>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let err = match Cli::try_parse_from(&args) {
        Ok(cli) => return Ok(cli),
        Err(err) => err,
    };
    let own = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<InvalidValue>());
    match own {
        Some(invalid) => {
            // What was asked for, as far as the rest of the line parses.
            let lenient = Cli::command().ignore_errors(true).try_get_matches_from(&args).ok();
            let apply_json = lenient.is_some_and(|m| {
                m.subcommand_name() == Some("apply") && m.get_one::<LogFormat>("log_format") == Some(&LogFormat::Json)
            });
            Err(Refused { error: invalid.clone(), apply_json })
        }
        None => err.exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_validated_while_parsing_and_commands_receive_them_typed() {
        let cli = parse_from(["runwarden", "run", "--interval", "90s", "--listen", "127.0.0.1:0"]).unwrap();
        let Command::Run(run) = cli.command else { panic!("run") };
        assert_eq!(run.interval, Interval { text: "90s".into(), duration: Duration::from_secs(90) });
        assert_eq!(run.listen, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        let cli = parse_from(["runwarden", "apply", "--shard", "1/4"]).unwrap();
        let Command::Apply(apply) = cli.command else { panic!("apply") };
        assert_eq!(apply.shard, Some(Shard { index: 1, count: 4 }));
    }

    #[test]
    fn a_refused_value_is_returned_with_its_own_message_and_whether_a_json_apply_asked() {
        let refused = parse_from(["runwarden", "--log-format", "json", "apply", "--shard", "4/4"]).unwrap_err();
        assert!(refused.error.0.starts_with("--shard \"4/4\""), "{}", refused.error);
        assert!(refused.apply_json, "the failed apply is logged as an event");
        let refused = parse_from(["runwarden", "run", "--interval", "0s"]).unwrap_err();
        assert!(refused.error.0.contains("is too short"), "{}", refused.error);
        assert!(!refused.apply_json);
        let refused = parse_from(["runwarden", "sim", "--listen", "nowhere"]).unwrap_err();
        assert_eq!(refused.error.0, "--listen \"nowhere\" is not an address such as 127.0.0.1:8787: invalid socket address syntax");
    }
}
