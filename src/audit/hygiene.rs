//! Auth0 hygiene findings (`runwarden audit`, and part of every plan): the identity-side
//! settings that decide whether the access runwarden grants is as narrow as the policies say.
//!
//! Pure: it takes what the Management API returned (resource servers, signing keys, roles) and
//! the desired model, and returns findings, each with a severity, the evidence and the fix.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::model::{AccessPolicy, Directory, Organizations, ResourceServer, SigningKey};
use crate::policy::model::{Desired, Principal};

/// What the audit looks at.
#[derive(Debug, Clone)]
pub struct Tenant<'a> {
    pub resource_servers: &'a [ResourceServer],
    pub signing_keys: &'a [SigningKey],
    pub directory: &'a Directory,
    /// Whether the tenant has Organizations (roles held through them are invisible).
    pub organizations: &'a Organizations,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

/// One hygiene finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct HygieneFinding {
    pub severity: Severity,
    /// Stable kebab-case code, the same in `audit` and in every plan (`auth0-…` for the
    /// tenant's settings; `unknown-role` and `empty-role` are the plan's own codes).
    pub code: &'static str,
    /// What is wrong, with the evidence (names, numbers).
    pub message: String,
    /// How to fix it.
    pub fix: String,
    /// Policy locations involved (`file:line:col`).
    pub sources: Vec<String>,
}

/// Every hygiene finding for this tenant and these policies, sorted (errors first).
pub fn audit(desired: &Desired, tenant: &Tenant<'_>, now: SystemTime) -> Vec<HygieneFinding> {
    let mut out = Vec::new();
    audit_audiences(desired, tenant, &mut out);
    audit_signing_keys(desired, tenant, now, &mut out);
    audit_roles(desired, tenant, &mut out);
    out.extend(audit_organizations(desired, tenant.organizations));
    out.sort();
    out
}

/// Where an audience is named, and who the policies naming it grant.
#[derive(Debug, Default)]
struct AudienceUse {
    sources: Vec<String>,
    /// Some policy naming it grants Auth0 roles (people, on their own behalf).
    roles: bool,
    /// Some policy naming it grants machines (Auth0 M2M applications, client credentials).
    machines: bool,
}

/// Audiences named in policies must be Auth0 APIs with sane lifetimes, RBAC, and access
/// policies that let the granted subjects get a token.
fn audit_audiences(desired: &Desired, tenant: &Tenant<'_>, out: &mut Vec<HygieneFinding>) {
    let audits = &desired.settings.audits;
    let mut audiences: Vec<(String, AudienceUse)> = Vec::new();
    for policy in &desired.policies {
        for aud in policy.exposure.audiences.iter().flatten() {
            let source = policy.exposure.source.as_ref().unwrap_or(&policy.source).to_string();
            let at = match audiences.iter().position(|(a, _)| a == aud) {
                Some(i) => i,
                None => {
                    audiences.push((aud.clone(), AudienceUse::default()));
                    audiences.len() - 1
                }
            };
            let usage = &mut audiences[at].1;
            usage.sources.push(source);
            usage.roles |= policy.invokers.iter().any(|i| matches!(i.principal, Principal::Auth0Role(_)));
            usage.machines |= policy.invokers.iter().any(|i| matches!(i.principal, Principal::Machine(_)));
        }
    }
    for (aud, usage) in &audiences {
        let sources = &usage.sources;
        let Some(api) = tenant.resource_servers.iter().find(|r| &r.identifier == aud) else {
            out.push(HygieneFinding {
                severity: Severity::Error,
                code: "auth0-audience-not-an-api",
                message: format!("audience {aud} is named in a policy but no Auth0 API has this identifier, so no token can be issued for it"),
                fix: format!("create an API in Auth0 (Applications > APIs) with identifier {aud}, or correct the audience in the policy"),
                sources: sources.clone(),
            });
            continue;
        };
        if Duration::from_secs(api.token_lifetime) > audits.max_token_lifetime {
            out.push(HygieneFinding {
                severity: Severity::Warning,
                code: "auth0-token-lifetime-too-long",
                message: format!(
                    "API {:?} ({aud}) issues access tokens valid for {}s, above maxTokenLifetime {}s: a revoked person keeps access that long",
                    api.name, api.token_lifetime, audits.max_token_lifetime.as_secs()
                ),
                fix: format!("set the API's token_lifetime to at most {}s (PATCH /api/v2/resource-servers/{{id}})", audits.max_token_lifetime.as_secs()),
                sources: sources.clone(),
            });
        }
        out.extend(token_reach(api, usage));
    }
}

