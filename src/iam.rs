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
/// Google's limit on the Google groups and domains among them ("Allow policy limits",
/// https://cloud.google.com/iam/docs/allow-policies#limits: of the 1,500 principals, up to 250
/// can be Google groups, Google Workspace or Cloud Identity domains).
pub const MAX_POLICY_GROUPS_AND_DOMAINS: usize = 250;

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
    /// A member Google answered in a form runwarden does not know (a form added to IAM after
    /// this build, say): read by [`Member::read`] and kept untouched as a foreign member; never
    /// a reason to stop reading a policy, never written by runwarden.
    Opaque,
}

/// A well-formed IAM member string, such as `user:ada@acme.com`.
///
/// Ordering is by the string, so sets of members render deterministically. The text is shared:
/// a clone (one per plan change, per binding, per grant) copies a pointer, not the string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    text: std::sync::Arc<str>,
    kind: MemberKind,
}

/// Why a member string is not a valid IAM member. The text is shown with Rust's debug escapes,
/// so an invisible or bidirectional control character appears as `\u{202e}`, never raw.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IAM member {text:?}: {reason}")]
pub struct MemberError {
    pub text: String,
    pub reason: String,
}

impl Member {
    /// Parses and validates a member string.
    pub fn parse(text: &str) -> Result<Member, MemberError> {
        let err = |reason: &str| MemberError { text: text.to_string(), reason: reason.to_string() };
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
                    // iam.v1.json, `Binding.members`: `deleted:user:`, `deleted:serviceAccount:`,
                    // `deleted:group:` and `deleted:principal://...`.
                    if !matches!(
                        inner.kind,
                        MemberKind::User
                            | MemberKind::ServiceAccount
                            | MemberKind::Group
                            | MemberKind::Principal
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
                            check_email(value).or_else(|e| check_kubernetes_sa(value).map_err(|_| e)).map_err(err)?;
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
        Ok(Member { text: text.into(), kind })
    }

    /// Reads a member as Google answered it in a policy: [`Member::parse`], or, for a form
    /// runwarden does not know, an [`MemberKind::Opaque`] member kept as it is. A policy is never
    /// unreadable because of one member (iam.v1.json lists the forms IAM may answer, and the
    /// list grows).
    pub fn read(text: &str) -> Member {
        Member::parse(text).unwrap_or_else(|_| Member { text: text.into(), kind: MemberKind::Opaque })
    }

    /// Parses a member written by a person (a policy file), with the syntax Google accepts for
    /// each form (the `Binding.members` description in the IAM v1 discovery document,
    /// /work/shared/reference/google/iam.v1.json) instead of [`Member::parse`]'s structural check.
    ///
    /// [`Member::parse`] stays lenient on purpose: it reads what Google answers, and a member
    /// runwarden would refuse to write must still never make a live policy unreadable.
    ///
    /// Any non-ASCII or control character is an error naming the character and its code point,
    /// never a warning: Google account and group addresses are ASCII (Workspace user names
    /// allow letters, digits, `-`, `_`, `'` and `.`; https://support.google.com/a/answer/9193374),
    /// and an internationalized domain can always be written in its ASCII `xn--` form, which is
    /// what DNS and IAM use. So refusing costs no legitimate member, while a warning would let a
    /// Cyrillic look-alike (`аcme.com`) or an invisible U+200B through a review that skims it.
    pub fn parse_written(text: &str) -> Result<Member, MemberError> {
        let err = |reason: String| MemberError { text: text.to_string(), reason };
        if let Some(c) = text.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
            return Err(err(format!(
                "contains {}; IAM members are plain ASCII",
                describe_char(c)
            )));
        }
        // The e-mail and domain forms are checked before the structural parse, so that the
        // message says what exactly Google would not accept.
        match text.split_once(':') {
            // A Kubernetes service account is checked by the structural parse below.
            Some(("serviceAccount", ksa)) if ksa.contains(".svc.id.goog[") => {}
            Some(("user" | "serviceAccount" | "group", email)) => {
                check_written_email(email).map_err(err)?
            }
            Some(("domain", domain)) => check_written_domain(domain).map_err(err)?,
            _ => {}
        }
        let member = Member::parse(text)?;
        let checked = match member.kind {
            MemberKind::User
            | MemberKind::ServiceAccount
            | MemberKind::Group
            | MemberKind::Domain => Ok(()),
            MemberKind::Principal => {
                check_written_federated(&text["principal://".len()..], false)
            }
            MemberKind::PrincipalSet => {
                check_written_federated(&text["principalSet://".len()..], true)
            }
            MemberKind::AllUsers | MemberKind::AllAuthenticatedUsers => Ok(()),
            MemberKind::Deleted => {
                // `deleted:KIND:EMAIL?uid=DIGITS`: checked so that the policy check can say
                // that a deleted member cannot be granted, rather than that it is malformed.
                let rest = &text["deleted:".len()..];
                let (inner, uid) = rest.split_once("?uid=").unwrap_or((rest, ""));
                if let Some(federated) = rest.strip_prefix("principal://") {
                    // `deleted:principal://...` carries no uid (iam.v1.json).
                    check_written_federated(federated, false)
                } else if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
                    Err("a deleted member is `deleted:KIND:EMAIL?uid=NUMBER`".to_string())
                } else {
                    Member::parse_written(inner).map(|_| ()).map_err(|e| e.reason)
                }
            }
            MemberKind::Opaque => Err("unknown member form".to_string()),
        };
        checked.map_err(err)?;
        Ok(member)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn kind(&self) -> MemberKind {
        self.kind
    }

