//! `runwarden check-token`: verify a JWT against its issuer's keys and explain, in plain words,
//! why a service would refuse it.
//!
//! The accepted issuers are the ones the Settings name (`spec.auth0.issuers`, default
//! `https://DOMAIN/`; a custom domain issues tokens under its own name): runwarden never
//! fetches keys from a URL taken out of an untrusted token that the Settings do not name. Checks run in a fixed order and all of them run, so one
//! report lists every reason; the audience comes first because it is the most common mistake
//! (a token requested for another API).
//!
//! Never printed: the signature, or the token as a whole. The report carries only the decoded
//! header and claims.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Serialize;
use serde_json::Value;

use crate::policy::model::{Desired, Principal};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// What the token is checked against.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// The configured issuers (`spec.auth0.issuers`): a token's `iss` must be one of them,
    /// exactly (Auth0: `https://DOMAIN/`, or a custom domain's `https://HOST/`).
    pub issuers: Vec<String>,
    /// The tenant's published keys, read from one of `issuers` (every domain of a tenant
    /// publishes the same keys).
    pub jwks: JwkSet,
    /// The service the token is meant for, and the audiences it accepts (its URL and its
    /// `customAudiences`). `None`: no audience check.
    pub service: Option<ServiceAudiences>,
    pub now: SystemTime,
}

#[derive(Debug, Clone)]
pub struct ServiceAudiences {
    /// `project/region/name`.
    pub service: String,
    pub audiences: Vec<String>,
}

/// The outcome of a check: what the token says, and every reason it would be refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenReport {
    pub algorithm: Option<String>,
    pub key_id: Option<String>,
    /// The decoded claims, with nothing omitted but the signature (which is never decoded into
    /// the report).
    pub claims: BTreeMap<String, Value>,
    /// The claim the roles were read from (a namespaced `.../roles` claim), and the roles.
    pub roles_claim: Option<String>,
    pub roles: Vec<String>,
    /// Why the token would be refused, most important first. Empty: accepted.
    pub problems: Vec<Problem>,
    /// Policies whose invokers name one of the token's roles.
    pub matching_policies: Vec<PolicyMatch>,
}

impl TokenReport {
    pub fn accepted(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One reason for refusal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "code", rename_all = "kebab-case")]
pub enum Problem {
    /// Not a JWT at all (wrong number of parts, bad base64 or JSON).
    Malformed { detail: String },
    AudienceMismatch { token: Vec<String>, accepted: Vec<String>, service: String },
    Expired { expired_at: u64, now: u64 },
    NotYetValid { not_before: u64, now: u64 },
    WrongIssuer { token: String, expected: Vec<String> },
    /// The `kid` is not among the issuer's keys: rotated out, or another tenant's token.
    UnknownKey { kid: Option<String>, known: Vec<String> },
    BadSignature { detail: String },
    UnsupportedAlgorithm { algorithm: String },
    /// No namespaced roles claim: the Auth0 Action that adds roles did not run.
    MissingRoleClaim,
}

impl Problem {
    /// A plain-words explanation with what to do about it.
    pub fn explain(&self) -> String {
        match self {
            Problem::Malformed { detail } => {
                format!("this is not a JWT ({detail}); pass the raw token (three base64url parts separated by dots) on stdin")
            }
            Problem::AudienceMismatch { token, accepted, service } => format!(
                "audience mismatch: the token is for {}, but {service} accepts only {}; request the token with one of those audiences (Auth0: the `audience` parameter), or add the audience to the policy's `exposure.audiences`",
                list(token),
                list(accepted)
            ),
            Problem::Expired { expired_at, now } => format!(
                "expired: `exp` is {} ({} ago, beyond the {}s clock-skew allowance); get a fresh token",
                rfc3339_secs(*expired_at),
                human(now.saturating_sub(*expired_at)),
                LEEWAY.as_secs()
            ),
            Problem::NotYetValid { not_before, now } => format!(
                "not yet valid: `nbf` is {} ({} from now); check the clock of the machine that minted it",
                rfc3339_secs(*not_before),
                human(not_before.saturating_sub(*now))
            ),
            Problem::WrongIssuer { token, expected } => {
                let slash = expected.iter().find(|e| token.trim_end_matches('/') == e.trim_end_matches('/'));
                if let Some(expected) = slash {
                    format!("wrong issuer: the token says {token:?} but the issuer is {expected:?}; they differ only in the trailing slash, which Auth0 issuers always have, so the verifier must compare exactly `{expected}`")
                } else {
                    format!("wrong issuer: the token was issued by {token:?}, which is not a configured issuer (Settings spec.auth0.issuers: {}); its keys were not fetched. If {token:?} is this tenant's custom domain, add it to spec.auth0.issuers; otherwise the token comes from another tenant or environment", list(expected))
                }
            }
            Problem::UnknownKey { kid, known } => format!(
                "unknown signing key {}: the issuer publishes {}; the key was rotated out (tokens signed with it are no longer accepted) or the token comes from another tenant; get a new token",
                kid.as_deref().map(|k| format!("{k:?}")).unwrap_or_else(|| "(no kid in the header)".into()),
                list(known)
            ),
            Problem::BadSignature { detail } => {
                format!("bad signature ({detail}): the token was altered or signed by someone else; do not trust it")
            }
            Problem::UnsupportedAlgorithm { algorithm } => {
                format!("unsupported algorithm {algorithm:?}: Auth0 access tokens for APIs are RS256; `none` and HMAC tokens are refused")
            }
            Problem::MissingRoleClaim => "no roles claim: the token carries no namespaced `.../roles` claim, so no policy can match it; add the roles in an Auth0 post-login Action (e.g. `api.accessToken.setCustomClaim('https://YOUR-NAMESPACE/roles', event.authorization.roles)`)".into(),
        }
    }
}

