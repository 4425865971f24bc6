//! `runwarden schema`: the JSON Schemas of the policy kinds, the saved plan and the world file.

use std::fs;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{EXIT_ERROR, GlobalArgs, SchemaArgs};
use crate::policy::policy_schemas;

/// Every schema `runwarden schema` writes: the policy kinds, the saved-plan format and (in
/// builds with the `sim` feature) the simulator's world file.
fn all_schemas() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> =
        policy_schemas().into_iter().map(|(name, text)| (name.to_string(), text)).collect();
    all.push(("plan.schema.json".to_string(), crate::plan::json_schema()));
    all.push((crate::policy::FIELD_REFERENCE.to_string(), crate::policy::field_reference()));
    #[cfg(feature = "sim")]
    all.push(crate::sim::world_schema());
    all
}

/// `runwarden schema`: writes the JSON Schemas to `--out`, or with `--check` exits 1 when the
/// files there differ from what would be written.
pub(super) fn run(_global: &GlobalArgs, args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    let out = &args.out;
    if args.check {
        let mut stale = 0;
        for (name, contents) in all_schemas() {
            let path = out.join(name);
            let current = fs::read(&path).ok();
            if current.as_deref() != Some(contents.as_bytes()) {
                stale += 1;
                eprintln!("{}: stale or missing", path.display());
            }
        }
        if stale > 0 {
            eprintln!(
                "run `runwarden schema --out {}` and commit the result",
                out.display()
            );
            return Ok(ExitCode::from(EXIT_ERROR));
        }
        eprintln!("{}: schemas are up to date", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    fs::create_dir_all(out)
        .with_context(|| format!("creating the schema directory {}", out.display()))?;
    for (name, contents) in all_schemas() {
        let path = out.join(name);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
