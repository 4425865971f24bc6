//! The rules the plan, `explain` and `import` share, each written once: the principal mapping
//! (which members an Auth0 role maps to, and which members the mapping could produce), the
//! e-mail-domain test, ownership, and the expiry carried in a generated condition's title.
//! The plan engine ([`super::engine`]) is their main consumer; `explain` and `import` call the
//! same functions, so none of them can disagree with the plan.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::iam::{Condition, Member, MemberKind};
use crate::model::{Directory, User};
use crate::policy::model::{PrincipalMapping, Settings};

use super::time::{format_rfc3339, parse_rfc3339};

/// The title prefix of the conditions runwarden generates for time-boxed grants. Conditional
/// bindings whose title starts with it are owned by runwarden; all others are never touched.
pub const MANAGED_CONDITION_PREFIX: &str = "runwarden-expires-";

/// The IAM condition runwarden generates for a grant that expires at `expires`. The title and
/// expression depend only on the instant (whole seconds), so re-plans are no-ops.
pub fn expiry_condition(expires: SystemTime) -> Condition {
    let ts = format_rfc3339(expires);
    Condition {
        title: format!("{MANAGED_CONDITION_PREFIX}{ts}"),
        description: None,
        expression: format!("request.time < timestamp(\"{ts}\")"),
    }
}

/// Whether runwarden generated this condition (and therefore owns the binding).
pub fn is_managed_condition(c: &Condition) -> bool {
    c.title.starts_with(MANAGED_CONDITION_PREFIX)
}

/// The expiry text (RFC 3339, as written by [`expiry_condition`]) of a runwarden-generated
/// condition; `None` for conditions runwarden did not generate.
pub fn managed_expiry_text(c: &Condition) -> Option<&str> {
    c.title.strip_prefix(MANAGED_CONDITION_PREFIX)
}

/// The expiry of a runwarden-generated condition; `None` when runwarden did not generate it or
/// its title does not carry a readable RFC 3339 time.
pub fn managed_expiry(c: &Condition) -> Option<SystemTime> {
    managed_expiry_text(c).and_then(parse_rfc3339)
}

/// The note on an added `user:`/`group:` member outside the `users` mapping's e-mail domains
/// (the pull-request comment lists these first, as widening exposure).
pub const OUTSIDE_DOMAINS_NOTE: &str = "outside the principal mapping's e-mail domains";

/// [`OUTSIDE_DOMAINS_NOTE`] with the domains, for a member a policy grants by name whose e-mail
/// is outside the mapping's domains; `None` otherwise (service accounts, principal sets, ...).
pub fn outside_domains_note(mapping: &PrincipalMapping, m: &Member) -> Option<String> {
    let PrincipalMapping::Users { email_domains } = mapping else { return None };
    if !matches!(m.kind(), MemberKind::User | MemberKind::Group) {
        return None;
    }
    let email = m.email()?;
    (!domain_allowed(email, email_domains))
        .then(|| format!("{OUTSIDE_DOMAINS_NOTE} ({})", email_domains.join(", ")))
}

/// Whether the domain of `email` (after its last `@`) is one of `domains`, ignoring ASCII case.
pub fn domain_allowed<S: AsRef<str>>(email: &str, domains: &[S]) -> bool {
    email
        .rsplit_once('@')
        .is_some_and(|(_, d)| domains.iter().any(|a| a.as_ref().eq_ignore_ascii_case(d)))
}

/// Whether the principal mapping could produce `m`: a principal under the workforce pool, or a
/// `user:` in an allowed e-mail domain.
pub fn is_mapping_member(mapping: &PrincipalMapping, m: &Member) -> bool {
    match mapping {
        PrincipalMapping::WorkforcePool { pool } => {
            m.as_str().starts_with(&PrincipalMapping::pool_prefix(pool))
        }
        PrincipalMapping::Users { email_domains } => {
            m.kind() == MemberKind::User
                && m.email().is_some_and(|e| domain_allowed(e, email_domains))
        }
    }
}

/// How an Auth0 role named by a policy resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStatus {
    Resolved,
    /// The role exists but has no (usable) members.
    Empty,
    /// The role does not exist, or members could not be resolved: fail safe.
    Unknown,
}

/// The IAM members one Auth0 role maps to under the principal mapping.
#[derive(Debug, Clone)]
pub struct RoleMapping {
    /// Sorted, deduplicated.
    pub members: Vec<Member>,
    pub status: FeedStatus,
    /// Groups assigned to the role that came back empty (`users` mapping only).
    pub empty_groups: Vec<String>,
    /// Why each skipped user was skipped (`users` mapping only).
    pub skipped: Vec<String>,
    /// Why the role cannot be named as a workforce pool group (it then maps to nobody).
    pub invalid_name: Option<String>,
}

impl RoleMapping {
    fn unknown() -> RoleMapping {
        RoleMapping {
            members: vec![],
            status: FeedStatus::Unknown,
            empty_groups: vec![],
            skipped: vec![],
            invalid_name: None,
        }
    }
}

