//! Reads what effective access needs ([`AccessFacts`]): one Resource Manager `getIamPolicy` and
//! one `projects.get` (its `parent`) per project, unless the reader already read it for the
//! project number (`LiveState::project_parents`); for the folders and organization above them,
//! one `folders.get` per folder and one `getIamPolicy` per folder or organization, however many
//! projects share it; then one IAM `roles.get` per distinct role bound on any of those or on
//! the services read (cached for the pass: a role is never read twice). A read that still fails
//! after a few retries (transient errors, 429s) is recorded with its reason, never fatal: the caller says which paths could not be checked.

use std::collections::{BTreeMap, BTreeSet};

use crate::google::GoogleClient;
use crate::model::{AccessFacts, Ancestry, INVOKE_PERMISSION, LiveState, ancestor_label};
use crate::retry::{RetryPolicy, retry};

/// These reads inform (findings, attribution) and never decide a change: a few retries of a
/// transient failure or a 429, then the failure is recorded with its reason. Every wait ends
/// at shutdown.
fn informative(google: &GoogleClient) -> RetryPolicy {
    RetryPolicy { max_retries: 3, ..RetryPolicy::default() }.until(&google.config().shutdown)
}

/// Reads the project policies of every project of `live` and the roles bound on them or on the
/// services' own policies.
pub async fn read_access(google: &GoogleClient, live: &LiveState) -> AccessFacts {
    let mut facts = AccessFacts::default();
    let policy = informative(google);
    let projects: BTreeSet<&String> = live.services.keys().map(|id| &id.project).collect();
    let mut roles: BTreeSet<String> = BTreeSet::new();
    for project in projects {
        let read = retry(&policy, "projects.getIamPolicy", || google.get_project_iam_policy(project))
            .await
            .map_err(|e| e.to_string());
        if let Ok(p) = &read {
            roles.extend(p.bindings.iter().map(|b| b.role.clone()));
        }
        facts.projects.insert(project.clone(), read);
    }
    read_hierarchy(google, live, &mut facts).await;
    for p in facts.ancestors.values().flatten() {
        roles.extend(p.bindings.iter().map(|b| b.role.clone()));
    }
    for s in live.services.values() {
        for b in s.iam.iter().flat_map(|p| &p.bindings) {
            roles.insert(b.role.clone());
        }
    }
    for role in roles {
        let carries = retry(&policy, "roles.get", || google.get_role_permissions(&role))
            .await
            .map(|ps| ps.iter().any(|p| p == INVOKE_PERMISSION))
            .map_err(|e| e.to_string());
        facts.invoking.insert(role, carries);
    }
    facts
}

/// Folders nest at most 10 deep under an organization
/// (https://cloud.google.com/resource-manager/docs/creating-managing-folders): a longer chain is
/// a server answering in a loop.
const MAX_DEPTH: usize = 12;

/// Each project's chain of folders up to its organization, and each of their policies, every
/// resource read once.
async fn read_hierarchy(google: &GoogleClient, live: &LiveState, facts: &mut AccessFacts) {
    let policy = informative(google);
    let projects: BTreeSet<&String> = live.services.keys().map(|id| &id.project).collect();
    // Parents the reader already read with the project numbers are not read again.
    let mut parents: BTreeMap<String, Result<Option<String>, String>> = live
        .project_parents
        .iter()
        .map(|(project, parent)| (format!("projects/{project}"), Ok(parent.clone())))
        .collect();
    for project in projects {
        let mut ancestry = Ancestry::default();
        let mut child = format!("projects/{project}");
        loop {
            if !parents.contains_key(&child) {
                let read = retry(&policy, "projects.get", || google.get_parent(&child)).await.map_err(|e| e.to_string());
                parents.insert(child.clone(), read);
            }
            match &parents[&child] {
                Ok(Some(parent)) if ancestry.chain.contains(parent) || ancestry.chain.len() >= MAX_DEPTH => {
                    ancestry.unknown = Some(format!("the hierarchy above project {project} loops or is deeper than {MAX_DEPTH} levels at {parent}"));
                    break;
                }
                Ok(Some(parent)) => {
                    ancestry.chain.push(parent.clone());
                    if parent.starts_with("organizations/") {
                        break;
                    }
                    child = parent.clone();
                }
                Ok(None) => break,
                Err(why) => {
                    let at = if child.starts_with("projects/") { format!("project {project}") } else { ancestor_label(&child) };
                    ancestry.unknown = Some(format!("{at}: parent not readable: {why}"));
                    break;
                }
            }
        }
        for a in &ancestry.chain {
            if !facts.ancestors.contains_key(a) {
                let read = retry(&policy, "getIamPolicy", || google.get_ancestor_iam_policy(a)).await.map_err(|e| e.to_string());
                facts.ancestors.insert(a.clone(), read);
            }
        }
        facts.ancestry.insert(project.clone(), ancestry);
    }
}

