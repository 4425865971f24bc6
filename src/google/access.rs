//! Reads for effective access: a project's IAM policy (Resource Manager v3
//! `projects.getIamPolicy`, a POST; cloudresourcemanager.v3.json) and a role's permissions (IAM
//! v1 `roles.get` for `roles/X`, `projects.roles.get` / `organizations.roles.get` for custom
//! roles, all `GET v1/{+name}`; iam.v1.json, schema `Role.includedPermissions`).
//!
//! The resource hierarchy above a project (cloudresourcemanager.v3.json): `projects.get` and
//! `folders.get` (`GET v3/{+name}`, answers `Project` / `Folder` with `parent`, a `folders/N` or
//! `organizations/N` name), and `folders.getIamPolicy` / `organizations.getIamPolicy` (`POST
//! v3/{+resource}:getIamPolicy`, answer `Policy`; they need `resourcemanager.folders.getIamPolicy`
//! and `resourcemanager.organizations.getIamPolicy`).

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

    /// The `parent` of `projects/P` or `folders/N` (`projects.get` / `folders.get`): a
    /// `folders/N` or `organizations/N` name, or `None` (a project outside any organization). A
    /// parent of any other form is refused as a decode error.
    pub async fn get_parent(&self, name: &str) -> Result<Option<String>, GoogleError> {
        let segments: Vec<&str> = name.split('/').collect();
        let url = self.url(Api::ResourceManager, &[&["v3"][..], &segments].concat());
        if !matches!(segments.as_slice(), ["projects" | "folders", id] if !id.is_empty()) {
            return Err(self.decode_error(Api::ResourceManager, Method::GET, &url, format!("{name:?} is not a project or folder name")));
        }
        let p: wire::Parented = self
            .send(Api::ResourceManager, Method::GET, url.clone(), None, body_limits::PROJECT)
            .await?;
        match p.parent {
            Some(parent) if !is_ancestor_name(&parent) => Err(self.decode_error(
                Api::ResourceManager,
                Method::GET,
                &url,
                format!("parent {parent:?} is neither folders/N nor organizations/N"),
            )),
            parent => Ok(parent),
        }
    }

    /// The IAM policy of a folder or organization (`folders/N`, `organizations/N`) at version 3.
    pub async fn get_ancestor_iam_policy(&self, name: &str) -> Result<Policy, GoogleError> {
        let (kind, id) = name.split_once('/').unwrap_or((name, ""));
        let last = format!("{id}:getIamPolicy");
        let url = self.url(Api::ResourceManager, &["v3", kind, &last]);
        if !is_ancestor_name(name) {
            return Err(self.decode_error(Api::ResourceManager, Method::POST, &url, format!("{name:?} is not a folder or organization name")));
        }
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

/// `folders/N` or `organizations/N` with N all digits.
fn is_ancestor_name(name: &str) -> bool {
    match name.split_once('/') {
        Some(("folders" | "organizations", id)) => !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

impl GoogleClient {
    /// The `ADD` binding deltas of the newest `SetIamPolicy` Admin Activity entries on one
    /// resource (Cloud Logging v2 `entries.list`, POST `v2/entries:list`, logging.v2.json;
    /// `protoPayload` is a Cloud Audit Logs `AuditLog` with `serviceData.policyDelta`). One
    /// call, one page of at most `page_size` entries, newest first.
    pub async fn list_added_bindings(
        &self,
        project: &str,
        resource: &str,
        page_size: u32,
    ) -> Result<Vec<crate::model::AddedBinding>, GoogleError> {
        let answer = self.list_admin_activity(project, resource, "SetIamPolicy", page_size).await?;
        Ok(added_bindings(&answer))
    }

    /// The settings set by the newest `UpdateService` Admin Activity entries on one service
    /// (method `google.cloud.run.v2.Services.UpdateService`; its `protoPayload.request` is the
    /// `UpdateServiceRequest`: `service` and `updateMask`, run_v2 types in gcloud's lib). One
    /// call, one page, newest first. Changes made through the v1 API (`namespaces.services.
    /// replaceService`, which `gcloud run services update` uses: gcloud's
    /// command_lib/run/serverless_operations.py) are logged on another resource name and not read.
    pub async fn list_setting_changes(
        &self,
        project: &str,
        resource: &str,
        page_size: u32,
    ) -> Result<Vec<crate::model::SetSetting>, GoogleError> {
        let answer = self.list_admin_activity(project, resource, "UpdateService", page_size).await?;
        Ok(set_settings(&answer))
    }

    /// One `entries.list` page of the Admin Activity log of `resource`, methods containing `method`.
    async fn list_admin_activity(
        &self,
        project: &str,
        resource: &str,
        method: &str,
        page_size: u32,
    ) -> Result<serde_json::Value, GoogleError> {
        let url = self.url(Api::Logging, &["v2", "entries:list"]);
        let filter = format!(
            "logName=\"projects/{project}/logs/cloudaudit.googleapis.com%2Factivity\" AND protoPayload.resourceName=\"{resource}\" AND protoPayload.methodName:\"{method}\""
        );
        let body = serde_json::json!({
            "resourceNames": [format!("projects/{project}")],
            "filter": filter,
            "orderBy": "timestamp desc",
            "pageSize": page_size,
        });
        self.send(Api::Logging, Method::POST, url, Some(body), body_limits::LOG_PAGE).await
    }
}

/// The entries of an `entries.list` answer (none when the field is missing or not a list).
fn entries(answer: &serde_json::Value) -> &[serde_json::Value] {
    answer.get("entries").and_then(|e| e.as_array()).map(Vec::as_slice).unwrap_or(&[])
}

/// Who made an audit entry's change, and how and when.
fn entry_attribution(e: &serde_json::Value) -> crate::model::Attribution {
    let text = |path: &str| e.pointer(path).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let agent = text("/protoPayload/requestMetadata/callerSuppliedUserAgent");
    let via = if agent.contains("gcloud") {
        "gcloud"
    } else if agent.contains("Mozilla") || agent.contains("console") {
        "console"
    } else {
        "api"
    };
    crate::model::Attribution {
        by: Some(text("/protoPayload/authenticationInfo/principalEmail"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "an unnamed principal".into()),
        via: via.into(),
        at: text("/timestamp"),
    }
}

/// Reads what it can from the entries; an entry without the expected fields is skipped.
fn added_bindings(answer: &serde_json::Value) -> Vec<crate::model::AddedBinding> {
    let mut out = Vec::new();
    for e in entries(answer) {
        let attribution = entry_attribution(e);
        let deltas = e
            .pointer("/protoPayload/serviceData/policyDelta/bindingDeltas")
            .and_then(|d| d.as_array())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for d in deltas.iter().filter(|d| d["action"] == "ADD") {
            if let (Some(role), Some(member)) = (d["role"].as_str(), d["member"].as_str()) {
                out.push(crate::model::AddedBinding {
                    role: role.into(),
                    member: member.into(),
                    attribution: attribution.clone(),
                });
            }
        }
    }
    out
}

/// The Cloud Run v2 `Service` fields whose drift is attributed, with the value proto3 JSON
/// omits (a field at its default is absent from `request.service`).
const ATTRIBUTED_SETTINGS: &[(&str, &str, fn() -> serde_json::Value)] = &[
    ("ingress", "ingress", || "INGRESS_TRAFFIC_UNSPECIFIED".into()),
    ("invokerIamDisabled", "invoker_iam_disabled", || false.into()),
    ("iapEnabled", "iap_enabled", || false.into()),
    ("customAudiences", "custom_audiences", || serde_json::json!([])),
];

/// The settings each `UpdateService` entry set: the fields of its update mask (both spellings),
/// or without a mask the fields present in `request.service`. Entries without a `request`
/// object are skipped.
fn set_settings(answer: &serde_json::Value) -> Vec<crate::model::SetSetting> {
    let mut out = Vec::new();
    for e in entries(answer) {
        let Some(service) = e.pointer("/protoPayload/request/service").and_then(|s| s.as_object()) else { continue };
        let mask = e.pointer("/protoPayload/request/updateMask").and_then(|m| m.as_str()).unwrap_or("");
        let paths: Vec<&str> = mask.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
        for (camel, snake, default) in ATTRIBUTED_SETTINGS {
            let set = if paths.is_empty() { service.contains_key(*camel) } else { paths.contains(camel) || paths.contains(snake) };
            if set {
                out.push(crate::model::SetSetting {
                    field: camel.to_string(),
                    value: service.get(*camel).cloned().unwrap_or_else(default),
                    attribution: entry_attribution(e),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(request: serde_json::Value) -> serde_json::Value {
        json!({
            "timestamp": "2026-11-28T16:45:00Z",
            "protoPayload": {
                "authenticationInfo": {"principalEmail": "dev@acme.com"},
                "requestMetadata": {"callerSuppliedUserAgent": "google-cloud-sdk gcloud/500.0.0"},
                "request": request,
            }
        })
    }

    #[test]
    fn update_entries_yield_the_masked_fields_with_proto3_defaults_for_omitted_values() {
        let answer = json!({"entries": [
            entry(json!({"service": {"ingress": "INGRESS_TRAFFIC_ALL"}, "updateMask": "ingress,invoker_iam_disabled,labels"})),
            entry(json!({"service": {"iapEnabled": true, "labels": {"a": "b"}}})),
        ]});
        let set = set_settings(&answer);
        let got: Vec<(&str, &serde_json::Value)> = set.iter().map(|s| (s.field.as_str(), &s.value)).collect();
        assert_eq!(
            got,
            vec![
                ("ingress", &json!("INGRESS_TRAFFIC_ALL")),
                ("invokerIamDisabled", &json!(false)),
                ("iapEnabled", &json!(true)),
            ]
        );
        assert_eq!((set[0].attribution.by.as_str(), set[0].attribution.via.as_str()), ("dev@acme.com", "gcloud"));
    }

    #[test]
    fn malformed_log_answers_yield_nothing_and_never_panic() {
        for answer in [
            json!(null),
            json!({"entries": "not a list"}),
            json!({"entries": [null, 5, {"protoPayload": "x"}]}),
            json!({"entries": [entry(json!("not an object")), entry(json!({"service": [1, 2]}))]}),
            json!({"entries": [entry(json!({"service": {}, "updateMask": 7}))]}),
        ] {
            assert!(set_settings(&answer).is_empty(), "{answer}");
            assert!(added_bindings(&answer).is_empty(), "{answer}");
        }
        // A value of the wrong type is carried as read (it then matches no live value).
        let odd = json!({"entries": [entry(json!({"service": {"ingress": 5}}))]});
        assert_eq!(set_settings(&odd)[0].value, json!(5));
    }

    #[test]
    fn only_folder_and_organization_numbers_are_ancestor_names() {
        assert!(is_ancestor_name("folders/123") && is_ancestor_name("organizations/9"));
        for bad in ["folders/", "folders/12a", "projects/1", "organizations/../x", "folders/1/2", ""] {
            assert!(!is_ancestor_name(bad), "{bad}");
        }
    }
}