    /// `allUsers` or `allAuthenticatedUsers`.
    /// A Google group or a domain (Google's limit of 250 per policy counts these).
    pub fn is_group_or_domain(&self) -> bool {
        matches!(self.kind, MemberKind::Group | MemberKind::Domain)
    }

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

/// A Kubernetes service account under Workload Identity:
/// `PROJECT.svc.id.goog[NAMESPACE/KSA]` (iam.v1.json, `Binding.members`).
fn check_kubernetes_sa(value: &str) -> Result<(), &'static str> {
    let bad = "a Kubernetes service account is serviceAccount:PROJECT.svc.id.goog[NAMESPACE/KSA]";
    let (pool, rest) = value.split_once(".svc.id.goog[").ok_or(bad)?;
    let (ns, ksa) = rest.strip_suffix(']').and_then(|r| r.split_once('/')).ok_or(bad)?;
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'));
    if ok(pool) && ok(ns) && ok(ksa) { Ok(()) } else { Err(bad) }
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

/// A character as a reader can identify it: `'а' (U+0430)`, or for an invisible or control
/// character only its escape, `\u{200b} (U+200B, invisible)`.
pub fn describe_char(c: char) -> String {
    let escaped: String = c.escape_debug().collect();
    if escaped == c.to_string() && !c.is_whitespace() {
        format!("the character '{c}' (U+{:04X})", c as u32)
    } else {
        format!(
            "the invisible or control character {} (U+{:04X})",
            c.escape_unicode(),
            c as u32
        )
    }
}

/// The longest local part of an e-mail address (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;
/// The longest domain name (RFC 1035 §2.3.4, without the trailing dot).
const MAX_DOMAIN: usize = 253;

/// An e-mail address as Google accounts, groups and service accounts have them: a local part of
/// letters, digits and `.`, `_`, `-`, `+` (sub-addressing) and `'` (Workspace allows it in user
/// names), dot-separated without empty parts (RFC 5322 dot-atom), and a DNS domain.
fn check_written_email(value: &str) -> Result<(), String> {
    let (local, domain) = value
        .rsplit_once('@')
        .ok_or_else(|| "expected an e-mail address after the type prefix".to_string())?;
    if local.contains('*') || domain.contains('*') {
        return Err(
            "`*` is not a wildcard in IAM: a member names one principal (list each one, or use group: or domain:)"
                .to_string(),
        );
    }
    if local.contains('%') || domain.contains('%') {
        return Err("the address is percent-encoded; write it as plain text (`%40` is `@`)".to_string());
    }
    if let Some(c) = local
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '\'')))
    {
        return Err(format!(
            "the e-mail address contains `{c}`, which Google does not accept before the `@` (letters, digits and . _ - + ' only)"
        ));
    }
    if local.len() > MAX_LOCAL_PART {
        return Err(format!(
            "the part before the `@` is longer than {MAX_LOCAL_PART} characters"
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("the part before the `@` has an empty dot-separated part".to_string());
    }
    check_written_domain(domain).map_err(|e| format!("the e-mail address has an invalid domain: {e}"))
}

/// A DNS name as IAM and DNS accept it: at least two dot-separated labels of 1 to 63 letters,
/// digits and hyphens, not starting or ending with a hyphen, a top-level label that is not all
/// digits, 253 characters at most (RFC 1035 §2.3.1 and §2.3.4, RFC 3696 §2).
pub fn check_written_domain(value: &str) -> Result<(), String> {
    if value.len() > MAX_DOMAIN {
        return Err(format!("the domain is longer than {MAX_DOMAIN} characters"));
    }
    let labels: Vec<&str> = value.split('.').collect();
    if labels.len() < 2 {
        return Err("expected a DNS domain such as example.com".to_string());
    }
    for label in &labels {
        if label.is_empty() {
            return Err(format!("`{value}` has an empty label (`..`, or a leading or trailing dot)"));
        }
        if label.len() > 63 {
            return Err(format!("the label `{label}` is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            let what = if c.is_ascii_graphic() { format!("`{c}`") } else { describe_char(c) };
            return Err(format!(
                "`{value}` contains {what}; a domain has ASCII letters, digits, hyphens and dots only (an internationalized domain is written in its xn-- form)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label `{label}` starts or ends with a hyphen"));
        }
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("`{value}` ends in a numeric label; IAM domains are names, not IP addresses"));
    }
    Ok(())
}

/// The workforce and workload identity forms the IAM documentation lists (after `principal://`
/// or `principalSet://`):
/// `iam.googleapis.com/locations/global/workforcePools/POOL/...` and
/// `iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/...`, then
/// `subject/VALUE` for a principal, and `group/ID`, `attribute.NAME/VALUE` or `*` for a set.
fn check_written_federated(rest: &str, set: bool) -> Result<(), String> {
    let shape = if set {
        "principalSet://iam.googleapis.com/locations/global/workforcePools/POOL/group/GROUP (or attribute.NAME/VALUE, or *)"
    } else {
        "principal://iam.googleapis.com/locations/global/workforcePools/POOL/subject/SUBJECT"
    };
    let bad = || format!("expected {shape}");
    let path = rest.strip_prefix("iam.googleapis.com/").ok_or_else(bad)?;
    let path = match path.strip_prefix("projects/") {
        Some(after) => {
            let (number, after) = after.split_once('/').ok_or_else(bad)?;
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("`{number}` is not a project number; {}", bad()));
            }
            after.strip_prefix("locations/global/workloadIdentityPools/").ok_or_else(bad)?
        }
        None => path.strip_prefix("locations/global/workforcePools/").ok_or_else(bad)?,
    };
    let (pool, tail) = path.split_once('/').ok_or_else(bad)?;
    let pool_ok = (4..=63).contains(&pool.len())
        && pool.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !pool.starts_with('-')
        && !pool.ends_with('-');
    if !pool_ok {
        return Err(format!("`{pool}` is not a pool id (lowercase letters, digits and hyphens)"));
    }
    let value = match (set, tail.split_once('/')) {
        (false, Some(("subject", value))) => value,
        (true, Some(("group", value))) => value,
        (true, Some((attribute, value))) if attribute.len() > "attribute.".len()
            && attribute.starts_with("attribute.") => value,
        (true, None) if tail == "*" => return Ok(()),
        _ => return Err(bad()),
    };
    if value.is_empty() {
        return Err(bad());
    }
    if let Some(c) = value.chars().find(|c| c.is_ascii_whitespace() || matches!(c, '"' | '<' | '>' | '\\' | '`' | '*')) {
        return Err(format!("the identifier contains `{c}`"));
    }
    Ok(())
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
    /// Member entries that are groups or domains (what Google's limit of 250 counts).
    pub fn group_and_domain_count(&self) -> usize {
        self.bindings.iter().flat_map(|b| b.members.iter()).filter(|m| m.is_group_or_domain()).count()
    }

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
            ("serviceAccount:acme-prod.svc.id.goog[billing/invoicer]", MemberKind::ServiceAccount),
            ("deleted:principal://iam.googleapis.com/locations/global/workforcePools/p/subject/s", MemberKind::Deleted),
            ("deleted:group:admins@acme.com?uid=123456789012345678901", MemberKind::Deleted),
            ("deleted:serviceAccount:a@p.iam.gserviceaccount.com?uid=1", MemberKind::Deleted),
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

    #[test]
    fn written_members_accept_every_form_the_iam_documentation_lists() {
        for text in [
            "user:ada@acme.com",
            "user:ada.lovelace+runwarden@acme.com",
            "user:o'brien@acme.co.uk",
            "group:billing-admins@acme.com",
            "serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com",
            "serviceAccount:123456789012-compute@developer.gserviceaccount.com",
            "domain:acme.com",
            "domain:xn--mnchen-3ya.de",
            "allUsers",
            "allAuthenticatedUsers",
            "principal://iam.googleapis.com/locations/global/workforcePools/acme-pool/subject/ada@acme.com",
            "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/group/billing",
            "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/attribute.team/billing",
            "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/*",
            "principal://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/gh-pool/subject/repo:acme/app",
            "principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/gh-pool/group/ci",
            "deleted:user:bob@acme.com?uid=123456789012345678",
            "serviceAccount:acme-prod.svc.id.goog[billing/invoicer]",
            "deleted:principal://iam.googleapis.com/locations/global/workforcePools/acme-pool/subject/ada@acme.com",
        ] {
            Member::parse_written(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn written_members_refuse_what_google_would_not_accept_or_a_reader_cannot_see() {
        for (text, reason) in [
            ("user:*@acme.com", "`*` is not a wildcard"),
            ("group:admins@*.acme.com", "`*` is not a wildcard"),
            ("user:ada@acme..com", "empty label"),
            ("domain:acme..com", "empty label"),
            ("domain:.acme.com", "empty label"),
            ("domain:-acme.com", "starts or ends with a hyphen"),
            ("domain:acme.123", "numeric label"),
            ("user:\"ada\"@acme.com", "contains `\"`"),
            ("user:<script>alert(1)</script>@acme.com", "contains `<`"),
            ("user:ada%40acme.com@evil.example", "percent-encoded"),
            ("user:.ada@acme.com", "empty dot-separated part"),
            ("user:ada@acme_corp.com", "contains `_`"),
            // Cyrillic а (U+0430) looks like a Latin a.
            ("user:ada@\u{430}cme.com", "the character 'а' (U+0430)"),
            ("user:ada\u{200b}@acme.com", "\\u{200b} (U+200B"),
            ("user:ada@acme.com\u{202e}", "\\u{202e} (U+202E"),
            ("user:ada@acme.com\u{7}", "(U+0007"),
            ("principalSet://iam.googleapis.com/locations/global/workforcePools/p/group/g", "pool id"),
            ("principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/role/g", "expected principalSet://"),
            ("principal://iam.googleapis.com/locations/global/workforcePools/acme-pool/group/g", "expected principal://"),
            ("principal://iam.googleapis.com/projects/acme/locations/global/workloadIdentityPools/gh-pool/subject/x", "not a project number"),
            ("deleted:user:bob@acme.com", "deleted:KIND:EMAIL?uid=NUMBER"),
        ] {
            let err = Member::parse_written(text).expect_err(text);
            assert!(err.to_string().contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_member_google_answers_in_an_unknown_form_is_read_as_opaque_never_refused() {
        for text in ["futureKind:x@acme.com", "principalSet://example.com/x", "deleted:allUsers", "serviceAccount:p.svc.id.goog[]"] {
            let m = Member::read(text);
            assert_eq!(m.kind(), MemberKind::Opaque, "{text}");
            assert_eq!(m.as_str(), text, "kept exactly as answered");
            assert!(Member::parse_written(text).is_err(), "{text}: never accepted in a policy file");
        }
        assert_eq!(Member::read("user:ada@acme.com").kind(), MemberKind::User);
    }

    #[test]
    fn malformed_federated_and_kubernetes_members_in_policy_files_are_still_errors() {
        for text in [
            "principalSet://iam.googleapis.com/locations/global/workforcePools//group/g",
            "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/group/",
            "serviceAccount:acme-prod.svc.id.goog[billing]",
            "deleted:principal://iam.googleapis.com/locations/global/workforcePools//subject/s",
        ] {
            assert!(Member::parse_written(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn a_member_error_never_shows_an_invisible_character_raw() {
        let err = Member::parse_written("user:ada@acme.com\u{202e}moc.live").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\u{202e}'), "{text}");
        assert!(text.contains("\\u{202e}"), "{text}");
    }

    #[test]
    fn members_read_from_google_stay_readable_even_when_runwarden_would_not_write_them() {
        // Lenient on purpose: a live policy with such a member must never become unreadable.
        for text in [
            "user:\"quoted\"@acme.com",
            "user:*@acme.com",
            "user:ada@acme-corp.com",
            "principal://iam.googleapis.com/locations/global/workforcePools/p/subject/s",
        ] {
            assert!(Member::parse(text).is_ok(), "{text:?}");
        }
    }
}
