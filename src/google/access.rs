//! Reads for effective access: a project's IAM policy (Resource Manager v3
//! `projects.getIamPolicy`, a POST; cloudresourcemanager.v3.json) and a role's permissions (IAM
//! v1 `roles.get` for `roles/X`, `projects.roles.get` / `organizations.roles.get` for custom
//! roles, all `GET v1/{+name}`; iam.v1.json, schema `Role.includedPermissions`).

use reqwest::Method;
use serde::Deserialize;

use super::{Api, GoogleClient, GoogleError, body_limits, wire};
use crate::iam::Policy;

/// The part of an IAM `Role` runwarden reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRole {
    #[serde(default)]
    included_permissions: Vec<String>,
}

impl GoogleClient {
    /// The project's own IAM policy at version 3 (bindings every service inherits).
    pub async fn get_project_iam_policy(&self, project: &str) -> Result<Policy, GoogleError> {
        let last = format!("{project}:getIamPolicy");
        let url = self.url(Api::ResourceManager, &["v3", "projects", &last]);
        let body = serde_json::json!({"options": {"requestedPolicyVersion": 3}});
        let answer: serde_json::Value = self
            .send(Api::ResourceManager, Method::POST, url.clone(), Some(body), body_limits::IAM_POLICY)
            .await?;
        wire::read_policy(answer)
            .map_err(|e| self.policy_error(Api::ResourceManager, Method::POST, &url, e))
    }

    /// The permissions of a role: `roles/X` (predefined), `projects/P/roles/X` or
    /// `organizations/O/roles/X` (custom). Any other name is refused without a call.
    pub async fn get_role_permissions(&self, role: &str) -> Result<Vec<String>, GoogleError> {
        let segments: Vec<&str> = role.split('/').collect();
        let valid = match segments.as_slice() {
            ["roles", r] => !r.is_empty(),
            ["projects" | "organizations", o, "roles", r] => !o.is_empty() && !r.is_empty(),
            _ => false,
        };
        let mut path = vec!["v1"];
        path.extend(&segments);
        let url = self.url(Api::Iam, &path);
        if !valid {
            return Err(self.decode_error(Api::Iam, Method::GET, &url, format!("{role:?} is not a role name")));
        }
        let r: WireRole = self
            .send(Api::Iam, Method::GET, url, None, body_limits::ROLE)
            .await?;
        Ok(r.included_permissions)
    }
}
