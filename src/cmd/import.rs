//! `runwarden import`: policies that reproduce today's live access of one project and region.

use std::process::ExitCode;
use std::sync::Arc;

use super::connect;
use crate::cli::{EXIT_ERROR, GlobalArgs, ImportArgs};
use crate::insight::{check_file_name, import, write_new};
use crate::pass::{load_policies, read_for_import, runtime};
use crate::progress::Progress;

/// `runwarden import`.
pub(super) fn run(global: &GlobalArgs, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let now = crate::time::command_now();
    let Ok(desired) = load_policies(&args.policies.policies, now) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    // The file name is made of these; check them before anything is read.
    let name = import::file_name(&args.project, &args.region);
    if let Err(e) = check_file_name(&name) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    // Only the Settings matter: the import reproduces live, not the existing policies.
    let progress = Arc::new(Progress::for_terminal(global.log_format));
    let live = runtime()?.block_on(async {
        let conn = connect::open(global, &desired.settings).await?;
        read_for_import(
            &desired.settings,
            &conn,
            &args.project,
            &args.region,
            &progress,
        )
        .await
    })?;
    let imported = import::import(&desired.settings, &live, &args.project, &args.region, now);
    let from = match (&global.sim, &global.endpoint) {
        (Some(w), _) => format!("the simulated world {}", w.display()),
        (None, Some(e)) => format!("the APIs at {e}"),
        (None, None) => "the live Cloud Run, IAP and Auth0 APIs".to_string(),
    };
    let text = import::render_yaml(&imported, now, &from);
    let path = write_new(&args.out, &name, &text, args.force)?;
    println!(
        "Wrote {} to {} ({} not imported; see the file's header).",
        crate::text::count_irregular(imported.policies.len(), "policy", "policies"),
        path.display(),
        crate::text::count(imported.skipped.len(), "service")
    );
    println!(
        "Next: copy it next to your Settings and run `runwarden plan`: it should show no change for these services."
    );
    Ok(ExitCode::SUCCESS)
}

