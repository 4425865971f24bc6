//! Auth0: the Authentication API's `/oauth/token` (client credentials), OIDC discovery and JWKS,
//! and the Management API v2 reads runwarden needs (roles, role users and groups, group members,
//! users, resource servers, signing keys).
//!
//! Shapes follow `reference/auth0/management-api-v2.openapi.yaml`: offset paging with `page`,
//! `per_page` (≤ 100) and `include_totals` (`{ITEMS, start, limit, total}`), checkpoint paging
//! with `from`/`take` (`{ITEMS, next}`, `next` absent at the end), and offset paging of role users
//! refused past 1,000 records with Auth0's own message. The reference has no group endpoints;
//! `/roles/{id}/groups` and `/groups/{id}/members` follow auth0-python 6.x (`GroupMember {id,
//! member_type, type, connection_id, created_at}`: ids, never e-mails; nested groups as
//! `member_type: group`). Users may be `blocked`. Every read checks the client's scopes
//! ([`required_scopes`]) and answers 403 `insufficient_scope` in Auth0's shape.

use std::time::{Instant, SystemTime};

use axum::http::Method;
use base64::Engine;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use super::http::{Reply, Req};
use super::state::{Store, Tenant, UserRec, epoch_seconds};
use super::world::KeyStatus;
use super::{SimError, SimState, TokenRequest, lock};

/// Every scope the simulated tenant grants its Management API client by default (auth0-python
/// `types/oauth_scope.py` lists each).
pub const MANAGEMENT_SCOPES: &str = "read:users read:roles read:role_members read:groups read:group_members read:group_roles read:resource_servers read:signing_keys read:clients read:organizations";

/// The scopes (any one of) a Management API read needs. The reference OpenAPI document's
/// `security` of each path: `/roles`, `/roles/{id}`: read:roles; `/roles/{id}/users`:
/// read:users, read:roles or read:role_members; `/users`, `/users/{id}`: read:users;
/// `/resource-servers`: read:resource_servers; `/keys/signing`: read:signing_keys;
/// `/organizations`: read:organizations or read:organizations_summary. The group
/// endpoints postdate it: modelled on auth0-python's scope enumeration (`read:group_roles`
/// for a role's groups, `read:group_members` for a group's members).
fn required_scopes(segs: &[&str]) -> &'static [&'static str] {
    match segs {
        ["roles"] | ["roles", _] => &["read:roles"],
        ["roles", _, "users"] => &["read:users", "read:roles", "read:role_members"],
        ["roles", _, "groups"] => &["read:group_roles"],
        ["groups", _, "members"] => &["read:group_members"],
        ["users"] | ["users", _] => &["read:users"],
        ["resource-servers"] => &["read:resource_servers"],
        ["keys", "signing"] => &["read:signing_keys"],
        ["organizations"] => &["read:organizations", "read:organizations_summary"],
        _ => &[],
    }
}

/// 403 `insufficient_scope` in Auth0's shape (the reference's 403 descriptions read
/// "Insufficient scope, expected: read:actions."; with several, "expected any of: ...").
fn insufficient_scope(needed: &[&str]) -> Reply {
    let message = match needed {
        [one] => format!("Insufficient scope, expected: {one}"),
        many => format!("Insufficient scope, expected any of: {}", many.join(",")),
    };
    Reply::auth0(403, &message, Some("insufficient_scope"))
}

fn unauthorized(message: &str) -> Reply {
    let mut r = Reply::auth0(401, message, None);
    r.headers
        .push(("www-authenticate", "Bearer realm=\"Auth0\"".into()));
    r
}

/// Checks the Management API bearer token.
pub fn authenticate(st: &SimState, req: &Req) -> Result<(), Reply> {
    let Some(token) = req.bearer() else {
        return Err(unauthorized("Missing authentication"));
    };
    let tokens = lock(&st.tokens);
    match tokens.management.get(token) {
        Some(expiry) if *expiry > Instant::now() => Ok(()),
        Some(_) => Err(unauthorized(
            "Expired token received for JSON Web Token validation",
        )),
        None => Err(unauthorized("Invalid token")),
    }
}