/// Who can get a token for `api`, from RBAC (`enforce_policies`) and the API's application
/// access policies (`subject_type_authorization`; Auth0 "API Access Policies for Applications",
/// https://auth0.com/docs/get-started/apis/api-access-policies-for-applications):
///
/// * user flows `allow_all` (also an unknown value, read as the widest): any application of the
///   tenant gets a token on any user's behalf; without RBAC the token carries every permission
///   asked for: `auth0-rbac-not-enforced`, error.
/// * `require_client_grant`: only applications with a user client grant for the API get one;
///   without RBAC any user of those applications still gets every permission: the same code,
///   a warning.
/// * `deny_all`: no user gets a token, so RBAC is moot; but when the policies grant Auth0 roles
///   through this audience, none of those people can get a token for it:
///   `auth0-api-denies-users`, warning.
/// * With RBAC on, a user's token carries only the permissions of the user's roles, whichever
///   applications may ask: no finding.
/// * Client credentials `deny_all` while the policies grant machines through the audience: no
///   machine can get a token (`auth0-api-denies-clients`, warning). `require_client_grant` (the
///   only other value, and the default) needs a client grant per machine, which is not read.
fn token_reach(api: &ResourceServer, usage: &AudienceUse) -> Vec<HygieneFinding> {
    let (name, aud, sources) = (&api.name, &api.identifier, usage.sources.clone());
    let mut out = Vec::new();
    let user = &api.user_access;
    let widest = !matches!(user, AccessPolicy::RequireClientGrant | AccessPolicy::DenyAll);
    if !api.enforce_policies && *user != AccessPolicy::DenyAll {
        let (severity, who) = if widest {
            (Severity::Error, "any user of any application can get a token for it".to_string())
        } else {
            (Severity::Warning, "any user of an application holding a user client grant for it can get a token for it".to_string())
        };
        let unknown = match user {
            AccessPolicy::Unknown(v) => format!(" (user access policy {v:?} is not one runwarden knows, so it is read as allow_all)"),
            _ => String::new(),
        };
        out.push(HygieneFinding {
            severity,
            code: "auth0-rbac-not-enforced",
            message: format!("API {name:?} ({aud}) guards a Cloud Run service but does not enforce RBAC, and its user access policy is {}{unknown}: {who}, with every permission it asks for", user.name()),
            fix: "enable RBAC on the API (enforce_policies: true) and grant access through roles; also set its user access policy to require_client_grant for only the applications that call it".into(),
            sources: sources.clone(),
        });
    }
    if *user == AccessPolicy::DenyAll && usage.roles {
        out.push(HygieneFinding {
            severity: Severity::Warning,
            code: "auth0-api-denies-users",
            message: format!("API {name:?} ({aud}) issues no token on any user's behalf (user access policy deny_all), yet policies grant Auth0 roles through this audience: those people cannot get a token for it"),
            fix: "set the API's user access policy to require_client_grant (and grant the applications people sign in with) or allow_all, or stop naming this audience for people".into(),
            sources: sources.clone(),
        });
    }
    if api.client_access == AccessPolicy::DenyAll && usage.machines {
        out.push(HygieneFinding {
            severity: Severity::Warning,
            code: "auth0-api-denies-clients",
            message: format!("API {name:?} ({aud}) issues no token by client credentials (client access policy deny_all), yet policies grant machines through this audience: they cannot get a token for it"),
            fix: "set the API's client access policy to require_client_grant and give each machine a client grant, or stop naming this audience for machines".into(),
            sources,
        });
    }
    out
}

/// Signing keys: the current key is young enough, and a next key is staged for rotation.
fn audit_signing_keys(
    desired: &Desired,
    tenant: &Tenant<'_>,
    now: SystemTime,
    out: &mut Vec<HygieneFinding>,
) {
    let audits = &desired.settings.audits;
    let current = tenant.signing_keys.iter().find(|k| k.current && !k.revoked);
    match current {
        None => out.push(HygieneFinding {
            severity: Severity::Error,
            code: "auth0-no-current-signing-key",
            message: "the tenant lists no current, unrevoked signing key".into(),
            fix: "rotate the signing key (POST /api/v2/keys/signing/rotate)".into(),
            sources: vec![],
        }),
        Some(key) => {
            if let Some(age) = key.since.and_then(|s| now.duration_since(s).ok()) {
                if age > audits.max_signing_key_age {
                    out.push(HygieneFinding {
                        severity: Severity::Warning,
                        code: "auth0-signing-key-too-old",
                        message: format!(
                            "the current signing key {:?} is {} days old, above maxSigningKeyAge {} days",
                            key.kid, age.as_secs() / 86_400, audits.max_signing_key_age.as_secs() / 86_400
                        ),
                        fix: "rotate the signing key (POST /api/v2/keys/signing/rotate) after checking that every verifier reads the JWKS".into(),
                        sources: vec![desired.settings.source.to_string()],
                    });
                }
            }
        }
    }
    if !tenant.signing_keys.iter().any(|k| k.next && !k.revoked) {
        out.push(HygieneFinding {
            severity: Severity::Info,
            code: "auth0-no-next-signing-key",
            message: "no next signing key is staged: verifiers cannot cache it before a rotation".into(),
            fix: "stage a next key so it appears in the JWKS before it signs anything".into(),
            sources: vec![],
        });
    }
}

