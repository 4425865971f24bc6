//! IAM vocabulary shared by every part of runwarden: members, roles, conditions, bindings and
//! policies, as plain domain values.
//!
//! These types are what the plan reasons about. They are deliberately not the Google wire
//! format: `google::wire` converts to and from JSON at the edge, and the simulator keeps its own
//! representation. Member strings are parsed once, here, so that everything downstream can rely
//! on a `Member` being well formed.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The invoker role on a Cloud Run service.
pub const RUN_INVOKER: &str = "roles/run.invoker";
/// The accessor role on an IAP-protected resource.
pub const IAP_ACCESSOR: &str = "roles/iap.httpsResourceAccessor";
/// Google's limit on the number of members (principals) in one IAM policy.
pub const MAX_POLICY_MEMBERS: usize = 1500;

/// What kind of principal a member string names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberKind {
    User,
    ServiceAccount,
    Group,
    Domain,
    /// `principal://...` (a single workload or workforce identity).
    Principal,
    /// `principalSet://...` (a group of federated identities, e.g. a workforce pool group).
    PrincipalSet,
    AllUsers,
    AllAuthenticatedUsers,
    /// `deleted:user:...?uid=...` and friends: a principal that no longer exists.
    Deleted,
}

/// A well-formed IAM member string, such as `user:ada@acme.com`.
///
/// Ordering is by the string, so sets of members render deterministically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    text: String,
    kind: MemberKind,
}

/// Why a member string is not a valid IAM member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IAM member {text:?}: {reason}")]
pub struct MemberError {
    pub text: String,
    pub reason: &'static str,
}

impl Member {
    /// Parses and validates a member string.
    pub fn parse(text: &str) -> Result<Member, MemberError> {
        let err = |reason| MemberError { text: text.to_string(), reason };
        if text.trim() != text || text.is_empty() {
            return Err(err("members must not be empty or carry surrounding spaces"));
        }
        let kind = match text {
            "allUsers" => MemberKind::AllUsers,
            "allAuthenticatedUsers" => MemberKind::AllAuthenticatedUsers,
            _ => {
                if let Some(rest) = text.strip_prefix("deleted:") {
                    let inner = rest.split('?').next().unwrap_or("");
                    let inner = Member::parse(inner).map_err(|_| {
                        err("a deleted member is `deleted:KIND:EMAIL?uid=NUMBER`")
                    })?;
                    if !matches!(
                        inner.kind,
                        MemberKind::User | MemberKind::ServiceAccount | MemberKind::Group
                    ) {
                        return Err(err("only users, service accounts and groups can be deleted"));
                    }
                    MemberKind::Deleted
                } else if let Some(rest) = text.strip_prefix("principalSet://") {
                    check_uri(rest).map_err(err)?;
                    MemberKind::PrincipalSet
                } else if let Some(rest) = text.strip_prefix("principal://") {
                    check_uri(rest).map_err(err)?;
                    MemberKind::Principal
                } else if let Some((prefix, value)) = text.split_once(':') {
                    match prefix {
                        "user" => {
                            check_email(value).map_err(err)?;
                            MemberKind::User
                        }
                        "serviceAccount" => {
                            check_email(value).map_err(err)?;
                            MemberKind::ServiceAccount
                        }
                        "group" => {
                            check_email(value).map_err(err)?;
                            MemberKind::Group
                        }
                        "domain" => {
                            check_domain(value).map_err(err)?;
                            MemberKind::Domain
                        }
                        _ => return Err(err(
                            "unknown member type; use user:, serviceAccount:, group:, domain:, \
                             principal://, principalSet://, allUsers or allAuthenticatedUsers",
                        )),
                    }
                } else {
                    return Err(err(
                        "a member needs a type prefix, e.g. user:ada@example.com or \
                         serviceAccount:sa@project.iam.gserviceaccount.com",
                    ));
                }
            }
        };
        Ok(Member { text: text.to_string(), kind })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn kind(&self) -> MemberKind {
        self.kind
    }

    /// `allUsers` or `allAuthenticatedUsers`.
    pub fn is_public(&self) -> bool {
        matches!(self.kind, MemberKind::AllUsers | MemberKind::AllAuthenticatedUsers)
    }

    /// The e-mail address of a `user:`, `serviceAccount:` or `group:` member.
    pub fn email(&self) -> Option<&str> {
        match self.kind {
            MemberKind::User | MemberKind::ServiceAccount | MemberKind::Group => {
                self.text.split_once(':').map(|(_, e)| e)
            }
            _ => None,
        }
    }
}

fn check_email(value: &str) -> Result<(), &'static str> {
    let Some((local, domain)) = value.split_once('@') else {
        return Err("expected an e-mail address after the type prefix");
    };
    if local.is_empty() || local.contains(char::is_whitespace) || domain.contains('@') {
        return Err("expected an e-mail address after the type prefix");
    }
    check_domain(domain).map_err(|_| "the e-mail address has an invalid domain")
}

