//! The finding catalogue: every code a pass can report, with its severity and its fix. One
//! table, so `plan`, `apply`, `demo`, `audit` and the loop report a code the same way, and
//! the README's table of codes is this one.
//!
//! A finding's `evidence` says what was seen (names, numbers, the error); its `fix` says what
//! to do. Most codes have one fix, given here; a few carry a fix built from the evidence (the
//! exact `gcloud` command of an `invoke-bypass`, the Auth0 API of a hygiene finding), set with
//! [`Finding::with_fix`].

use super::model::{Finding, Severity};

/// One catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub code: &'static str,
    pub severity: Severity,
    /// What to do, when the finding does not carry its own.
    pub fix: &'static str,
}

const fn e(code: &'static str, severity: Severity, fix: &'static str) -> Entry {
    Entry { code, severity, fix }
}

use Severity::{Error, Info, Warning};

/// Every code, sorted by code. `error` findings make `plan` and `apply` exit 1 (README,
/// "Reading a plan"); warnings and infos never change an exit code.
pub const CATALOGUE: &[Entry] = &[
    e("access-unchecked", Warning, "grant runwarden resourcemanager.projects.getIamPolicy on the project (deploy/iam/runwarden-planner.yaml), so inherited paths can be checked"),
    e("auth0-api-denies-clients", Warning, "set the API's client access policy to require_client_grant and give each machine a client grant, or stop naming this audience for machines"),
    e("auth0-api-denies-users", Warning, "set the API's user access policy to require_client_grant (and grant the applications people sign in with) or allow_all, or stop naming this audience for people"),
    e("auth0-audience-not-an-api", Error, "create an API in Auth0 (Applications > APIs) with this identifier, or correct the audience in the policy"),
    e("auth0-audit-skipped", Warning, "grant the Management API client the scopes runwarden needs (README, \"Auth0: what runwarden reads\")"),
    e("auth0-no-current-signing-key", Error, "rotate the signing key (POST /api/v2/keys/signing/rotate)"),
    e("auth0-no-next-signing-key", Info, "stage a next key so it appears in the JWKS before it signs anything"),
    e("auth0-organizations-unknown", Info, "grant the Management API client read:organizations (optional; runwarden only lists the first organizations)"),
    e("auth0-rbac-not-enforced", Error, "enable RBAC on the API (enforce_policies: true) and grant access through roles; also set its user access policy to require_client_grant for only the applications that call it"),
    e("auth0-roles-via-organizations", Warning, "assign these roles at the tenant level (directly or through a group), not within organizations, for runwarden to grant them; check the organizations' member roles for these names"),
    e("auth0-signing-key-too-old", Warning, "rotate the signing key (POST /api/v2/keys/signing/rotate) after checking that every verifier reads the JWKS"),
    e("auth0-token-lifetime-too-long", Warning, "lower the API's token_lifetime (PATCH /api/v2/resource-servers/{id}) to at most Settings.audits.maxTokenLifetime"),
    e("base-policies-not-loaded", Warning, "fix the base branch's policies (`runwarden validate` on the base checkout), or plan without --base-policies"),
    e("connection-from-base", Warning, "review the new Auth0 connection in this pull request: it is used only after the merge"),
    e("directory-unresolved", Error, "let runwarden read Auth0 role members (Management API scopes read:roles and read:users), or use the workforce pool mapping, then plan again"),
    e("empty-group", Warning, "add members to the Auth0 group, or unassign it from the role"),
    e("empty-role", Warning, "assign the role to its members in Auth0, or remove it from the policy"),
    e("expired-grant", Info, "delete the expired line from the policy"),
    e("exposure-conflict", Error, "make every policy that governs the service agree on public, ingress, iap, audiences and the invoker check"),
    e("invalid-role-name", Error, "rename the Auth0 role to a name the workforce pool accepts as a group, or stop granting it"),
    e("invoke-bypass", Warning, "remove the binding that grants run.routes.invoke outside the policies, or bind a role without it (e.g. roles/run.viewer), and grant invocation through a policy"),
    e("last-applied-unreadable", Warning, "delete the runwarden.dev/last-applied annotation from the service (never edit it by hand); the next apply writes a fresh record"),
    e("policy-too-large", Error, "grant a group or use the workforce pool mapping, so the IAM policy stays within Google's 1,500 members"),
    e("policy-too-many-groups", Error, "grant fewer, larger groups, so the IAM policy stays within Google's 250 groups and domains"),
    e("project-number-unknown", Error, "grant runwarden resourcemanager.projects.get on the project (deploy/iam/runwarden-planner.yaml), then plan again"),
    e("public-member-not-allowed", Error, "set `public: true` on the service if it is meant to be public, or remove the grant"),
    e("read-failed", Error, "grant the permission the error names (deploy/iam/runwarden-planner.yaml), or plan again if the error was transient"),
    e("skipped-member", Warning, "if the user should have access, verify the e-mail in Auth0 or allow its domain in the principal mapping (a blocked user stays out)"),
    e("ungoverned-service", Warning, "add the service to a policy (in observe mode to start with), or narrow Settings.scope"),
    e("unknown-machine", Error, "define the machine in Settings.machines, or correct the name in the policy"),
    e("unknown-role", Error, "create the role in Auth0, or correct the name in the policy"),
    e("unmatched-service", Warning, "correct the service name or selector, or delete the reference if the service is gone"),
    e("workforce-without-iap", Warning, "set `iap: true` on the service: workforce identities reach Cloud Run only through IAP"),
];

