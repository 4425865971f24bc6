//! Google's APIs: Cloud Run Admin v2 (services, operations, IAM) and the v1 IAM methods gcloud
//! calls, IAP v1 IAM, Resource Manager v3 `projects.get`, and the OAuth token endpoint for
//! service-account JWT-bearer grants.
//!
//! Wire facts held to (see `reference/google/*.json` and Google's IAM docs): proto3 JSON omits
//! default values (false booleans, empty lists, the zero enum); `generation` is a JSON string; an
//! empty policy reads `{"etag":"ACAB"}`; a conditional policy read below version 3 shows each
//! conditional role as `ROLE_withcond_HASH` without its condition (Google's documented
//! behaviour); a stale etag is `409 ABORTED`; unknown projects are `403 PERMISSION_DENIED`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use axum::http::Method;
use serde_json::{Map, Value, json};

use crate::iam::{
    Binding, Condition, IAP_ACCESSOR, MAX_POLICY_GROUPS_AND_DOMAINS, MAX_POLICY_MEMBERS, Member, MemberKind, Policy, RUN_INVOKER,
};

use super::faults::ApiClass;
use super::http::{Reply, Req};
use super::state::{
    EMPTY_ETAG, IamResource, Operation, Service, ServicePatch, Store, SvcKey, fnv, merge_binding,
    rfc3339, uuid_from,
};
use super::world::IngressValue;
use super::{IamWrite, SimState, Writer, lock};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SERVICE_TYPE: &str = "type.googleapis.com/google.cloud.run.v2.Service";

/// Which quota a Google request counts against.
pub fn api_class(method: &Method, path: &str) -> Option<ApiClass> {
    let verb = path
        .rsplit('/')
        .next()
        .and_then(|last| last.split_once(':'))
        .map(|(_, v)| v);
    // Service Usage (`/v1beta1/`, the IAP agent's creation) counts with Resource Manager: both
    // are per-project control-plane calls runwarden makes once per project.
    if path.starts_with("/v3/") || path.starts_with("/v1beta1/") {
        return Some(ApiClass::ResourceManager);
    }
    let write = *method == Method::PATCH || verb == Some("setIamPolicy");
    if path.contains("/iap_web/") {
        return Some(if write {
            ApiClass::IapWrite
        } else {
            ApiClass::IapRead
        });
    }
    Some(if write {
        ApiClass::CloudRunWrite
    } else {
        ApiClass::CloudRunRead
    })
}

fn unauthenticated() -> Reply {
    let mut r = Reply::google(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    );
    r.headers.push((
        "www-authenticate",
        "Bearer realm=\"https://accounts.google.com/\"".into(),
    ));
    r
}

/// Checks the bearer token of a Google API call.
pub fn authenticate(st: &SimState, req: &Req) -> Result<(), Reply> {
    let Some(token) = req.bearer() else {
        return Err(unauthenticated());
    };
    let tokens = lock(&st.tokens);
    match tokens.google.get(token) {
        Some(expiry) if *expiry > Instant::now() => Ok(()),
        _ => Err(unauthenticated()),
    }
}

/// `POST /token`: the JWT-bearer grant of a service-account key.
pub fn token(st: &SimState, req: &Req) -> Reply {
    if req.method != Method::POST {
        return Reply::oauth(405, "invalid_request", "use POST");
    }
    let form = req.form();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match field("grant_type") {
        Some(JWT_BEARER) => {}
        Some(other) => {
            return Reply::oauth(
                400,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            );
        }
        None => {
            return Reply::oauth(
                400,
                "invalid_request",
                "Missing required parameter: grant_type",
            );
        }
    }
    let Some(assertion) = field("assertion") else {
        return Reply::oauth(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let (sa, lifetime) = {
        let s = lock(&st.store);
        (
            s.config.service_account.clone(),
            s.config.access_token_lifetime,
        )
    };
    let audiences = [
        format!("{}/token", req.origin()),
        // gcloud (google-auth) signs for Google's canonical token URI even when it posts to the
        // key file's token_uri; the real endpoint accepts both.
        "https://oauth2.googleapis.com/token".to_string(),
        "https://accounts.google.com/o/oauth2/token".to_string(),
    ];
    if let Err(description) =
        verify_assertion(assertion, &st.keys.google_sa.decoding, &sa, &audiences)
    {
        return Reply::oauth(400, "invalid_grant", &description);
    }
    let access_token = {
        let mut t = lock(&st.tokens);
        t.counter = t.counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let a = super::faults::SplitMix(t.counter).next_u64();
        let token = format!(
            "ya29.sim-{:016x}{:016x}",
            a,
            fnv(&format!("{a}")) ^ t.counter
        );
        t.google.insert(token.clone(), Instant::now() + lifetime);
        token
    };
    Reply::json(
        200,
        &json!({
            "access_token": access_token,
            "expires_in": lifetime.as_secs(),
            "token_type": "Bearer",
        }),
    )
}

/// Verifies a JWT-bearer assertion: RS256 signature by the key file's key, `iss` = the service
/// account, `aud` one of `audiences`, unexpired. Written by hand rather than with
/// `jsonwebtoken::decode` because gcp_auth encodes with *padded* base64url, which Google accepts
/// and jsonwebtoken's decoder refuses.
fn verify_assertion(
    jwt: &str,
    key: &jsonwebtoken::DecodingKey,
    sa: &str,
    audiences: &[String],
) -> Result<(), String> {
    use base64::Engine;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err("Invalid JWT: expected header.payload.signature.".into());
    };
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    };
    let head = decode(header).ok_or("Invalid JWT: the header is not base64url JSON.")?;
    if head["alg"] != "RS256" {
        return Err("Invalid JWT: the algorithm must be RS256.".into());
    }
    let message = format!("{header}.{payload}");
    let valid = jsonwebtoken::crypto::verify(
        signature.trim_end_matches('='),
        message.as_bytes(),
        key,
        jsonwebtoken::Algorithm::RS256,
    )
    .unwrap_or(false);
    if !valid {
        return Err("Invalid JWT Signature.".into());
    }
    let claims = decode(payload).ok_or("Invalid JWT: the claims are not base64url JSON.")?;
    if claims["iss"].as_str() != Some(sa) {
        return Err("Invalid JWT: the issuer must be the key file's client_email.".into());
    }
    if !claims["aud"]
        .as_str()
        .is_some_and(|a| audiences.iter().any(|x| x == a))
    {
        return Err(format!(
            "Invalid JWT: the audience must be the token URI {}.",
            audiences[0]
        ));
    }
    let now = super::state::epoch_seconds(SystemTime::now()) as i64;
    let exp = claims["exp"]
        .as_i64()
        .ok_or("Invalid JWT: exp is missing.")?;
    let iat = claims["iat"].as_i64().unwrap_or(now);
    if exp + 60 < now || iat > now + 60 || exp - iat > 3600 + 60 {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.".into());
    }
    Ok(())
}

