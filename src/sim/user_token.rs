//! `POST /sim/token` (an admin endpoint, so loopback only): a user's access token for an API of
//! the tenant, signed and shaped as the tenant would issue it after the user signs in through
//! an application that asks for `audience=API` and `scope=openid ...`, so that
//! `runwarden check-token` can be tried against the simulator.
//!
//! Body: `{"user": EMAIL or USER_ID, "audience": API_IDENTIFIER, "expiresIn": SECONDS?}`.
//! The token carries:
//! * `aud`: the API and the tenant's `/userinfo`, as an array: a custom API audience with the
//!   `openid` scope gives a token valid for both
//!   (https://auth0.com/docs/secure/tokens/access-tokens/get-access-tokens, "Multiple
//!   audiences");
//! * `sub` (the user id), `iss` (`https://DOMAIN/`, or `http://HOST/` when the request reached
//!   the simulator under one of the tenant's custom domains, as sign-in through a custom domain
//!   issues tokens under its name), `azp`, `scope`, `iat`, `exp` (the API's
//!   token lifetime unless `expiresIn` is given);
//! * the user's roles in the namespaced claim `https://runwarden.sim/roles`, as a post-login
//!   Action adds them with `api.accessToken.setCustomClaim` (Auth0 requires custom claims to be
//!   namespaced URLs, and refuses auth0.com namespaces: https://auth0.com/docs/secure/tokens/json-web-tokens/create-custom-claims).
//!   The roles are the ones assigned to the user directly, and those of the user's groups (the
//!   simulator's directory model, which `explain` shows as `direct` and `group …`).

use serde_json::{Value, json};

use super::http::Reply;
use super::{SimHandle, TokenRequest, auth0, lock};

/// The namespaced claim the simulated post-login Action puts the roles in.
pub const ROLES_CLAIM: &str = "https://runwarden.sim/roles";
/// The client id the simulated sign-in application has (the token's `azp`).
const SIGN_IN_CLIENT: &str = "sim-sign-in-app";

/// `POST /sim/token`.
pub(super) fn user_token(sim: &SimHandle, body: &[u8], host: Option<&str>) -> Reply {
    let bad = |message: String| Reply::json(400, &json!({"error": "invalid_request", "error_description": message}));
    let Ok(request) = serde_json::from_slice::<serde_json::Map<String, Value>>(body) else {
        return bad("the body is a JSON object: {\"user\": EMAIL or USER_ID, \"audience\": API, \"expiresIn\": SECONDS?}".into());
    };
    let text = |k: &str| request.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (user, audience) = (text("user"), text("audience"));
    let store = lock(&sim.0.store);
    let tenant = &store.tenant;
    let Some(u) = tenant.users.iter().position(|x| x.email == user || x.user_id == user) else {
        return bad(format!("no user {user:?} in the tenant (give an e-mail or a user id)"));
    };
    let Some(api) = tenant.resource_servers.iter().find(|r| r.identifier == audience) else {
        let known: Vec<&str> = tenant.resource_servers.iter().map(|r| r.identifier.as_str()).collect();
        // Auth0 refuses an authorize request for an audience that is not one of its APIs.
        return Reply::json(403, &json!({"error": "access_denied", "error_description": format!("Service not found: {audience} (the tenant's APIs: {})", known.join(", "))}));
    };
    let expires_in = request.get("expiresIn").and_then(Value::as_i64).unwrap_or(api.token_lifetime as i64);
    let index = u as u32;
    let mut roles: Vec<String> = tenant
        .roles
        .iter()
        .filter(|r| r.users.contains(&index) || r.groups.iter().any(|g| tenant.groups.get(*g as usize).is_some_and(|g| g.members.contains(&index))))
        .map(|r| r.name.clone())
        .collect();
    roles.sort();
    let mut extra = serde_json::Map::new();
    extra.insert("azp".into(), SIGN_IN_CLIENT.into());
    extra.insert("scope".into(), "openid profile email".into());
    extra.insert(ROLES_CLAIM.into(), json!(roles));
    let token = TokenRequest {
        subject: tenant.users[u].user_id.clone(),
        audience: vec![audience.clone(), format!("{}userinfo", tenant.issuer_for_host(host))],
        expires_in,
        issuer: Some(tenant.issuer_for_host(host)),
        kid: None,
        extra,
    };
    match auth0::mint(&sim.0, tenant, &token) {
        Ok(jwt) => Reply::json(
            200,
            &json!({"access_token": jwt, "token_type": "Bearer", "expires_in": expires_in, "roles": roles}),
        ),
        Err(e) => Reply::json(500, &json!({"error": "server_error", "error_description": e.to_string()})),
    }
}
