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
    if let Err(e) = in_scope(&desired.settings, &args.project, &args.region) {
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
    let text = import::render_yaml_with_schema(&imported, now, &from, &schema_ref(&args.out));
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


/// The project and region must be in the Settings' scope: the reader looks only there, so an
/// import outside it would write a file with no policy in it, and the policies it could write
/// would not load (a policy may name only projects and regions of the scope).
fn in_scope(settings: &crate::policy::model::Settings, project: &str, region: &str) -> Result<(), String> {
    let scope = &settings.scope;
    if !scope.projects.iter().any(|p| p == project) {
        return Err(format!(
            "project `{project}` is not in the scope of Settings `{}` (projects: {}); add it to `spec.scope.projects` first",
            settings.name,
            scope.projects.join(", ")
        ));
    }
    if !scope.regions.is_empty() && !scope.regions.iter().any(|r| r == region) {
        return Err(format!(
            "region `{region}` is not in the scope of Settings `{}` (regions: {}); add it to `spec.scope.regions` first",
            settings.name,
            scope.regions.join(", ")
        ));
    }
    Ok(())
}

/// The `$schema` reference of a file written under `out`: the path from `out` to the nearest
/// `schemas/accesspolicy.schema.json` at or above it (the repository's own, however deep
/// `out` is, e.g. `policies/imported/`), else `../schemas/accesspolicy.schema.json`.
fn schema_ref(out: &std::path::Path) -> String {
    const FILE: &str = "schemas/accesspolicy.schema.json";
    let absolute = std::fs::canonicalize(out)
        .or_else(|_| std::path::absolute(out))
        .unwrap_or_else(|_| out.to_path_buf());
    absolute
        .ancestors()
        .position(|dir| dir.join(FILE).is_file())
        .map_or_else(|| format!("../{FILE}"), |depth| format!("{}{FILE}", "../".repeat(depth)))
}
