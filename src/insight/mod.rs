//! Insight commands that read but never write live state: `explain` (who can invoke what, and
//! why) and `import` (policies that reproduce today's access).
//!
//! * [`explain`]: `explain(&Desired, &LiveState, &Query, now) -> Explanation`, pure, and its text
//!   and JSON renderings.
//! * [`import`]: `import(&Settings, &LiveState, project, region, now) -> Imported`, pure, and the
//!   YAML rendering the policy loader reads back.
//!
//! The functions here do the I/O: load, connect, read (with a wider read than a plan's, see
//! [`read_scope`]), write files.

pub mod explain;
pub mod import;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{EXIT_ERROR, ExplainArgs, GlobalArgs, ImportArgs, PlanFormat};
use crate::model::LiveState;
use crate::pass::{Connection, load_policies, runtime};
use crate::policy::model::{
    AccessPolicy, Desired, Exposure, Invoker, Mode, Principal, RegionRef, ServiceRef,
    ServiceTarget, Source,
};
use crate::progress::Progress;

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

/// Reads what `explain` needs: every service of the Settings' scope and of the policies (plus
/// `extra` (project, region) pairs), governed or not, with its IAM and IAP policies, and the
/// members of every Auth0 role the policies name.
pub async fn read_for_explain(
    desired: &Desired,
    conn: &Connection,
    extra: &[(String, String)],
    progress: &Arc<Progress>,
) -> anyhow::Result<LiveState> {
    let mut targets: Vec<(String, String)> =
        crate::live::list_targets(desired).into_iter().collect();
    targets.extend(extra.iter().cloned());
    crate::pass::read(&read_scope(desired, &targets, &[]), conn, progress).await
}

/// Reads what `import` needs: every service of (`project`, `region`) with its IAM and IAP
/// policies, and the members of every Auth0 role of the tenant (to map bindings back to roles).
pub async fn read_for_import(
    settings: &crate::policy::model::Settings,
    conn: &Connection,
    project: &str,
    region: &str,
    progress: &Arc<Progress>,
) -> anyhow::Result<LiveState> {
    let settings_only = Desired {
        settings: settings.clone(),
        policies: vec![],
    };
    let roles = all_role_names(conn).await?;
    let target = [(project.to_string(), region.to_string())];
    crate::pass::read(&read_scope(&settings_only, &target, &roles), conn, progress).await
}

/// Every Auth0 role name of the tenant.
async fn all_role_names(conn: &Connection) -> Result<Vec<String>, InsightError> {
    let mut names = Vec::new();
    let policy = crate::retry::RetryPolicy::default();
    for page in 0u32..1000 {
        let answer = crate::retry::retry(&policy, "list roles", || {
            conn.clients.auth0.roles_page(page)
        })
        .await
        .map_err(|source| InsightError::ListRoles {
            page,
            source: Box::new(source),
        })?;
        let n = answer.items.len() as u64;
        names.extend(answer.items.into_iter().map(|r| r.name));
        let more = match answer.total {
            Some(total) => (names.len() as u64) < total && n > 0,
            None => n > 0 && n == conn.clients.auth0.config().page_size as u64,
        };
        if !more {
            break;
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// `runwarden explain`.
pub fn cmd_explain(global: &GlobalArgs, args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let now = crate::time::command_now();
    let Ok(desired) = load_policies(&args.policies.policies, now) else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let service = match &args.target.service {
        Some(s) => match explain::parse_service(s) {
            Ok(id) => Some(id),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        },
        None => None,
    };
    let extra: Vec<(String, String)> = service
        .iter()
        .map(|id| (id.project.clone(), id.region.clone()))
        .collect();
    let progress = Arc::new(Progress::for_terminal(global.log_format));
    let live = runtime()?.block_on(async {
        let conn = Connection::open(global, &desired.settings).await?;
        read_for_explain(&desired, &conn, &extra, &progress).await
    })?;
    let query = match (service, &args.target.member) {
        (Some(id), _) => Query::Service(id),
        (None, Some(m)) => match explain::parse_member(m, &live.directory) {
            Ok(m) => Query::Member(m),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        },
        (None, None) => anyhow::bail!("name a --member or a --service to explain"),
    };
    let x = match explain::explain(&desired, &live, &query, now) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    match args.format {
        PlanFormat::Json => print!("{}", x.to_json()),
        PlanFormat::Text | PlanFormat::Markdown => {
            print!("{}", crate::text::visible_lines(&explain::render_text(&x)))
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `runwarden import`.
pub fn cmd_import(global: &GlobalArgs, args: &ImportArgs) -> anyhow::Result<ExitCode> {
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
        let conn = Connection::open(global, &desired.settings).await?;
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
        "Wrote {} policy(ies) to {} ({} service(s) not imported; see the file's header).",
        imported.policies.len(),
        path.display(),
        imported.skipped.len()
    );
    println!(
        "Next: copy it next to your Settings and run `runwarden plan`: it should show no change for these services."
    );
    Ok(ExitCode::SUCCESS)
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
fn check_file_name(name: &str) -> Result<(), InsightError> {
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
