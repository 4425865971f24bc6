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
        self.resource_manager_policy(url).await
    }

    /// One Resource Manager v3 `getIamPolicy` (POST, `requestedPolicyVersion: 3`, answer
    /// `Policy`) at `url`: a project's, a folder's or an organization's.
    async fn resource_manager_policy(&self, url: reqwest::Url) -> Result<Policy, GoogleError> {
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
        self.resource_manager_policy(url).await
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
pub(super) fn is_ancestor_name(name: &str) -> bool {
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

    /// The settings set by the newest service updates of one service, newest first, in one
    /// `entries.list` call of one page: Cloud Run v2 `UpdateService` entries (method
    /// `google.cloud.run.v2.Services.UpdateService` on `projects/P/locations/R/services/S`; its
    /// `protoPayload.request` is the `UpdateServiceRequest`: `service` and `updateMask`, run_v2
    /// types in gcloud's lib) and Cloud Run v1 `ReplaceService` entries, which is how
    /// `gcloud run services update` changes a service (gcloud's lib,
    /// command_lib/run/serverless_operations.py `_UpdateOrCreateService` →
    /// `namespaces_services.ReplaceService`). A v1 entry is logged on `namespaces/P/services/S`,
    /// without the region, so the query also asks for the region (`resource.labels.location`,
    /// or the request's `region`), and [`set_settings`] checks it again.
    pub async fn list_setting_changes(
        &self,
        id: &crate::model::ServiceId,
        page_size: u32,
    ) -> Result<Vec<crate::model::SetSetting>, GoogleError> {
        let answer = self.send_log_query(&id.project, &setting_changes_filter(id), page_size).await?;
        Ok(set_settings(&answer, &id.region))
    }

    /// One `entries.list` page of the Admin Activity log of `resource`, methods containing `method`.
    async fn list_admin_activity(
        &self,
        project: &str,
        resource: &str,
        method: &str,
        page_size: u32,
    ) -> Result<serde_json::Value, GoogleError> {
        self.send_log_query(project, &admin_activity_filter(project, resource, method), page_size).await
    }

    /// One `entries.list` page (POST `v2/entries:list`, logging.v2.json), newest first.
    async fn send_log_query(&self, project: &str, filter: &str, page_size: u32) -> Result<serde_json::Value, GoogleError> {
        let url = self.url(Api::Logging, &["v2", "entries:list"]);
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

/// The Admin Activity entries of `resource` whose method contains `method` (`:` is the "has"
/// operator of the Logging query language, a substring match on a text field): so
/// `SetIamPolicy` matches both `google.cloud.run.v2.Services.SetIamPolicy` and the v1
/// `google.cloud.run.v1.Services.SetIamPolicy` (gcloud's `add-iam-policy-binding`), both logged
/// on `projects/P/locations/R/services/S`.
fn admin_activity_filter(project: &str, resource: &str, method: &str) -> String {
    format!(
        "logName=\"projects/{project}/logs/cloudaudit.googleapis.com%2Factivity\" AND protoPayload.resourceName=\"{resource}\" AND protoPayload.methodName:\"{method}\""
    )
}

/// The Cloud Run v2 `Service` fields whose drift is attributed, with the value proto3 JSON
/// omits (a field at its default is absent from `request.service`).
const ATTRIBUTED_SETTINGS: &[(&str, &str, fn() -> serde_json::Value)] = &[
    ("ingress", "ingress", || "INGRESS_TRAFFIC_UNSPECIFIED".into()),
    ("invokerIamDisabled", "invoker_iam_disabled", || false.into()),
    ("iapEnabled", "iap_enabled", || false.into()),
    ("customAudiences", "custom_audiences", || serde_json::json!([])),
];

/// The `entries.list` filter of [`GoogleClient::list_setting_changes`]: the v2 entries of the
/// service's full name, and the v1 entries of `namespaces/P/services/S` in its region (Logging
/// query language, which logging.v2.json `ListLogEntriesRequest.filter` points to:
/// https://cloud.google.com/logging/docs/view/logging-query-language; at most 20,000 characters;
/// every disjunction parenthesised so no precedence rule matters). A v2 entry's resource
/// name carries the region; a v1 entry's region is its resource's `location` label (the
/// `cloud_run_revision` resource type) or its request's `region`.
fn setting_changes_filter(id: &crate::model::ServiceId) -> String {
    let (p, r, s) = (&id.project, &id.region, &id.name);
    let v2 = id.resource_name();
    format!(
        "logName=\"projects/{p}/logs/cloudaudit.googleapis.com%2Factivity\" AND (protoPayload.resourceName=\"{v2}\" OR protoPayload.resourceName=\"namespaces/{p}/services/{s}\") AND (protoPayload.methodName:\"UpdateService\" OR protoPayload.methodName=\"{REPLACE_SERVICE}\") AND (protoPayload.resourceName=\"{v2}\" OR resource.labels.location=\"{r}\" OR protoPayload.request.region=\"{r}\")"
    )
}

/// The method of a Cloud Run v1 `namespaces.services.replaceService` Admin Activity entry.
const REPLACE_SERVICE: &str = "google.cloud.run.v1.Services.ReplaceService";

/// The settings each entry set, newest first: for a v2 `UpdateService` entry the fields of its
/// update mask (both spellings), or without a mask the fields present in `request.service`; for
/// a v1 `ReplaceService` entry of `region` every setting its annotations carry (marked
/// `replaced`). Entries without a readable `request` are skipped.
fn set_settings(answer: &serde_json::Value, region: &str) -> Vec<crate::model::SetSetting> {
    let mut out = Vec::new();
    for e in entries(answer) {
        if e.pointer("/protoPayload/methodName").and_then(|m| m.as_str()) == Some(REPLACE_SERVICE) {
            out.extend(replaced_settings(e, region));
            continue;
        }
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
                    replaced: false,
                });
            }
        }
    }
    out
}

