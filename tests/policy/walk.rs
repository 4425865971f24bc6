//! The loader and the loop's revision walk the policy directory the same way: one walker, so a
//! file the loader reads always changes the revision and a file it skips never does.

use std::fs;
use std::path::Path;

use runwarden::policy::{list_policy_files, load_at};
use runwarden::reconcile::content_revision;

use super::support::{now, policy_dir, rendered, shared_settings};

/// Files that could be taken for policies: (path under the policy directory, read or not).
const CANDIDATES: &[(&str, bool)] = &[
    ("a.yaml", true),
    ("sub/b.YML", true),
    ("linked/c.yaml", true),
    (".hidden/d.yaml", false),
    (".e.yaml", false),
    ("#f.yaml", false),
    ("g.yaml~", false),
    ("h.json", false),
];

#[cfg(unix)]
#[test]
fn the_loader_and_the_loops_revision_see_the_same_files_hidden_and_symlinked_included() {
    let outside = tempfile::tempdir().unwrap();
    let dir = policy_dir(&[("settings.yaml", &shared_settings())]);
    std::os::unix::fs::symlink(outside.path(), dir.path().join("linked")).unwrap();
    // Every candidate is broken YAML: the loader's errors name exactly the files it read.
    for (rel, _) in CANDIDATES {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "key: [unclosed\n").unwrap();
    }
    let errors = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
    let listed = list_policy_files(dir.path());
    for (rel, read) in CANDIDATES {
        let loaded = errors.iter().any(|e| e.starts_with(&format!("{rel}:")));
        let hashed = revision_changes_with(dir.path(), rel);
        let is_listed = listed.contains(&dir.path().join(rel));
        assert_eq!(loaded, *read, "the loader on {rel}: {errors:#?}");
        assert_eq!(hashed, *read, "the revision on {rel}");
        assert_eq!(is_listed, *read, "the listing on {rel}: {listed:#?}");
    }
}

fn revision_changes_with(dir: &Path, rel: &str) -> bool {
    let before = content_revision(dir);
    fs::write(dir.join(rel), "key: [edited\n").unwrap();
    before != content_revision(dir)
}