/// At most this many audit-log queries per pass: Cloud Logging's `entries.list` quota is 60
/// read requests per minute per project (https://cloud.google.com/logging/quotas).
pub const MAX_QUERIES: usize = 50;

/// Who added each drifted member: one `entries.list` per drifted service (never more), the
/// newest `ADD` of that (role, member) wins. Unavailable attribution is `Err(why)`, never a
/// failed pass. `drifted` maps a service to the (role, member) pairs no policy grants.
pub async fn read_attribution(
    google: &GoogleClient,
    drifted: &std::collections::BTreeMap<crate::model::ServiceId, Vec<(String, String)>>,
) -> crate::model::Attributions {
    let policy = informative(google);
    let mut out = crate::model::Attributions::new();
    for (n, (id, members)) in drifted.iter().enumerate() {
        if n >= MAX_QUERIES {
            for (role, member) in members {
                let why = format!("more than {MAX_QUERIES} drifted services: attribution skipped to stay within the Logging read quota");
                out.insert((id.clone(), role.clone(), member.clone()), Err(why));
            }
            continue;
        }
        let resource = id.resource_name();
        let read = retry(&policy, "entries.list", || google.list_added_bindings(&id.project, &resource, 20)).await;
        for (role, member) in members {
            let found = match &read {
                Ok(added) => added
                    .iter()
                    .find(|a| a.role == *role && a.member == *member)
                    .map(|a| a.attribution.clone())
                    .ok_or_else(|| "no SetIamPolicy audit entry adds it within the log's retention".to_string()),
                Err(e) => Err(format!("the audit log could not be read: {e}")),
            };
            out.insert((id.clone(), role.clone(), member.clone()), found);
        }
    }
    out
}

/// Who set each drifted setting to its live value: one `entries.list` of the service's
/// `UpdateService` (v2) and `ReplaceService` (v1) entries per service with drifted settings, at
/// most `budget` queries (what [`read_attribution`] left of [`MAX_QUERIES`]), the setter chosen
/// by [`who_set`]. Unavailable attribution is `Err(why)`, never a failed pass. `drifted` maps a
/// service to its (field, live value) pairs.
pub async fn read_setting_attribution(
    google: &GoogleClient,
    drifted: &BTreeMap<crate::model::ServiceId, Vec<(String, serde_json::Value)>>,
    budget: usize,
) -> crate::model::SettingAttributions {
    let policy = informative(google);
    let mut out = crate::model::SettingAttributions::new();
    for (n, (id, fields)) in drifted.iter().enumerate() {
        let read = if n < budget {
            retry(&policy, "entries.list", || google.list_setting_changes(id, 20)).await.map_err(|e| e.to_string())
        } else {
            Err(format!("more than {MAX_QUERIES} drifted services: attribution skipped to stay within the Logging read quota"))
        };
        for (field, live) in fields {
            let found = match &read {
                Ok(set) => who_set(set, field, live),
                Err(e) if n >= budget => Err(e.clone()),
                Err(e) => Err(format!("the audit log could not be read: {e}")),
            };
            out.insert((id.clone(), field.clone()), found);
        }
    }
    out
}