/// Parsed `projects/P/locations/R/...` path after the version prefix.
struct Path<'a> {
    segs: Vec<&'a str>,
    verb: Option<&'a str>,
}

fn split(path: &str) -> Path<'_> {
    let mut segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut verb = None;
    if let Some(last) = segs.last_mut() {
        if let Some((name, v)) = last.split_once(':') {
            *last = name;
            verb = Some(v);
        }
    }
    Path { segs, verb }
}

/// The permissions a Google call needs, as Google's reference pages name them (Cloud Run:
/// https://cloud.google.com/run/docs/reference/iam/permissions; turning the invoker IAM check
/// back on also needs `run.services.create`, https://cloud.google.com/run/docs/authenticating/public).
/// `iam.serviceAccounts.actAs` on the runtime service account is not modelled (the simulator
/// has no runtime service accounts).
fn needed_permissions(req: &Req, p: &Path<'_>) -> Vec<&'static str> {
    let m = req.method.as_str();
    let iap = p.segs.contains(&"iap_web");
    match (p.segs.first().copied(), p.verb, m) {
        // cloudresourcemanager.v3.json names each method's permission in its description.
        (Some("v3"), Some("getIamPolicy"), _) => match p.segs.get(1).copied() {
            Some("folders") => vec!["resourcemanager.folders.getIamPolicy"],
            Some("organizations") => vec!["resourcemanager.organizations.getIamPolicy"],
            _ => vec!["resourcemanager.projects.getIamPolicy"],
        },
        (Some("v3"), _, _) if p.segs.get(1) == Some(&"folders") => vec!["resourcemanager.folders.get"],
        (Some("v3"), _, _) => vec!["resourcemanager.projects.get"],
        // Reading quotas: serviceusage.quotas.get (roles/serviceusage.serviceUsageViewer).
        (Some("v1beta1"), _, _) if p.segs.last() == Some(&"consumerQuotaMetrics") => {
            vec!["serviceusage.quotas.get"]
        }
        (Some("v1beta1"), _, _) => vec!["serviceusage.services.use"],
        // Cloud Logging `entries.list` needs logging.logEntries.list (roles/logging.viewer).
        (Some("v2"), Some("list"), "POST") if p.segs.get(1) == Some(&"entries") => vec!["logging.logEntries.list"],
        (_, Some("setIamPolicy"), _) if iap => vec!["iap.webServices.setIamPolicy"],
        (_, Some("setIamPolicy"), _) => vec!["run.services.setIamPolicy"],
        (_, Some("getIamPolicy"), _) if iap => vec!["iap.webServices.getIamPolicy"],
        (_, Some("getIamPolicy"), _) => vec!["run.services.getIamPolicy"],
        (_, _, "PATCH") => {
            let reenables_check = serde_json::from_slice::<Value>(&req.body)
                .ok()
                .is_some_and(|b| b.get("invokerIamDisabled") == Some(&Value::Bool(false)))
                && req.raw_query.contains("invokerIamDisabled");
            if reenables_check { vec!["run.services.update", "run.services.create"] } else { vec!["run.services.update"] }
        }
        _ if p.segs.contains(&"operations") => vec!["run.operations.get"],
        (_, None, "GET") if p.segs.len() == 6 => vec!["run.services.list"],
        (_, None, "GET") => vec!["run.services.get"],
        _ => vec![],
    }
}

/// Dispatches an authenticated Google API call.
pub fn handle(st: &SimState, req: &Req) -> Reply {
    let p = split(&req.path);
    let m = req.method.as_str();
    let lacking = {
        let s = lock(&st.store);
        needed_permissions(req, &p).into_iter().find(|n| s.config.missing_permissions.contains(*n))
    };
    if let Some(permission) = lacking {
        return permission_denied(permission, p.segs[1..].join("/").as_str());
    }
    match (p.segs.as_slice(), p.verb, m) {
        (["v3", "projects", id], None, "GET") => project_get(st, id),
        (["v1beta1", "projects", pr, "services", api, "consumerQuotaMetrics"], None, "GET") => {
            consumer_quota_metrics(st, pr, api)
        }
        (["v1beta1", "projects", pr, "services", api], Some("generateServiceIdentity"), "POST") => {
            generate_service_identity(st, pr, api)
        }
        (["v3", "projects", id], Some("getIamPolicy"), "POST") => {
            super::access::project_get_iam(st, req, id)
        }
        (["v3", kind @ ("folders" | "organizations"), id], Some("getIamPolicy"), "POST") => {
            super::access::ancestor_get_iam(st, req, &format!("{kind}/{id}"))
        }
        (["v3", "folders", id], None, "GET") => super::access::folder_get(st, id),
        (["v1", "roles", role], None, "GET") => super::access::role_get(role),
        (["v2", "entries"], Some("list"), "POST") => super::access::entries_list(st, req),
        (["v1", "projects", pr, "roles", role], None, "GET") => {
            super::access::custom_role_get(st, pr, role)
        }
        (["v2", "projects", pr, "locations", r, "services"], None, "GET") => list(st, req, pr, r),
        (["v2", "projects", pr, "locations", r, "services", s], None, "GET") => get(st, pr, r, s),
        (["v2", "projects", pr, "locations", r, "services", s], None, "PATCH") => {
            patch(st, req, pr, r, s)
        }
        (["v2", "projects", pr, "locations", r, "operations", id], None, "GET") => {
            operation_get(st, &format!("projects/{pr}/locations/{r}/operations/{id}"))
        }
        (["v2", "projects", pr, "locations", r, "operations", id], Some("wait"), "POST") => {
            operation_wait(
                st,
                req,
                &format!("projects/{pr}/locations/{r}/operations/{id}"),
            )
        }
        ([v, "projects", pr, "locations", r, "services", s], Some(verb), _)
            if *v == "v1" || *v == "v2" =>
        {
            let resource = Resource::Run {
                project: pr,
                region: r,
                service: s,
            };
            iam_method(st, req, resource, verb)
        }
        (["v1", "projects", number, "iap_web", kind, "services", s], Some(verb), "POST") => {
            match kind.strip_prefix("cloud_run-") {
                Some(region) => iam_method(
                    st,
                    req,
                    Resource::Iap {
                        project: number,
                        region,
                        service: s,
                    },
                    verb,
                ),
                None => not_found(&req.path),
            }
        }
        _ => not_found(&req.path),
    }
}

/// Service Usage `services.consumerQuotaMetrics.list` (serviceusage.v1beta1.json: `GET
/// v1beta1/{+parent}/consumerQuotaMetrics`, a `ListConsumerQuotaMetricsResponse`): the request
/// quotas the simulator enforces (`faults.rateLimits`), as the read and write request metrics
/// of `run.googleapis.com` (per consumer project and region, as Cloud Run's quotas are) and
/// `iap.googleapis.com` (per consumer project). Every caller is the same consumer, so each
/// project answers the same limits; a limit the simulator does not enforce is `-1`
/// (unlimited). One page; `view` and `pageSize` are accepted and ignored.
fn consumer_quota_metrics(st: &SimState, given: &str, api: &str) -> Reply {
    let number = {
        let s = lock(&st.store);
        let Some(project) = project_id(&s, given) else {
            return permission_denied("serviceusage.quotas.get", &format!("projects/{given}"));
        };
        s.projects[&project].number
    };
    // Cloud Run's metric names as Google's quota errors give them (see google/quota.rs); IAP's
    // are not confirmed by an outside source (modelled as `…/read_requests`).
    let (classes, kinds, unit) = match api {
        "run.googleapis.com" => ([ApiClass::CloudRunRead, ApiClass::CloudRunWrite], ["read_regional", "write_regional"], "1/min/{project}/{region}"),
        "iap.googleapis.com" => ([ApiClass::IapRead, ApiClass::IapWrite], ["read_requests", "write_requests"], "1/min/{project}"),
        _ => return Reply::json(200, &json!({})),
    };
    let faults = lock(&st.faults);
    let metrics: Vec<Value> = classes
        .iter()
        .zip(kinds)
        .map(|(class, kind)| {
            let per_minute = faults
                .limit(*class)
                .map_or(-1, |(rate, _)| (rate.count as f64 * 60.0 / rate.per.as_secs_f64()).floor() as i64);
            let metric = format!("{api}/{kind}");
            let escaped = metric.replace('/', "%2F");
            let parent = format!("projects/{number}/services/{api}/consumerQuotaMetrics/{escaped}");
            let limit_id = unit.trim_start_matches('1').replace('/', "%2F").replace(['{', '}'], "");
            let title = if kind.starts_with("read") { "Read requests" } else { "Write requests" };
            json!({
                "name": parent,
                "displayName": title,
                "metric": metric,
                "unit": "1/min/{project}",
                "consumerQuotaLimits": [{
                    "name": format!("{parent}/limits/{limit_id}"),
                    "metric": metric,
                    "unit": unit,
                    "isPrecise": true,
                    "allowsAdminOverrides": true,
                    "quotaBuckets": [{
                        "effectiveLimit": per_minute.to_string(),
                        "defaultLimit": per_minute.to_string(),
                    }],
                }],
            })
        })
        .collect();
    Reply::json(200, &json!({ "metrics": metrics }))
}

/// Service Usage `services.generateServiceIdentity` (reference/google/serviceusage.v1beta1.json:
/// `POST v1beta1/{+parent}:generateServiceIdentity`, answering an `Operation` whose `response`
/// is a `ServiceIdentity`). Only `iap.googleapis.com` is modelled; the operation is done at once.
fn generate_service_identity(st: &SimState, given: &str, api: &str) -> Reply {
    let mut s = lock(&st.store);
    let Some(project) = project_id(&s, given) else {
        return permission_denied("serviceusage.services.use", &format!("projects/{given}"));
    };
    if api != "iap.googleapis.com" {
        return invalid(&format!("The simulator only creates the service identity of iap.googleapis.com, not {api}."));
    }
    let p = s.projects.get_mut(&project).expect("resolved project");
    p.iap_agent = true;
    let number = p.number;
    Reply::json(200, &json!({
        "name": format!("operations/finished.DONE_OPERATION.sim-{number}"),
        "done": true,
        "response": {
            "@type": "type.googleapis.com/google.api.serviceusage.v1beta1.ServiceIdentity",
            "email": format!("service-{number}@gcp-sa-iap.iam.gserviceaccount.com"),
            "uniqueId": format!("1{number:020}"),
        }
    }))
}

/// The first member of `set` that is the IAP service agent of a project in the world whose
/// agent Google has not created yet: such a grant is refused as Google refuses a grant to any
/// service account that does not exist (400 INVALID_ARGUMENT, "Service account ... does not
/// exist."; gcloud's `_HandleIap` in command_lib/run/serverless_operations.py treats that 400
/// as "IAP service agent not ready yet").
fn missing_iap_agent(s: &Store, set: &SetIam) -> Option<String> {
    set.bindings.iter().flat_map(|(_, members, _)| members.iter()).find_map(|m| {
        let email = m.as_str().strip_prefix("serviceAccount:")?;
        let number: u64 = email.strip_prefix("service-")?.strip_suffix("@gcp-sa-iap.iam.gserviceaccount.com")?.parse().ok()?;
        let project = s.project_by_number.get(&number)?;
        (!s.projects.get(project)?.iap_agent).then(|| email.to_string())
    })
}

fn not_found(path: &str) -> Reply {
    Reply::google(
        404,
        "NOT_FOUND",
        &format!("The simulator does not serve {path} (method not found)."),
    )
}

pub(super) fn permission_denied(permission: &str, resource: &str) -> Reply {
    let mut r = Reply::json(
        403,
        &json!({"error": {
            "code": 403,
            "message": format!("Permission '{permission}' denied on resource '{resource}' (or it may not exist)."),
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": {"permission": permission, "resource": resource}
            }]
        }}),
    );
    r.headers.clear();
    r
}

