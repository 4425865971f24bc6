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
    /// Role name → whether it carries [`INVOKE_PERMISSION`], or why that is unknown.
    pub invoking: BTreeMap<String, Result<bool, String>>,
}