/// Who set `field` to `live`, from one service's settings entries, newest first. A v1
/// `ReplaceService` entry carries every setting, so carrying the live value is no proof of
/// setting it: the setter is the oldest entry of the newest run of entries carrying the live
/// value, when an older entry carried another value. When the run reaches the end of the
/// window, the oldest v2 `UpdateService` entry in it whose mask set the field is the setter
/// (a v2 entry sets only what its mask names); with none, the change is older than the log.
pub fn who_set(set: &[crate::model::SetSetting], field: &str, live: &serde_json::Value) -> Result<crate::model::Attribution, String> {
    let seen: Vec<&crate::model::SetSetting> = set.iter().filter(|s| s.field == field).collect();
    let Some(start) = seen.iter().position(|s| s.value == *live) else {
        return Err("no Cloud Run v2 UpdateService audit entry sets the live value, nor does a v1 ReplaceService entry carry it, within the log's retention".into());
    };
    let run: Vec<&crate::model::SetSetting> = seen[start..].iter().copied().take_while(|s| s.value == *live).collect();
    let (Some(oldest), ended) = (run.last(), start + run.len() == seen.len()) else {
        return Err("no audit entry carries the live value".into());
    };
    if !ended {
        return Ok(oldest.attribution.clone());
    }
    match run.iter().rev().find(|s| !s.replaced) {
        Some(explicit) => Ok(explicit.attribution.clone()),
        None => Err(format!(
            "unchanged since at least {}: every v1 ReplaceService audit entry read carries the live value, so the change is older than the log",
            oldest.attribution.at
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::who_set;
    use crate::model::{Attribution, SetSetting};
    use serde_json::json;

    /// `(by, value, replaced)` entries of `ingress`, newest first.
    fn entries(list: &[(&str, &str, bool)]) -> Vec<SetSetting> {
        list.iter()
            .enumerate()
            .map(|(n, (by, value, replaced))| SetSetting {
                field: "ingress".into(),
                value: json!(value),
                attribution: Attribution { by: by.to_string(), via: "gcloud".into(), at: format!("2026-11-{:02}T10:00:00Z", 28 - n) },
                replaced: *replaced,
            })
            .collect()
    }

    #[test]
    fn the_setter_is_the_oldest_entry_of_the_newest_run_carrying_the_live_value() {
        const ALL: &str = "INGRESS_TRAFFIC_ALL";
        const INT: &str = "INGRESS_TRAFFIC_INTERNAL_ONLY";
        // (case, entries newest first, Ok(by) or Err(text the reason contains))
        let cases: Vec<(&str, Vec<(&str, &str, bool)>, Result<&str, &str>)> = vec![
            ("a v1 change is attributed", vec![("human", ALL, true), ("ci", INT, true)], Ok("human")),
            (
                "a later v1 redeploy carrying the same value does not steal the blame",
                vec![("ci", ALL, true), ("ci", ALL, true), ("human", ALL, true), ("ci", INT, true)],
                Ok("human"),
            ),
            (
                "only the newest run counts: an older opening closed since is not blamed",
                vec![("b", ALL, true), ("x", INT, true), ("a", ALL, true), ("y", INT, true)],
                Ok("b"),
            ),
            ("a v2 update set between v1 entries is blamed", vec![("ci", ALL, true), ("v2", ALL, false), ("c", INT, true)], Ok("v2")),
            ("a lone v2 update that set the value is the setter", vec![("v2", ALL, false)], Ok("v2")),
            ("the oldest v2 setter of a run reaching the window's end", vec![("n", ALL, false), ("o", ALL, false)], Ok("o")),
            ("v1 carrying the value since the window's start", vec![("ci", ALL, true), ("ci", ALL, true)], Err("unchanged since at least 2026-11-27T10:00:00Z")),
            ("no entry carries the live value", vec![("ci", INT, true)], Err("nor does a v1 ReplaceService entry carry it")),
            ("no entry at all", vec![], Err("nor does a v1 ReplaceService entry carry it")),
        ];
        for (case, list, want) in cases {
            let got = who_set(&entries(&list), "ingress", &json!(ALL)).map(|a| a.by);
            match want {
                Ok(by) => assert_eq!(got.as_deref(), Ok(by), "{case}"),
                Err(text) => assert!(got.as_ref().is_err_and(|e| e.contains(text)), "{case}: {got:?}"),
            }
        }
        // Entries of another field are not read for this one.
        let mut other = entries(&[("human", ALL, true)]);
        other[0].field = "iapEnabled".into();
        assert!(who_set(&other, "ingress", &json!(ALL)).is_err());
    }
}