fn invalid(message: &str) -> Reply {
    Reply::google(400, "INVALID_ARGUMENT", message)
}

/// Resolves a project given by id or number to its id.
pub(super) fn project_id(store: &Store, given: &str) -> Option<String> {
    if store.projects.contains_key(given) {
        return Some(given.to_string());
    }
    given
        .parse::<u64>()
        .ok()
        .and_then(|n| store.project_by_number.get(&n).cloned())
}

fn project_get(st: &SimState, given: &str) -> Reply {
    let s = lock(&st.store);
    let Some(id) = project_id(&s, given) else {
        return permission_denied(
            "resourcemanager.projects.get",
            &format!("//cloudresourcemanager.googleapis.com/projects/{given}"),
        );
    };
    let p = &s.projects[&id];
    let mut body = json!({
        "name": format!("projects/{}", p.number),
        "projectId": p.id,
        "state": "ACTIVE",
        "displayName": p.display_name,
        "createTime": "2024-01-01T00:00:00.000Z",
        "updateTime": "2024-01-01T00:00:00.000Z",
        "etag": format!("W/\"{:016x}\"", fnv(&p.id)),
    });
    // proto3 JSON omits an unset field: a project outside any organization has no `parent`.
    if let Some(parent) = &p.parent {
        body["parent"] = parent.as_str().into();
    }
    Reply::json(200, &body)
}