/// A policy that grants one of the token's roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyMatch {
    pub role: String,
    pub policy: String,
    /// `file:line:col` of the invoker entry.
    pub source: String,
}

/// Checks `token` (the raw compact JWT) against `expect`, and matches its roles to policies.
pub fn check_token(token: &str, expect: &Expectation, desired: Option<&Desired>) -> TokenReport {
    let now = expect.now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut report = TokenReport {
        algorithm: None,
        key_id: None,
        claims: BTreeMap::new(),
        roles_claim: None,
        roles: Vec::new(),
        problems: Vec::new(),
        matching_policies: Vec::new(),
    };
    let token = token.trim();
    let header = match jsonwebtoken::decode_header(token) {
        Ok(h) => h,
        Err(e) => {
            report.problems.push(Problem::Malformed { detail: e.to_string() });
            return report;
        }
    };
    report.algorithm = Some(format!("{:?}", header.alg));
    report.key_id = header.kid.clone();
    let claims = match decode_claims(token) {
        Ok(c) => c,
        Err(detail) => {
            report.problems.push(Problem::Malformed { detail });
            return report;
        }
    };

    // Audience first.
    if let Some(service) = &expect.service {
        let token_aud = strings(claims.get("aud"));
        if !token_aud.iter().any(|a| service.audiences.contains(a)) {
            report.problems.push(Problem::AudienceMismatch {
                token: token_aud,
                accepted: service.audiences.clone(),
                service: service.service.clone(),
            });
        }
    }
    if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
        if exp.saturating_add(LEEWAY.as_secs()) < now {
            report.problems.push(Problem::Expired { expired_at: exp, now });
        }
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64) {
        if nbf > now.saturating_add(LEEWAY.as_secs()) {
            report.problems.push(Problem::NotYetValid { not_before: nbf, now });
        }
    }
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if !expect.issuers.iter().any(|i| i == iss) {
        report.problems.push(Problem::WrongIssuer { token: iss.to_string(), expected: expect.issuers.clone() });
    }
    if let Some(problem) = verify_signature(token, header.alg, header.kid.as_deref(), &expect.jwks) {
        report.problems.push(problem);
    }

    match roles_claim(&claims) {
        Some((name, roles)) => {
            report.roles_claim = Some(name);
            report.roles = roles;
        }
        None => report.problems.push(Problem::MissingRoleClaim),
    }
    if let Some(desired) = desired {
        report.matching_policies = match_policies(&report.roles, desired);
    }
    report.claims = claims;
    report
}

/// The `iss` a token claims, unverified: only to pick which configured issuer's keys verify
/// it. `None` when the token cannot be decoded or has no string `iss`.
pub fn claimed_issuer(token: &str) -> Option<String> {
    decode_claims(token.trim()).ok()?.get("iss")?.as_str().map(str::to_string)
}

fn decode_claims(token: &str) -> Result<BTreeMap<String, Value>, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(format!("expected 3 dot-separated parts, found {}", parts.len()));
    }
    let bytes = base64url(parts[1]).ok_or("the payload is not base64url")?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the payload is not a JSON object: {e}"))
}

fn verify_signature(token: &str, alg: Algorithm, kid: Option<&str>, jwks: &JwkSet) -> Option<Problem> {
    if !matches!(alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::ES256 | Algorithm::ES384 | Algorithm::PS256) {
        return Some(Problem::UnsupportedAlgorithm { algorithm: format!("{alg:?}") });
    }
    let known: Vec<String> = jwks.keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
    let Some(jwk) = kid.and_then(|kid| jwks.find(kid)) else {
        return Some(Problem::UnknownKey { kid: kid.map(str::to_string), known });
    };
    let key = match DecodingKey::from_jwk(jwk) {
        Ok(k) => k,
        Err(e) => return Some(Problem::BadSignature { detail: format!("the published key cannot be used: {e}") }),
    };
    // Only the signature here: every claim is checked above, with an explanation.
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    match jsonwebtoken::decode::<Value>(token, &key, &validation) {
        Ok(_) => None,
        Err(e) => Some(Problem::BadSignature { detail: e.to_string() }),
    }
}

