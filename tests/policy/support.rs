//! Shared helpers: fixture paths, a fixed clock, temporary policy directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use runwarden::policy::{PolicyErrors, parse_rfc3339};

pub use crate::common::root;

/// `tests/fixtures/policies/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures/policies").join(rel)
}

/// The clock the tests run at: before the demo's time-boxed grant (2027-01-31) ends.
pub fn now() -> SystemTime {
    at("2026-11-29T00:00:00Z")
}

pub fn at(text: &str) -> SystemTime {
    parse_rfc3339(text).expect("test timestamps are valid")
}

/// A temporary policy directory built from `(relative path, contents)` pairs.
pub fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (rel, contents) in files {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(path, contents).expect("write fixture");
    }
    dir
}

/// Renders every error with paths relative to `base`, one string per error.
pub fn rendered(errors: &PolicyErrors, base: &Path) -> Vec<String> {
    let prefix = format!("{}/", base.display());
    errors
        .errors
        .iter()
        .map(|e| e.to_string().replace(&prefix, ""))
        .collect()
}

/// The shared valid Settings that policy-only fixtures are loaded with.
pub fn shared_settings() -> String {
    fs::read_to_string(fixture("malformed/settings-for-policies.yaml")).expect("shared settings")
}
