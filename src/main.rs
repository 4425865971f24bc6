//! The `runwarden` binary: parse the command line, run the command.

use std::process::ExitCode;

fn main() -> ExitCode {
    match runwarden::cli::parse() {
        Ok(cli) => runwarden::cmd::run(cli),
        Err(refused) => runwarden::cmd::refused(refused),
    }
}
