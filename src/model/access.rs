//! What effective access is computed from: the projects' own IAM policies and, per role, whether
//! it carries the permission to invoke a Cloud Run service.

use std::collections::BTreeMap;

use crate::iam::Policy;

/// The IAM permission that invoking a Cloud Run service needs
/// (https://cloud.google.com/run/docs/securing/managing-access).
pub const INVOKE_PERMISSION: &str = "run.routes.invoke";

/// Read once per pass: one project policy per project in scope, one role read per distinct role.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessFacts {
    /// Project id → its IAM policy, or why it could not be read.
    pub projects: BTreeMap<String, Result<Policy, String>>,
    /// Project id → its folders and organization, nearest first.
    pub ancestry: BTreeMap<String, Ancestry>,
    /// `folders/N` or `organizations/N` → its IAM policy, or why it could not be read (each read
    /// once per pass, however many projects share it).
    pub ancestors: BTreeMap<String, Result<Policy, String>>,
    /// Role name → whether it carries [`INVOKE_PERMISSION`], or why that is unknown.
    pub invoking: BTreeMap<String, Result<bool, String>>,
}

/// The resources above a project, as far as they could be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ancestry {
    /// `folders/N` … `organizations/N`, nearest first.
    pub chain: Vec<String>,
    /// Why the walk stopped before the organization (a `projects.get` or `folders.get` that
    /// failed): inherited paths above that point are unknown.
    pub unknown: Option<String>,
}

/// `folder 123` or `organization 456` for `folders/123` / `organizations/456`.
pub fn ancestor_label(name: &str) -> String {
    match name.split_once('/') {
        Some(("folders", id)) => format!("folder {id}"),
        Some(("organizations", id)) => format!("organization {id}"),
        _ => name.to_string(),
    }
}

/// Who added a member to a resource's policy, from an Admin Activity audit entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribution {
    /// `authenticationInfo.principalEmail`.
    pub by: String,
    /// `console`, `gcloud` or `api` (from `requestMetadata.callerSuppliedUserAgent`).
    pub via: String,
    /// The entry's `timestamp` (RFC 3339).
    pub at: String,
}

/// One `ADD` binding delta of a `SetIamPolicy` audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedBinding {
    pub role: String,
    pub member: String,
    pub attribution: Attribution,
}

/// One setting an `UpdateService` (v2) or `ReplaceService` (v1) audit entry set.
#[derive(Debug, Clone, PartialEq)]
pub struct SetSetting {
    /// The Cloud Run v2 `Service` field, e.g. `ingress`.
    pub field: String,
    /// The value it was set to (JSON as the API spells it).
    pub value: serde_json::Value,
    pub attribution: Attribution,
    /// From a v1 `ReplaceService` entry, which carries every setting: the same value as the
    /// entry before is no change. A v2 `UpdateService` entry sets only its mask's fields.
    pub replaced: bool,
}

/// (service, field) → who set the live value, or why that is unknown.
pub type SettingAttributions =
    BTreeMap<(crate::model::ServiceId, String), Result<Attribution, String>>;

/// (service, role, member) → who added it, or why that is unknown.
pub type Attributions =
    BTreeMap<(crate::model::ServiceId, String, String), Result<Attribution, String>>;