/// Renders a service in the v2 wire format (proto3 JSON: defaults omitted).
pub fn service_json(key: &SvcKey, svc: &Service) -> Value {
    let (project, region, name) = key;
    let full = format!("projects/{project}/locations/{region}/services/{name}");
    let revision = format!(
        "projects/{project}/locations/{region}/revisions/{name}-{:05}-sim",
        svc.generation
    );
    let mut v = Map::new();
    v.insert("name".into(), full.into());
    v.insert("uid".into(), svc.uid.clone().into());
    v.insert("generation".into(), svc.generation.to_string().into());
    if !svc.labels.is_empty() {
        v.insert("labels".into(), json!(svc.labels));
    }
    if !svc.annotations.is_empty() {
        v.insert("annotations".into(), json!(svc.annotations));
    }
    v.insert("createTime".into(), svc.create_time.clone().into());
    v.insert("updateTime".into(), svc.update_time.clone().into());
    v.insert("creator".into(), "deployer@example.com".into());
    v.insert("lastModifier".into(), "deployer@example.com".into());
    v.insert("launchStage".into(), "GA".into());
    if svc.ingress != IngressValue::IngressTrafficUnspecified {
        v.insert("ingress".into(), svc.ingress.as_str().into());
    }
    if svc.invoker_iam_disabled {
        v.insert("invokerIamDisabled".into(), true.into());
    }
    if !svc.custom_audiences.is_empty() {
        v.insert("customAudiences".into(), json!(svc.custom_audiences));
    }
    if svc.iap_enabled {
        v.insert("iapEnabled".into(), true.into());
    }
    v.insert("template".into(), json!({
        "containers": [{"image": "us-docker.pkg.dev/cloudrun/container/hello", "ports": [{"name": "http1", "containerPort": 8080}]}],
        "maxInstanceRequestConcurrency": 80,
        "timeout": "300s",
    }));
    v.insert(
        "traffic".into(),
        json!([{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}]),
    );
    v.insert(
        "observedGeneration".into(),
        svc.generation.to_string().into(),
    );
    v.insert("terminalCondition".into(), json!({"type": "Ready", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": svc.update_time}));
    v.insert("conditions".into(), json!([
        {"type": "RoutesReady", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": svc.update_time},
        {"type": "ConfigurationsReady", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": svc.update_time},
    ]));
    v.insert("latestReadyRevision".into(), revision.clone().into());
    v.insert("latestCreatedRevision".into(), revision.into());
    v.insert(
        "trafficStatuses".into(),
        json!([{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}]),
    );
    v.insert("uri".into(), svc.uri.clone().into());
    v.insert("urls".into(), json!([svc.uri]));
    if svc.reconciling {
        v.insert("reconciling".into(), true.into());
    }
    v.insert("etag".into(), svc.etag.clone().into());
    Value::Object(v)
}

fn service_not_found(project: &str, region: &str, name: &str) -> Reply {
    Reply::google(
        404,
        "NOT_FOUND",
        &format!(
            "Resource '{name}' of kind 'SERVICE' in region '{region}' in project '{project}' does not exist."
        ),
    )
}

fn list(st: &SimState, req: &Req, given: &str, region: &str) -> Reply {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let page_size = match req.q("pageSize").map(str::parse::<i64>) {
        None => 100,
        Some(Ok(n)) if n > 0 => n.min(500) as usize,
        Some(Ok(0)) => 100,
        Some(_) => return invalid("pageSize must be a non-negative integer."),
    };
    let after = match req.q("pageToken").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => match b64.decode(t).ok().and_then(|b| String::from_utf8(b).ok()) {
            Some(name) => Some(name),
            None => return invalid("Invalid page token."),
        },
    };
    let mut s = lock(&st.store);
    s.settle(Instant::now());
    let Some(project) = project_id(&s, given) else {
        return permission_denied(
            "run.services.list",
            &format!("projects/{given}/locations/{region}"),
        );
    };
    let lower = (
        project.clone(),
        region.to_string(),
        after.clone().unwrap_or_default(),
    );
    let mut services = Vec::new();
    let mut next = None;
    for (key, svc) in s.services.range(lower..) {
        if key.0 != project || key.1 != region {
            break;
        }
        if after.as_deref() == Some(key.2.as_str()) {
            continue;
        }
        if services.len() == page_size {
            next = Some(b64.encode(services_last_name(&services)));
            break;
        }
        services.push(service_json(key, svc));
    }
    let mut body = Map::new();
    if !services.is_empty() {
        body.insert("services".into(), Value::Array(services));
    }
    if let Some(token) = next {
        body.insert("nextPageToken".into(), token.into());
    }
    Reply::json(200, &Value::Object(body))
}

fn services_last_name(services: &[Value]) -> String {
    services
        .last()
        .and_then(|s| s["name"].as_str())
        .and_then(|n| n.rsplit('/').next())
        .unwrap_or("")
        .to_string()
}

fn get(st: &SimState, given: &str, region: &str, name: &str) -> Reply {
    let mut s = lock(&st.store);
    s.settle(Instant::now());
    let Some(project) = project_id(&s, given) else {
        return permission_denied(
            "run.services.get",
            &format!("projects/{given}/locations/{region}/services/{name}"),
        );
    };
    let key = (project, region.to_string(), name.to_string());
    match s.services.get(&key) {
        Some(svc) => Reply::json(200, &service_json(&key, svc)),
        None => service_not_found(&key.0, region, name),
    }
}

const PATCHABLE: &[(&str, &str)] = &[
    ("ingress", "ingress"),
    ("invokerIamDisabled", "invoker_iam_disabled"),
    ("customAudiences", "custom_audiences"),
    ("iapEnabled", "iap_enabled"),
    ("labels", "labels"),
    ("annotations", "annotations"),
];

fn patch(st: &SimState, req: &Req, given: &str, region: &str, name: &str) -> Reply {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => return invalid("Invalid JSON payload: the body must be a Service object."),
    };
    let change = match patch_fields(req, &body).and_then(|fields| parse_patch(&fields, &body)) {
        Ok(change) => change,
        Err(reply) => return reply,
    };
    let fail_p = lock(&st.faults).faults.operation_failure_rate;
    let fails = fail_p > 0.0 && lock(&st.rng).next_f64() < fail_p;
    let validate_only = req.q("validateOnly") == Some("true");
    let mut s = lock(&st.store);
    s.settle(Instant::now());
    let Some(project) = project_id(&s, given) else {
        return permission_denied(
            "run.services.update",
            &format!("projects/{given}/locations/{region}/services/{name}"),
        );
    };
    let key = (project.clone(), region.to_string(), name.to_string());
    let delay = s.config.operation_delay;
    let Some(svc) = s.services.get(&key) else {
        return service_not_found(&project, region, name);
    };
    if let Some(etag) = body
        .get("etag")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
    {
        if etag != svc.etag {
            return Reply::google(
                409,
                "ABORTED",
                &format!(
                    "Resource '{name}' has changed: the etag {etag} is stale; read the service again and retry."
                ),
            );
        }
    }
    let a = fnv(&format!("{}{:?}", svc.uid, Instant::now()));
    let op_name = format!(
        "projects/{project}/locations/{region}/operations/{}",
        uuid_from(a, fnv(&a.to_string()) ^ s.pending.len() as u64)
    );
    let done_at = Instant::now() + if validate_only { Duration::ZERO } else { delay };
    let op = Operation {
        name: op_name.clone(),
        service: key.clone(),
        done_at,
        patch: if validate_only {
            ServicePatch::default()
        } else {
            change
        },
        fails: fails && !validate_only,
        done: false,
    };
    if let Some(svc) = s.services.get_mut(&key) {
        svc.reconciling = !validate_only;
    }
    if !validate_only {
        // Admin Activity records the call (`UpdateService`), whether its operation succeeds or not.
        let (service, mask) = super::access::patch_request(&op.patch);
        lock(&st.service_writes).push(super::ServiceWrite {
            resource: format!("projects/{project}/locations/{region}/services/{name}"),
            service,
            mask,
            writer: super::Writer::Client,
            at: rfc3339(SystemTime::now()),
        });
    }
    s.operations.insert(op_name.clone(), op);
    s.pending.push(op_name.clone());
    let metadata = service_json(&key, &s.services[&key]);
    Reply::json(
        200,
        &json!({"name": op_name, "metadata": with_type(metadata)}),
    )
}

/// Which fields a patch changes: the update mask, or (without one) the managed fields present.
fn patch_fields(req: &Req, body: &Value) -> Result<Vec<&'static str>, Reply> {
    let fields = match req.q("updateMask") {
        Some(mask) => {
            let mut fields = Vec::new();
            for path in mask.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match PATCHABLE
                    .iter()
                    .find(|(camel, snake)| path == *camel || path == *snake)
                {
                    Some((camel, _)) => fields.push(*camel),
                    None => {
                        return Err(invalid(&format!(
                            "Invalid update mask path \"{path}\": the simulator supports {}.",
                            PATCHABLE
                                .iter()
                                .map(|(c, _)| *c)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
            }
            fields
        }
        None => PATCHABLE
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| body.get(*c).is_some())
            .collect(),
    };
    Ok(fields)
}

/// The change a patch asks for, each field checked like Cloud Run checks it.
fn parse_patch(fields: &[&str], body: &Value) -> Result<ServicePatch, Reply> {
    let mut change = ServicePatch::default();
    for f in fields {
        let v = &body[*f];
        match *f {
            "ingress" => {
                let text = v.as_str().unwrap_or("INGRESS_TRAFFIC_UNSPECIFIED");
                match IngressValue::parse(text) {
                    // Unspecified on write means the default, all traffic.
                    Some(IngressValue::IngressTrafficUnspecified) => {
                        change.ingress = Some(IngressValue::IngressTrafficAll)
                    }
                    Some(i) => change.ingress = Some(i),
                    None => {
                        return Err(invalid(&format!(
                            "Invalid value at 'service.ingress' (type.googleapis.com/google.cloud.run.v2.IngressTraffic), \"{text}\""
                        )));
                    }
                }
            }
            "invokerIamDisabled" => {
                change.invoker_iam_disabled = Some(v.as_bool().unwrap_or(false))
            }
            "iapEnabled" => change.iap_enabled = Some(v.as_bool().unwrap_or(false)),
            "customAudiences" => match v {
                Value::Null => change.custom_audiences = Some(vec![]),
                Value::Array(a) if a.iter().all(Value::is_string) => {
                    change.custom_audiences = Some(
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect(),
                    )
                }
                _ => {
                    return Err(invalid(
                        "Invalid value at 'service.custom_audiences': expected a list of strings.",
                    ));
                }
            },
            "labels" => match v {
                Value::Null => change.labels = Some(Default::default()),
                Value::Object(m) if m.values().all(Value::is_string) => {
                    change.labels = Some(
                        m.iter()
                            .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_string()))
                            .collect(),
                    )
                }
                _ => {
                    return Err(invalid(
                        "Invalid value at 'service.labels': expected a map of strings.",
                    ));
                }
            },
            "annotations" => change.annotations = Some(parse_annotations(v)?),
            _ => {}
        }
    }
    Ok(change)
}

/// Namespaces run.v2.json (`GoogleCloudRunV2Service.annotations`) says Cloud Run v2 rejects.
const RESERVED_ANNOTATION_PREFIXES: &[&str] = &[
    "run.googleapis.com/",
    "cloud.googleapis.com/",
    "serving.knative.dev/",
    "autoscaling.knative.dev/",
];

/// Kubernetes' limit on all annotations of one object together (keys and values), which the
/// discovery document says Cloud Run's annotations follow: 256 KiB
/// (k8s.io/apimachinery `ValidateAnnotationsSize`, `TotalAnnotationSizeLimitB`).
const ANNOTATIONS_SIZE_LIMIT: usize = 256 * 1024;

/// A patch's `annotations` map (the mask path replaces the whole map), checked like Cloud Run.
fn parse_annotations(v: &Value) -> Result<BTreeMap<String, String>, Reply> {
    let map: BTreeMap<String, String> = match v {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Object(m) if m.values().all(Value::is_string) => m
            .iter()
            .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_string()))
            .collect(),
        _ => {
            return Err(invalid(
                "Invalid value at 'service.annotations': expected a map of strings.",
            ));
        }
    };
    if let Some(k) = map
        .keys()
        .find(|k| RESERVED_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p)))
    {
        return Err(invalid(&format!(
            "Annotation key \"{k}\" is not supported: Cloud Run API v2 does not support annotations in the run.googleapis.com, cloud.googleapis.com, serving.knative.dev or autoscaling.knative.dev namespaces."
        )));
    }
    let size: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > ANNOTATIONS_SIZE_LIMIT {
        return Err(invalid(&format!(
            "metadata.annotations: Too long: must have at most {ANNOTATIONS_SIZE_LIMIT} bytes (got {size})."
        )));
    }
    Ok(map)
}