fn check_domain(value: &str) -> Result<(), &'static str> {
    let ok = !value.is_empty()
        && value.contains('.')
        && !value.starts_with('.')
        && !value.ends_with('.')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok { Ok(()) } else { Err("expected a DNS domain such as example.com") }
}

fn check_uri(rest: &str) -> Result<(), &'static str> {
    if rest.starts_with("iam.googleapis.com/")
        && rest.len() > "iam.googleapis.com/".len()
        && !rest.contains(char::is_whitespace)
    {
        Ok(())
    } else {
        Err("federated principals look like principalSet://iam.googleapis.com/locations/global/workforcePools/POOL/group/GROUP")
    }
}

impl FromStr for Member {
    type Err = MemberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Member::parse(s)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Member {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Member::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An IAM condition (`google.type.Expr`). Conditional bindings are distinct bindings keyed by
/// (role, condition).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Condition {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub expression: String,
}

/// One binding: a role granted to members, optionally under a condition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Binding {
    pub role: String,
    pub members: BTreeSet<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// An IAM policy as read from (and written to) one IAM resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// 1 or 3; 3 whenever any binding has a condition. An empty policy reads as version 0
    /// (the field is omitted on the wire).
    pub version: u32,
    /// The etag the policy was read with; writes carry it back (read-modify-write).
    pub etag: String,
    pub bindings: Vec<Binding>,
}

impl Policy {
    /// Total number of member entries across bindings (what Google's 1,500 limit counts).
    pub fn member_count(&self) -> usize {
        self.bindings.iter().map(|b| b.members.len()).sum()
    }

    /// The binding for `role` with exactly this condition (None = unconditional).
    pub fn binding(&self, role: &str, condition: Option<&Condition>) -> Option<&Binding> {
        self.bindings
            .iter()
            .find(|b| b.role == role && b.condition.as_ref() == condition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_documented_member_form() {
        for (text, kind) in [
            ("user:ada@acme.com", MemberKind::User),
            ("serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com", MemberKind::ServiceAccount),
            ("group:billing@acme.com", MemberKind::Group),
            ("domain:acme.com", MemberKind::Domain),
            ("principal://iam.googleapis.com/locations/global/workforcePools/p/subject/s", MemberKind::Principal),
            ("principalSet://iam.googleapis.com/locations/global/workforcePools/p/group/g", MemberKind::PrincipalSet),
            ("allUsers", MemberKind::AllUsers),
            ("allAuthenticatedUsers", MemberKind::AllAuthenticatedUsers),
            ("deleted:user:bob@acme.com?uid=123456789012345678", MemberKind::Deleted),
        ] {
            assert_eq!(Member::parse(text).unwrap().kind(), kind, "{text}");
        }
    }

    #[test]
    fn rejects_malformed_members() {
        for text in [
            "", "ada@acme.com", "user:", "user:ada", "user:@acme.com", "robot:x@acme.com",
            " user:ada@acme.com", "domain:acme", "principalSet://example.com/x", "deleted:allUsers",
            "allusers",
        ] {
            assert!(Member::parse(text).is_err(), "{text:?} should be rejected");
        }
    }
}
