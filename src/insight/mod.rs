//! Insight commands that read but never write live state: `explain` (who can invoke what, and
//! why) and `import` (policies that reproduce today's access).
//!
//! * [`explain`]: `explain(&Desired, &LiveState, &Query, now) -> Explanation`, pure, and its text
//!   and JSON renderings.
//! * [`import`]: `import(&Settings, &LiveState, project, region, now) -> Imported`, pure, and the
//!   YAML rendering the policy loader reads back.
//!
//! Here: [`read_scope`], the desired model to read with (wider than a plan's read; the reads
//! themselves are `crate::pass::read_for_explain` and `read_for_import`), and [`write_new`],
//! how `import` writes its file. The commands are `cmd/explain.rs` and `cmd/import.rs`.

pub mod access;
pub mod explain;
pub mod import;

use std::path::{Path, PathBuf};

use crate::policy::model::{
    AccessPolicy, Desired, Exposure, Invoker, Mode, Principal, RegionRef, ServiceRef,
    ServiceTarget, Source,
};

pub use explain::{Explanation, Query, QueryError};
pub use import::Imported;

/// Why an insight command failed.
#[derive(Debug, thiserror::Error)]
pub enum InsightError {
    #[error("listing the Auth0 roles (page {page}) failed: {source}")]
    ListRoles {
        page: u32,
        #[source]
        source: Box<crate::identity::Auth0Error>,
    },
    #[error(
        "{name:?} cannot be a file name under --out (project and region ids are letters, digits and hyphens)"
    )]
    BadName { name: String },
    #[error("{path} already exists; pass --force to overwrite it, or choose another --out")]
    Exists { path: PathBuf },
    #[error(
        "{path} is a symbolic link; runwarden does not write through links, even with --force: remove it or choose another --out"
    )]
    Symlink { path: PathBuf },
    #[error("writing {path} failed: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The desired model to *read* with: `desired` plus a probe policy per (project, region) to
/// list, matching every service (an empty selector) and asking for its IAP policy, so that
/// services no policy governs are read too, and `extra_roles` named so that the directory read
/// resolves their members. Only for reading: explanations and imports use `desired` itself.
pub fn read_scope(
    desired: &Desired,
    targets: &[(String, String)],
    extra_roles: &[String],
) -> Desired {
    let mut probe = desired.clone();
    let source = Source {
        file: PathBuf::from("<runwarden read scope>"),
        line: 0,
        column: 0,
    };
    let services = targets
        .iter()
        .map(|(p, r)| ServiceRef {
            project: p.clone(),
            region: RegionRef::Named(r.clone()),
            target: ServiceTarget::Selector(Default::default()),
            source: source.clone(),
        })
        .collect();
    let invokers = extra_roles
        .iter()
        .map(|r| Invoker {
            principal: Principal::Auth0Role(r.clone()),
            expires: None,
            source: source.clone(),
        })
        .collect();
    probe.policies.push(AccessPolicy {
        name: "runwarden-read-scope".into(),
        source: source.clone(),
        mode: Mode::Observe,
        services,
        exposure: Exposure {
            iap: Some(true),
            ..Exposure::default()
        },
        invokers,
    });
    probe
}

/// Writes `name` (a bare file name, never a path) under `dir`, refusing to overwrite unless
/// `force`, and refusing a symbolic link at that path even with `force` (it could point at any
/// file the user can write).
///
/// The text goes to a temporary file in `dir` that is then renamed over the path: a rename
/// replaces whatever entry is there (a link put there after the check included) instead of
/// writing through it, and a reader never sees half a file.
pub fn write_new(dir: &Path, name: &str, text: &str, force: bool) -> Result<PathBuf, InsightError> {
    use std::io::Write as _;
    check_file_name(name)?;
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(InsightError::Symlink { path }),
        Ok(_) if !force => return Err(InsightError::Exists { path }),
        _ => {}
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InsightError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".runwarden-import-")
        .tempfile_in(dir)
        .map_err(write_err(dir))?;
    tmp.write_all(text.as_bytes()).map_err(write_err(tmp.path()))?;
    let persisted = if force {
        tmp.persist(&path)
    } else {
        tmp.persist_noclobber(&path)
    };
    persisted.map_err(|e| match e.error.kind() {
        std::io::ErrorKind::AlreadyExists => InsightError::Exists { path: path.clone() },
        _ => InsightError::Write { path: path.clone(), source: e.error },
    })?;
    Ok(path)
}

/// A plain file name (letters, digits, `-`, `_`, `.`; not starting with a dot): nothing that
/// could point outside `--out`.
pub fn check_file_name(name: &str) -> Result<(), InsightError> {
    let safe = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.')
        && !name.contains("..");
    if safe {
        Ok(())
    } else {
        Err(InsightError::BadName {
            name: name.to_string(),
        })
    }
}