/// The namespaced roles claim: a claim whose name ends with `/roles` (Auth0 requires custom
/// claims to be namespaced), or a plain `roles` claim, holding an array of strings.
fn roles_claim(claims: &BTreeMap<String, Value>) -> Option<(String, Vec<String>)> {
    claims
        .iter()
        .filter(|(name, value)| (name.ends_with("/roles") || *name == "roles") && value.is_array())
        .map(|(name, value)| (name.clone(), strings(Some(value))))
        .next()
}

fn match_policies(roles: &[String], desired: &Desired) -> Vec<PolicyMatch> {
    let mut out = Vec::new();
    for policy in &desired.policies {
        for invoker in &policy.invokers {
            if let Principal::Auth0Role(role) = &invoker.principal {
                if roles.contains(role) {
                    out.push(PolicyMatch {
                        role: role.clone(),
                        policy: policy.name.clone(),
                        source: invoker.source.to_string(),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.policy, &a.role).cmp(&(&b.policy, &b.role)));
    out
}

/// A string or an array of strings (the shapes of `aud`).
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// base64url, padded or not (JWT segments are unpadded; some encoders pad anyway).
fn base64url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "(none)".into() } else { items.join(", ") }
}

/// A JWT time claim as RFC 3339; a claim beyond what the clock can represent (the token is
/// user input) is shown as its number instead of overflowing.
fn rfc3339_secs(secs: u64) -> String {
    match SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
        Some(t) if secs < 253_402_300_800 => crate::time::format_rfc3339(t, crate::time::Fraction::Seconds),
        _ => format!("{secs} (seconds since 1970, beyond the year 9999)"),
    }
}

fn human(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The report as text for a terminal: claims (never the signature), the verdict, every problem
/// explained, and the policies the roles match.
pub fn render_text(report: &TokenReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "token: {} signed, key {}",
        report.algorithm.as_deref().unwrap_or("?"),
        report.key_id.as_deref().unwrap_or("(none)")
    );
    for name in ["iss", "sub", "aud", "azp", "scope", "iat", "nbf", "exp"] {
        if let Some(value) = report.claims.get(name) {
            let shown = match (name, value.as_u64()) {
                ("iat" | "nbf" | "exp", Some(secs)) => rfc3339_secs(secs),
                _ => match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            };
            let _ = writeln!(out, "  {name:<5} {shown}");
        }
    }
    if let Some(claim) = &report.roles_claim {
        let _ = writeln!(out, "  roles {} (claim {claim})", list(&report.roles));
    }
    if report.accepted() {
        let _ = writeln!(out, "verdict: accepted");
    } else {
        let _ = writeln!(out, "verdict: REFUSED, {} reason(s):", report.problems.len());
        for (i, p) in report.problems.iter().enumerate() {
            let _ = writeln!(out, "  {}. {}", i + 1, p.explain());
        }
    }
    if !report.roles.is_empty() {
        if report.matching_policies.is_empty() {
            let _ = writeln!(out, "no policy grants any of the token's roles");
        } else {
            let _ = writeln!(out, "policies matching the token's roles:");
            for m in &report.matching_policies {
                let _ = writeln!(out, "  {} via role {} ({})", m.policy, m.role, m.source);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const CURRENT: &str = include_str!("../../tests/fixtures/keys/current.pem");
    const ROTATED: &str = include_str!("../../tests/fixtures/keys/rotated.pem");
    const ISSUER: &str = "https://acme.eu.auth0.com/";
    const CUSTOM: &str = "https://login.acme.com/";
    const NOW: u64 = 1_800_000_000;

    fn jwk(pem: &str, kid: &str) -> Jwk {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(kid.into());
        jwk
    }

    fn sign(pem: &str, kid: &str, claims: Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap()
    }

    fn good_claims() -> Value {
        json!({
            "iss": ISSUER, "sub": "auth0|ada", "aud": ["https://billing.acme.com", "https://acme.eu.auth0.com/userinfo"],
            "iat": NOW - 60, "exp": NOW + 3600, "https://acme.com/roles": ["billing-admin"],
        })
    }

    fn expectation() -> Expectation {
        Expectation {
            issuers: vec![ISSUER.into(), CUSTOM.into()],
            jwks: JwkSet { keys: vec![jwk(CURRENT, "key-current")] },
            service: Some(ServiceAudiences {
                service: "acme-prod/europe-west1/billing-api".into(),
                audiences: vec!["https://billing-api-abc.a.run.app".into(), "https://billing.acme.com".into()],
            }),
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
        }
    }

    fn codes(report: &TokenReport) -> Vec<String> {
        report
            .problems
            .iter()
            .map(|p| serde_json::to_value(p).unwrap()["code"].as_str().unwrap().to_string())
            .collect()
    }

    /// Each case: a change to a good token, and the problems it must produce, in order.
    #[test]
    fn each_refusal_reason_is_detected_and_explained() {
        type Case = (&'static str, fn(&mut Value) -> Option<&'static str>, &'static [&'static str]);
        let cases: &[Case] = &[
            ("a good token is accepted", |_| None, &[]),
            ("wrong audience", |c| { c["aud"] = json!("https://payments.acme.com"); None }, &["audience-mismatch"]),
            ("expired beyond the skew", |c| { c["exp"] = json!(NOW - 61); None }, &["expired"]),
            ("expired within the skew is accepted", |c| { c["exp"] = json!(NOW - 30); None }, &[]),
            ("not yet valid", |c| { c["nbf"] = json!(NOW + 600); None }, &["not-yet-valid"]),
            ("an exp beyond any clock is not an overflow", |c| { c["exp"] = json!(u64::MAX); None }, &[]),
            ("an nbf beyond any clock is explained, not an overflow", |c| { c["nbf"] = json!(u64::MAX); None }, &["not-yet-valid"]),
            ("issuer without trailing slash", |c| { c["iss"] = json!("https://acme.eu.auth0.com"); None }, &["wrong-issuer"]),
            ("another tenant", |c| { c["iss"] = json!("https://evil.auth0.com/"); None }, &["wrong-issuer"]),
            ("a configured custom domain is accepted", |c| { c["iss"] = json!(CUSTOM); None }, &[]),
            ("a custom domain without its trailing slash", |c| { c["iss"] = json!("https://login.acme.com"); None }, &["wrong-issuer"]),
            ("rotated-out key", |_| Some("rotated"), &["unknown-key"]),
            ("no roles claim", |c| { c.as_object_mut().unwrap().remove("https://acme.com/roles"); None }, &["missing-role-claim"]),
            ("audience and expiry, audience first", |c| { c["aud"] = json!("x"); c["exp"] = json!(NOW - 7200); None }, &["audience-mismatch", "expired"]),
        ];
        for (name, edit, expected) in cases {
            let mut claims = good_claims();
            let key = edit(&mut claims);
            let token = match key {
                Some("rotated") => sign(ROTATED, "key-rotated", claims),
                _ => sign(CURRENT, "key-current", claims),
            };
            let report = check_token(&token, &expectation(), None);
            assert_eq!(codes(&report), *expected, "case: {name}");
            for p in &report.problems {
                assert!(!p.explain().is_empty());
            }
        }
    }

    #[test]
    fn a_forged_signature_is_refused() {
        // Signed with the rotated key but claiming the current key's id.
        let token = sign(ROTATED, "key-current", good_claims());
        let report = check_token(&token, &expectation(), None);
        assert_eq!(codes(&report), ["bad-signature"]);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for text in ["", "abc", "a.b", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.!!!.x"] {
            let report = check_token(text, &expectation(), None);
            assert_eq!(codes(&report), ["malformed"], "{text:?}");
        }
    }

    #[test]
    fn the_explanation_names_the_trailing_slash_and_never_prints_the_signature() {
        let mut claims = good_claims();
        claims["iss"] = json!("https://acme.eu.auth0.com");
        let token = sign(CURRENT, "key-current", claims);
        let report = check_token(&token, &expectation(), None);
        let text = render_text(&report);
        assert!(text.contains("trailing slash"), "{text}");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!text.contains(signature));
        assert!(!text.contains(&token));
        assert!(!serde_json::to_string(&report).unwrap().contains(signature));
    }

    #[test]
    fn an_unconfigured_issuer_is_named_with_the_setting_that_would_accept_it() {
        let mut claims = good_claims();
        claims["iss"] = json!("https://login.other.com/");
        let token = sign(CURRENT, "key-current", claims);
        assert_eq!(claimed_issuer(&token).as_deref(), Some("https://login.other.com/"));
        let report = check_token(&token, &expectation(), None);
        let text = render_text(&report);
        assert!(text.contains("\"https://login.other.com/\", which is not a configured issuer"), "{text}");
        assert!(text.contains("spec.auth0.issuers: https://acme.eu.auth0.com/, https://login.acme.com/"), "{text}");
        assert_eq!(claimed_issuer("not.a-jwt"), None);
    }
}
