//! Auth0 tenant settings the hygiene audit looks at, as plain values (the identity client
//! converts the Management API's answers into these).

use std::time::SystemTime;

/// An Auth0 API (resource server), as far as hygiene needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceServer {
    /// The audience (`identifier`).
    pub identifier: String,
    pub name: String,
    /// Access token lifetime in seconds (`token_lifetime`).
    pub token_lifetime: u64,
    /// RBAC enabled (`enforce_policies`).
    pub enforce_policies: bool,
    /// Whether the Add Permissions in the Access Token setting is on (`token_dialect` is
    /// `access_token_authz`/`rfc9068_profile_authz`).
    pub permissions_in_token: bool,
}

/// A tenant signing key, as listed by `GET /api/v2/keys/signing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    pub current: bool,
    pub next: bool,
    pub previous: bool,
    pub revoked: bool,
    /// When the key became current (`current_since`), else when it was created.
    pub since: Option<SystemTime>,
}
