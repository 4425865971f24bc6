//! The `runwarden` binary: parse arguments, set up logging, run, print an error once.

use std::process::ExitCode;

fn main() -> ExitCode {
    runwarden::cli::main()
}
