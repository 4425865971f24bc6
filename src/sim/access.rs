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

/// `GET v3/folders/{N}` (`Folder`: `name`, `parent`, `displayName`, `state`, times, `etag`). An
/// unknown folder is a 403, as Google answers for a folder the caller may not read.
pub(super) fn folder_get(st: &SimState, id: &str) -> Reply {
    let name = format!("folders/{id}");
    let s = lock(&st.store);
    let Some(f) = s.hierarchy.get(&name) else {
        return permission_denied("resourcemanager.folders.get", &name);
    };
    Reply::json(
        200,
        &json!({
            "name": name,
            "parent": f.parent,
            "displayName": f.display_name,
            "state": "ACTIVE",
            "createTime": "2024-01-01T00:00:00.000Z",
            "updateTime": "2024-01-01T00:00:00.000Z",
            "etag": format!("W/\"{:016x}\"", super::state::fnv(&name)),
        }),
    )
}

/// `POST v3/folders/{N}:getIamPolicy` and `POST v3/organizations/{N}:getIamPolicy`. An unknown
/// one is a 403 naming the permission (`resourcemanager.folders.getIamPolicy` /
/// `resourcemanager.organizations.getIamPolicy`).
pub(super) fn ancestor_get_iam(st: &SimState, req: &Req, name: &str) -> Reply {
    let requested = match requested_version(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let s = lock(&st.store);
    match s.hierarchy.get(name) {
        Some(a) => Reply::json(200, &policy_json(&a.iam, requested)),
        _ if name.starts_with("folders/") => permission_denied("resourcemanager.folders.getIamPolicy", name),
        _ => permission_denied("resourcemanager.organizations.getIamPolicy", name),
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

/// The filter `entries.list` understands: terms joined by ` AND `, each a comparison or a
/// parenthesised disjunction of comparisons joined by ` OR `; a comparison is `FIELD="VALUE"`
/// (equals) or `FIELD:"VALUE"` (has) on `logName`, `protoPayload.resourceName`,
/// `protoPayload.methodName`, `resource.labels.location` or `protoPayload.request.region` (the
/// subset runwarden sends; Logging query language:
/// https://cloud.google.com/logging/docs/view/logging-query-language). Anything else is a 400.
/// The answer is the conjunction of disjunctions.
fn parse_filter(filter: &str) -> Result<Vec<Vec<(String, bool, String)>>, String> {
    let mut terms = Vec::new();
    for term in filter.split(" AND ").map(str::trim).filter(|t| !t.is_empty()) {
        let any = match term.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
            Some(inner) => inner.split(" OR ").map(parse_comparison).collect::<Result<Vec<_>, _>>()?,
            None => vec![parse_comparison(term)?],
        };
        terms.push(any);
    }
    Ok(terms)
}

/// One `FIELD="VALUE"` or `FIELD:"VALUE"` of [`parse_filter`].
fn parse_comparison(term: &str) -> Result<(String, bool, String), String> {
    let term = term.trim();
    let (field, equals, value) = match (term.find('='), term.find(':')) {
        (Some(e), c) if c.is_none_or(|c| e < c) => (&term[..e], true, &term[e + 1..]),
        (_, Some(c)) => (&term[..c], false, &term[c + 1..]),
        _ => return Err(format!("unsupported filter term {term:?}")),
    };
    let field = field.trim();
    let known = ["logName", "protoPayload.resourceName", "protoPayload.methodName", "resource.labels.location", "protoPayload.request.region"];
    if !known.contains(&field) {
        return Err(format!("the simulator does not filter on {field:?}"));
    }
    let value = value.trim();
    let Some(value) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return Err(format!("filter value {value:?} must be quoted"));
    };
    Ok((field.to_string(), equals, value.to_string()))
}

/// `POST v2/entries:list` (logging.v2.json, `ListLogEntriesRequest` → `ListLogEntriesResponse`):
/// the Admin Activity entries of the world's `history` and of every IAM write since the start,
/// newest first, one page (at most `pageSize`, default 50).
pub(super) fn entries_list(st: &SimState, req: &Req) -> Reply {
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let filter = body.get("filter").and_then(|f| f.as_str()).unwrap_or("");
    let terms = match parse_filter(filter) {
        Ok(t) => t,
        Err(e) => return Reply::google(400, "INVALID_ARGUMENT", &format!("Invalid filter: {e}")),
    };
    let page = body.get("pageSize").and_then(|p| p.as_u64()).unwrap_or(50).clamp(1, 1000) as usize;
    let mut entries = audit_entries(st);
    entries.retain(|e| {
        terms.iter().all(|any| {
            any.iter().any(|(field, equals, value)| {
                let path = format!("/{}", field.replace('.', "/"));
                let got = e.pointer(&path).and_then(|v| v.as_str()).unwrap_or("");
                if *equals { got == value } else { got.contains(value.as_str()) }
            })
        })
    });
    entries.sort_by(|a, b| b["timestamp"].as_str().cmp(&a["timestamp"].as_str()));
    entries.truncate(page);
    Reply::json(200, &json!({ "entries": entries }))
}

fn audit_entries(st: &SimState) -> Vec<serde_json::Value> {
    let (seed, actor) = {
        let s = lock(&st.store);
        (s.audit_seed.clone(), s.config.service_account.clone())
    };
    let mut out = Vec::new();
    for h in &seed {
        let parts: Vec<&str> = h.service.split('/').collect();
        let [p, r, n] = parts.as_slice() else { continue };
        let resource = format!("projects/{p}/locations/{r}/services/{n}");
        let delta = json!({"action": "ADD", "role": h.role, "member": h.member});
        out.push(audit_entry(p, &resource, &h.by, &h.via, &h.at, vec![delta]));
    }
    let history = lock(&st.history).clone();
    for w in history {
        let project = w.resource.split('/').nth(1).unwrap_or("").to_string();
        // A client's setIamPolicy is made as the simulator's service account; a direct edit
        // stands for a person in the console.
        let (by, via) = match w.writer {
            super::Writer::Client => (actor.clone(), "api"),
            super::Writer::ConcurrentWriter => ("concurrent-writer@foreign.example".into(), "api"),
            super::Writer::Direct => ("console-user@sim.example".into(), "console"),
        };
        let deltas = binding_deltas(&w.before, &w.after);
        out.push(audit_entry(&project, &w.resource, &by, via, &w.at, deltas));
    }
    out.extend(update_entries(st, &actor));
    out
}

/// The `UpdateService` entries: the world's `settingsHistory`, then every `services.patch` and
/// direct settings edit since the start.
fn update_entries(st: &SimState, actor: &str) -> Vec<serde_json::Value> {
    let seed = lock(&st.store).settings_seed.clone();
    let mut out = Vec::new();
    for h in &seed {
        let parts: Vec<&str> = h.service.split('/').collect();
        let [p, r, n] = parts.as_slice() else { continue };
        if h.api == "v1" {
            let notes = v1_annotations(st, &seed, h);
            out.push(replace_entry(p, r, n, &h.by, &h.via, &h.at, notes));
            continue;
        }
        let resource = format!("projects/{p}/locations/{r}/services/{n}");
        let mut service = serde_json::Map::new();
        service.insert(h.field.clone(), h.value.clone());
        let request = update_request(&resource, service.into(), std::slice::from_ref(&h.field));
        out.push(update_entry(p, &resource, &h.by, &h.via, &h.at, request));
    }
    for w in lock(&st.service_writes).iter() {
        let project = w.resource.split('/').nth(1).unwrap_or("");
        let (by, via) = match w.writer {
            super::Writer::Direct => ("console-user@sim.example", "console"),
            _ => (actor, "api"),
        };
        let request = update_request(&w.resource, w.service.clone(), &w.mask);
        out.push(update_entry(project, &w.resource, by, via, &w.at, request));
    }
    out
}

/// The settings of `h`'s service when `h` was made, as v1 annotations: `h`'s own value, each
/// other setting as the newest earlier `settingsHistory` entry of it set it, else as the service
/// is now; plus the service's own annotations.
fn v1_annotations(st: &SimState, seed: &[super::world::SettingHistorySpec], h: &super::world::SettingHistorySpec) -> serde_json::Map<String, serde_json::Value> {
    let parts: Vec<String> = h.service.split('/').map(String::from).collect();
    let key: super::state::SvcKey = match parts.as_slice() {
        [p, r, n] => (p.clone(), r.clone(), n.clone()),
        _ => Default::default(),
    };
    let mut now = serde_json::Map::new();
    let mut notes = serde_json::Map::new();
    if let Some(svc) = lock(&st.store).services.get(&key) {
        now.insert("ingress".into(), svc.ingress.as_str().into());
        now.insert("invokerIamDisabled".into(), svc.invoker_iam_disabled.into());
        now.insert("iapEnabled".into(), svc.iap_enabled.into());
        now.insert("customAudiences".into(), json!(svc.custom_audiences));
        notes.extend(svc.annotations.iter().map(|(k, v)| (k.clone(), json!(v))));
    }
    for field in ["ingress", "invokerIamDisabled", "iapEnabled", "customAudiences"] {
        let then = seed
            .iter()
            .filter(|o| o.service == h.service && o.field == field && o.at <= h.at)
            .filter(|o| !std::ptr::eq(*o, h))
            .max_by(|a, b| a.at.cmp(&b.at))
            .map(|o| o.value.clone());
        let value = if field == h.field { Some(h.value.clone()) } else { then.or_else(|| now.get(field).cloned()) };
        // gcloud's lib: api_lib/run/service.py (INGRESS_ANNOTATION and its values, IAP_ANNOTATION),
        // container_resource.py (DISABLE_IAM_ANNOTATION), k8s_object.py (CUSTOM_AUDIENCES_ANNOTATION).
        match (field, value) {
            ("ingress", Some(v)) => {
                let v1 = match v.as_str() {
                    Some("INGRESS_TRAFFIC_ALL") => "all",
                    Some("INGRESS_TRAFFIC_INTERNAL_ONLY") => "internal",
                    Some("INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER") => "internal-and-cloud-load-balancing",
                    Some("INGRESS_TRAFFIC_NONE") => "none",
                    _ => continue,
                };
                notes.insert("run.googleapis.com/ingress".into(), v1.into());
            }
            ("invokerIamDisabled", Some(v)) if v == json!(true) => {
                notes.insert("run.googleapis.com/invoker-iam-disabled".into(), "true".into());
            }
            ("iapEnabled", Some(v)) if v == json!(true) => {
                notes.insert("run.googleapis.com/iap-enabled".into(), "true".into());
            }
            ("customAudiences", Some(v)) if v.as_array().is_some_and(|a| !a.is_empty()) => {
                notes.insert("run.googleapis.com/custom-audiences".into(), v.to_string().into());
            }
            _ => {}
        }
    }
    notes
}

/// One v1 `ReplaceService` Admin Activity entry, as `gcloud run services update` leaves it
/// (command_lib/run/serverless_operations.py `_UpdateOrCreateService` →
/// `namespaces_services.ReplaceService`): method `google.cloud.run.v1.Services.ReplaceService`
/// on `namespaces/P/services/S` (no region), the region in the resource's `location` label and
/// the request's `region`, the request a `google.cloud.run.v1.ReplaceServiceRequest` carrying the
/// whole Knative `Service` (run.v1 `Service`: apiVersion, kind, metadata).
fn replace_entry(p: &str, r: &str, n: &str, by: &str, via: &str, at: &str, notes: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    let request = json!({
        "@type": "type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest",
        "name": format!("projects/{p}/locations/{r}/services/{n}"),
        "region": r,
        "service": {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": n, "namespace": p, "annotations": notes},
        },
    });
    let resource = format!("namespaces/{p}/services/{n}");
    let mut entry = log_entry(p, &resource, by, via, at, "google.cloud.run.v1.Services.ReplaceService", "request", request);
    entry["resource"]["labels"] = json!({"project_id": p, "location": r, "service_name": n});
    entry
}

/// The `request` of an `UpdateService` entry: a `google.cloud.run.v2.UpdateServiceRequest`
/// (fields `service`, `updateMask`, `validateOnly`, `allowMissing`: the run_v2 types in
/// gcloud's lib, googlecloudsdk/generated_clients/gapic_clients/run_v2/types/service.py) in
/// proto3 JSON, `updateMask` a `FieldMask` (comma-separated paths), the `Service` in proto3 JSON
/// (fields at their default value omitted).
fn update_request(resource: &str, service: serde_json::Value, mask: &[String]) -> serde_json::Value {
    let mut service = service;
    if let Some(o) = service.as_object_mut() {
        o.retain(|_, v| !(v == &json!(false) || v == &json!([]) || v == &json!("")));
        o.insert("name".into(), resource.into());
    }
    json!({
        "@type": "type.googleapis.com/google.cloud.run.v2.UpdateServiceRequest",
        "service": service,
        "updateMask": mask.join(","),
    })
}

/// A `services.patch` as an `UpdateServiceRequest`'s `service` and mask paths (camelCase).
pub(super) fn patch_request(p: &super::state::ServicePatch) -> (serde_json::Value, Vec<String>) {
    let mut service = serde_json::Map::new();
    if let Some(v) = p.ingress {
        service.insert("ingress".into(), v.as_str().into());
    }
    if let Some(v) = p.invoker_iam_disabled {
        service.insert("invokerIamDisabled".into(), v.into());
    }
    if let Some(v) = &p.custom_audiences {
        service.insert("customAudiences".into(), json!(v));
    }
    if let Some(v) = p.iap_enabled {
        service.insert("iapEnabled".into(), v.into());
    }
    if let Some(v) = &p.labels {
        service.insert("labels".into(), json!(v));
    }
    if let Some(v) = &p.annotations {
        service.insert("annotations".into(), json!(v));
    }
    let mask = service.keys().cloned().collect();
    (service.into(), mask)
}

/// `AuditData.policyDelta.bindingDeltas` between two policies (ADD/REMOVE per role and member).
fn binding_deltas(before: &crate::iam::Policy, after: &crate::iam::Policy) -> Vec<serde_json::Value> {
    let pairs = |p: &crate::iam::Policy| -> std::collections::BTreeSet<(String, String)> {
        p.bindings
            .iter()
            .flat_map(|b| b.members.iter().map(move |m| (b.role.clone(), m.as_str().to_string())))
            .collect()
    };
    let (b, a) = (pairs(before), pairs(after));
    let added = a.difference(&b).map(|(r, m)| json!({"action": "ADD", "role": r, "member": m}));
    let removed = b.difference(&a).map(|(r, m)| json!({"action": "REMOVE", "role": r, "member": m}));
    added.chain(removed).collect()
}

/// One `SetIamPolicy` Admin Activity entry, its `serviceData` the policy delta.
fn audit_entry(
    project: &str,
    resource: &str,
    by: &str,
    via: &str,
    at: &str,
    deltas: Vec<serde_json::Value>,
) -> serde_json::Value {
    let data = json!({
        "@type": "type.googleapis.com/google.iam.v1.logging.AuditData",
        "policyDelta": {"bindingDeltas": deltas}
    });
    log_entry(project, resource, by, via, at, "google.cloud.run.v2.Services.SetIamPolicy", "serviceData", data)
}

/// One `UpdateService` Admin Activity entry (method `google.cloud.run.v2.Services.UpdateService`,
/// the gRPC method `/google.cloud.run.v2.Services/UpdateService` of gcloud's run_v2 transport,
/// named like `SetIamPolicy` above), its `request` the `UpdateServiceRequest`.
fn update_entry(project: &str, resource: &str, by: &str, via: &str, at: &str, request: serde_json::Value) -> serde_json::Value {
    log_entry(project, resource, by, via, at, "google.cloud.run.v2.Services.UpdateService", "request", request)
}

/// One Admin Activity `LogEntry` with an `AuditLog` `protoPayload` (Cloud Audit Logs:
/// https://cloud.google.com/logging/docs/reference/audit/auditlog/rest/Shared.Types/AuditLog;
/// `request` and `serviceData` are `Struct`s with an `@type`).
#[allow(clippy::too_many_arguments)]
fn log_entry(
    project: &str,
    resource: &str,
    by: &str,
    via: &str,
    at: &str,
    method: &str,
    key: &str,
    payload: serde_json::Value,
) -> serde_json::Value {
    let agent = match via {
        "console" => "Mozilla/5.0 (console.cloud.google.com)",
        "gcloud" if method.ends_with("UpdateService") || method.ends_with("ReplaceService") => "google-cloud-sdk gcloud/500.0.0 command/gcloud.run.services.update",
        "gcloud" => "google-cloud-sdk gcloud/500.0.0 command/gcloud.run.services.add-iam-policy-binding",
        _ => "runwarden-simulator-client",
    };
    let mut entry = json!({
        "logName": format!("projects/{project}/logs/cloudaudit.googleapis.com%2Factivity"),
        "resource": {"type": "cloud_run_revision", "labels": {"project_id": project}},
        "timestamp": at,
        "receiveTimestamp": at,
        "severity": "NOTICE",
        "insertId": format!("{:016x}", super::state::fnv(&format!("{resource}|{at}|{by}|{method}"))),
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "run.googleapis.com",
            "methodName": method,
            "resourceName": resource,
            "authenticationInfo": {"principalEmail": by},
            "requestMetadata": {"callerSuppliedUserAgent": agent},
        }
    });
    entry["protoPayload"][key] = payload;
    entry
}