/// The region of a v1 entry: its resource's `location` label, its request's `region`, or the
/// `locations/R` of its request's `name` (`projects/P/locations/R/services/S`).
fn v1_region(e: &serde_json::Value) -> Option<&str> {
    let text = |path: &str| e.pointer(path).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    text("/resource/labels/location").or_else(|| text("/protoPayload/request/region")).or_else(|| {
        let name = text("/protoPayload/request/name")?;
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["projects", _, "locations", r, "services", _] => Some(*r),
            _ => None,
        }
    })
}

/// The settings a v1 `ReplaceService` entry of `region` carries, as v2 fields and values. Its
/// `request` is a `google.cloud.run.v1.ReplaceServiceRequest` whose `service` is the whole
/// Knative `Service`; the settings are `metadata.annotations` (gcloud's lib: api_lib/run/
/// service.py `INGRESS_ANNOTATION`, `IAP_ANNOTATION`; container_resource.py
/// `DISABLE_IAM_ANNOTATION`; k8s_object.py `CUSTOM_AUDIENCES_ANNOTATION`). gcloud writes the
/// invoker annotation as Python's `str(bool)` ("True"/"False", command_lib/run/
/// config_changes.py `InvokerIamChange`) and deletes the IAP one on `--no-iap` (flags.py), so
/// an absent boolean is false and an absent audience list empty. An entry of another region,
/// or of no known region, yields nothing; so does an ingress value not in the mapping.
fn replaced_settings(e: &serde_json::Value, region: &str) -> Vec<crate::model::SetSetting> {
    if v1_region(e) != Some(region) {
        return Vec::new();
    }
    let Some(notes) = e.pointer("/protoPayload/request/service/metadata/annotations").and_then(|a| a.as_object()) else {
        return Vec::new();
    };
    let note = |key: &str| notes.get(key).and_then(|v| v.as_str());
    let flag = |key: &str| serde_json::Value::Bool(note(key).is_some_and(|v| v.eq_ignore_ascii_case("true")));
    // v1 ingress annotation → v2 `IngressTraffic` (gcloud's lib: api_lib/run/service.py
    // INGRESS_ALL/INTERNAL/INTERNAL_AND_CLOUD_LOAD_BALANCING, flags.py `none`; run_v2
    // types/vendor_settings.py `IngressTraffic`; run.v2.json `Service.ingress`).
    let ingress = note("run.googleapis.com/ingress").and_then(|v| match v {
        "all" => Some("INGRESS_TRAFFIC_ALL"),
        "internal" => Some("INGRESS_TRAFFIC_INTERNAL_ONLY"),
        "internal-and-cloud-load-balancing" => Some("INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"),
        "none" => Some("INGRESS_TRAFFIC_NONE"),
        _ => None,
    });
    let audiences = match note("run.googleapis.com/custom-audiences") {
        None => Some(serde_json::json!([])),
        Some(text) => serde_json::from_str::<Vec<String>>(text).ok().map(|list| serde_json::json!(list)),
    };
    let values = [
        ("ingress", ingress.map(serde_json::Value::from)),
        ("invokerIamDisabled", Some(flag("run.googleapis.com/invoker-iam-disabled"))),
        ("iapEnabled", Some(flag("run.googleapis.com/iap-enabled"))),
        ("customAudiences", audiences),
    ];
    let attribution = entry_attribution(e);
    values
        .into_iter()
        .filter_map(|(field, value)| {
            Some(crate::model::SetSetting { field: field.into(), value: value?, attribution: attribution.clone(), replaced: true })
        })
        .collect()
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
        let set = set_settings(&answer, "europe-west1");
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
            assert!(set_settings(&answer, "europe-west1").is_empty(), "{answer}");
            assert!(added_bindings(&answer).is_empty(), "{answer}");
        }
        // A value of the wrong type is carried as read (it then matches no live value).
        let odd = json!({"entries": [entry(json!({"service": {"ingress": 5}}))]});
        assert_eq!(set_settings(&odd, "europe-west1")[0].value, json!(5));
    }

    /// A v1 `ReplaceService` entry as Cloud Audit Logs has it: resource `namespaces/P/services/S`,
    /// the region in the resource's labels and the request, the settings in annotations.
    fn v1_entry(location: serde_json::Value, region: serde_json::Value, notes: serde_json::Value) -> serde_json::Value {
        json!({
            "timestamp": "2026-11-29T09:00:00Z",
            "resource": {"type": "cloud_run_revision", "labels": {"location": location, "project_id": "acme-prod"}},
            "protoPayload": {
                "methodName": "google.cloud.run.v1.Services.ReplaceService",
                "resourceName": "namespaces/acme-prod/services/payments-api",
                "authenticationInfo": {"principalEmail": "ops@acme.com"},
                "requestMetadata": {"callerSuppliedUserAgent": "google-cloud-sdk gcloud/500.0.0 command/gcloud.run.services.update"},
                "request": {
                    "@type": "type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest",
                    "name": "projects/acme-prod/locations/europe-west1/services/payments-api",
                    "region": region,
                    "service": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "payments-api", "annotations": notes}},
                },
            }
        })
    }

    #[test]
    fn replace_service_entries_yield_every_annotated_setting_as_the_v2_field() {
        let notes = json!({
            "run.googleapis.com/ingress": "internal-and-cloud-load-balancing",
            "run.googleapis.com/invoker-iam-disabled": "True",
            "run.googleapis.com/custom-audiences": "[\"https://a.example\"]",
        });
        let answer = json!({"entries": [v1_entry(json!("europe-west1"), json!("europe-west1"), notes)]});
        let set = set_settings(&answer, "europe-west1");
        let got: Vec<(&str, &serde_json::Value, bool)> = set.iter().map(|s| (s.field.as_str(), &s.value, s.replaced)).collect();
        assert_eq!(
            got,
            vec![
                ("ingress", &json!("INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"), true),
                ("invokerIamDisabled", &json!(true), true),
                ("iapEnabled", &json!(false), true),
                ("customAudiences", &json!(["https://a.example"]), true),
            ]
        );
        assert_eq!((set[0].attribution.by.as_str(), set[0].attribution.via.as_str()), ("ops@acme.com", "gcloud"));
        for (v1, v2) in [("all", "INGRESS_TRAFFIC_ALL"), ("internal", "INGRESS_TRAFFIC_INTERNAL_ONLY"), ("none", "INGRESS_TRAFFIC_NONE")] {
            let answer = json!({"entries": [v1_entry(json!("europe-west1"), json!(null), json!({"run.googleapis.com/ingress": v1}))]});
            assert_eq!(set_settings(&answer, "europe-west1")[0].value, json!(v2), "{v1}");
        }
    }

    #[test]
    fn a_replace_service_entry_of_a_same_named_service_in_another_region_is_not_read() {
        let notes = json!({"run.googleapis.com/ingress": "all"});
        for (location, region) in [(json!("us-central1"), json!("us-central1")), (json!("us-central1"), json!(null)), (json!(null), json!("us-central1"))] {
            let answer = json!({"entries": [v1_entry(location.clone(), region.clone(), notes.clone())]});
            assert!(set_settings(&answer, "europe-west1").is_empty(), "{location} {region}");
            assert!(!set_settings(&answer, "us-central1").is_empty(), "{location} {region}");
        }
        // The filter asks the same of the server: the v1 name and the region, in one query.
        let filter = setting_changes_filter(&crate::model::ServiceId::new("acme-prod", "europe-west1", "payments-api"));
        assert!(filter.contains(r#"protoPayload.resourceName="namespaces/acme-prod/services/payments-api""#), "{filter}");
        assert!(filter.contains(r#"resource.labels.location="europe-west1" OR protoPayload.request.region="europe-west1")"#), "{filter}");
    }

    #[test]
    fn malformed_replace_service_entries_yield_what_they_can_and_never_panic() {
        let v1 = |notes: serde_json::Value| json!({"entries": [v1_entry(json!("europe-west1"), json!("europe-west1"), notes)]});
        let mut no_region = v1_entry(json!(null), json!(null), json!({}));
        no_region["protoPayload"]["request"]["name"] = json!("namespaces/acme-prod/services/payments-api");
        for answer in [
            v1(json!(null)),
            v1(json!("annotations")),
            v1(json!([1, 2])),
            json!({"entries": [no_region]}),
            json!({"entries": [{"protoPayload": {"methodName": "google.cloud.run.v1.Services.ReplaceService", "request": 5}}]}),
        ] {
            assert!(set_settings(&answer, "europe-west1").is_empty(), "{answer}");
        }
        // Unknown ingress, unreadable audiences, odd types: those fields are left out, the rest read.
        let odd = v1(json!({
            "run.googleapis.com/ingress": "sideways",
            "run.googleapis.com/custom-audiences": "not json",
            "run.googleapis.com/iap-enabled": 7,
        }));
        let fields: Vec<(String, serde_json::Value)> = set_settings(&odd, "europe-west1").into_iter().map(|s| (s.field, s.value)).collect();
        assert_eq!(fields, vec![("invokerIamDisabled".into(), json!(false)), ("iapEnabled".into(), json!(false))]);
    }

    #[test]
    fn member_attribution_matches_v1_and_v2_set_iam_policy_entries_by_substring() {
        let filter = admin_activity_filter("acme-prod", "projects/acme-prod/locations/europe-west1/services/s", "SetIamPolicy");
        assert!(filter.ends_with(r#" AND protoPayload.methodName:"SetIamPolicy""#), "{filter}");
        for method in ["google.cloud.run.v1.Services.SetIamPolicy", "google.cloud.run.v2.Services.SetIamPolicy"] {
            let mut e = entry(json!({}));
            e["protoPayload"]["methodName"] = json!(method);
            e["protoPayload"]["serviceData"] = json!({"policyDelta": {"bindingDeltas": [{"action": "ADD", "role": "roles/run.invoker", "member": "allUsers"}]}});
            let added = added_bindings(&json!({"entries": [e]}));
            assert_eq!((added.len(), added[0].member.as_str()), (1, "allUsers"), "{method}");
        }
    }

    #[test]
    fn only_folder_and_organization_numbers_are_ancestor_names() {
        assert!(is_ancestor_name("folders/123") && is_ancestor_name("organizations/9"));
        for bad in ["folders/", "folders/12a", "projects/1", "organizations/../x", "folders/1/2", ""] {
            assert!(!is_ancestor_name(bad), "{bad}");
        }
    }
}
