//! Reads what effective access needs ([`AccessFacts`]): one Resource Manager `getIamPolicy` per
//! project, then one IAM `roles.get` per distinct role bound on those projects or on the
//! services read (cached for the pass: a role is never read twice). A failed read is recorded
//! with its reason, never fatal: the caller says which paths could not be checked.

use std::collections::BTreeSet;

use crate::google::GoogleClient;
use crate::model::{AccessFacts, INVOKE_PERMISSION, LiveState};

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
