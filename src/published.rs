//! Policies published from a repository at a known commit: which directory a command reads, and
//! which commit its files are.
//!
//! # Layout
//! The merge workflow (`deploy/github/runwarden.yml`) publishes every merged commit's policy tree
//! to a Cloud Storage bucket that the Cloud Run job and service mount (read-only) at `/policies`:
//!
//! ```text
//! /policies/revisions/<commit>/REVISION   the commit, uploaded with the tree
//! /policies/revisions/<commit>/…          that commit's policy files, never changed afterwards
//! /policies/CURRENT                       "<commit>", written last
//! ```
//!
//! Cloud Storage has no write that covers several objects at once, so a reader must never see a
//! tree half-way through its upload (a mix of two commits' files could remove access neither
//! commit removes). The tree goes under its own prefix first; `CURRENT` then switches to it in one
//! single-object write. A directory without `CURRENT` is read as it is, and a `REVISION` file in
//! it names its commit (a plain copy of a published tree keeps its commit).
//!
//! # Revision precedence (audit events, `/status`)
//! `--revision`, else the published commit (`REVISION`, or the name `CURRENT` holds), else the CI
//! environment (`GITHUB_SHA` and friends), else `git rev-parse HEAD` of the directory, else
//! `unknown` ([`crate::apply::revision`] does the last three).
//!
//! # Errors
//! A `CURRENT` or `REVISION` that cannot be used is an error naming the file and what to do: a
//! command must not silently fall back to reading the whole bucket (every revision at once).

use std::path::{Path, PathBuf};

/// The file at the root of a published bucket naming the current revision's directory.
pub const CURRENT: &str = "CURRENT";
/// The file in a policy tree holding its commit.
pub const REVISION: &str = "REVISION";
/// Where the published revisions live, below the root.
pub const REVISIONS: &str = "revisions";

/// The policy files a command reads, and their commit when it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// The directory to load (`ROOT/revisions/<commit>` for a published bucket, else `ROOT`).
    pub dir: PathBuf,
    /// The commit of those files, from `REVISION` or `CURRENT`.
    pub commit: Option<String>,
    /// Whether `dir` was selected through `CURRENT` (the loop then re-reads `CURRENT` on every
    /// tick instead of watching files: a Cloud Storage mount delivers no file events).
    pub published: bool,
}

/// Resolves `--policies ROOT` as described in the module documentation.
pub fn resolve(root: &Path) -> Result<PolicySource, String> {
    let current = root.join(CURRENT);
    let (dir, named, published) = match read_name(&current)? {
        Some(name) => {
            let dir = root.join(REVISIONS).join(&name);
            if !dir.is_dir() {
                return Err(format!(
                    "{} names revision {name}, but {} is not a directory; the publish step uploads the tree before it writes {CURRENT}: re-run it for {name}, or write an existing revision's name into {CURRENT}",
                    current.display(),
                    dir.display()
                ));
            }
            (dir, Some(name), true)
        }
        None => (root.to_path_buf(), None, false),
    };
    let commit = read_name(&dir.join(REVISION))?.or(named);
    Ok(PolicySource { dir, commit, published })
}

/// The trimmed content of a file holding one revision name, `None` when the file does not exist.
fn read_name(path: &Path) -> Result<Option<String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let name = text.trim();
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(Some(name.to_string()))
    } else {
        Err(format!(
            "{} holds {:?}, which is not a revision name (1 to 128 letters, digits, '.', '_' or '-', not starting with '.'); the publish step writes the commit SHA there",
            path.display(),
            truncate(name, 60)
        ))
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_read_as_it_is_and_its_revision_file_names_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve(dir.path()), Ok(PolicySource { dir: dir.path().into(), commit: None, published: false }));
        std::fs::write(dir.path().join(REVISION), "0123abc\n").unwrap();
        assert_eq!(resolve(dir.path()).unwrap().commit.as_deref(), Some("0123abc"));
    }

    #[test]
    fn current_selects_the_published_revision_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("revisions/aaa")).unwrap();
        std::fs::write(root.path().join(CURRENT), "aaa\n").unwrap();
        let source = resolve(root.path()).unwrap();
        assert_eq!(source.dir, root.path().join("revisions/aaa"));
        assert_eq!(source.commit.as_deref(), Some("aaa"), "the name in CURRENT when the tree has no REVISION");
        assert!(source.published);
    }

    #[test]
    fn a_current_naming_a_missing_or_unsafe_revision_is_an_error_that_names_the_file() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(CURRENT), "bbb").unwrap();
        let err = resolve(root.path()).unwrap_err();
        assert!(err.contains("CURRENT names revision bbb") && err.contains("re-run"), "{err}");
        for bad in ["../etc", "", "a b", ".hidden", "x/y"] {
            std::fs::write(root.path().join(CURRENT), bad).unwrap();
            let err = resolve(root.path()).unwrap_err();
            assert!(err.contains("is not a revision name"), "{bad:?}: {err}");
        }
    }
}