/// Roles held through Organizations: a role assigned to a member within an organization is not
/// listed by `GET /roles/{id}/users` (Auth0 Management API: organization member roles are read
/// with `GET /organizations/{id}/members/{user_id}/roles`), so when the tenant has organizations
/// and the policies name Auth0 roles, who holds them that way is invisible to runwarden: it
/// grants nothing for such a holding, though tokens issued through the organization may carry
/// the role. When organizations could not be listed, the answer is unknown, and said so.
fn audit_organizations(desired: &Desired, organizations: &Organizations) -> Option<HygieneFinding> {
    let mut roles: Vec<&str> = Vec::new();
    let mut sources = Vec::new();
    for policy in &desired.policies {
        for invoker in &policy.invokers {
            if let Principal::Auth0Role(role) = &invoker.principal {
                if !roles.contains(&role.as_str()) {
                    roles.push(role);
                }
                sources.push(invoker.source.to_string());
            }
        }
    }
    if roles.is_empty() {
        return None;
    }
    roles.sort_unstable();
    let named = roles.join(", ");
    match organizations {
        Organizations::None => None,
        Organizations::Present { names, more } => Some(HygieneFinding {
            severity: Severity::Warning,
            code: "auth0-roles-via-organizations",
            message: format!(
                "the tenant has Organizations ({}{}): a role assigned to a member within an organization is not listed with the role's users, so runwarden grants nothing for it while tokens issued through the organization may carry it; the policies name roles {named}",
                names.join(", "),
                if *more { ", and more" } else { "" }
            ),
            fix: "assign these roles at the tenant level (directly or through a group), not within organizations, for runwarden to grant them; check the organizations' member roles for these names".into(),
            sources,
        }),
        Organizations::Unknown { reason } => Some(HygieneFinding {
            severity: Severity::Info,
            code: "auth0-organizations-unknown",
            message: format!("whether the roles the policies name ({named}) are also held through Organizations is unknown: {reason}"),
            fix: "grant the Management API client read:organizations (optional; runwarden only lists the first organizations)".into(),
            sources,
        }),
    }
}

