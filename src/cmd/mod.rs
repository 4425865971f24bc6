//! The command layer: one file per command, each a `run(&GlobalArgs, &Args) ->
//! anyhow::Result<ExitCode>` wired from the layers below (see README "Architecture"). Nothing
//! imports this module; [`run`] is what `main` calls with the parsed command line.
//!
//! Exit codes follow Terraform (see [`crate::cli`]): errors are returned once, to be printed
//! here on one line.

mod apply;
mod audit;
mod check_token;
mod connect;
mod demo;
#[cfg(feature = "sim")]
pub mod embedded;
mod explain;
mod import;
#[cfg(test)]
mod layering;
mod plan;
mod run;
mod schema;
mod shared;
mod sim;
mod validate;

use std::process::ExitCode;

use crate::cli::{Cli, Command, EXIT_ERROR, Refused};
use crate::logging::{self, LogFormat};


/// Entry point of the binary: set up logging, dispatch, print an error once.
pub fn run(cli: Cli) -> ExitCode {
    // The demo narrates on stdout; its routine log lines would only interleave with it.
    let level = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    logging::init(cli.global.log_format, level);
    // A scheduled `apply` that fails says so in one structured entry, whatever failed (policies
    // that do not load, a read, a service): what the log-based metric of failed passes counts
    // (deploy/monitoring/). The loop logs the same event for its own passes.
    let failed_event = cli.global.log_format == LogFormat::Json && matches!(cli.command, Command::Apply(_));
    let (code, error) = match dispatch(cli) {
        Ok(code) => (code, None),
        Err(err) => (ExitCode::from(EXIT_ERROR), Some(error_chain(&err))),
    };
    finish(code, error, failed_event)
}

/// A command line whose value was refused while parsing: printed like any other error (exit 1).
pub fn refused(refused: Refused) -> ExitCode {
    let format = if refused.apply_json { LogFormat::Json } else { LogFormat::Text };
    logging::init(format, "info");
    finish(ExitCode::from(EXIT_ERROR), Some(refused.error.to_string()), refused.apply_json)
}

/// Prints the error once and, for a failed `apply` with JSON logs, the `pass-failed` event.
fn finish(code: ExitCode, error: Option<String>, failed_event: bool) -> ExitCode {
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
fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match &cli.command {
        Command::Validate(a) => validate::run(g, a),
        Command::Schema(a) => schema::run(g, a),
        Command::Sim(a) => sim::run(g, a),
        Command::Plan(a) => plan::run(g, a),
        Command::Apply(a) => apply::run(g, a),
        Command::Run(a) => run::run(g, a),
        Command::Explain(a) => explain::run(g, a),
        Command::Import(a) => import::run(g, a),
        Command::CheckToken(a) => check_token::run(g, a),
        Command::Audit(a) => audit::run(g, a),
        Command::Demo(a) => demo::run(g, a),
    }
}

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
