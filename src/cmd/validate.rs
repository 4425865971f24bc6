//! `runwarden validate`: every error and warning of the policy files, with file:line:col.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{EXIT_ERROR, GlobalArgs, ValidateArgs};
use crate::policy::plural;
use crate::policy::{Diagnostic, load_with_warnings};

/// `runwarden validate`: prints every error and warning to stderr, then a one-line summary;
/// exits 0 when the policies are valid, 1 otherwise.
pub(super) fn run(_global: &GlobalArgs, args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir();
    let mut stderr = std::io::stderr().lock();
    match load_with_warnings(dir, crate::time::command_now()) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                writeln!(stderr, "{w}")?;
            }
            let warnings = match loaded.warnings.len() {
                0 => String::new(),
                n => format!(" ({})", plural(n, "warning", "warnings")),
            };
            writeln!(
                stderr,
                "{}, {}: ok{warnings}",
                plural(loaded.files, "file", "files"),
                plural(loaded.desired.policies.len(), "policy", "policies"),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(failed) => {
            let mut all: Vec<&Diagnostic> = failed.errors.iter().chain(&failed.warnings).collect();
            all.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            for d in all {
                writeln!(stderr, "{d}")?;
            }
            let warnings = match failed.warnings.len() {
                0 => String::new(),
                n => format!(", {}", plural(n, "warning", "warnings")),
            };
            writeln!(
                stderr,
                "{}: {}{warnings}",
                plural(failed.files, "file", "files"),
                plural(failed.errors.len(), "error", "errors"),
            )?;
            Ok(ExitCode::from(EXIT_ERROR))
        }
    }
}

