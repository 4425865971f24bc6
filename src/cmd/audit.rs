//! `runwarden audit`: the Auth0 hygiene findings every plan includes (`pass::findings`), alone.

use std::process::ExitCode;

use super::connect;
use crate::cli::{AuditArgs, EXIT_CHANGES, EXIT_ERROR, GlobalArgs, PlanFormat};
use crate::pass::findings::{as_findings, hygiene_findings};
use crate::pass::{load_policies, runtime};

/// `runwarden audit`: Auth0 hygiene findings alone, printed exactly as plans print them. Exit 0
/// when there are none, 2 when there are.
pub(super) fn run(global: &GlobalArgs, args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let Ok(desired) = load_policies(&args.policies.policies, crate::time::command_now()) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let findings = runtime()?.block_on(async {
        let conn = connect::open(global, &desired.settings).await?;
        hygiene_findings(&desired, &conn, None).await
    })?;
    let findings = as_findings(findings);
    match args.format {
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
        _ => {
            for f in &findings {
                println!("  {}", crate::plan::render::finding_line(f));
            }
            println!("Audit: {}.", crate::text::count(findings.len(), "finding"));
        }
    }
    Ok(if findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_CHANGES) })
}