fn with_type(mut service: Value) -> Value {
    if let Value::Object(m) = &mut service {
        let mut typed = Map::new();
        typed.insert("@type".into(), SERVICE_TYPE.into());
        typed.extend(std::mem::take(m));
        *m = typed;
    }
    service
}

fn operation_json(s: &Store, op: &Operation) -> Value {
    let service = s
        .services
        .get(&op.service)
        .map(|svc| with_type(service_json(&op.service, svc)));
    let mut v = Map::new();
    v.insert("name".into(), op.name.clone().into());
    if let Some(m) = &service {
        v.insert("metadata".into(), m.clone());
    }
    if op.done {
        v.insert("done".into(), true.into());
        if op.fails {
            v.insert("error".into(), json!({
                "code": 9,
                "message": format!("Revision '{}-sim-failed' is not ready and cannot serve traffic. The user-provided container failed to start (simulated operation failure).", op.service.2),
            }));
        } else if let Some(m) = service {
            v.insert("response".into(), m);
        }
    }
    Value::Object(v)
}

/// The current state of an operation (also the answer of `:wait` after its sleep).
pub fn operation_reply(st: &SimState, name: &str) -> Reply {
    let mut s = lock(&st.store);
    s.settle(Instant::now());
    match s.operations.get(name) {
        Some(op) => Reply::json(200, &operation_json(&s, op)),
        None => Reply::google(
            404,
            "NOT_FOUND",
            &format!("Operation '{name}' does not exist."),
        ),
    }
}

