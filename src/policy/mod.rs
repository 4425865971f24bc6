//! Policy files → the validated desired model, with `file:line:col` diagnostics; the JSON
//! Schemas of the policy kinds.
//!
//! Expected flow: [`load`] walks the directory (every `*.yaml`/`*.yml`, recursively, sorted),
//! splits each file into its `---` documents, deserializes each into private wire types
//! (`wire`, serde-saphyr with source spans), then converts them by hand into [`model`] while
//! applying every rule of the language (`check`).
//!
//! Guarantees: loading does no I/O beyond reading the files; it never stops at the first error —
//! [`PolicyErrors`] holds every error of the run, sorted by file and position; a [`Desired`]
//! exists only when there are no errors. The clock is passed in ([`load_at`]) because a grant
//! whose `expires` lies in the past is an error.

pub mod model;

mod check;
mod diag;
mod load;
mod schema;
mod time;
mod wire;

use std::fs;
use std::path::Path;
use std::time::SystemTime;


pub use check::{MAX_AUDIENCE, MAX_ROLE_NAME, check_audience, check_role_name};
pub use load::{MAX_DOCUMENTS_PER_FILE, MAX_POLICY_FILE_BYTES, is_policy_file, list_policy_files};
pub use diag::{Diagnostic, PolicyError, PolicyErrors, PolicyWarning, Severity};
pub use model::Desired;
pub use schema::{ACCESS_POLICY_SCHEMA, FIELD_REFERENCE, POLICY_SCHEMA, SETTINGS_SCHEMA, field_reference, policy_schemas};
pub use time::{parse_duration, parse_rfc3339};


/// A successful load: the desired model and what is worth a warning.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub desired: Desired,
    /// Findings that do not stop the load (e.g. a workforce pool mapping without IAP).
    pub warnings: Vec<PolicyWarning>,
    /// How many policy files were read.
    pub files: usize,
}

/// Loads and validates the policies under `dir` (a directory, or a single file) as of now.
pub fn load(dir: &Path) -> Result<Desired, PolicyErrors> {
    load_at(dir, SystemTime::now())
}

/// Like [`load`], with the clock passed in: `expires` at or before `now` is an error.
pub fn load_at(dir: &Path, now: SystemTime) -> Result<Desired, PolicyErrors> {
    load_with_warnings(dir, now).map(|loaded| loaded.desired)
}

/// Like [`load_at`], also returning the warnings (which `validate` prints).
pub fn load_with_warnings(dir: &Path, now: SystemTime) -> Result<Loaded, PolicyErrors> {
    load_checked(dir, check::Clock { now, expired_is_error: true })
}

/// Like [`load_with_warnings`], but a grant whose `expires` has passed is a warning and stays in
/// the model, so that a plan removes what it granted (reason `expired`) instead of the whole
/// pass failing on the day a time-boxed grant ends. Plan, apply and the loop load this way;
/// `validate` (what pull requests run) keeps it an error.
pub fn load_lenient(dir: &Path, now: SystemTime) -> Result<Loaded, PolicyErrors> {
    load_checked(dir, check::Clock { now, expired_is_error: false })
}

/// Only the Settings document under `dir`: AccessPolicy documents, and files that hold no
/// Settings, are ignored (their errors too). `plan --settings-from` trusts the base branch's
/// connection this way even when the base's access policies do not load.
pub fn load_settings(dir: &Path, now: SystemTime) -> Result<model::Settings, PolicyErrors> {
    let mut diagnostics = Vec::new();
    let files = load::policy_files(dir, &mut diagnostics);
    if files.is_empty() && !diagnostics.is_empty() {
        return Err(PolicyErrors { errors: diagnostics, warnings: Vec::new(), files: 0 });
    }
    let mut parsed = Vec::new();
    let mut broken_settings = 0;
    for file in &files {
        let mut file_diagnostics = Vec::new();
        let before = broken_settings;
        let docs = load::parse_file(file, &mut file_diagnostics, &mut broken_settings);
        if broken_settings > before {
            diagnostics.extend(file_diagnostics);
        }
        parsed.extend(docs.into_iter().filter(|p| matches!(p.doc, load::Document::Settings(_))));
    }
    let loader_errors = diagnostics.len();
    let clock = check::Clock { now, expired_is_error: false };
    let checked = check::check(dir, parsed, broken_settings, clock, loader_errors, &mut diagnostics);
    let (mut errors, warnings): (Vec<_>, Vec<_>) =
        diagnostics.into_iter().partition(|d| d.severity == Severity::Error);
    diag::sort(&mut errors);
    match checked.desired {
        Some(desired) if errors.is_empty() => Ok(desired.settings),
        _ => Err(PolicyErrors { errors, warnings, files: files.len() }),
    }
}

fn load_checked(dir: &Path, clock: check::Clock) -> Result<Loaded, PolicyErrors> {
    let mut diagnostics = Vec::new();
    let files = load::policy_files(dir, &mut diagnostics);
    if files.is_empty() && !diagnostics.is_empty() {
        // The directory itself could not be read: "no Settings found" would only add noise.
        return Err(PolicyErrors {
            errors: diagnostics,
            warnings: Vec::new(),
            files: 0,
        });
    }
    let mut parsed = Vec::new();
    let mut broken_settings = 0;
    for file in &files {
        parsed.extend(load::parse_file(
            file,
            &mut diagnostics,
            &mut broken_settings,
        ));
    }
    let loader_errors = diagnostics.len();
    let checked = check::check(
        dir,
        parsed,
        broken_settings,
        clock,
        loader_errors,
        &mut diagnostics,
    );
    let (mut errors, mut warnings): (Vec<_>, Vec<_>) = diagnostics
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    diag::sort(&mut errors);
    diag::sort(&mut warnings);
    match checked.desired {
        Some(desired) if errors.is_empty() => Ok(Loaded {
            desired,
            warnings,
            files: files.len(),
        }),
        _ => {
            debug_assert!(
                !errors.is_empty(),
                "a failed load reports at least one error"
            );
            Err(PolicyErrors {
                errors,
                warnings,
                files: files.len(),
            })
        }
    }
}

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The SHA-256 (hex) of the policy files under `dir`, as the loader finds them: for each file,
/// sorted, its path relative to `dir` and its bytes, each length-prefixed (so moving bytes between
/// files or renaming one changes the digest). A saved plan records it, and `apply PLAN.json`
/// refuses the plan when the policies it was made from have changed since.
pub fn digest(dir: &Path) -> std::io::Result<String> {
    use aws_lc_rs::digest::{Context, SHA256};
    let mut diagnostics = Vec::new();
    let files = load::policy_files(dir, &mut diagnostics);
    if let Some(d) = diagnostics.first() {
        return Err(std::io::Error::other(d.to_string()));
    }
    let mut ctx = Context::new(&SHA256);
    for file in &files {
        let relative = file.strip_prefix(dir).unwrap_or(file).to_string_lossy().into_owned();
        let bytes = fs::read(file).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        for part in [relative.as_bytes(), bytes.as_slice()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
    }
    Ok(ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect())
}