/// `POST /oauth/token` (client credentials; JSON or form body).
pub fn token(st: &SimState, req: &Req) -> Reply {
    if req.method != Method::POST {
        return Reply::oauth(404, "not_found", "Use POST /oauth/token");
    }
    let fields: Vec<(String, String)> = if req.is_json() {
        match serde_json::from_slice::<serde_json::Map<String, Value>>(&req.body) {
            Ok(m) => m
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect(),
            Err(_) => return Reply::oauth(400, "invalid_request", "Invalid JSON body"),
        }
    } else {
        req.form()
    };
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match field("grant_type") {
        Some("client_credentials") => {}
        Some(other) => {
            return Reply::oauth(
                400,
                "unsupported_grant_type",
                &format!("Unsupported grant type: {other}"),
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
    let s = lock(&st.store);
    let t = &s.tenant;
    if field("client_id") != Some(t.client_id.as_str())
        || field("client_secret") != Some(t.client_secret.as_str())
    {
        return Reply::oauth(401, "access_denied", "Unauthorized");
    }
    let audience = field("audience").unwrap_or("");
    if audience != t.audience() {
        return Reply::oauth(
            403,
            "access_denied",
            &format!("Service not enabled within domain: {audience}"),
        );
    }
    let lifetime = s.config.management_token_lifetime;
    let mut extra = serde_json::Map::new();
    extra.insert("scope".into(), t.client_scopes.clone().into());
    extra.insert("gty".into(), "client-credentials".into());
    extra.insert("azp".into(), t.client_id.clone().into());
    let request = TokenRequest {
        subject: format!("{}@clients", t.client_id),
        audience: vec![t.audience()],
        expires_in: lifetime.as_secs() as i64,
        issuer: None,
        kid: None,
        extra,
    };
    let jwt = match mint(st, t, &request) {
        Ok(j) => j,
        Err(e) => return Reply::oauth(500, "server_error", &e.to_string()),
    };
    let scopes = t.client_scopes.clone();
    drop(s);
    lock(&st.tokens)
        .management
        .insert(jwt.clone(), Instant::now() + lifetime);
    Reply::json(
        200,
        &json!({
            "access_token": jwt,
            "scope": scopes,
            "expires_in": lifetime.as_secs(),
            "token_type": "Bearer",
        }),
    )
}

/// Signs an RS256 token with a tenant key.
pub fn mint(st: &SimState, t: &Tenant, req: &TokenRequest) -> Result<String, SimError> {
    let key = match &req.kid {
        Some(kid) => t.signing_keys.iter().find(|k| &k.kid == kid),
        None => t.current_key(),
    }
    .ok_or_else(|| {
        SimError::Mint(format!(
            "no tenant signing key {:?}",
            req.kid.as_deref().unwrap_or("(current)")
        ))
    })?;
    let now = epoch_seconds(SystemTime::now()) as i64;
    let mut claims = req.extra.clone();
    claims.insert(
        "iss".into(),
        req.issuer.clone().unwrap_or_else(|| t.issuer()).into(),
    );
    claims.insert("sub".into(), req.subject.clone().into());
    claims.insert(
        "aud".into(),
        if req.audience.len() == 1 {
            req.audience[0].clone().into()
        } else {
            json!(req.audience)
        },
    );
    claims.insert("iat".into(), now.min(now + req.expires_in).into());
    claims.insert("exp".into(), (now + req.expires_in).into());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &st.keys.auth0[key.key].encoding)
        .map_err(|e| SimError::Mint(format!("signing failed: {e}")))
}

/// `/.well-known/openid-configuration` and `/.well-known/jwks.json`.
pub fn public(st: &SimState, req: &Req) -> Reply {
    let s = lock(&st.store);
    let t = &s.tenant;
    // A custom domain names itself as the issuer (Auth0: tokens issued through a custom domain
    // carry it in `iss`, and its discovery document says so).
    let issuer = t.issuer_for_host(req.headers.get("host").and_then(|h| h.to_str().ok()));
    match req.path.as_str() {
        "/.well-known/openid-configuration" => Reply::json(
            200,
            &json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}authorize"),
                "token_endpoint": format!("{issuer}oauth/token"),
                "device_authorization_endpoint": format!("{issuer}oauth/device/code"),
                "userinfo_endpoint": format!("{issuer}userinfo"),
                "mfa_challenge_endpoint": format!("{issuer}mfa/challenge"),
                "jwks_uri": format!("{issuer}.well-known/jwks.json"),
                "registration_endpoint": format!("{issuer}oidc/register"),
                "revocation_endpoint": format!("{issuer}oauth/revoke"),
                "scopes_supported": ["openid", "profile", "offline_access", "name", "given_name", "family_name", "nickname", "email", "email_verified", "picture", "created_at", "identities", "phone", "address"],
                "response_types_supported": ["code", "token", "id_token", "code token", "code id_token", "token id_token", "code token id_token"],
                "code_challenge_methods_supported": ["S256", "plain"],
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["HS256", "RS256", "PS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
                "claims_supported": ["aud", "auth_time", "created_at", "email", "email_verified", "exp", "family_name", "given_name", "iat", "identities", "iss", "name", "nickname", "phone_number", "picture", "sub"],
                "request_uri_parameter_supported": false,
                "request_parameter_supported": false,
                "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "PS256"],
            }),
        ),
        "/.well-known/jwks.json" => {
            let keys: Vec<Value> = t
                .signing_keys
                .iter()
                .filter(|k| k.status != KeyStatus::Revoked)
                .map(|k| {
                    let pair = &st.keys.auth0[k.key];
                    let mut jwk = serde_json::to_value(&pair.jwk).unwrap_or_default();
                    jwk["kid"] = k.kid.clone().into();
                    jwk["use"] = "sig".into();
                    jwk["alg"] = "RS256".into();
                    jwk["x5c"] = json!([cert_der_b64(pair.cert_pem)]);
                    jwk["x5t"] = thumbprint_b64url(pair.fingerprint).into();
                    jwk
                })
                .collect();
            Reply::json(200, &json!({"keys": keys}))
        }
        _ => Reply::auth0(404, "Not Found", None),
    }
}