fn operation_get(st: &SimState, name: &str) -> Reply {
    operation_reply(st, name)
}

fn operation_wait(st: &SimState, req: &Req, name: &str) -> Reply {
    let timeout = serde_json::from_slice::<Value>(&req.body)
        .ok()
        .and_then(|b| b.get("timeout").and_then(Value::as_str).map(String::from))
        .and_then(|t| super::faults::parse_duration(&t).ok())
        .unwrap_or(Duration::from_secs(60))
        .min(Duration::from_secs(600));
    if lock(&st.faults).faults.early_wait {
        return operation_reply(st, name);
    }
    let s = lock(&st.store);
    match s.operations.get(name) {
        None => Reply::google(
            404,
            "NOT_FOUND",
            &format!("Operation '{name}' does not exist."),
        ),
        Some(op) => {
            let until = op.done_at.min(Instant::now() + timeout);
            Reply {
                status: 200,
                headers: vec![],
                body: String::new(),
                wait: Some((name.to_string(), until)),
            }
        }
    }
}

/// An IAM resource addressed by a request.
#[derive(Clone, Copy)]
enum Resource<'a> {
    Run {
        project: &'a str,
        region: &'a str,
        service: &'a str,
    },
    Iap {
        project: &'a str,
        region: &'a str,
        service: &'a str,
    },
}

impl Resource<'_> {
    fn name(&self) -> String {
        match self {
            Resource::Run {
                project,
                region,
                service,
            } => format!("projects/{project}/locations/{region}/services/{service}"),
            Resource::Iap {
                project,
                region,
                service,
            } => format!("projects/{project}/iap_web/cloud_run-{region}/services/{service}"),
        }
    }

    fn permission(&self, verb: &str) -> String {
        match self {
            Resource::Run { .. } => format!("run.services.{verb}"),
            Resource::Iap { .. } => format!("iap.webServices.{verb}"),
        }
    }
}

fn iam_method(st: &SimState, req: &Req, res: Resource<'_>, verb: &str) -> Reply {
    let method = req.method.as_str();
    match (verb, method, res) {
        ("getIamPolicy", "GET", Resource::Run { .. })
        | ("getIamPolicy", "POST", Resource::Iap { .. }) => get_iam(st, req, res),
        ("setIamPolicy", "POST", _) => set_iam(st, req, res),
        ("testIamPermissions", "POST", _) => test_iam(st, req, res),
        _ => not_found(&req.path),
    }
}

/// Finds the resource's policy; Err is the reply for a missing project or service.
fn with_resource<T>(
    s: &mut Store,
    res: Resource<'_>,
    verb: &str,
    f: impl FnOnce(&mut IamResource, &mut u64) -> T,
) -> Result<(T, String), Reply> {
    let (given, region, service, iap) = match res {
        Resource::Run {
            project,
            region,
            service,
        } => (project, region, service, false),
        Resource::Iap {
            project,
            region,
            service,
        } => (project, region, service, true),
    };
    let Some(project) = project_id(s, given) else {
        return Err(permission_denied(&res.permission(verb), &res.name()));
    };
    let key = (project.clone(), region.to_string(), service.to_string());
    let number = s.projects[&project].number;
    let Some(svc) = s.services.get_mut(&key) else {
        return Err(if iap {
            permission_denied(&res.permission(verb), &res.name())
        } else {
            service_not_found(&project, region, service)
        });
    };
    let canonical = if iap {
        format!("projects/{number}/iap_web/cloud_run-{region}/services/{service}")
    } else {
        format!("projects/{project}/locations/{region}/services/{service}")
    };
    let mut number_out = number;
    let out = f(
        if iap { &mut svc.iap } else { &mut svc.iam },
        &mut number_out,
    );
    Ok((out, canonical))
}

pub(super) fn requested_version(req: &Req) -> Result<u32, Reply> {
    let raw: Option<i64> = if req.method == Method::GET {
        match req
            .q("options.requestedPolicyVersion")
            .or_else(|| req.q("options_requestedPolicyVersion"))
        {
            None => None,
            Some(t) => Some(
                t.parse()
                    .map_err(|_| invalid("options.requestedPolicyVersion must be an integer."))?,
            ),
        }
    } else {
        serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|b| {
                b.pointer("/options/requestedPolicyVersion")
                    .and_then(Value::as_i64)
            })
    };
    match raw.unwrap_or(0) {
        v @ (0 | 1 | 3) => Ok(v as u32),
        v => Err(invalid(&format!(
            "Invalid requested policy version {v}: valid values are 0, 1 and 3."
        ))),
    }
}

/// The stored policy as a domain value: version 0 when empty, 3 when conditional, else 1.
pub fn stored_view(p: &Policy) -> Policy {
    let version = if p.bindings.is_empty() {
        0
    } else if p.bindings.iter().any(|b| b.condition.is_some()) {
        3
    } else {
        1
    };
    Policy {
        version,
        etag: p.etag.clone(),
        bindings: p.bindings.clone(),
    }
}