/// Roles named in policies exist and have members.
fn audit_roles(desired: &Desired, tenant: &Tenant<'_>, out: &mut Vec<HygieneFinding>) {
    let mut seen = BTreeSet::new();
    for policy in &desired.policies {
        for invoker in &policy.invokers {
            let Principal::Auth0Role(role) = &invoker.principal else { continue };
            if !seen.insert(role.clone()) {
                continue;
            }
            match tenant.directory.roles.get(role) {
                None => out.push(HygieneFinding {
                    severity: Severity::Error,
                    code: "unknown-role",
                    message: format!("role {role:?} is named in policy {:?} but does not exist in Auth0", policy.name),
                    fix: format!("create the role {role:?} in Auth0, or correct the name in the policy"),
                    sources: vec![invoker.source.to_string()],
                }),
                Some(r) if tenant.directory.members_resolved && r.members.is_empty() => out.push(HygieneFinding {
                    severity: Severity::Warning,
                    code: "empty-role",
                    message: format!("role {role:?} has no members (directly or through groups): policy {:?} grants nothing through it", policy.name),
                    fix: "assign the role to its members in Auth0, or remove it from the policy".into(),
                    sources: vec![invoker.source.to_string()],
                }),
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, User};
    use std::path::Path;

    const DAY: u64 = 86_400;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000) // 2026-11-29
    }

    fn desired() -> Desired {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        crate::policy::load_at(&dir, now()).expect("the example policies load")
    }

    fn api(identifier: &str, lifetime: u64, rbac: bool) -> ResourceServer {
        ResourceServer {
            identifier: identifier.into(),
            name: identifier.trim_start_matches("https://").into(),
            token_lifetime: lifetime,
            enforce_policies: rbac,
            permissions_in_token: true,
            user_access: AccessPolicy::AllowAll,
            client_access: AccessPolicy::RequireClientGrant,
        }
    }

    fn key(kid: &str, current: bool, next: bool, age_days: u64) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            current,
            next,
            previous: false,
            revoked: false,
            since: Some(now() - Duration::from_secs(age_days * DAY)),
        }
    }

    /// Every role the example policies name, each with one member.
    fn directory(desired: &Desired) -> Directory {
        let mut d = Directory { members_resolved: true, ..Directory::default() };
        for p in &desired.policies {
            for i in &p.invokers {
                if let Principal::Auth0Role(r) = &i.principal {
                    let user = User {
                        user_id: format!("auth0|{r}"),
                        email: Some(format!("{r}@acme.com")),
                        email_verified: true,
                        blocked: false,
                        via_groups: vec![],
                        direct: true,
                    };
                    d.roles.insert(r.clone(), Role { id: format!("rol_{r}"), name: r.clone(), members: vec![user], empty_groups: vec![] });
                }
            }
        }
        d
    }

    fn codes(findings: &[HygieneFinding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.code).collect()
    }

    #[test]
    fn a_tidy_tenant_has_no_findings() {
        let desired = desired();
        let apis = [api("https://billing.acme.com", 3600, true), api("https://payments.acme.com", 600, true)];
        let keys = [key("k1", true, false, 10), key("k2", false, true, 0)];
        let dir = directory(&desired);
        let tenant = Tenant { resource_servers: &apis, signing_keys: &keys, directory: &dir, organizations: &Organizations::None };
        assert_eq!(codes(&audit(&desired, &tenant, now())), Vec::<&str>::new());
    }

    #[test]
    fn each_hygiene_problem_is_found_with_its_evidence() {
        let desired = desired();
        let mut dir = directory(&desired);
        dir.roles.remove("payments-engineer");
        dir.roles.get_mut("platform-admin").unwrap().members.clear();
        let apis = [api("https://billing.acme.com", 86_400, false), api("https://payments.acme.com", 600, true)];
        let keys = [key("k1", true, false, 400)];
        let tenant = Tenant { resource_servers: &apis, signing_keys: &keys, directory: &dir, organizations: &Organizations::None };
        let findings = audit(&desired, &tenant, now());
        assert_eq!(
            codes(&findings),
            ["auth0-rbac-not-enforced", "unknown-role", "auth0-signing-key-too-old", "auth0-token-lifetime-too-long", "empty-role", "auth0-no-next-signing-key"]
        );
        let lifetime = findings.iter().find(|f| f.code == "auth0-token-lifetime-too-long").unwrap();
        assert!(lifetime.message.contains("86400s") && lifetime.message.contains("3600s"), "{}", lifetime.message);
        let unknown = findings.iter().find(|f| f.code == "unknown-role").unwrap();
        assert!(unknown.message.contains("payments-engineer"));
        assert!(unknown.sources[0].contains("payments.yaml"), "{:?}", unknown.sources);
        let old = findings.iter().find(|f| f.code == "auth0-signing-key-too-old").unwrap();
        assert!(old.message.contains("400 days"), "{}", old.message);
    }

    #[test]
    fn an_audience_without_an_api_is_an_error_and_no_current_key_is_too() {
        let desired = desired();
        let dir = directory(&desired);
        let keys = [SigningKey { revoked: true, ..key("k1", true, true, 1) }];
        let tenant = Tenant { resource_servers: &[], signing_keys: &keys, directory: &dir, organizations: &Organizations::None };
        let findings = audit(&desired, &tenant, now());
        assert_eq!(codes(&findings), ["auth0-audience-not-an-api", "auth0-audience-not-an-api", "auth0-no-current-signing-key", "auth0-no-next-signing-key"]);
        assert!(findings[0].fix.contains("https://billing.acme.com"));
        assert!(findings[1].fix.contains("https://payments.acme.com"));
    }

    /// Every combination of RBAC and the payments API's application access policies (the
    /// example payments policy grants an Auth0 role and a machine through its audience), and
    /// the findings each must give: (RBAC, user policy, client policy) -> (code, severity).
    #[test]
    fn token_reach_follows_rbac_and_the_apis_access_policy_per_subject() {
        use AccessPolicy::{AllowAll as Allow, DenyAll as Deny, RequireClientGrant as Grant};
        let unknown = || AccessPolicy::Unknown("allow_some".into());
        let cases: Vec<(bool, AccessPolicy, AccessPolicy, &[(&str, Severity)])> = vec![
            (false, Allow, Grant, &[("auth0-rbac-not-enforced", Severity::Error)]),
            (false, unknown(), Grant, &[("auth0-rbac-not-enforced", Severity::Error)]),
            (false, Grant, Grant, &[("auth0-rbac-not-enforced", Severity::Warning)]),
            (false, Deny, Grant, &[("auth0-api-denies-users", Severity::Warning)]),
            (true, Allow, Grant, &[]),
            (true, unknown(), Grant, &[]),
            (true, Grant, Grant, &[]),
            (true, Deny, Grant, &[("auth0-api-denies-users", Severity::Warning)]),
            (true, Grant, Deny, &[("auth0-api-denies-clients", Severity::Warning)]),
            (false, Deny, Deny, &[("auth0-api-denies-users", Severity::Warning), ("auth0-api-denies-clients", Severity::Warning)]),
        ];
        let desired = desired();
        let dir = directory(&desired);
        let keys = [key("k1", true, true, 1)];
        for (rbac, user, client, expected) in cases {
            let case = format!("RBAC {rbac}, user {}, client {}", user.name(), client.name());
            let payments = ResourceServer { user_access: user, client_access: client, ..api("https://payments.acme.com", 600, rbac) };
            let apis = [api("https://billing.acme.com", 600, true), payments];
            let tenant = Tenant { resource_servers: &apis, signing_keys: &keys, directory: &dir, organizations: &Organizations::None };
            let found: Vec<(&str, Severity)> = audit(&desired, &tenant, now()).iter().map(|f| (f.code, f.severity)).collect();
            let mut expected = expected.to_vec();
            expected.sort_by_key(|(c, s)| (*s, *c));
            assert_eq!(found, expected, "{case}");
        }
        // The message says which applications can get a token, and an unknown value is named.
        let open = ResourceServer { user_access: unknown(), ..api("https://payments.acme.com", 600, false) };
        let apis = [api("https://billing.acme.com", 600, true), open];
        let tenant = Tenant { resource_servers: &apis, signing_keys: &keys, directory: &dir, organizations: &Organizations::None };
        let finding = audit(&desired, &tenant, now()).into_iter().find(|f| f.code == "auth0-rbac-not-enforced").unwrap();
        assert!(finding.message.contains("\"allow_some\" is not one runwarden knows"), "{}", finding.message);
        assert!(finding.message.contains("any user of any application"), "{}", finding.message);
    }

    /// Organizations: none is no finding; some is a warning naming them and every role the
    /// policies name (with their positions); unknown is an info saying the answer is unknown
    /// and which scope would tell.
    #[test]
    fn roles_that_could_be_held_through_organizations_are_a_finding_and_an_unknown_answer_says_so() {
        let desired = desired();
        let dir = directory(&desired);
        let apis = [api("https://billing.acme.com", 600, true), api("https://payments.acme.com", 600, true)];
        let keys = [key("k1", true, true, 1)];
        let present = Organizations::Present { names: vec!["partner-co".into()], more: true };
        let unknown = Organizations::Unknown { reason: "HTTP 403 insufficient_scope".into() };
        let cases: [(&Organizations, &[(&str, Severity)]); 3] = [
            (&Organizations::None, &[]),
            (&present, &[("auth0-roles-via-organizations", Severity::Warning)]),
            (&unknown, &[("auth0-organizations-unknown", Severity::Info)]),
        ];
        for (organizations, expected) in cases {
            let tenant = Tenant { resource_servers: &apis, signing_keys: &keys, directory: &dir, organizations };
            let findings = audit(&desired, &tenant, now());
            let found: Vec<(&str, Severity)> = findings.iter().map(|f| (f.code, f.severity)).collect();
            assert_eq!(found, *expected, "{organizations:?}");
            if let Some(f) = findings.first() {
                assert!(f.message.contains("billing-admin, billing-oncall, payments-engineer, platform-admin"), "{}", f.message);
                assert!(f.sources.iter().any(|s| s.contains("payments.yaml")), "{:?}", f.sources);
            }
        }
        let tenant = Tenant { resource_servers: &apis, signing_keys: &keys, directory: &dir, organizations: &present };
        let warning = audit(&desired, &tenant, now()).remove(0);
        assert!(warning.message.contains("(partner-co, and more)"), "{}", warning.message);
    }
}