/// Maps the Auth0 role `role` to IAM members: with `workforcePool`, the pool's group principal
/// of an existing role; with `users`, `user:<e-mail>` of every member whose e-mail is verified
/// and in an allowed domain. A role absent from the directory, or whose members were not read,
/// is [`FeedStatus::Unknown`].
pub fn map_role(mapping: &PrincipalMapping, dir: &Directory, role: &str) -> RoleMapping {
    let Some(r) = dir.roles.get(role) else {
        return RoleMapping::unknown();
    };
    match mapping {
        PrincipalMapping::WorkforcePool { pool } => {
            let text = format!("{}group/{role}", PrincipalMapping::pool_prefix(pool));
            match Member::parse(&text) {
                Ok(m) => RoleMapping {
                    members: vec![m],
                    status: FeedStatus::Resolved,
                    ..RoleMapping::unknown()
                },
                Err(e) => RoleMapping {
                    invalid_name: Some(e.to_string()),
                    ..RoleMapping::unknown()
                },
            }
        }
        PrincipalMapping::Users { .. } if !dir.members_resolved => RoleMapping::unknown(),
        PrincipalMapping::Users { email_domains } => {
            let mut members = Vec::new();
            let mut skipped = Vec::new();
            for u in &r.members {
                match user_member(u, role, email_domains) {
                    Ok(m) => members.push(m),
                    Err(why) => skipped.push(why),
                }
            }
            members.sort();
            members.dedup();
            let status = if members.is_empty() {
                FeedStatus::Empty
            } else {
                FeedStatus::Resolved
            };
            RoleMapping {
                members,
                status,
                empty_groups: r.empty_groups.clone(),
                skipped,
                invalid_name: None,
            }
        }
    }
}

/// Why the `users` mapping grants Auth0 user `u` nothing, or `None` when it grants
/// `user:<e-mail>`: blocked, no e-mail, an e-mail Auth0 does not positively say is verified, or
/// one outside the allowed domains.
pub fn ungranted_reason(u: &User, email_domains: &[String]) -> Option<String> {
    Some(match &u.email {
        _ if u.blocked => "is blocked in Auth0".to_string(),
        None => "has no e-mail address".to_string(),
        Some(_) if !u.email_verified => "e-mail is not verified".to_string(),
        Some(e) if !domain_allowed(e, email_domains) => format!(
            "e-mail is outside the allowed domains ({})",
            email_domains.join(", ")
        ),
        Some(_) => return None,
    })
}

/// The `user:` member an Auth0 user holding `role` maps to, or why it is skipped.
fn user_member(u: &User, role: &str, email_domains: &[String]) -> Result<Member, String> {
    let email = u.email.as_deref().unwrap_or("");
    let Some(why) = ungranted_reason(u, email_domains) else {
        return Member::parse(&format!("user:{}", email.to_ascii_lowercase()))
            .map_err(|e| format!("Auth0 user {} in role `{role}` is skipped: {e}", u.user_id));
    };
    let shown = if email.is_empty() { "no e-mail" } else { email };
    Err(format!(
        "Auth0 user {} ({shown}) in role `{role}` is skipped: {why}",
        u.user_id
    ))
}

/// Which members runwarden owns: every member any policy produces (for any service), members
/// the mapping could produce ([`is_mapping_member`]) and `Settings.owned` patterns. (Members of
/// bindings under a generated condition are owned too; that is the caller's test, as it is
/// about the binding, not the member.)
#[derive(Debug, Clone)]
pub struct Ownership<'a> {
    settings: &'a Settings,
    policy_members: HashSet<Member>,
}

impl<'a> Ownership<'a> {
    /// Ownership under `settings`, with `policy_members` the members any policy produces.
    pub fn new(settings: &'a Settings, policy_members: HashSet<Member>) -> Ownership<'a> {
        Ownership {
            settings,
            policy_members,
        }
    }

    /// Whether runwarden owns `m` (and so removes it where no policy grants it).
    pub fn is_owned(&self, m: &Member) -> bool {
        self.policy_members.contains(m)
            || is_mapping_member(&self.settings.principals, m)
            || self.settings.owned.iter().any(|p| p.matches(m.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(title: &str) -> Condition {
        Condition {
            title: title.into(),
            description: None,
            expression: "true".into(),
        }
    }

    #[test]
    fn the_domain_test_takes_the_part_after_the_last_at_and_ignores_case() {
        let domains = ["acme.com".to_string()];
        assert!(domain_allowed("ada@ACME.com", &domains));
        assert!(!domain_allowed("ada@acme.com@evil.example", &domains));
        assert!(!domain_allowed("ada@sub.acme.com", &domains));
        assert!(!domain_allowed("no-at-sign", &domains));
    }

    #[test]
    fn an_expiry_is_read_back_only_from_a_title_runwarden_generated() {
        let t = parse_rfc3339("2027-01-31T00:00:00Z").unwrap();
        assert_eq!(managed_expiry(&expiry_condition(t)), Some(t));
        // A foreign title, a bare or short prefix, and garbage after it: no expiry, no panic.
        for title in [
            "",
            "runwarden",
            "other-2027-01-31T00:00:00Z",
            MANAGED_CONDITION_PREFIX,
            "runwarden-expires-soon",
        ] {
            assert_eq!(managed_expiry(&cond(title)), None, "{title:?}");
        }
    }
}
