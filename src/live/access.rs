//! Reads what effective access needs ([`AccessFacts`]): one Resource Manager `getIamPolicy` and
//! one `projects.get` (its `parent`) per project; for the folders and organization above them,
//! one `folders.get` per folder and one `getIamPolicy` per folder or organization, however many
//! projects share it; then one IAM `roles.get` per distinct role bound on any of those or on
//! the services read (cached for the pass: a role is never read twice). A failed read is
//! recorded with its reason, never fatal: the caller says which paths could not be checked.

use std::collections::{BTreeMap, BTreeSet};

use crate::google::GoogleClient;
use crate::model::{AccessFacts, Ancestry, INVOKE_PERMISSION, LiveState, ancestor_label};

/// Reads the project policies of every project of `live` and the roles bound on them or on the
/// services' own policies.
pub async fn read_access(google: &GoogleClient, live: &LiveState) -> AccessFacts {
    let mut facts = AccessFacts::default();
    let projects: BTreeSet<&String> = live.services.keys().map(|id| &id.project).collect();
    let mut roles: BTreeSet<String> = BTreeSet::new();
    for project in projects {
        let read = google.get_project_iam_policy(project).await.map_err(|e| e.to_string());
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
        let carries = google
            .get_role_permissions(&role)
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
    let projects: BTreeSet<&String> = live.services.keys().map(|id| &id.project).collect();
    let mut parents: BTreeMap<String, Result<Option<String>, String>> = BTreeMap::new();
    for project in projects {
        let mut ancestry = Ancestry::default();
        let mut child = format!("projects/{project}");
        loop {
            if !parents.contains_key(&child) {
                let read = google.get_parent(&child).await.map_err(|e| e.to_string());
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
                let read = google.get_ancestor_iam_policy(a).await.map_err(|e| e.to_string());
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
    let mut out = crate::model::Attributions::new();
    for (n, (id, members)) in drifted.iter().enumerate() {
        if n >= MAX_QUERIES {
            for (role, member) in members {
                let why = format!("more than {MAX_QUERIES} drifted services: attribution skipped to stay within the Logging read quota");
                out.insert((id.clone(), role.clone(), member.clone()), Err(why));
            }
            continue;
        }
        let read = google.list_added_bindings(&id.project, &id.resource_name(), 20).await;
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

/// Who set each drifted setting to its live value: one `entries.list` of `UpdateService`
/// entries per service with drifted settings, at most `budget` queries (what
/// [`read_attribution`] left of [`MAX_QUERIES`]); the newest entry that set the field to the
/// live value wins. Unavailable attribution is `Err(why)`, never a failed pass. `drifted` maps a
/// service to its (field, live value) pairs.
pub async fn read_setting_attribution(
    google: &GoogleClient,
    drifted: &BTreeMap<crate::model::ServiceId, Vec<(String, serde_json::Value)>>,
    budget: usize,
) -> crate::model::SettingAttributions {
    let mut out = crate::model::SettingAttributions::new();
    for (n, (id, fields)) in drifted.iter().enumerate() {
        let read = if n < budget {
            google.list_setting_changes(&id.project, &id.resource_name(), 20).await.map_err(|e| e.to_string())
        } else {
            Err(format!("more than {MAX_QUERIES} drifted services: attribution skipped to stay within the Logging read quota"))
        };
        for (field, live) in fields {
            let found = match &read {
                Ok(set) => set
                    .iter()
                    .find(|s| s.field == *field && s.value == *live)
                    .map(|s| s.attribution.clone())
                    .ok_or_else(|| "no Cloud Run v2 UpdateService audit entry sets the live value within the log's retention (v1 API changes, as gcloud makes them, are not read)".to_string()),
                Err(e) if n >= budget => Err(e.clone()),
                Err(e) => Err(format!("the audit log could not be read: {e}")),
            };
            out.insert((id.clone(), field.clone()), found);
        }
    }
    out
}
