//! At least one malformed file per rule, each asserting the message and its exact
//! `file:line:col`. Files under `malformed/policy/` are loaded next to a shared valid Settings;
//! files under `malformed/alone/` are whole repositories in one file.

use std::fs;

use runwarden::policy::load_at;

use super::support::{fixture, now, rendered, shared_settings};

/// One case: the fixture, the one error it must produce (`file:line:col: error: message`,
/// matched as a substring), and a substring of its hint ("" when the hint is not the point).
type Case = (&'static str, &'static str, &'static str);

const CASES: &[Case] = &[
    // YAML syntax and shape, reported by the parser with its own positions.
    (
        "policy/bad-yaml-syntax.yaml",
        "bad-yaml-syntax.yaml:6:13: error: invalid YAML: unclosed bracket '['",
        "",
    ),
    (
        "policy/unknown-field-spec.yaml",
        "unknown-field-spec.yaml:10:3: error: unknown field `invoker`",
        "allowed fields here: mode, services, exposure, invokers",
    ),
    (
        "policy/unknown-field-exposure.yaml",
        "unknown-field-exposure.yaml:11:5: error: unknown field `publik`",
        "ingress, public, iap, audiences",
    ),
    (
        "policy/unknown-top-level.yaml",
        "unknown-top-level.yaml:5:1: error: unknown field `status`",
        "apiVersion, kind, metadata, spec",
    ),
    // serde-saphyr reports a missing field at the last key it read in that mapping.
    (
        "policy/missing-services.yaml",
        "missing-services.yaml:7:3: error: missing field `services`",
        "add `services:`",
    ),
    (
        "policy/missing-metadata-name.yaml",
        "missing-metadata-name.yaml:3:11: error: missing field `name`",
        "",
    ),
    (
        "policy/yes-is-not-a-boolean.yaml",
        "yes-is-not-a-boolean.yaml:11:13: error: expected a boolean",
        "write true or false",
    ),
    // A quoted "false" is a string: it used to be read as the boolean.
    (
        "policy/quoted-false-is-not-a-boolean.yaml",
        "quoted-false-is-not-a-boolean.yaml:11:13: error: expected a boolean, found string \"false\"",
        "without quotes",
    ),
    (
        "alone/quoted-true-is-not-a-boolean.yaml",
        "quoted-true-is-not-a-boolean.yaml:14:22: error: expected a boolean, found string \"true\"",
        "without quotes",
    ),
    (
        "policy/services-not-a-list.yaml",
        "services-not-a-list.yaml:6:13: error: expected a list here",
        "",
    ),
    (
        "policy/wrong-scalar-type.yaml",
        "wrong-scalar-type.yaml:11:16: error: expected a list here",
        "",
    ),
    (
        "policy/duplicate-key.yaml",
        "duplicate-key.yaml:11:3: error: duplicate key `mode`",
        "only once",
    ),
    (
        "policy/bad-api-version.yaml",
        "bad-api-version.yaml:1:13: error: unsupported apiVersion `runwarden.dev/v2`",
        "runwarden.dev/v1",
    ),
    (
        "policy/unknown-kind.yaml",
        "unknown-kind.yaml:2:7: error: unknown kind `Policy`",
        "`Settings` or `AccessPolicy`",
    ),
    (
        "policy/missing-kind.yaml",
        "missing-kind.yaml:2:1: error: missing field `kind`",
        "`Settings` or `AccessPolicy`",
    ),
    (
        "policy/bad-mode.yaml",
        "bad-mode.yaml:6:9: error: unknown value `enforcing`",
        "enforce, warn, observe",
    ),
    (
        "policy/bad-ingress.yaml",
        "bad-ingress.yaml:11:14: error: unknown value `INGRESS_TRAFFIC_INTERNAL_ONLY`",
        "all, internal, internal-and-cloud-load-balancing, none",
    ),
    // Members and invokers.
    (
        "policy/invalid-member.yaml",
        "invalid-member.yaml:12:15: error: invalid IAM member \"user:ada\": expected an e-mail address",
        "user:EMAIL",
    ),
    // Members as Google accepts them (the IAM `Binding.members` forms); look-alike and
    // invisible characters are named with their code point and never shown raw.
    (
        "policy/member-wildcard.yaml",
        "member-wildcard.yaml:12:15: error: invalid IAM member \"user:*@acme.com\": `*` is not a wildcard in IAM",
        "write members as user:EMAIL",
    ),
    (
        "policy/member-double-dot-domain.yaml",
        "member-double-dot-domain.yaml:12:15: error: invalid IAM member \"group:billing@acme..com\": the e-mail address has an invalid domain: `acme..com` has an empty label",
        "",
    ),
    (
        "policy/member-quote.yaml",
        "member-quote.yaml:12:15: error: invalid IAM member \"user:\\\"ada\\\"@acme.com\": the e-mail address contains `\"`",
        "",
    ),
    (
        "policy/member-script.yaml",
        "member-script.yaml:12:15: error: invalid IAM member \"user:<script>alert(1)</script>@acme.com\": the e-mail address contains `<`",
        "",
    ),
    (
        "policy/member-percent-encoded.yaml",
        "member-percent-encoded.yaml:12:15: error: invalid IAM member \"user:ada%40acme.com@evil.example\": the address is percent-encoded",
        "",
    ),
    (
        "policy/member-cyrillic.yaml",
        "member-cyrillic.yaml:12:15: error: invalid IAM member \"user:ada@\u{430}cme.com\": contains the character '\u{430}' (U+0430); IAM members are plain ASCII",
        "look-alike or invisible character",
    ),
    (
        "policy/member-zero-width.yaml",
        "member-zero-width.yaml:12:15: error: invalid IAM member \"user:ada\\u{200b}@acme.com\": contains the invisible or control character \\u{200b} (U+200B)",
        "look-alike or invisible character",
    ),
    (
        "policy/member-rtl-override.yaml",
        "member-rtl-override.yaml:12:15: error: invalid IAM member \"user:ada@acme.com\\u{202e}moc.live\": contains the invisible or control character \\u{202e} (U+202E)",
        "look-alike or invisible character",
    ),
    // Auth0 states no limit on role names (roleCreate.name); a 20 MB name was accepted.
    (
        "policy/role-name-too-long.yaml",
        "role-name-too-long.yaml:12:18: error: the Auth0 role name is 300 characters long; the limit is 256",
        "as it appears in Auth0",
    ),
    (
        "policy/role-name-with-control-character.yaml",
        "role-name-with-control-character.yaml:12:18: error: the Auth0 role name contains the invisible or control character \\u{a} (U+000A)",
        "",
    ),
    // Cloud Run custom audiences are full URLs (run.v2.json customAudiences).
    (
        "policy/audience-not-a-url.yaml",
        "audience-not-a-url.yaml:11:43: error: audience \"billing\" is not a full URL (https://HOST/...)",
        "https://billing.acme.com",
    ),
    (
        "policy/deleted-member.yaml",
        "deleted-member.yaml:11:15: error: `deleted:user:bob@acme.com?uid=123456789012345678` is a deleted principal and cannot be granted",
        "",
    ),
    (
        "policy/public-member.yaml",
        "public-member.yaml:11:15: error: `allUsers` cannot be an invoker member",
        "exposure.public: true",
    ),
    (
        "policy/unknown-machine.yaml",
        "unknown-machine.yaml:11:16: error: unknown machine `ledger-sink`",
        "known machines: ledger-sync",
    ),
    (
        "policy/two-principals-in-one-invoker.yaml",
        "two-principals-in-one-invoker.yaml:12:15: error: an invoker names exactly one principal, but this one has `auth0Role` and `member`",
        "split",
    ),
    (
        "policy/invoker-without-principal.yaml",
        "invoker-without-principal.yaml:12:7: error: an invoker needs one of `auth0Role`, `member` or `machine`",
        "",
    ),
    (
        "policy/duplicate-invoker.yaml",
        "duplicate-invoker.yaml:13:7: error: this invoker is listed twice in policy `repeat` (first at duplicate-invoker.yaml:11:7)",
        "",
    ),
    (
        "policy/expires-without-time.yaml",
        "expires-without-time.yaml:12:16: error: `2030-01-31` is not an RFC 3339 timestamp",
        "2027-01-31T00:00:00Z",
    ),
    (
        "policy/expired-grant.yaml",
        "expired-grant.yaml:13:16: error: this grant expired at 2026-01-31T00:00:00Z",
        "move `expires` into the future",
    ),
    (
        "policy/no-invokers.yaml",
        "no-invokers.yaml:12:13: error: policy `locked` names no invokers",
        "public: true",
    ),
    // Services and scope.
    (
        "policy/project-not-in-scope.yaml",
        "project-not-in-scope.yaml:7:16: error: project `acme-dev` is not in the Settings scope (acme-prod, acme-staging)",
        "settings.yaml:32:5",
    ),
    (
        "policy/region-not-in-scope.yaml",
        "region-not-in-scope.yaml:8:15: error: region `asia-east1` is not in the Settings scope (europe-west1, us-central1)",
        "scope.regions",
    ),
    (
        "policy/name-and-selector.yaml",
        "name-and-selector.yaml:10:17: error: a service has either `name` or `selector`, not both",
        "",
    ),
    (
        "policy/neither-name-nor-selector.yaml",
        "neither-name-nor-selector.yaml:7:7: error: a service needs `name` or `selector`",
        "",
    ),
    (
        "policy/empty-selector.yaml",
        "empty-selector.yaml:9:17: error: an empty selector would match every service",
        "",
    ),
    (
        "policy/bad-label.yaml",
        "bad-label.yaml:9:17: error: `Team: Billing` is not a valid Cloud Run label",
        "",
    ),
    (
        "policy/empty-services.yaml",
        "empty-services.yaml:6:13: error: `services` is empty",
        "",
    ),
    (
        "policy/bad-service-name.yaml",
        "bad-service-name.yaml:9:13: error: `Billing_API` is not a Cloud Run service name",
        "",
    ),
    // Names and exposure across documents.
    (
        "policy/bad-policy-name.yaml",
        "bad-policy-name.yaml:4:9: error: AccessPolicy name `Billing_API` is not valid",
        "",
    ),
    (
        "policy/duplicate-policy-name.yaml",
        "duplicate-policy-name.yaml:16:9: error: duplicate AccessPolicy name `billing`; it is first used at duplicate-policy-name.yaml:4:9",
        "",
    ),
    (
        "policy/public-and-iap.yaml",
        "public-and-iap.yaml:12:10: error: `public: true` and `iap: true` contradict each other",
        "",
    ),
    (
        "policy/conflicting-exposure.yaml",
        "conflicting-exposure.yaml:25:14: error: conflicting exposure for service acme-prod/europe-west1/billing-api: policy `billing-partners` sets `ingress: all` here, but policy `billing-core` sets `ingress: internal` at conflicting-exposure.yaml:11:14",
        "must agree",
    ),
    // The shared settings.yaml sorts after second-settings.yaml, so it is the second one.
    (
        "policy/second-settings.yaml",
        "settings.yaml:8:9: error: a second Settings document (`acme`); the first is `other` at second-settings.yaml:4:9",
        "exactly one Settings",
    ),
    // Settings.
    (
        "alone/workforce-without-pool.yaml",
        "workforce-without-pool.yaml:11:14: error: `mapping: workforcePool` needs `workforcePool: POOL_ID`",
        "",
    ),
    (
        "alone/users-with-pool-field.yaml",
        "users-with-pool-field.yaml:13:20: error: `workforcePool` belongs to `mapping: workforcePool`, not `mapping: users`",
        "",
    ),
    (
        "alone/pool-with-email-domains.yaml",
        "pool-with-email-domains.yaml:13:19: error: `emailDomains` belongs to `mapping: users`, not `mapping: workforcePool`",
        "",
    ),
    (
        "alone/unknown-mapping.yaml",
        "unknown-mapping.yaml:11:14: error: unknown value `groups`",
        "workforcePool, users",
    ),
    (
        "alone/ratio-as-percentage.yaml",
        "ratio-as-percentage.yaml:15:22: error: guards.maxRemovalRatio 50 is outside (0, 1]",
        "write 0.5 for 50%",
    ),
    (
        "alone/negative-max-removals.yaml",
        "negative-max-removals.yaml:14:18: error: guards.maxRemovals is -1, but it cannot be negative",
        "",
    ),
    (
        "alone/absurd-max-removals.yaml",
        "absurd-max-removals.yaml:14:18: error: guards.maxRemovals 1000000000 is absurdly large",
        "--allow-removals",
    ),
    (
        "alone/duration-without-unit.yaml",
        "duration-without-unit.yaml:14:23: error: audits.maxTokenLifetime: `3600` has no unit",
        "",
    ),
    (
        "alone/pacing-not-a-rate.yaml",
        "pacing-not-a-rate.yaml:14:20: error: pacing.cloudRunReads `600 per minute` is not a rate",
        "600/min",
    ),
    (
        "alone/duration-unknown-unit.yaml",
        "duration-unknown-unit.yaml:15:23: error: audits.maxSigningKeyAge: `1y` has an unknown unit `y`",
        "",
    ),
    (
        "alone/email-domain-look-alike.yaml",
        "email-domain-look-alike.yaml:10:47: error: `\u{430}cme.com` is not an e-mail domain: `\u{430}cme.com` contains the character '\u{430}' (U+0430)",
        "acme.com",
    ),
    (
        "alone/bad-owned-pattern.yaml",
        "bad-owned-pattern.yaml:15:7: error: invalid member pattern `svc:*@acme-prod.iam.gserviceaccount.com`",
        "`*` wildcards",
    ),
    (
        "alone/machine-not-a-service-account.yaml",
        "machine-not-a-service-account.yaml:16:23: error: `user:ledger@acme.com` is not a service account",
        "",
    ),
    (
        "alone/empty-scope-projects.yaml",
        "empty-scope-projects.yaml:12:15: error: scope.projects is empty",
        "",
    ),
    (
        "alone/bad-role.yaml",
        "bad-role.yaml:13:37: error: `run.admin` is not an IAM role",
        "roles/NAME",
    ),
    (
        "alone/auth0-domain-with-scheme.yaml",
        "auth0-domain-with-scheme.yaml:7:13: error: auth0.domain `https://acme.eu.auth0.com` is not a bare domain",
        "",
    ),
    // The value is not echoed: it may be the secret itself.
    (
        "alone/secret-instead-of-env-name.yaml",
        "secret-instead-of-env-name.yaml:9:22: error: auth0.clientSecretEnv is not an environment variable name (its value is not shown",
        "rotate it",
    ),
    (
        "alone/bad-foreign-members.yaml",
        "bad-foreign-members.yaml:13:19: error: unknown value `delete`",
        "keep, remove",
    ),
    (
        "alone/on-is-not-a-boolean.yaml",
        "on-is-not-a-boolean.yaml:14:22: error: expected a boolean",
        "",
    ),
    (
        "alone/selector-without-scope-regions.yaml",
        "selector-without-scope-regions.yaml:21:15: error: `region: \"*\"` needs regions in the Settings scope, which lists none",
        "add `regions:`",
    ),
    (
        "alone/iap-role-not-allowed.yaml",
        "iap-role-not-allowed.yaml:28:5: error: policy `console` grants roles/iap.httpsResourceAccessor for its invokers behind `iap: true`, but Settings allowedRoles does not allow it",
        "allowedRoles at iap-role-not-allowed.yaml:14:17",
    ),
];

/// Loads one case and returns its rendered errors (paths relative to the loaded directory).
fn errors_of(case: &str) -> Vec<String> {
    let path = fixture("malformed").join(case);
    if case.starts_with("policy/") {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("settings.yaml"), shared_settings()).expect("write settings");
        let name = path.file_name().expect("a file");
        fs::copy(&path, dir.path().join(name)).expect("copy fixture");
        let errors = load_at(dir.path(), now()).expect_err(case);
        rendered(&errors, dir.path())
    } else {
        let errors = load_at(&path, now()).expect_err(case);
        rendered(&errors, path.parent().expect("a parent"))
    }
}