/// The catalogue entry of `code`, if it is one.
pub fn entry(code: &str) -> Option<&'static Entry> {
    CATALOGUE.iter().find(|e| e.code == code)
}

impl Finding {
    /// A finding with the catalogue's severity and fix for `code`. A code missing from the
    /// catalogue is a bug the unit test `every_emitted_code_has_a_fix` catches; it is still
    /// reported (as a warning whose fix says so), never a panic.
    pub fn new(service: Option<String>, code: &str, evidence: String, sources: Vec<String>) -> Finding {
        let (severity, fix) = match entry(code) {
            Some(e) => (e.severity, e.fix.to_string()),
            None => (Warning, "report this finding to the runwarden maintainers: its code has no catalogue entry".to_string()),
        };
        Finding { service, code: code.to_string(), severity, evidence, fix, sources }
    }

    /// The same finding with a fix built from its evidence (replacing the catalogue's).
    pub fn with_fix(mut self, fix: String) -> Finding {
        if !fix.trim().is_empty() {
            self.fix = fix;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string literal passed as a finding's code in `src/` (outside the simulator): the
    /// first argument after the service of `finding(`/`Finding::new(`, and `code: "…"` fields.
    fn emitted_codes() -> std::collections::BTreeSet<String> {
        let mut codes = std::collections::BTreeSet::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if !path.ends_with("sim") {
                        stack.push(path);
                    }
                    continue;
                }
                if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("catalogue.rs") {
                    codes.extend(codes_in(&std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        codes
    }

    /// The codes in one file's text (see [`emitted_codes`]).
    fn codes_in(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for opener in ["finding(", "Finding::new(", "code: \""] {
            for (at, _) in text.match_indices(opener) {
                let rest = &text[at + opener.len()..];
                let rest = if opener.ends_with('"') {
                    rest
                } else {
                    // Skip the service argument: up to the first top-level comma.
                    let mut depth = 0i32;
                    let Some(comma) = rest.char_indices().find_map(|(i, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            ',' if depth == 0 => return Some(i),
                            _ => {}
                        }
                        (depth < 0).then_some(usize::MAX)
                    }) else { continue };
                    if comma == usize::MAX {
                        continue;
                    }
                    let Some(q) = rest[comma + 1..].trim_start().strip_prefix('"') else { continue };
                    q
                };
                let code: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-').collect();
                if rest[code.len()..].starts_with('"') && code.contains('-') {
                    out.push(code);
                }
            }
        }
        out
    }

    #[test]
    fn every_emitted_code_has_a_catalogue_entry_with_a_fix() {
        let codes = emitted_codes();
        // The scan must see the engine's, hygiene's, access's and the commands' codes, or it
        // checks nothing.
        for known in ["read-failed", "unknown-role", "auth0-rbac-not-enforced", "invoke-bypass", "access-unchecked", "base-policies-not-loaded", "unmatched-service", "skipped-member"] {
            assert!(codes.contains(known), "the source scan missed `{known}`: {codes:?}");
        }
        let missing: Vec<&String> = codes.iter().filter(|c| entry(c).is_none_or(|e| e.fix.trim().is_empty())).collect();
        assert!(missing.is_empty(), "codes with no catalogue entry or an empty fix: {missing:?}");
    }

    #[test]
    fn every_catalogue_entry_is_emitted_somewhere_and_sorted() {
        let codes = emitted_codes();
        let stale: Vec<&str> = CATALOGUE.iter().map(|e| e.code).filter(|c| !codes.contains(*c)).collect();
        assert!(stale.is_empty(), "catalogue entries no code emits: {stale:?}");
        assert!(CATALOGUE.windows(2).all(|w| w[0].code < w[1].code), "the catalogue is sorted by code");
        assert!(CATALOGUE.iter().all(|e| !e.fix.trim().is_empty()));
    }

    #[test]
    fn the_source_scan_finds_codes_in_every_form_a_finding_is_made() {
        let text = r#"
            finding(Some(&svc.id), "new-code-a", format!("x"), vec![]);
            self.findings.insert(finding(
                None,
                "new-code-b",
                msg,
            ));
            Finding::new(Some(id.to_string()), "new-code-c", e, vec![]).with_fix(f);
            HygieneFinding { code: "new-code-d", severity: Severity::Error };
            finding(None, not_a_literal, x);
        "#;
        assert_eq!(codes_in(text), ["new-code-a", "new-code-b", "new-code-c", "new-code-d"]);
        assert!(entry("new-code-a").is_none(), "so the test above would fail on them");
    }

    #[test]
    fn a_code_missing_from_the_catalogue_is_still_reported_with_a_fix() {
        let f = Finding::new(None, "no-such-code", "x".into(), vec![]);
        assert_eq!(f.severity, Severity::Warning);
        assert!(!f.fix.is_empty());
    }
}