/// Renders a policy as read at `requested` version (Google's rules, see the module docs).
pub(super) fn policy_json(p: &Policy, requested: u32) -> Value {
    let mut v = Map::new();
    if !p.bindings.is_empty() {
        let conditional = p.bindings.iter().any(|b| b.condition.is_some());
        let show_conditions = conditional && requested == 3;
        v.insert("version".into(), if show_conditions { 3 } else { 1 }.into());
        let bindings: Vec<Value> = p
            .bindings
            .iter()
            .map(|b| {
                let mut o = Map::new();
                match (&b.condition, show_conditions) {
                    (Some(c), false) => {
                        let hash = fnv(&format!(
                            "{}|{}|{}",
                            c.title,
                            c.expression,
                            c.description.as_deref().unwrap_or("")
                        ));
                        o.insert(
                            "role".into(),
                            format!("{}_withcond_{:016x}{:04x}", b.role, hash, hash >> 48).into(),
                        );
                    }
                    _ => {
                        o.insert("role".into(), b.role.clone().into());
                    }
                }
                o.insert(
                    "members".into(),
                    b.members.iter().map(|m| Value::from(m.as_str())).collect(),
                );
                if let (Some(c), true) = (&b.condition, show_conditions) {
                    let mut cj = Map::new();
                    cj.insert("expression".into(), c.expression.clone().into());
                    cj.insert("title".into(), c.title.clone().into());
                    if let Some(d) = &c.description {
                        cj.insert("description".into(), d.clone().into());
                    }
                    o.insert("condition".into(), Value::Object(cj));
                }
                Value::Object(o)
            })
            .collect();
        v.insert("bindings".into(), Value::Array(bindings));
    }
    v.insert("etag".into(), p.etag.clone().into());
    Value::Object(v)
}

fn get_iam(st: &SimState, req: &Req, res: Resource<'_>) -> Reply {
    let requested = match requested_version(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let arm_p = lock(&st.faults).faults.concurrent_writer;
    let arm = arm_p > 0.0 && lock(&st.rng).next_f64() < arm_p;
    let mut s = lock(&st.store);
    match with_resource(&mut s, res, "getIamPolicy", |r, _| {
        if arm {
            r.armed = true;
        }
        policy_json(&r.policy, requested)
    }) {
        Ok((body, _)) => Reply::json(200, &body),
        Err(r) => r,
    }
}

/// A wire binding as clients send it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBinding {
    role: Option<String>,
    #[serde(default)]
    members: Vec<String>,
    condition: Option<WireCondition>,
}

