//! `runwarden explain`: who can invoke what, and why.

use std::process::ExitCode;
use std::sync::Arc;

use super::connect;
use crate::cli::{EXIT_ERROR, ExplainArgs, GlobalArgs, PlanFormat};
use crate::insight::{access, explain};
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
    let (live, facts, found, settings) = runtime()?.block_on(async {
        let conn = connect::open(global, &desired.settings).await?;
        let live = read_for_explain(&desired, &conn, &extra, &progress).await?;
        let facts = crate::live::read_access(&conn.clients.google, &live).await;
        let drifted = access::drifted_members(&desired, &live, now);
        let found = crate::live::read_attribution(&conn.clients.google, &drifted).await;
        let settings = match &service {
            Some(id) => drifted_settings(&conn.clients.google, &desired, &live, id, now).await,
            None => Vec::new(),
        };
        anyhow::Ok((live, facts, found, settings))
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
    let paths = match &query {
        Query::Service(id) => access::paths_to(id, &live, &facts),
        Query::Member(m) => access::paths_of(m.as_str(), &live, &facts),
    };
    // Attribution of the members the query is about: the service's, or the member's.
    let found: crate::model::Attributions = found
        .into_iter()
        .filter(|((id, _, member), _)| match &query {
            Query::Service(s) => s == id,
            Query::Member(m) => m.as_str() == member,
        })
        .collect();
    // A user's or service account's access through groups is not expanded: name the groups.
    let groups_note = match &query {
        Query::Member(m) => access::render_groups_note(m, &live, &facts),
        Query::Service(_) => String::new(),
    };
    match args.format {
        PlanFormat::Json => {
            let groups = (!groups_note.is_empty()).then(|| access::groups_with_access(&live, &facts));
            let mut json = with_paths(&x.to_json(), &paths, &facts, &found, groups);
            if let Query::Service(id) = &query {
                json = with_settings(&json, id, &settings);
            }
            print!("{json}")
        }
        PlanFormat::Text | PlanFormat::Markdown => {
            let text = explain::render_text(&x)
                + &access::render_text(&paths, &facts)
                + &groups_note
                + &access::render_attribution(&found, |_, _| true)
                + &render_settings(&settings);
            print!("{}", crate::text::visible_lines(&text))
        }
    }
    Ok(ExitCode::SUCCESS)
}


/// The explanation's JSON with the effective-access paths added (`otherPaths`,
/// `unreadProjects` with why, `unreadLevels` above the projects), who added the drifted members
/// (`attribution`) and, for a member query, the groups not expanded that hold access
/// (`groupsNotExpanded`: group → services).
fn with_paths(
    json: &str,
    paths: &[access::AccessPath],
    facts: &crate::model::AccessFacts,
    found: &crate::model::Attributions,
    groups: Option<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>,
) -> String {
    let mut v: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(_) => return json.to_string(),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("otherPaths".into(), serde_json::json!(paths));
        let unread: serde_json::Map<String, serde_json::Value> = access::unread_projects(facts)
            .into_iter()
            .map(|(p, why)| (p, why.into()))
            .collect();
        o.insert("unreadProjects".into(), unread.into());
        o.insert("unreadLevels".into(), serde_json::json!(access::unread_levels(facts)));
        if let Some(groups) = groups {
            o.insert("groupsNotExpanded".into(), serde_json::json!(groups));
            o.insert("groupsNote".into(), access::GROUPS_NOT_EXPANDED.into());
        }
        let added: Vec<serde_json::Value> = found
            .iter()
            .map(|((id, role, member), f)| match f {
                Ok(a) => serde_json::json!({"service": id.to_string(), "role": role, "member": member, "addedBy": a}),
                Err(why) => serde_json::json!({"service": id.to_string(), "role": role, "member": member, "unknown": why}),
            })
            .collect();
        o.insert("attribution".into(), added.into());
    }
    let mut out = serde_json::to_string_pretty(&v).unwrap_or_else(|_| json.to_string());
    out.push('\n');
    out
}

/// The service's settings that differ from what the policies want, each with who set the live
/// value (one `UpdateService` audit query; unknown and why when it cannot be said).
async fn drifted_settings(
    google: &crate::google::GoogleClient,
    desired: &crate::policy::model::Desired,
    live: &crate::model::LiveState,
    id: &crate::model::ServiceId,
    now: std::time::SystemTime,
) -> Vec<crate::plan::SettingChange> {
    let mut plan = crate::plan::plan(desired, live, &crate::plan::PlanOptions::at(now));
    plan.services.retain(|s| s.id == id.to_string());
    crate::pass::attribute_settings(google, &mut plan, false, 1).await;
    plan.services.into_iter().flat_map(|s| s.settings).collect()
}

/// The text section of `explain --service` on who set the settings that differ.
fn render_settings(settings: &[crate::plan::SettingChange]) -> String {
    let mut s = String::from("\nWho set the settings that differ from the policies (Admin Activity audit log):\n");
    if settings.is_empty() {
        s.push_str("  (none)\n");
    }
    for c in settings {
        let by = c.added_by.as_deref().map(|a| format!("  — {a}")).unwrap_or_default();
        s.push_str(&format!("  {}: {} (the policies want {}){by}\n", c.field, c.before, c.after));
    }
    s
}

/// The explanation's JSON with `settingsAttribution`: per differing setting, the live and
/// wanted values and who set the live one (`changedBy`, text as in the plan).
fn with_settings(json: &str, id: &crate::model::ServiceId, settings: &[crate::plan::SettingChange]) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(json) else { return json.to_string() };
    let list: Vec<serde_json::Value> = settings
        .iter()
        .map(|c| serde_json::json!({"service": id.to_string(), "field": c.field, "live": c.before, "wanted": c.after, "changedBy": c.added_by}))
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert("settingsAttribution".into(), list.into());
    }
    let mut out = serde_json::to_string_pretty(&v).unwrap_or_else(|_| json.to_string());
    out.push('\n');
    out
}
