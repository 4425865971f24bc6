//! The write methods apply uses: `setIamPolicy` on a service and on its IAP resource,
//! `services.patch` of the governed settings, and waiting for the long-running operation.
//!
//! Same rules as the reads: exactly one attempt per call through [`GoogleClient::send`], errors
//! classified, retries decided by `crate::retry`. Every write carries the etag it was computed
//! from, so a concurrent change answers `409 ABORTED` instead of being overwritten.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::{Api, GoogleClient, GoogleError, body_limits, wire};
use crate::iam::Policy;
use crate::model::ServiceId;

/// The governed fields of a `services.patch`, each with its update-mask path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceUpdate {
    /// `(updateMask path, new value as the API spells it)`, e.g. `("ingress", "INGRESS_TRAFFIC_INTERNAL_ONLY")`.
    pub fields: Vec<(String, Value)>,
    /// The service etag the change was planned from.
    pub etag: String,
}

/// A `google.longrunning.Operation`, as far as apply needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub name: String,
    pub done: bool,
    /// `error.message` (with `error.code`) of a failed operation.
    pub error: Option<String>,
}

impl GoogleClient {
    /// `services.setIamPolicy` with the policy's etag (read-modify-write). Returns the policy
    /// as written (with its new etag).
    pub async fn set_iam_policy(&self, id: &ServiceId, policy: &Policy) -> Result<Policy, GoogleError> {
        let last = format!("{}:setIamPolicy", id.name);
        let url = self.url(Api::CloudRun, &["v2", "projects", &id.project, "locations", &id.region, "services", &last]);
        refuse_without_etag(Api::CloudRun, &url, policy)?;
        let body = json!({ "policy": policy_json(policy) });
        let p: wire::IamPolicy = self.send_write(Api::CloudRun, Method::POST, url.clone(), Some(body), body_limits::IAM_POLICY).await?;
        wire::policy(p).map_err(|reason| GoogleError::Decode { api: Api::CloudRun, method: Method::POST, path: url.path().into(), reason })
    }

    /// IAP `setIamPolicy` on `projects/NUMBER/iap_web/cloud_run-REGION/services/S`.
    pub async fn set_iap_iam_policy(&self, id: &ServiceId, project_number: u64, policy: &Policy) -> Result<Policy, GoogleError> {
        let number = project_number.to_string();
        let region = format!("cloud_run-{}", id.region);
        let last = format!("{}:setIamPolicy", id.name);
        let url = self.url(Api::Iap, &["v1", "projects", &number, "iap_web", &region, "services", &last]);
        refuse_without_etag(Api::Iap, &url, policy)?;
        let body = json!({ "policy": policy_json(policy) });
        let p: wire::IamPolicy = self.send_write(Api::Iap, Method::POST, url.clone(), Some(body), body_limits::IAM_POLICY).await?;
        wire::policy(p).map_err(|reason| GoogleError::Decode { api: Api::Iap, method: Method::POST, path: url.path().into(), reason })
    }

    /// `services.patch` of the given fields (all in one `updateMask`), carrying the etag.
    pub async fn patch_service(&self, id: &ServiceId, update: &ServiceUpdate) -> Result<Operation, GoogleError> {
        let mut url = self.url(Api::CloudRun, &["v2", "projects", &id.project, "locations", &id.region, "services", &id.name]);
        let mask: Vec<&str> = update.fields.iter().map(|(path, _)| path.as_str()).collect();
        url.query_pairs_mut().append_pair("updateMask", &mask.join(","));
        let mut body = serde_json::Map::new();
        for (path, value) in &update.fields {
            body.insert(path.clone(), value.clone());
        }
        if !update.etag.is_empty() {
            body.insert("etag".into(), Value::String(update.etag.clone()));
        }
        let op: Value = self.send_write(Api::CloudRun, Method::PATCH, url, Some(Value::Object(body)), body_limits::SERVICE).await?;
        Ok(operation(&op))
    }

    /// Service Usage `services.generateServiceIdentity` for `iap.googleapis.com`: creates the
    /// project's IAP service agent if Google has not yet (it is created lazily otherwise), as
    /// Google's Terraform does (`google_project_service_identity`) before granting it a role.
    /// `POST v1beta1/projects/NUMBER/services/iap.googleapis.com:generateServiceIdentity`
    /// (reference/google/serviceusage.v1beta1.json), answering an `Operation`.
    pub async fn generate_iap_identity(&self, project_number: u64) -> Result<Operation, GoogleError> {
        let number = project_number.to_string();
        let url = self.url(Api::ServiceUsage, &["v1beta1", "projects", &number, "services", "iap.googleapis.com:generateServiceIdentity"]);
        // The request message is empty: `{}` is its JSON form (proto3 JSON mapping).
        let op: Value = self.send_write(Api::ServiceUsage, Method::POST, url, Some(json!({})), body_limits::PROJECT).await?;
        Ok(operation(&op))
    }

    /// Service Usage `operations.get` (`GET v1beta1/{+name}`, name `operations/...`).
    pub async fn get_service_usage_operation(&self, name: &str) -> Result<Operation, GoogleError> {
        let mut segments: Vec<&str> = vec!["v1beta1"];
        segments.extend(name.split('/'));
        let url = self.url(Api::ServiceUsage, &segments);
        let op: Value = self.send(Api::ServiceUsage, Method::GET, url, None, body_limits::PROJECT).await?;
        Ok(operation(&op))
    }