#[derive(serde::Deserialize)]
struct WireCondition {
    #[serde(default)]
    title: String,
    description: Option<String>,
    #[serde(default)]
    expression: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePolicy {
    version: Option<i64>,
    #[serde(default)]
    bindings: Vec<WireBinding>,
    etag: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetRequest {
    policy: Option<WirePolicy>,
    update_mask: Option<String>,
}

fn valid_role(role: &str) -> bool {
    let custom = |prefix: &str| {
        role.strip_prefix(prefix)
            .and_then(|rest| rest.split_once("/roles/"))
            .is_some_and(|(owner, name)| !owner.is_empty() && !name.is_empty())
    };
    (role
        .strip_prefix("roles/")
        .is_some_and(|r| !r.is_empty() && !r.contains('/'))
        || custom("projects/")
        || custom("organizations/"))
        && !role.contains("_withcond_")
}

/// A parsed binding: role, members, condition.
type ParsedBinding = (String, BTreeSet<Member>, Option<Condition>);

/// A `setIamPolicy` request that passed every check that needs no stored state.
struct SetIam {
    version: i64,
    bindings: Vec<ParsedBinding>,
    update_bindings: bool,
    check_etag: bool,
    sent_etag: Option<String>,
}

fn set_iam(st: &SimState, req: &Req, res: Resource<'_>) -> Reply {
    let set = match parse_set_iam(req) {
        Ok(set) => set,
        Err(reply) => return reply,
    };
    let mut s = lock(&st.store);
    if let Some(agent) = missing_iap_agent(&s, &set) {
        return invalid(&format!("Service account {agent} does not exist."));
    }
    let mut strike_etag = s.next_etag();
    let new_etag = s.next_etag();
    let mut writes: Vec<IamWrite> = Vec::new();
    let result = with_resource(&mut s, res, "setIamPolicy", |r, _| {
        // The concurrent writer strikes between the caller's read and this write.
        if r.armed {
            r.armed = false;
            writes.push(concurrent_write(r, res, std::mem::take(&mut strike_etag)));
        }
        let bindings = checked_bindings(r, set)?;
        let before = stored_view(&r.policy);
        r.policy = Policy {
            version: 1,
            etag: new_etag.clone(),
            bindings,
        };
        writes.push(IamWrite {
            resource: res.name(),
            before,
            after: stored_view(&r.policy),
            etag: new_etag.clone(),
            writer: Writer::Client,
            at: rfc3339(std::time::SystemTime::now()),
        });
        Ok(policy_json(&r.policy, 3))
    });
    drop(s);
    // Record the canonical resource name and keep the history even when the write was refused
    // (the concurrent writer's edit happened regardless).
    let canonical = match &result {
        Ok((_, c)) => Some(c.clone()),
        Err(_) => None,
    };
    if !writes.is_empty() {
        let mut h = lock(&st.history);
        for mut w in writes {
            if let Some(c) = &canonical {
                w.resource = c.clone();
            }
            h.push(w);
        }
    }
    match result {
        Ok((Ok(body), _)) => Reply::json(200, &body),
        Ok((Err(reply), _)) => reply,
        Err(reply) => reply,
    }
}

/// Parses and validates the request before touching the state: the update mask, the version,
/// every binding.
fn parse_set_iam(req: &Req) -> Result<SetIam, Reply> {
    let body: SetRequest = serde_json::from_slice(&req.body)
        .map_err(|e| invalid(&format!("Invalid JSON payload received: {e}")))?;
    let Some(policy) = body.policy else {
        return Err(invalid(
            "Request contains an invalid argument: policy is required.",
        ));
    };
    let mask: Vec<String> = match &body.update_mask {
        Some(m) => m
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        None => vec!["bindings".into(), "etag".into()],
    };
    for path in &mask {
        if !matches!(
            path.as_str(),
            "bindings" | "etag" | "version" | "auditConfigs" | "audit_configs"
        ) {
            return Err(invalid(&format!(
                "Invalid field mask path \"{path}\": only bindings, etag, version and auditConfigs may be set."
            )));
        }
    }
    let version = policy.version.unwrap_or(0);
    if !matches!(version, 0 | 1 | 3) {
        return Err(invalid(&format!(
            "Invalid policy version {version}: valid values are 0, 1 and 3."
        )));
    }
    let bindings = policy
        .bindings
        .iter()
        .map(parse_binding)
        .collect::<Result<Vec<_>, Reply>>()?;
    if bindings.iter().any(|(_, _, c)| c.is_some()) && version != 3 {
        return Err(invalid(
            "Policy version 3 is required to set a policy with conditional role bindings; set policy.version to 3.",
        ));
    }
    Ok(SetIam {
        version,
        bindings,
        update_bindings: mask.iter().any(|p| p == "bindings"),
        check_etag: mask.iter().any(|p| p == "etag"),
        sent_etag: policy.etag.clone().filter(|e| !e.is_empty()),
    })
}

fn parse_binding(b: &WireBinding) -> Result<ParsedBinding, Reply> {
    let Some(role) = b.role.as_deref().filter(|r| !r.is_empty()) else {
        return Err(invalid(
            "Request contains an invalid argument: every binding needs a role.",
        ));
    };
    if !valid_role(role) {
        return Err(invalid(&format!(
            "Role {role} is not supported for this resource."
        )));
    }
    let mut members = BTreeSet::new();
    for m in &b.members {
        let member = Member::parse(m).map_err(|e| {
            invalid(&format!(
                "Invalid principal {m:?} in binding for {role}: {}.",
                e.reason
            ))
        })?;
        members.insert(member);
    }
    let condition = match &b.condition {
        None => None,
        Some(c) => {
            if c.expression.trim().is_empty() || c.title.trim().is_empty() {
                return Err(invalid("A condition needs a title and an expression."));
            }
            Some(Condition {
                title: c.title.clone(),
                description: c.description.clone(),
                expression: c.expression.clone(),
            })
        }
    };
    Ok((role.to_string(), members, condition))
}

/// The armed concurrent writer's edit: a foreign member added under a new etag.
fn concurrent_write(r: &mut IamResource, res: Resource<'_>, etag: String) -> IamWrite {
    let before = stored_view(&r.policy);
    let role = if matches!(res, Resource::Iap { .. }) {
        IAP_ACCESSOR
    } else {
        RUN_INVOKER
    };
    let member = Member::parse(&format!(
        "user:concurrent-{}@foreign.example",
        &etag[3..].replace(['+', '/', '='], "x").to_lowercase()
    ))
    .expect("the concurrent writer's member is well formed");
    merge_binding(
        &mut r.policy.bindings,
        role.to_string(),
        BTreeSet::from([member]),
        None,
    );
    r.policy.etag = etag;
    IamWrite {
        resource: res.name(),
        before,
        after: stored_view(&r.policy),
        etag: r.policy.etag.clone(),
        writer: Writer::ConcurrentWriter,
        at: rfc3339(std::time::SystemTime::now()),
    }
}

/// The bindings the write stores, after the checks that need the stored policy: the etag, the
/// version of a conditional policy, deleted principals, the member limit.
fn checked_bindings(r: &IamResource, set: SetIam) -> Result<Vec<Binding>, Reply> {
    if let Some(e) = set.sent_etag.as_ref().filter(|_| set.check_etag) {
        if *e != r.policy.etag {
            return Err(Reply::google(
                409,
                "ABORTED",
                "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff. The request's ETag does not match the persisted policy ETag.",
            ));
        }
    }
    let stored_conditional = r.policy.bindings.iter().any(|b| b.condition.is_some());
    if stored_conditional && set.version < 3 && set.sent_etag.is_some() && set.update_bindings {
        return Err(invalid(
            "The policy has conditional role bindings: read and write it with policy version 3.",
        ));
    }
    let existing: BTreeSet<&Member> = r
        .policy
        .bindings
        .iter()
        .flat_map(|b| b.members.iter())
        .collect();
    for (role, members, _) in &set.bindings {
        if let Some(m) = members
            .iter()
            .find(|m| m.kind() == MemberKind::Deleted && !existing.contains(m))
        {
            return Err(invalid(&format!(
                "Principal {m} in binding for {role} is a deleted principal and cannot be added."
            )));
        }
    }
    let mut bindings: Vec<Binding> = Vec::new();
    if set.update_bindings {
        for (role, members, condition) in set.bindings {
            merge_binding(&mut bindings, role, members, condition);
        }
    } else {
        bindings = r.policy.bindings.clone();
    }
    let count: usize = bindings.iter().map(|b| b.members.len()).sum();
    if count > MAX_POLICY_MEMBERS {
        return Err(invalid(&format!(
            "The number of members in the policy ({count}) is larger than the maximum allowed size {MAX_POLICY_MEMBERS}."
        )));
    }
    // Of the 1,500 principals, at most 250 may be groups or domains (IAM "Allow policy limits").
    let groups = bindings.iter().flat_map(|b| b.members.iter()).filter(|m| m.is_group_or_domain()).count();
    if groups > MAX_POLICY_GROUPS_AND_DOMAINS {
        return Err(invalid(&format!(
            "The number of groups and domains in the policy ({groups}) is larger than the maximum allowed {MAX_POLICY_GROUPS_AND_DOMAINS}."
        )));
    }
    Ok(bindings)
}

fn test_iam(st: &SimState, req: &Req, res: Resource<'_>) -> Reply {
    let asked: Vec<String> = serde_json::from_slice::<Value>(&req.body)
        .ok()
        .and_then(|b| b.get("permissions").cloned())
        .and_then(|p| serde_json::from_value(p).ok())
        .unwrap_or_default();
    let mut s = lock(&st.store);
    match with_resource(&mut s, res, "testIamPermissions", |_, _| ()) {
        // The simulator's caller is the estate's administrator: it holds every permission.
        Ok(_) if asked.is_empty() => Reply::json(200, &json!({})),
        Ok(_) => Reply::json(200, &json!({"permissions": asked})),
        Err(r) => r,
    }
}

/// A JSON dump of the world for `/sim/state`.
pub fn dump(s: &mut Store) -> Value {
    s.settle(Instant::now());
    let services: Vec<Value> = s
        .services
        .iter()
        .map(|(k, svc)| {
            let mut v = service_json(k, svc);
            v["iamPolicy"] = policy_json(&svc.iam.policy, 3);
            v["iapPolicy"] = policy_json(&svc.iap.policy, 3);
            v
        })
        .collect();
    let projects: Vec<Value> = s
        .projects
        .values()
        .map(|p| json!({"projectId": p.id, "projectNumber": p.number.to_string()}))
        .collect();
    json!({
        "projects": projects,
        "services": services,
        "auth0": {
            "domain": s.tenant.domain,
            "clientId": s.tenant.client_id,
            "users": s.tenant.users.len(),
            "roles": s.tenant.roles.iter().map(|r| json!({"id": r.id, "name": r.name, "users": r.users.len(), "groups": r.groups.len()})).collect::<Vec<_>>(),
            "groups": s.tenant.groups.len(),
        },
        "operationsPending": s.pending.len(),
        "now": rfc3339(SystemTime::now()),
        "emptyEtag": EMPTY_ETAG,
    })
}
