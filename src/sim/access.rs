//! Effective-access endpoints: Resource Manager v3 `projects.getIamPolicy` (the project's own
//! policy, which every service of the project inherits) and IAM v1 `roles.get` /
//! `projects.roles.get` (a role's `includedPermissions`).
//!
//! Shapes from the discovery documents in /work/shared/reference/google/:
//! `cloudresourcemanager.v3.json` (`POST v3/{+resource}:getIamPolicy`, body
//! `GetIamPolicyRequest.options.requestedPolicyVersion`, answer `Policy`) and `iam.v1.json`
//! (`GET v1/{+name}` with `roles/{ROLE}` or `projects/{P}/roles/{ROLE}`, answer `Role`:
//! `name`, `title`, `description`, `includedPermissions`, `stage`, `etag`).

use serde_json::json;

use super::SimState;
use super::google::{permission_denied, policy_json, project_id, requested_version};
use super::http::{Reply, Req};
use super::lock;

/// The predefined roles the simulator knows, with the permissions that matter to runwarden.
/// Abbreviated from Google's list (https://cloud.google.com/iam/docs/understanding-roles):
/// the `run.*` and `iap.*` permissions are the real ones; the rest of each real role is left out.
const PREDEFINED: &[(&str, &str, &[&str])] = &[
    ("roles/run.invoker", "Cloud Run Invoker", &["run.routes.invoke"]),
    ("roles/run.servicesInvoker", "Cloud Run Services Invoker", &["run.routes.invoke"]),
    (
        "roles/run.viewer",
        "Cloud Run Viewer",
        &["run.services.get", "run.services.getIamPolicy", "run.services.list"],
    ),
    (
        "roles/run.developer",
        "Cloud Run Developer",
        &[
            "run.routes.invoke",
            "run.services.create",
            "run.services.get",
            "run.services.list",
            "run.services.update",
        ],
    ),
    (
        "roles/run.admin",
        "Cloud Run Admin",
        &[
            "run.routes.invoke",
            "run.services.get",
            "run.services.getIamPolicy",
            "run.services.setIamPolicy",
            "run.services.update",
        ],
    ),
    (
        "roles/iap.httpsResourceAccessor",
        "IAP-secured Web App User",
        &["iap.webServiceVersions.accessViaIAP"],
    ),
    (
        "roles/logging.viewer",
        "Logs Viewer",
        &["logging.logEntries.list", "logging.logs.list"],
    ),
    ("roles/viewer", "Viewer", &["resourcemanager.projects.get", "run.services.get"]),
    (
        "roles/editor",
        "Editor",
        &["resourcemanager.projects.get", "run.routes.invoke", "run.services.update"],
    ),
    (
        "roles/owner",
        "Owner",
        &[
            "resourcemanager.projects.get",
            "resourcemanager.projects.setIamPolicy",
            "run.routes.invoke",
            "run.services.update",
        ],
    ),
];

/// `POST v3/projects/{P}:getIamPolicy`.
pub(super) fn project_get_iam(st: &SimState, req: &Req, given: &str) -> Reply {
    let requested = match requested_version(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let s = lock(&st.store);
    match project_id(&s, given) {
        Some(id) => Reply::json(200, &policy_json(&s.projects[&id].iam, requested)),
        None => permission_denied(
            "resourcemanager.projects.getIamPolicy",
            &format!("projects/{given}"),
        ),
    }
}

/// `GET v1/roles/{ROLE}`: a predefined role.
pub(super) fn role_get(role: &str) -> Reply {
    let name = format!("roles/{role}");
    match PREDEFINED.iter().find(|(n, _, _)| *n == name) {
        Some((name, title, permissions)) => Reply::json(
            200,
            &json!({
                "name": name,
                "title": title,
                "description": format!("{title} (simulated)"),
                "includedPermissions": permissions,
                "stage": "GA",
                "etag": "AA==",
            }),
        ),
        None => Reply::google(404, "NOT_FOUND", &format!("The role named {name} was not found.")),
    }
}

/// `GET v1/projects/{P}/roles/{ROLE}`: a custom role. The simulated world has none.
pub(super) fn custom_role_get(st: &SimState, project: &str, role: &str) -> Reply {
    let s = lock(&st.store);
    if project_id(&s, project).is_none() {
        return permission_denied("iam.roles.get", &format!("projects/{project}"));
    }
    Reply::google(
        404,
        "NOT_FOUND",
        &format!("The role named projects/{project}/roles/{role} was not found."),
    )
}
