//! `runwarden explain`: who can invoke what, and why.

use std::process::ExitCode;
use std::sync::Arc;

use super::connect;
use crate::cli::{EXIT_ERROR, ExplainArgs, GlobalArgs, PlanFormat};
use crate::insight::explain;
use crate::insight::Query;
use crate::pass::{load_policies, read_for_explain, runtime};
use crate::progress::Progress;

/// `runwarden explain`.
pub(super) fn run(global: &GlobalArgs, args: &ExplainArgs) -> anyhow::Result<ExitCode> {
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
        let conn = connect::open(global, &desired.settings).await?;
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