fn check((case, expected, hint): &Case) -> Result<(), String> {
    let errors = errors_of(case);
    if errors.iter().any(|e| e.contains("fakeSecretValue")) {
        return Err(format!("{case}: a secret was echoed: {errors:?}"));
    }
    let [only] = errors.as_slice() else {
        return Err(format!(
            "{case}: expected exactly one error, got:\n  {}",
            errors.join("\n  ")
        ));
    };
    if !only.contains(expected) {
        return Err(format!("{case}: expected\n  {expected}\ngot\n  {only}"));
    }
    if !only.contains(hint) {
        return Err(format!("{case}: the hint lacks {hint:?}:\n  {only}"));
    }
    Ok(())
}

#[test]
fn every_malformed_file_gets_one_error_at_the_exact_position() {
    assert!(
        CASES.len() >= 30,
        "the issue asks for at least 30 malformed files"
    );
    let failures: Vec<String> = CASES.iter().filter_map(|c| check(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_fixture_file_is_covered_by_a_case() {
    for sub in ["policy", "alone"] {
        for entry in fs::read_dir(fixture("malformed").join(sub)).expect("fixture dir") {
            let name = format!(
                "{sub}/{}",
                entry.expect("entry").file_name().to_string_lossy()
            );
            assert!(
                CASES.iter().any(|(case, _, _)| *case == name),
                "{name} has no case in the table"
            );
        }
    }
}
