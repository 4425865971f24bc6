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
    /// Which applications may get a token for the API on a user's behalf
    /// (`subject_type_authorization.user.policy`).
    pub user_access: AccessPolicy,
    /// Which applications may get a token for the API for themselves, by client credentials
    /// (`subject_type_authorization.client.policy`).
    pub client_access: AccessPolicy,
}

/// An API's application access policy for one kind of subject (Auth0 "API Access Policies for
/// Applications", https://auth0.com/docs/get-started/apis/api-access-policies-for-applications;
/// auth0-python `ResourceServerSubjectTypeAuthorization{User,Client}PolicyEnum`):
/// `allow_all` (user flows only): any application of the tenant gets a token, no grant needed,
/// the default for user flows; `require_client_grant`: only applications with a client grant
/// for the API, the default for client credentials; `deny_all`: no application gets a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessPolicy {
    AllowAll,
    RequireClientGrant,
    DenyAll,
    /// A value this version does not know (the SDK enums are open), kept for the message.
    Unknown(String),
}

impl AccessPolicy {
    /// The policy Auth0 names `value`; absent: `default` (Auth0's default for that subject).
    pub fn from_wire(value: Option<&str>, default: AccessPolicy) -> AccessPolicy {
        match value {
            None => default,
            Some("allow_all") => AccessPolicy::AllowAll,
            Some("require_client_grant") => AccessPolicy::RequireClientGrant,
            Some("deny_all") => AccessPolicy::DenyAll,
            Some(other) => AccessPolicy::Unknown(other.to_string()),
        }
    }

    /// Auth0's name for it.
    pub fn name(&self) -> &str {
        match self {
            AccessPolicy::AllowAll => "allow_all",
            AccessPolicy::RequireClientGrant => "require_client_grant",
            AccessPolicy::DenyAll => "deny_all",
            AccessPolicy::Unknown(v) => v,
        }
    }
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

/// Whether the tenant has Organizations, as far as the audit needs it: a role assigned to a
/// member within an organization (`POST /api/v2/organizations/{id}/members/{user_id}/roles`) is
/// not listed by `GET /api/v2/roles/{id}/users`, so runwarden cannot see who holds it that way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Organizations {
    /// The tenant has none.
    None,
    /// It has some: the names of the first few, and whether there are more.
    Present { names: Vec<String>, more: bool },
    /// They could not be listed (e.g. the client lacks `read:organizations`): why.
    Unknown { reason: String },
}