    /// One `operations.wait` call (it returns when the operation is done or `timeout` passed).
    pub async fn wait_operation(&self, name: &str, timeout: Duration) -> Result<Operation, GoogleError> {
        let mut segments: Vec<&str> = vec!["v2"];
        let parts: Vec<&str> = name.split('/').collect();
        let (last, rest) = parts.split_last().map(|(l, r)| (*l, r)).unwrap_or(("", &[]));
        segments.extend_from_slice(rest);
        let last = format!("{last}:wait");
        segments.push(&last);
        let url = self.url(Api::CloudRun, &segments);
        let body = json!({ "timeout": format!("{}s", timeout.as_secs().max(1)) });
        let op: Value = self.send(Api::CloudRun, Method::POST, url, Some(body), body_limits::SERVICE).await?;
        Ok(operation(&op))
    }
}

/// Defence in depth: the reads never yield a policy without an etag, and a `setIamPolicy`
/// without one would overwrite the whole policy blindly, so it is never sent.
fn refuse_without_etag(api: Api, url: &reqwest::Url, policy: &Policy) -> Result<(), GoogleError> {
    if policy.etag.is_empty() {
        return Err(GoogleError::WriteWithoutEtag { api, method: Method::POST, path: url.path().into() });
    }
    Ok(())
}

/// A domain policy in the wire shape (`version` and `bindings` omitted when empty, as Google
/// writes them).
fn policy_json(policy: &Policy) -> Value {
    let bindings: Vec<Value> = policy
        .bindings
        .iter()
        .filter(|b| !b.members.is_empty())
        .map(|b| {
            let mut binding = json!({
                "role": b.role,
                "members": b.members.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            });
            if let Some(c) = &b.condition {
                let mut expr = json!({ "title": c.title, "expression": c.expression });
                if let Some(d) = &c.description {
                    expr["description"] = json!(d);
                }
                binding["condition"] = expr;
            }
            binding
        })
        .collect();
    let mut out = serde_json::Map::new();
    if policy.version != 0 {
        out.insert("version".into(), json!(policy.version));
    }
    if !policy.etag.is_empty() {
        out.insert("etag".into(), json!(policy.etag));
    }
    if !bindings.is_empty() {
        out.insert("bindings".into(), Value::Array(bindings));
    }
    Value::Object(out)
}

fn operation(op: &Value) -> Operation {
    let error = op.get("error").filter(|e| !e.is_null()).map(|e| {
        let message = e.get("message").and_then(Value::as_str).unwrap_or("the operation failed");
        match e.get("code").and_then(Value::as_i64) {
            Some(code) => format!("{message} (code {code})"),
            None => message.to_string(),
        }
    });
    Operation {
        name: op.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        done: op.get("done").and_then(Value::as_bool).unwrap_or(false),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::{Binding, Condition, Member};

    #[test]
    fn policies_are_written_in_googles_shape() {
        let member = |m: &str| Member::parse(m).unwrap();
        let policy = Policy {
            version: 3,
            etag: "BwYabc=".into(),
            bindings: vec![
                Binding { role: "roles/run.invoker".into(), members: [member("user:a@acme.com")].into(), condition: None },
                Binding {
                    role: "roles/run.invoker".into(),
                    members: [member("user:b@acme.com")].into(),
                    condition: Some(Condition { title: "t".into(), description: None, expression: "e".into() }),
                },
                Binding { role: "roles/run.invoker".into(), members: Default::default(), condition: None },
            ],
        };
        let v = policy_json(&policy);
        assert_eq!(v["version"], 3);
        assert_eq!(v["etag"], "BwYabc=");
        assert_eq!(v["bindings"].as_array().unwrap().len(), 2, "empty bindings are dropped");
        assert_eq!(v["bindings"][1]["condition"]["title"], "t");
        assert!(v["bindings"][0].get("condition").is_none());
        assert_eq!(policy_json(&Policy::default()), json!({}));
    }

    #[tokio::test]
    async fn a_set_iam_policy_without_an_etag_is_never_sent() {
        // Port 9 on loopback: if the request were sent, the error would be a transport error.
        let base = crate::endpoints::parse_base_url("http://127.0.0.1:9/").unwrap();
        let client = GoogleClient::new(
            reqwest::Client::new(),
            std::sync::Arc::new(super::super::StaticToken("t".into())),
            crate::endpoints::Endpoints::single(base),
            super::super::GoogleConfig::default(),
        );
        let id = ServiceId::new("p", "r", "s");
        let blind = Policy { version: 3, etag: String::new(), bindings: vec![] };
        let err = client.set_iam_policy(&id, &blind).await.unwrap_err();
        assert!(matches!(err, GoogleError::WriteWithoutEtag { api: Api::CloudRun, .. }), "{err}");
        let err = client.set_iap_iam_policy(&id, 42, &blind).await.unwrap_err();
        assert!(matches!(err, GoogleError::WriteWithoutEtag { api: Api::Iap, .. }), "{err}");
        assert!(err.to_string().contains("nothing was written"), "{err}");
    }

    #[test]
    fn operations_report_their_error() {
        let op = operation(&json!({"name": "projects/p/locations/r/operations/1", "done": true,
            "error": {"code": 9, "message": "Revision failed"}}));
        assert!(op.done);
        assert_eq!(op.error.as_deref(), Some("Revision failed (code 9)"));
        assert_eq!(operation(&json!({"name": "x"})).done, false);
    }
}
