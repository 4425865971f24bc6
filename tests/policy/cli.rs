//! The real binary: `validate` and `schema`, their exit codes and what they print.

use std::fs;
use std::path::Path;
use std::process::Output;

use super::support::{fixture, policy_dir, root, shared_settings};

fn runwarden(args: &[&str], cwd: &Path) -> Output {
    crate::common::bin()
        .args(args)
        .current_dir(cwd)
        .env_remove("RUNWARDEN_ENDPOINT")
        .output()
        .expect("runs the binary")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn validate_accepts_the_example_repository() {
    let out = runwarden(&["validate", "policies"], &root());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "5 files, 5 policies: ok\n");
    // --policies is the same as the positional directory, and the default is `policies`.
    for args in [
        &["validate", "--policies", "policies"][..],
        &["validate"][..],
    ] {
        let again = runwarden(args, &root());
        assert_eq!(
            (again.status.code(), stderr(&again)),
            (Some(0), stderr(&out)),
            "{args:?}"
        );
    }
}

#[test]
fn validate_prints_every_error_with_its_position_and_exits_1() {
    let bad = fs::read_to_string(fixture("malformed/policy/unknown-machine.yaml")).unwrap();
    let worse = fs::read_to_string(fixture("malformed/policy/bad-mode.yaml")).unwrap();
    let dir = policy_dir(&[
        ("settings.yaml", &shared_settings()),
        ("a.yaml", &bad),
        ("b.yaml", &worse),
    ]);
    let out = runwarden(&["validate", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "./a.yaml:11:16: error: unknown machine `ledger-sink`\n  = hint: known machines: ledger-sync\n\
         ./b.yaml:6:9: error: unknown value `enforcing`\n  = hint: expected one of: enforce, warn, observe\n\
         3 files: 2 errors\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn validate_prints_warnings_and_still_exits_0() {
    let settings = fs::read_to_string(fixture("workforce-pool/settings.yaml")).unwrap();
    let policy = "apiVersion: runwarden.dev/v1\nkind: AccessPolicy\nmetadata: {name: p}\nspec:\n  services: [{project: globex-web, region: us-east1, name: p}]\n  invokers: [{auth0Role: r}]\n";
    let dir = policy_dir(&[("settings.yaml", &settings), ("p.yaml", policy)]);
    let out = runwarden(&["validate", "."], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.starts_with("./p.yaml:6:26: warning: policy `p` grants Auth0 roles through the workforce pool without `iap: true`"), "{text}");
    assert!(
        text.ends_with("2 files, 1 policy: ok (1 warning)\n"),
        "{text}"
    );
}

#[test]
fn validate_never_panics_on_odd_input() {
    let empty = tempfile::tempdir().unwrap();
    let binary = policy_dir(&[("settings.yaml", &shared_settings())]);
    fs::write(binary.path().join("x.yaml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let cases: [(&[&str], &Path, &str); 3] = [
        (
            &["validate", "."],
            empty.path(),
            ".: error: no Settings document found",
        ),
        (
            &["validate", "no/such/dir"],
            empty.path(),
            "no/such/dir: error: cannot read the policy directory",
        ),
        (
            &["validate", "."],
            binary.path(),
            "./x.yaml:1:1: error: the file is not valid UTF-8",
        ),
    ];
    for (args, cwd, expected) in cases {
        let out = runwarden(args, cwd);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(
            text.contains(expected) && !text.contains("panicked"),
            "{args:?}: {text}"
        );
        assert!(text.ends_with(": 1 error\n"), "{args:?}: {text}");
    }
}

#[test]
fn schema_reproduces_the_committed_files_byte_for_byte() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = runwarden(
        &["schema", "--out", out_dir.path().to_str().unwrap()],
        &root(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in ["settings.schema.json", "accesspolicy.schema.json", "policy.schema.json", "policy-reference.md"] {
        let written = fs::read(out_dir.path().join(name)).unwrap();
        let committed = fs::read(root().join("schemas").join(name)).unwrap();
        assert!(written == committed, "{name} differs from schemas/{name}");
    }
    let check = runwarden(&["schema", "--check"], &root());
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
}

#[test]
fn schema_check_fails_on_stale_files_and_says_how_to_fix_them() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("settings.schema.json"), "{}\n").unwrap();
    let out = runwarden(&["schema", "--check", "--out", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("./settings.schema.json: stale or missing"),
        "{text}"
    );
    assert!(
        text.contains("./accesspolicy.schema.json: stale or missing"),
        "{text}"
    );
    assert!(
        text.contains("./policy-reference.md: stale or missing"),
        "the field reference is checked like the schemas: {text}"
    );
    assert!(text.contains("run `runwarden schema --out .`"), "{text}");
    // --check writes nothing.
    assert_eq!(
        fs::read_to_string(dir.path().join("settings.schema.json")).unwrap(),
        "{}\n"
    );
}

/// A newcomer's repository (tests/fixtures/policies/newcomer) with one mistake on each
/// commented line, across four files: shape errors (a misspelt key, a misspelt value, a
/// number in words, a percentage, `yes`, a mapping where a list belongs, a tab) and rule
/// errors (a duration, a timestamp, a member, a machine). `validate` reports every one in a
/// single run (golden: tests/golden/newcomer.validate.txt), and once each is fixed as its
/// comment says, the repository validates: nothing was left for a second round.
#[test]
fn a_repository_with_a_dozen_independent_mistakes_is_fixed_in_one_round_of_validate() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::copy_dir(&fixture("newcomer"), dir.path());
    let out = runwarden(&["validate", "."], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let golden = root().join("tests/golden/newcomer.validate.txt");
    crate::common::assert_golden(&golden, &stderr(&out), "review and re-run with RUNWARDEN_BLESS=1");

    let fixes: &[(&str, &str, &str)] = &[
        ("settings.yaml", "clientID: rw-client # clientId", "clientId: rw-client"),
        ("settings.yaml", "mapping: user # users", "mapping: users"),
        ("settings.yaml", "maxRemovals: ten # 10", "maxRemovals: 10"),
        ("settings.yaml", "maxRemovalRatio: 20% # 0.2", "maxRemovalRatio: 0.2"),
        ("settings.yaml", "maxTokenLifetime: 1 hour # 1h", "maxTokenLifetime: 1h"),
        ("settings.yaml", "requireCoverage: yes # true", "requireCoverage: true"),
        ("teams/billing.yaml", "mode: enforced # enforce", "mode: enforce"),
        ("teams/billing.yaml", "public: no # false", "public: false"),
        ("teams/billing.yaml", "auth0Rol: billing-admin # auth0Role", "auth0Role: billing-admin"),
        ("teams/billing.yaml", "expires: end of january # 2027-01-31T00:00:00Z", "expires: 2027-01-31T00:00:00Z"),
        ("teams/billing.yaml", "member: ada@acme.com # user:ada@acme.com", "member: user:ada@acme.com"),
        (
            "teams/payments.yaml",
            "    project: acme-prod # a list item: - project\n    region: europe-west1 #   region\n    name: payments-api #   name",
            "    - project: acme-prod\n      region: europe-west1\n      name: payments-api",
        ),
        ("teams/payments.yaml", "ingres: all # ingress", "ingress: all"),
        ("teams/payments.yaml", "machine: ledger-sink # no machines declared", "auth0Role: payments"),
        ("teams/web.yaml", "\t  name: web # spaces, not a tab", "      name: web"),
    ];
    let summary = stderr(&out).lines().last().unwrap_or_default().to_string();
    assert_eq!(summary, format!("4 files: {} errors", fixes.len()), "one error per mistake");
    for (file, wrong, right) in fixes {
        let path = dir.path().join(file);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(wrong), "{file} has {wrong:?}");
        fs::write(&path, text.replacen(wrong, right, 1)).unwrap();
    }
    let again = runwarden(&["validate", "."], dir.path());
    assert_eq!(again.status.code(), Some(0), "a second round found more:\n{}", stderr(&again));
}

#[test]
fn settings_say_explicitly_whether_auth0_groups_are_read_and_default_to_reading_them() {
    let with = |line: &str| {
        let settings = shared_settings().replace(
            "    clientSecretEnv: AUTH0_CLIENT_SECRET\n",
            &format!("    clientSecretEnv: AUTH0_CLIENT_SECRET\n{line}"),
        );
        let dir = policy_dir(&[("settings.yaml", &settings)]);
        runwarden::policy::load_at(dir.path(), super::support::now()).map(|d| d.settings.auth0.read_groups)
    };
    assert_eq!(with("").ok(), Some(true));
    assert_eq!(with("    groups: read\n").ok(), Some(true));
    assert_eq!(with("    groups: none\n").ok(), Some(false));
    let err = with("    groups: sometimes\n").expect_err("an unknown value is an error");
    let e = &err.errors[0];
    assert_eq!((e.line, e.column), (18, 13), "{err:?}");
    assert_eq!(e.message, "unknown value `sometimes`");
    assert_eq!(e.hint.as_deref(), Some("expected one of: read, none"));
}

/// Custom domains: `spec.auth0.issuers` lists the token issuers exactly as tokens carry them;
/// absent, the canonical `https://DOMAIN/`. Anything check-token could not compare by string
/// or fetch keys from safely is an error at its position.
#[test]
fn settings_list_the_token_issuers_exactly_as_tokens_carry_them() {
    let with = |line: &str| {
        let settings = shared_settings().replace(
            "    clientSecretEnv: AUTH0_CLIENT_SECRET\n",
            &format!("    clientSecretEnv: AUTH0_CLIENT_SECRET\n{line}"),
        );
        let dir = policy_dir(&[("settings.yaml", &settings)]);
        runwarden::policy::load_at(dir.path(), super::support::now()).map(|d| d.settings.auth0.issuers())
    };
    let domain = shared_settings().lines().find_map(|l| l.trim().strip_prefix("domain: ").map(str::to_string)).unwrap();
    assert_eq!(with("").unwrap(), [format!("https://{domain}/")], "the default is the canonical issuer");
    assert_eq!(
        with("    issuers: [https://login.acme.com/, http://localhost:8080/]\n").unwrap(),
        ["https://login.acme.com/", "http://localhost:8080/"]
    );
    for (line, message) in [
        ("    issuers: [https://login.acme.com]\n", "`https://login.acme.com` is not in the form tokens carry (`https://login.acme.com/`"),
        ("    issuers: [http://login.acme.com/]\n", "`http://login.acme.com/` is not an https:// URL"),
        ("    issuers: [https://login.acme.com/auth/]\n", "is not in the form tokens carry"),
        ("    issuers: [login.acme.com]\n", "`login.acme.com` is not a URL"),
        ("    issuers: []\n", "auth0.issuers is empty"),
    ] {
        let err = with(line).expect_err(line);
        let e = &err.errors[0];
        assert_eq!(e.line, 18, "{line}: {err:?}");
        assert!(e.message.contains(message), "{line}: {}", e.message);
        assert!(e.hint.is_some(), "{line}");
    }
}