fn cert_der_b64(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

fn thumbprint_b64url(fingerprint: &str) -> String {
    let bytes: Vec<u8> = fingerprint
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Offset or checkpoint paging parameters of a list call.
enum Paging {
    Offset {
        page: usize,
        per_page: usize,
        totals: bool,
    },
    Checkpoint {
        from: Option<String>,
        take: usize,
    },
}

fn per_page_error(name: &str, v: i64) -> Reply {
    Reply::auth0(
        400,
        &format!(
            "Query validation error: 'Value {v} is {} {}' on property {name} (Number of results per page. Defaults to 50).",
            if v < 1 {
                "less than minimum"
            } else {
                "greater than maximum"
            },
            if v < 1 { 1 } else { 100 }
        ),
        Some("invalid_query_string"),
    )
}

fn paging(req: &Req, checkpoint_allowed: bool) -> Result<Paging, Reply> {
    let int = |name: &str, default: i64| -> Result<i64, Reply> {
        match req.q(name) {
            None | Some("") => Ok(default),
            Some(t) => t.parse::<i64>().map_err(|_| {
                Reply::auth0(400, &format!("Query validation error: 'Expected type integer but found type string' on property {name}."), Some("invalid_query_string"))
            }),
        }
    };
    if checkpoint_allowed && (req.q("from").is_some() || req.q("take").is_some()) {
        let take = int("take", 50)?;
        if !(1..=100).contains(&take) {
            return Err(per_page_error("take", take));
        }
        let from = req.q("from").filter(|f| !f.is_empty()).map(String::from);
        return Ok(Paging::Checkpoint {
            from,
            take: take as usize,
        });
    }
    let per_page = int("per_page", 50)?;
    if !(1..=100).contains(&per_page) {
        return Err(per_page_error("per_page", per_page));
    }
    let page = int("page", 0)?;
    if page < 0 {
        return Err(Reply::auth0(
            400,
            &format!(
                "Query validation error: 'Value {page} is less than minimum 0' on property page."
            ),
            Some("invalid_query_string"),
        ));
    }
    let totals = req.q("include_totals") == Some("true");
    Ok(Paging::Offset {
        page: page as usize,
        per_page: per_page as usize,
        totals,
    })
}

/// Pages `items` (already in order, each with a cursor key) under `name`.
fn page_of(
    items: Vec<(String, Value)>,
    paging: &Paging,
    name: &str,
    offset_cap: Option<usize>,
) -> Reply {
    match paging {
        Paging::Offset {
            page,
            per_page,
            totals,
        } => {
            if let Some(cap) = offset_cap {
                if (page + 1) * per_page > cap {
                    return Reply::auth0(
                        400,
                        &format!(
                            "Requesting page {page} exceeds the allowed maximum of {cap} records. To fetch results beyond {cap}, use the checkpoint pagination method."
                        ),
                        None,
                    );
                }
            }
            let total = items.len();
            let start = page * per_page;
            let slice: Vec<Value> = items
                .into_iter()
                .skip(start)
                .take(*per_page)
                .map(|(_, v)| v)
                .collect();
            if *totals {
                let mut body = json!({"start": start, "limit": per_page, "total": total});
                body[name] = Value::Array(slice);
                Reply::json(200, &body)
            } else {
                Reply::json(200, &Value::Array(slice))
            }
        }
        Paging::Checkpoint { from, take } => {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let after = match from {
                None => None,
                Some(f) => match b64.decode(f).ok().and_then(|b| String::from_utf8(b).ok()) {
                    Some(k) => Some(k),
                    None => {
                        return Reply::auth0(
                            400,
                            "The 'from' parameter is not a valid checkpoint.",
                            Some("invalid_query_string"),
                        );
                    }
                },
            };
            let mut rest = items
                .into_iter()
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
                .peekable();
            let mut slice = Vec::new();
            let mut last = None;
            while slice.len() < *take {
                match rest.next() {
                    Some((k, v)) => {
                        last = Some(k);
                        slice.push(v);
                    }
                    None => break,
                }
            }
            let mut body = json!({});
            body[name] = Value::Array(slice);
            if rest.peek().is_some() {
                if let Some(k) = last {
                    body["next"] = b64.encode(k).into();
                }
            }
            Reply::json(200, &body)
        }
    }
}

fn member_json(u: &UserRec) -> Value {
    json!({"user_id": u.user_id, "email": u.email, "picture": picture(u), "name": u.name})
}

/// A group member as `GET /api/v2/groups/{id}/members` serves it: auth0-python's
/// `types/group_member.py` (`GroupMember {id, member_type, type, connection_id, created_at}`),
/// an id and never an e-mail; `type` is the group's type (`GroupTypeEnum`).
fn group_member_json(id: &str, member_type: &str, group_id: &str) -> Value {
    json!({
        "id": id,
        "member_type": member_type,
        "type": "connection",
        "connection_id": format!("con_{:016x}", super::state::fnv(group_id)),
        "created_at": "2025-01-01T00:00:00.000Z",
    })
}

fn picture(u: &UserRec) -> String {
    format!(
        "https://s.gravatar.com/avatar/{:032x}?s=480&r=pg&d=mp",
        super::state::fnv(&u.email) as u128
    )
}

fn user_json(u: &UserRec) -> Value {
    let (provider, id) = u
        .user_id
        .split_once('|')
        .unwrap_or(("auth0", u.user_id.as_str()));
    let mut user = json!({
        "user_id": u.user_id,
        "email": u.email,
        "email_verified": u.email_verified,
        "name": u.name,
        "nickname": u.email.split('@').next().unwrap_or(""),
        "picture": picture(u),
        "created_at": "2025-01-01T00:00:00.000Z",
        "updated_at": "2025-01-01T00:00:00.000Z",
        "identities": [{"connection": "Username-Password-Authentication", "provider": provider, "user_id": id, "isSocial": false}],
    });
    // Auth0 carries `blocked` once an administrator (or SCIM) blocked the user; a user never
    // blocked has no such field (auth0-python `GetUserResponseContent.blocked` is optional).
    if u.blocked {
        user["blocked"] = true.into();
    }
    user
}

fn segment(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Dispatches an authenticated Management API call.
pub fn management(st: &SimState, req: &Req) -> Reply {
    if req.method != Method::GET {
        return Reply::auth0(404, "Not Found", None);
    }
    let rest = req
        .path
        .trim_start_matches("/api/v2/")
        .trim_end_matches('/');
    let segs: Vec<&str> = rest.split('/').collect();
    let s = lock(&st.store);
    let t = &s.tenant;
    let needed = required_scopes(&segs);
    if !needed.is_empty() && !t.client_scopes.split(' ').any(|g| needed.contains(&g)) {
        return insufficient_scope(needed);
    }
    let paging = |checkpoint| paging(req, checkpoint);
    match segs.as_slice() {
        ["roles"] => list_roles(t, req),
        ["roles", id] => match role(t, &segment(id)) {
            Some(r) => Reply::json(
                200,
                &json!({"id": r.id, "name": r.name, "description": r.description}),
            ),
            None => role_not_found(),
        },
        ["roles", id, "users"] => {
            let p = match paging(true) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let Some(r) = role(t, &segment(id)) else {
                return role_not_found();
            };
            let items = r
                .users
                .iter()
                .map(|i| &t.users[*i as usize])
                .map(|u| (u.user_id.clone(), member_json(u)))
                .collect();
            page_of(items, &p, "users", Some(1000))
        }
        ["roles", id, "groups"] => {
            let p = match paging(true) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let Some(r) = role(t, &segment(id)) else {
                return role_not_found();
            };
            let mut items: Vec<(String, Value)> = r
                .groups
                .iter()
                .map(|g| &t.groups[*g as usize])
                .map(|g| (g.id.clone(), json!({"id": g.id, "name": g.name})))
                .collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            page_of(items, &p, "groups", Some(1000))
        }
        ["groups", id, "members"] => group_members(t, req, &segment(id)),
        ["users", id] => match t.user_by_id.get(&segment(id)) {
            Some(i) => Reply::json(200, &user_json(&t.users[*i as usize])),
            None => Reply::auth0(404, "The user does not exist.", Some("inexistent_user")),
        },
        ["users"] => users_search(t, req),
        ["resource-servers"] => resource_servers(t, req),
        ["keys", "signing"] => signing_keys(st, t),
        ["organizations"] => organizations(t, req),
        _ => Reply::auth0(404, "Not Found", None),
    }
}

/// `GET /api/v2/groups/{id}/members`: users and nested groups, as `GroupMember`s.
fn group_members(t: &Tenant, req: &Req, gid: &str) -> Reply {
    let p = match paging(req, true) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(g) = t.groups.iter().find(|g| g.id == gid) else {
        return Reply::auth0(404, "The group does not exist.", Some("inexistent_group"));
    };
    let mut items: Vec<(String, Value)> = g
        .members
        .iter()
        .map(|i| &t.users[*i as usize])
        .map(|u| (u.user_id.clone(), group_member_json(&u.user_id, "user", &g.id)))
        .collect();
    for n in &g.nested {
        let id = &t.groups[*n as usize].id;
        items.push((id.clone(), group_member_json(id, "group", &g.id)));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    page_of(items, &p, "members", Some(1000))
}

/// `GET /api/v2/organizations`: offset pages (`{organizations, start, limit, total}` with
/// totals, the reference's `get_organizations_200_response`) or checkpoint pages
/// (`{organizations, next}`, auth0-python `ListOrganizationsPaginatedResponseContent`), each
/// an `Organization {id, name, display_name}`.
fn organizations(t: &Tenant, req: &Req) -> Reply {
    let p = match paging(req, true) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let items = t
        .organizations
        .iter()
        .map(|(id, name, display)| (id.clone(), json!({"id": id, "name": name, "display_name": display})))
        .collect();
    page_of(items, &p, "organizations", Some(1000))
}

/// `GET /api/v2/roles`, with `name_filter`.
fn list_roles(t: &Tenant, req: &Req) -> Reply {
    let p = match paging(req, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let filter = req.q("name_filter").map(str::to_lowercase);
    let items = t
        .roles
        .iter()
        .filter(|r| {
            filter
                .as_ref()
                .is_none_or(|f| r.name.to_lowercase().contains(f.as_str()))
        })
        .map(|r| {
            (
                r.id.clone(),
                json!({"id": r.id, "name": r.name, "description": r.description}),
            )
        })
        .collect();
    page_of(items, &p, "roles", None)
}

/// `GET /api/v2/resource-servers`: the Management API itself, then the tenant's APIs.
fn resource_servers(t: &Tenant, req: &Req) -> Reply {
    let p = match paging(req, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut items = vec![(
        String::new(),
        json!({
            "id": format!("{:024x}", super::state::fnv(&t.domain) as u128),
            "name": "Auth0 Management API",
            "identifier": t.audience(),
            "is_system": true,
            "signing_alg": "RS256",
            "token_lifetime": 86400,
            "token_lifetime_for_web": 7200,
            "allow_offline_access": false,
            "skip_consent_for_verifiable_first_party_clients": false,
            "scopes": [],
        }),
    )];
    items.extend(t.resource_servers.iter().map(|rs| (rs.id.clone(), resource_server_json(rs))));
    page_of(items, &p, "resource_servers", None)
}

/// A tenant API as `GET /resource-servers` lists it (auth0-python `ResourceServer`), with
/// `subject_type_authorization` (`ResourceServerSubjectTypeAuthorization {user: {policy},
/// client: {policy}}`) when the world sets a policy.
fn resource_server_json(rs: &super::state::ResourceServer) -> Value {
    let mut v = json!({
        "id": rs.id,
        "name": rs.name,
        "identifier": rs.identifier,
        "is_system": false,
        "signing_alg": rs.signing_alg,
        "token_lifetime": rs.token_lifetime,
        "token_lifetime_for_web": rs.token_lifetime.min(7200),
        "enforce_policies": rs.enforce_policies,
        "token_dialect": if rs.enforce_policies { "access_token_authz" } else { "access_token" },
        "allow_offline_access": false,
        "skip_consent_for_verifiable_first_party_clients": true,
        "scopes": [],
    });
    let mut subjects = serde_json::Map::new();
    for (subject, policy) in [("user", &rs.user_access_policy), ("client", &rs.client_access_policy)] {
        if let Some(policy) = policy {
            subjects.insert(subject.into(), json!({"policy": policy}));
        }
    }
    if !subjects.is_empty() {
        v["subject_type_authorization"] = Value::Object(subjects);
    }
    v
}

/// `GET /api/v2/keys/signing`.
fn signing_keys(st: &SimState, t: &Tenant) -> Reply {
    let keys: Vec<Value> = t
        .signing_keys
        .iter()
        .map(|k| {
            let pair = &st.keys.auth0[k.key];
            let mut v = json!({
                "kid": k.kid,
                "cert": pair.cert_pem.replace('\n', "\r\n"),
                "fingerprint": pair.fingerprint,
                "thumbprint": pair.fingerprint.replace(':', ""),
                "current": k.status == KeyStatus::Current,
                "next": k.status == KeyStatus::Next,
                "previous": k.status == KeyStatus::Previous,
                "revoked": k.status == KeyStatus::Revoked,
            });
            if k.status != KeyStatus::Next && !k.omit_since {
                v["current_since"] = k.created_at.clone().into();
            }
            if matches!(k.status, KeyStatus::Previous | KeyStatus::Revoked) {
                v["current_until"] = k.created_at.clone().into();
            }
            if k.status == KeyStatus::Revoked {
                v["revoked_at"] = k.created_at.clone().into();
            }
            v
        })
        .collect();
    Reply::json(200, &Value::Array(keys))
}

fn role<'a>(t: &'a Tenant, id: &str) -> Option<&'a super::state::RoleRec> {
    t.roles.iter().find(|r| r.id == id)
}

fn role_not_found() -> Reply {
    Reply::auth0(404, "The role does not exist.", Some("inexistent_role"))
}

/// `GET /api/v2/users?q=...&search_engine=v3`, eventually consistent and capped as Auth0's
/// (https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation: at most 1,000
/// results; the index lags behind changes): the query forms the simulator understands are
/// `email_verified:true|false`, `email:"..."` and `user_id:"..."` (or empty: every user).
fn users_search(t: &Tenant, req: &Req) -> Reply {
    if let Some(engine) = req.q("search_engine") {
        if engine != "v3" {
            return Reply::auth0(
                400,
                "The simulator only supports search_engine=v3.",
                Some("invalid_query_string"),
            );
        }
    }
    let p = match paging(req, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let q = req.q("q").unwrap_or("").trim();
    let unquote = |v: &str| v.trim_matches('"').to_string();
    let filter: Box<dyn Fn(&UserRec) -> bool> = if q.is_empty() {
        Box::new(|_| true)
    } else if let Some(v) = q.strip_prefix("email_verified:") {
        let want = match v.trim() {
            "true" => true,
            "false" => false,
            _ => {
                return Reply::auth0(
                    400,
                    "email_verified must be true or false.",
                    Some("invalid_query_string"),
                );
            }
        };
        Box::new(move |u| u.email_verified == want)
    } else if let Some(v) = q.strip_prefix("email:") {
        let want = unquote(v).to_lowercase();
        Box::new(move |u| u.email.to_lowercase() == want)
    } else if let Some(v) = q.strip_prefix("user_id:") {
        let want = unquote(v);
        Box::new(move |u| u.user_id == want)
    } else {
        return Reply::auth0(
            400,
            "The simulator supports q=email_verified:BOOL, email:\"...\" and user_id:\"...\" only.",
            Some("invalid_query_string"),
        );
    };
    // The index lags behind the records (eventually consistent): search sees each user as it
    // was before a change younger than `simulator.searchIndexLag`.
    let now = Instant::now();
    let indexed: Vec<UserRec> = t.users.iter().map(|u| u.as_searched(now)).collect();
    let mut matched: Vec<&UserRec> = indexed.iter().filter(|u| filter(u)).collect();
    matched.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    let Paging::Offset {
        page,
        per_page,
        totals,
    } = p
    else {
        unreachable!("users search uses offset paging")
    };
    if (page + 1) * per_page > 1000 {
        return Reply::auth0(
            400,
            "You can only page through the first 1000 records. See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation",
            None,
        );
    }
    // Auth0 search returns at most 1,000 results, and its total says no more than that.
    let total = matched.len().min(1000);
    let users: Vec<Value> = matched
        .into_iter()
        .skip(page * per_page)
        .take(per_page)
        .map(user_json)
        .collect();
    if totals {
        Reply::json(
            200,
            &json!({"start": page * per_page, "limit": per_page, "length": users.len(), "total": total, "users": users}),
        )
    } else {
        Reply::json(200, &Value::Array(users))
    }
}

/// Removes every member of a group (by name), as a broken sync or a mistaken bulk edit would
/// (test helper). False if the group is unknown.
pub fn empty_group(s: &mut Store, group: &str) -> bool {
    match s.tenant.groups.iter_mut().find(|g| g.name == group) {
        Some(g) => {
            g.members.clear();
            true
        }
        None => false,
    }
}

/// Adds or removes a direct role assignment (test helper).
pub fn edit_role_user(s: &mut Store, role: &str, email: &str, add: bool) -> bool {
    let t = &mut s.tenant;
    let Some(ui) = t
        .users
        .iter()
        .position(|u| u.email.eq_ignore_ascii_case(email))
    else {
        return false;
    };
    let Some(r) = t.roles.iter_mut().find(|r| r.name == role) else {
        return false;
    };
    let ui = ui as u32;
    if add {
        if !r.users.contains(&ui) {
            r.users.push(ui);
            let users = &t.users;
            r.users
                .sort_by(|a, b| users[*a as usize].user_id.cmp(&users[*b as usize].user_id));
        }
    } else {
        r.users.retain(|u| *u != ui);
    }
    true
}
