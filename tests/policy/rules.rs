//! The loader's rules, the example repository, and the committed schemas.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use runwarden::iam::Member;
use runwarden::policy::model::{
    ForeignMembers, Ingress, Mode, Principal, PrincipalMapping, RegionRef, ServiceTarget,
};
use runwarden::policy::{Severity, load_at, load_with_warnings, policy_schemas};

use super::support::{at, fixture, now, policy_dir, rendered, root, shared_settings};

const POLICY: &str = "apiVersion: runwarden.dev/v1
kind: AccessPolicy
metadata:
  name: NAME
spec:
  services:
    - project: acme-prod
      region: europe-west1
      name: SERVICE
  exposure:
    ingress: INGRESS
  invokers:
    - auth0Role: billing-admin
";

fn policy(name: &str, service: &str, ingress: &str) -> String {
    POLICY
        .replace("NAME", name)
        .replace("SERVICE", service)
        .replace("INGRESS", ingress)
}

#[test]
fn the_example_repository_loads_into_the_expected_model() {
    let loaded = load_with_warnings(&root().join("policies"), now()).expect("policies/ is valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.files, 5);
    let d = loaded.desired;
    let s = &d.settings;
    assert_eq!(s.name, "acme");
    assert_eq!(s.auth0.domain, "acme.eu.auth0.com");
    assert_eq!(s.auth0.client_id, "rw-demo-client");
    assert_eq!(s.auth0.client_secret_env, "AUTH0_CLIENT_SECRET");
    assert_eq!(
        s.principals,
        PrincipalMapping::Users {
            email_domains: vec!["acme.com".into()]
        }
    );
    assert_eq!(s.scope.projects, ["acme-prod", "acme-staging"]);
    assert_eq!(s.scope.regions, ["europe-west1", "us-central1"]);
    assert_eq!(s.foreign_members, ForeignMembers::Keep);
    assert_eq!(s.machines.len(), 1);
    assert_eq!(s.machines[0].name, "ledger-sync");
    assert_eq!(s.machines[0].auth0_client_id, "LedgerSyncM2mClient01");
    assert_eq!(
        s.machines[0].service_account.as_str(),
        "serviceAccount:ledger-sync@acme-prod.iam.gserviceaccount.com"
    );
    assert!(s.owned[0].matches("serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com"));
    assert!(
        s.keep[0].matches("serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com")
    );
    assert!(s.keep[1].matches("user:break-glass@acme.com"));
    assert_eq!(
        s.allowed_roles,
        ["roles/run.invoker", "roles/iap.httpsResourceAccessor"]
    );
    assert_eq!(
        (s.guards.max_removals, s.guards.max_removal_ratio),
        (25, 0.5)
    );
    assert_eq!(s.audits.max_token_lifetime, Duration::from_secs(3600));
    assert_eq!(
        s.audits.max_signing_key_age,
        Duration::from_secs(90 * 86_400)
    );
    assert!(s.audits.require_coverage);

    let names: Vec<&str> = d.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "billing",
            "payments",
            "platform-console",
            "platform-status",
            "staging"
        ]
    );
    let by_name = |n: &str| d.policies.iter().find(|p| p.name == n).expect(n);

    let billing = by_name("billing");
    assert_eq!(billing.mode, Mode::Enforce);
    assert_eq!(
        billing.services[0].target,
        ServiceTarget::Named("billing-api".into())
    );
    assert_eq!(
        billing.services[0].region,
        RegionRef::Named("europe-west1".into())
    );
    assert_eq!(billing.services[1].region, RegionRef::Any);
    assert_eq!(
        billing.services[1].target,
        ServiceTarget::Selector(BTreeMap::from([(
            "team".to_string(),
            "billing".to_string()
        )]))
    );
    assert_eq!(
        billing.exposure.ingress,
        Some(Ingress::InternalAndCloudLoadBalancing)
    );
    assert_eq!(billing.exposure.public, Some(false));
    assert_eq!(billing.exposure.iap, None);
    assert_eq!(
        billing.exposure.audiences,
        Some(vec!["https://billing.acme.com".to_string()])
    );
    let principals: Vec<&Principal> = billing.invokers.iter().map(|i| &i.principal).collect();
    assert_eq!(
        principals,
        [
            &Principal::Auth0Role("billing-admin".into()),
            &Principal::Auth0Role("billing-oncall".into()),
            &Principal::Member(
                Member::parse("serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com").unwrap()
            ),
        ]
    );
    assert_eq!(billing.invokers[0].expires, None);
    assert_eq!(
        billing.invokers[1].expires,
        Some(at("2027-01-31T00:00:00Z"))
    );
    // Sources point at the item: the member invoker is the last list entry of the file.
    let source = &billing.invokers[2].source;
    assert!(
        source.file.ends_with("policies/teams/billing.yaml"),
        "{source}"
    );
    let line = fs::read_to_string(&source.file)
        .unwrap()
        .lines()
        .nth(source.line - 1)
        .unwrap()
        .to_string();
    assert_eq!(
        &line[source.column - 1..],
        "member: serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com"
    );

    assert_eq!(
        by_name("payments").exposure.ingress,
        Some(Ingress::Internal)
    );
    assert_eq!(
        by_name("payments").invokers[1].principal,
        Principal::Machine("ledger-sync".into())
    );
    assert_eq!(by_name("platform-console").exposure.iap, Some(true));
    assert_eq!(by_name("platform-status").exposure.public, Some(true));
    assert!(by_name("platform-status").invokers.is_empty());
    assert_eq!(by_name("staging").mode, Mode::Observe);
}

#[test]
fn designs_example_and_the_workforce_pool_repository_validate_without_warnings() {
    for dir in ["design-example", "workforce-pool"] {
        let loaded =
            load_with_warnings(&fixture(dir), now()).unwrap_or_else(|e| panic!("{dir}:\n{e}"));
        assert!(loaded.warnings.is_empty(), "{dir}: {:?}", loaded.warnings);
    }
    let pool = load_at(&fixture("workforce-pool"), now()).unwrap();
    assert_eq!(
        pool.settings.principals,
        PrincipalMapping::WorkforcePool {
            pool: "globex-auth0".into()
        }
    );
    assert_eq!(pool.settings.foreign_members, ForeignMembers::Remove);
    // +02:00 is honoured: 18:00 in that zone is 16:00 UTC.
    assert_eq!(
        pool.policies[0].invokers[1].expires,
        Some(at("2030-06-30T16:00:00Z"))
    );
    assert_eq!(pool.policies[1].mode, Mode::Warn);
}

#[test]
fn a_grant_past_its_expiry_is_an_error_relative_to_the_clock_passed_in() {
    let policies = root().join("policies");
    assert!(load_at(&policies, at("2027-01-30T23:59:59Z")).is_ok());
    let errors = load_at(&policies, at("2027-01-31T00:00:00Z")).unwrap_err();
    let rendered = rendered(&errors, &root());
    assert_eq!(rendered.len(), 1, "{rendered:?}");
    assert!(
        rendered[0].starts_with(
            "policies/teams/billing.yaml:31:16: error: this grant expired at 2027-01-31T00:00:00Z"
        ),
        "{rendered:?}"
    );
}

#[test]
fn outside_validate_a_grant_past_its_expiry_is_a_warning_and_stays_for_the_plan_to_remove() {
    let policies = root().join("policies");
    let later = at("2027-02-01T00:00:00Z");
    let loaded = runwarden::policy::load_lenient(&policies, later).expect("loads with a warning");
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("billing.yaml:31:16: warning: this grant expired at 2027-01-31T00:00:00Z"), "{warnings:?}");
    let billing = loaded.desired.policies.iter().find(|p| p.name == "billing").unwrap();
    assert_eq!(billing.invokers[1].expires, Some(at("2027-01-31T00:00:00Z")), "kept, so the plan can remove what it granted");
}

#[test]
fn all_errors_of_a_file_are_reported_together() {
    let broken = "apiVersion: runwarden.dev/v1
kind: AccessPolicy
metadata:
  name: three
spec:
  services:
    - project: acme-dev
      region: europe-west1
      name: billing-api
  invokers:
    - member: user:ada
    - machine: nobody
";
    let dir = policy_dir(&[
        ("settings.yaml", &shared_settings()),
        ("three.yaml", broken),
    ]);
    let errors = load_at(dir.path(), now()).unwrap_err();
    let got = rendered(&errors, dir.path());
    let positions: Vec<&str> = got
        .iter()
        .map(|e| e.split(": error").next().unwrap())
        .collect();
    assert_eq!(
        positions,
        ["three.yaml:7:16", "three.yaml:11:15", "three.yaml:12:16"],
        "{got:#?}"
    );
}

#[test]
fn a_broken_document_does_not_hide_the_errors_of_the_others() {
    let file = format!(
        "apiVersion: runwarden.dev/v1\nkind: AccessPolicy\nmetadata: {{name: a}}\nspec: {{services: [}}\n---\n{}",
        policy("b", "billing-api", "sideways")
    );
    let other = policy("c", "billing-api", "all").replace("billing-admin", "\"\"");
    let dir = policy_dir(&[
        ("settings.yaml", &shared_settings()),
        ("x.yaml", &file),
        ("y.yaml", &other),
    ]);
    let errors = load_at(dir.path(), now()).unwrap_err();
    let got = rendered(&errors, dir.path());
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(
        got[0].starts_with("x.yaml:4:18: error: invalid YAML: mismatched bracket"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("x.yaml:16:14: error: unknown value `sideways`"),
        "{got:#?}"
    );
    assert!(
        got[2].starts_with("y.yaml:13:18: error: the Auth0 role name is empty"),
        "{got:#?}"
    );
}

#[test]
fn conflicting_exposure_across_files_names_both_files_with_positions() {
    let dir = policy_dir(&[
        ("settings.yaml", &shared_settings()),
        ("teams/a.yaml", &policy("a", "payments-api", "internal")),
        ("teams/b.yaml", &policy("b", "payments-api", "all")),
        // Same service, same ingress: several policies may govern one service.
        ("teams/c.yaml", &policy("c", "payments-api", "internal")),
    ]);
    let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
    assert_eq!(
        got,
        [
            "teams/b.yaml:11:14: error: conflicting exposure for service acme-prod/europe-west1/payments-api: policy `b` sets `ingress: all` here, but policy `a` sets `ingress: internal` at teams/a.yaml:11:14\n  = hint: policies that govern the same service must agree on its exposure: set `ingress` in one of them only, or make them equal",
            "teams/c.yaml:11:14: error: conflicting exposure for service acme-prod/europe-west1/payments-api: policy `c` sets `ingress: internal` here, but policy `b` sets `ingress: all` at teams/b.yaml:11:14\n  = hint: policies that govern the same service must agree on its exposure: set `ingress` in one of them only, or make them equal",
        ]
    );
}

#[test]
fn policies_agreeing_on_a_service_unite_without_error() {
    let dir = policy_dir(&[
        ("settings.yaml", &shared_settings()),
        ("a.yaml", &policy("a", "payments-api", "internal")),
        ("b.yaml", &policy("b", "payments-api", "internal")),
    ]);
    assert_eq!(load_at(dir.path(), now()).unwrap().policies.len(), 2);
}

#[test]
fn a_workforce_pool_grant_without_iap_is_a_warning_not_an_error() {
    let settings = fs::read_to_string(fixture("workforce-pool/settings.yaml")).unwrap();
    let no_iap = "apiVersion: runwarden.dev/v1
kind: AccessPolicy
metadata:
  name: portal
spec:
  services:
    - {project: globex-web, region: us-east1, name: portal}
  invokers:
    - auth0Role: portal-users
";
    let dir = policy_dir(&[("settings.yaml", &settings), ("portal.yaml", no_iap)]);
    let loaded = load_with_warnings(dir.path(), now()).expect("warnings do not fail the load");
    assert_eq!(loaded.warnings.len(), 1);
    let w = &loaded.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!((w.line, w.column), (9, 18));
    assert!(w.to_string().contains(": warning: policy `portal` grants Auth0 roles through the workforce pool without `iap: true`"), "{w}");
    assert!(
        w.to_string().contains("hint: set `exposure.iap: true`"),
        "{w}"
    );
}

/// Directory-level rules: (files, expected rendered errors relative to the directory).
#[test]
fn directory_rules() {
    let settings = shared_settings();
    let valid = policy("a", "billing-api", "internal");
    let wrapped = format!("# nothing yet\n---\n{valid}---\n# end\n");
    let unusual = format!(
        "\u{feff}%YAML 1.2\r\n---\r\n{}...\r\n",
        valid.replace('\n', "\r\n").replace("name: a", "name: b")
    );
    let cases: Vec<(&str, Vec<(&str, &str)>, Result<usize, &str>)> = vec![
        (
            "an empty directory has no Settings",
            vec![],
            Err(": error: no Settings document found"),
        ),
        (
            "a policy without Settings",
            vec![("a.yaml", &valid)],
            Err(": error: no Settings document found"),
        ),
        (
            "*.yml files are read too",
            vec![("settings.yml", &settings), ("a.yml", &valid)],
            Ok(1),
        ),
        (
            "other extensions are ignored",
            vec![
                ("settings.yaml", &settings),
                ("notes.txt", "not: [yaml"),
                ("README.md", "# x"),
            ],
            Ok(0),
        ),
        (
            "hidden directories are skipped",
            vec![
                ("settings.yaml", &settings),
                (".github/workflows/ci.yaml", "on: push"),
            ],
            Ok(0),
        ),
        (
            "nested directories are walked",
            vec![("settings.yaml", &settings), ("a/b/c/d.yaml", &valid)],
            Ok(1),
        ),
        (
            "comment-only documents and trailing markers are fine",
            vec![("settings.yaml", &settings), ("a.yaml", &wrapped)],
            Ok(1),
        ),
        (
            "a byte-order mark, directives, CRLF line ends and end markers are fine",
            vec![
                ("settings.yaml", &settings),
                ("a.yaml", &valid),
                ("b.yaml", &unusual),
            ],
            Ok(2),
        ),
        (
            "a directory named like a policy file is walked, not read",
            vec![("settings.yaml", &settings), ("dir.yaml/a.yaml", &valid)],
            Ok(1),
        ),
    ];
    for (name, files, expected) in cases {
        let dir = policy_dir(&files);
        match (load_at(dir.path(), now()), expected) {
            (Ok(d), Ok(n)) => assert_eq!(d.policies.len(), n, "{name}"),
            (Err(e), Err(msg)) => {
                let got = rendered(&e, dir.path());
                assert!(got.len() == 1 && got[0].contains(msg), "{name}: {got:?}");
            }
            (got, _) => panic!("{name}: unexpected {got:?}"),
        }
    }
}

#[test]
fn file_level_errors_point_at_the_file_so_editors_and_ci_can_open_it() {
    // A single policy file passed as the directory: the Settings are missing from it.
    let dir = policy_dir(&[("a.yaml", &policy("a", "billing-api", "internal"))]);
    let file = dir.path().join("a.yaml");
    let errors = load_at(&file, now()).unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert_eq!(
        errors.errors[0].to_string().lines().next().unwrap(),
        format!("{}:1:1: error: no Settings document found", file.display())
    );
    // An unreadable file (a link to /proc/self/mem: a regular file whose first page fails to
    // read with EIO, even for root, who ignores permissions).
    #[cfg(target_os = "linux")]
    {
        let dir = policy_dir(&[("settings.yaml", &shared_settings())]);
        std::os::unix::fs::symlink("/proc/self/mem", dir.path().join("mem.yaml")).unwrap();
        let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("mem.yaml:1:1: error: cannot read the file"), "{got:?}");
    }
    // A directory has no line to point at: its path alone.
    let errors = load_at(dir.path(), now()).unwrap_err();
    assert_eq!(
        errors.errors[0].to_string().lines().next().unwrap(),
        format!("{}: error: no Settings document found", dir.path().display())
    );
}

#[test]
fn a_missing_directory_is_one_error_naming_it() {
    let missing = root().join("tests/fixtures/policies/does-not-exist");
    let errors = load_at(&missing, now()).unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert!(
        errors.errors[0]
            .to_string()
            .contains("does-not-exist: error: cannot read the policy directory"),
        "{errors}"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_reported_at_its_first_bad_byte() {
    let dir = policy_dir(&[("settings.yaml", &shared_settings())]);
    fs::write(
        dir.path().join("latin1.yaml"),
        b"apiVersion: runwarden.dev/v1\nkind: Acc\xe9ss\n",
    )
    .unwrap();
    let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
    assert_eq!(
        got,
        [
            "latin1.yaml:2:10: error: the file is not valid UTF-8\n  = hint: save policy files as UTF-8"
        ]
    );
}

#[test]
fn a_bidi_override_in_a_value_is_shown_escaped_in_the_diagnostic() {
    let file = policy("a", "billing-api", "all\u{202e}lanretni");
    let dir = policy_dir(&[("settings.yaml", &shared_settings()), ("a.yaml", &file)]);
    let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(!got[0].contains('\u{202e}'), "{got:#?}");
    assert!(
        got[0].starts_with("a.yaml:11:14: error: unknown value `all\\u{202e}lanretni`"),
        "{got:#?}"
    );
}

#[test]
fn owned_and_keep_patterns_may_cut_a_federated_path_but_not_an_email() {
    let with = |patterns: &str| {
        shared_settings().replacen("  keep:\n", &format!("  keep:\n    - {patterns}\n"), 1)
    };
    let ok = with("'principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/*'");
    let dir = policy_dir(&[("settings.yaml", &ok)]);
    load_at(dir.path(), now()).unwrap_or_else(|e| panic!("{e}"));
    // A Settings document that does not parse at all is one error, not also "no Settings".
    let twice = shared_settings().replacen("  keep:\n", "  keep: []\n  keep:\n", 1);
    let dir = policy_dir(&[("settings.yaml", &twice)]);
    let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
    assert!(got.len() == 1 && got[0].contains("duplicate key `keep`"), "{got:?}");
    let bad = with("'user:*@acme..com'");
    let dir = policy_dir(&[("settings.yaml", &bad)]);
    let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
    assert!(got.len() == 1 && got[0].contains("invalid member pattern `user:*@acme..com`"), "{got:?}");
}

#[test]
fn thousands_of_separators_load_in_linear_time_and_positions_stay_exact() {
    // 9,000 empty documents (36 KB) before a broken policy: the loader used to pad each
    // document with the lines before it (quadratic: 10,000 separators took 38 s).
    let broken = policy("a", "billing-api", "sideways");
    let file = "---\n".repeat(9_000) + "---\n" + &broken;
    let dir = policy_dir(&[("settings.yaml", &shared_settings()), ("many.yaml", &file)]);
    let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
    // `ingress:` is on line 11 of the policy, which starts on the file's line 9,002.
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("many.yaml:9012:14: error: unknown value `sideways`"),
        "{got:#?}"
    );
}

#[test]
fn a_file_of_more_documents_than_the_limit_is_refused_at_the_first_one_over() {
    // 100,000 separators (400 KB) grew past 2.7 GB before.
    let file = "---\n".repeat(100_000) + &policy("a", "billing-api", "internal");
    let dir = policy_dir(&[("settings.yaml", &shared_settings()), ("many.yaml", &file)]);
    let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
    assert_eq!(
        got,
        ["many.yaml:10001:1: error: the file holds more than 10000 YAML documents, the limit for a policy file\n  = hint: split the policies into several files, and remove empty `---` documents"]
    );
}

#[test]
fn a_policy_file_over_the_size_limit_is_refused_without_being_parsed() {
    let dir = policy_dir(&[("settings.yaml", &shared_settings())]);
    // Valid YAML throughout (one long comment), so only the size can be the error.
    let mut big = policy("a", "billing-api", "internal");
    big.push('#');
    big.push_str(&"x".repeat(16 * 1024 * 1024));
    big.push('\n');
    fs::write(dir.path().join("big.yaml"), big).unwrap();
    let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
    assert_eq!(
        got,
        ["big.yaml:1:1: error: the file is larger than 16 MiB, the limit for a policy file\n  = hint: split the policies into several files"]
    );
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_ends_the_walk() {
    let dir = policy_dir(&[
        ("settings.yaml", &shared_settings()),
        ("teams/a.yaml", &policy("a", "billing-api", "internal")),
    ]);
    std::os::unix::fs::symlink(dir.path(), dir.path().join("teams/loop")).unwrap();
    std::os::unix::fs::symlink("missing.yaml", dir.path().join("dangling.yaml")).unwrap();
    let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("dangling.yaml: error: cannot read the file"),
        "{got:?}"
    );
}

#[test]
fn the_committed_schemas_are_fresh() {
    for (name, contents) in policy_schemas() {
        let path = root().join("schemas").join(name);
        let committed = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == contents,
            "{} is stale: run `cargo run -- schema --out schemas` and commit the result",
            path.display()
        );
    }
}

#[test]
fn schemas_are_draft07_and_reject_unknown_fields() {
    for (name, contents) in policy_schemas() {
        let schema: serde_json::Value = serde_json::from_str(&contents).unwrap();
        assert_eq!(
            schema["$schema"], "http://json-schema.org/draft-07/schema#",
            "{name}"
        );
        if name == "policy.schema.json" {
            // Either kind: each branch is a kind's own schema (unknown fields rejected there).
            assert_eq!(
                schema["anyOf"],
                serde_json::json!([
                    {"$ref": "#/definitions/SettingsDocument"},
                    {"$ref": "#/definitions/AccessPolicyDocument"}
                ]),
            );
            for kind in ["SettingsDocument", "AccessPolicyDocument"] {
                assert_eq!(schema["definitions"][kind]["additionalProperties"], false, "{kind}");
            }
            continue;
        }
        assert_eq!(schema["additionalProperties"], false, "{name}");
        assert!(contents.ends_with("}\n"), "{name}");
    }
    let policy: serde_json::Value = serde_json::from_str(&policy_schemas()[1].1).unwrap();
    assert_eq!(policy["properties"]["kind"]["const"], "AccessPolicy");
    assert_eq!(
        policy["definitions"]["Ingress"]["enum"],
        serde_json::json!([
            "all",
            "internal",
            "internal-and-cloud-load-balancing",
            "none"
        ])
    );
}

/// Every `default` a schema states is what a left-out field means to the loader (no `null`,
/// which an editor would offer as the default of a field that has a real one).
#[test]
fn schema_defaults_are_the_loaders_defaults_never_null() {
    for (name, contents) in policy_schemas() {
        assert!(!contents.contains("\"default\": null"), "{name} states a null default");
    }
    let settings: serde_json::Value = serde_json::from_str(&policy_schemas()[0].1).unwrap();
    let defs = &settings["definitions"];
    let minimal = "apiVersion: runwarden.dev/v1\nkind: Settings\nmetadata: {name: acme}\nspec:\n  auth0: {domain: acme.eu.auth0.com, clientId: c, clientSecretEnv: S}\n  principals: {mapping: users, emailDomains: [acme.com]}\n  scope: {projects: [acme-prod]}\n";
    let dir = policy_dir(&[("settings.yaml", minimal)]);
    let loaded = load_at(dir.path(), now()).unwrap().settings;
    assert_eq!(defs["Guards"]["properties"]["maxRemovals"]["default"], loaded.guards.max_removals);
    assert_eq!(defs["Guards"]["properties"]["maxRemovalRatio"]["default"], loaded.guards.max_removal_ratio);
    assert_eq!(defs["Audits"]["properties"]["maxTokenLifetime"]["default"], "24h");
    assert_eq!(loaded.audits.max_token_lifetime, Duration::from_secs(24 * 3600));
    assert_eq!(defs["Audits"]["properties"]["maxSigningKeyAge"]["default"], "365d");
    assert_eq!(loaded.audits.max_signing_key_age, Duration::from_secs(365 * 24 * 3600));
    assert_eq!(defs["Audits"]["properties"]["requireCoverage"]["default"], loaded.audits.require_coverage);
    assert_eq!(defs["SettingsSpec"]["properties"]["allowedRoles"]["default"], serde_json::json!(loaded.allowed_roles));
    assert_eq!(defs["SettingsSpec"]["properties"]["foreignMembers"]["default"], "keep");
    assert_eq!(loaded.foreign_members, runwarden::policy::model::ForeignMembers::Keep);
    let policy: serde_json::Value = serde_json::from_str(&policy_schemas()[1].1).unwrap();
    assert_eq!(policy["definitions"]["AccessPolicySpec"]["properties"]["mode"]["default"], "enforce");
}

/// The field reference (schemas/policy-reference.md) has a row for every field of both kinds,
/// with its type, default and example, taken from the schemas themselves: a field added to the
/// wire types shows up in it, and the committed file is fresh.
#[test]
fn the_field_reference_lists_every_field_with_its_type_default_and_example() {
    let reference = runwarden::policy::field_reference();
    let committed = fs::read_to_string(root().join("schemas/policy-reference.md")).unwrap_or_default();
    assert!(committed == reference, "schemas/policy-reference.md is stale: run `cargo run -- schema --out schemas`");
    for row in [
        "| `spec.guards.maxRemovals` | integer |  | `25` | `10` |",
        "| `spec.guards.maxRemovalRatio` | number |  | `0.5` | `0.2` |",
        "| `spec.principals.mapping` | one of `workforcePool`, `users` | yes |  | `users` |",
        "| `spec.mode` | one of `enforce`, `warn`, `observe` |  | `enforce` | `observe` |",
        "| `spec.invokers[].expires` | string |  |  | `2027-01-31T00:00:00Z` |",
        "| `spec.services[].selector` | mapping of string to string |  |  | `{team: billing}` |",
    ] {
        assert!(reference.contains(row), "no row {row}\n{reference}");
    }
    // Every property of every definition of both schemas has a row.
    for (name, text) in &policy_schemas()[..2] {
        let schema: serde_json::Value = serde_json::from_str(text).unwrap();
        for def in schema["definitions"].as_object().unwrap().values() {
            for field in def["properties"].as_object().into_iter().flatten().map(|(k, _)| k) {
                assert!(reference.contains(&format!("{field}` |")), "{name}: no row for {field}");
            }
        }
    }
}

#[test]
fn example_files_point_at_their_schema_with_a_correct_relative_path() {
    let mut files = vec![];
    let mut stack = vec![root().join("policies"), fixture("workforce-pool")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path)
            } else {
                files.push(path)
            }
        }
    }
    assert!(files.len() >= 7);
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let first = text.lines().next().unwrap();
        let target = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{}", file.display()));
        let kind = if text.contains("kind: Settings") {
            "settings"
        } else {
            "accesspolicy"
        };
        assert!(
            target.ends_with(&format!("{kind}.schema.json")),
            "{}",
            file.display()
        );
        assert!(
            file.parent().unwrap().join(target).is_file(),
            "{}: {target} does not resolve",
            file.display()
        );
    }
}

#[test]
fn federated_and_kubernetes_members_of_every_documented_form_load_and_malformed_ones_are_errors_at_their_position() {
    // iam.v1.json, Binding.members. Line 14 col 15 is the value after `- member: `.
    let with = |member: &str| policy("a", "billing-api", "all") + &format!("    - member: '{member}'\n");
    for good in [
        "serviceAccount:acme-prod.svc.id.goog[billing/invoicer]",
        "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/group/billing",
        "principal://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/gh-pool/subject/repo:acme/app",
    ] {
        let dir = policy_dir(&[("settings.yaml", &shared_settings()), ("a.yaml", &with(good))]);
        load_at(dir.path(), now()).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "principalSet://iam.googleapis.com/locations/global/workforcePools//group/billing",
        "principalSet://iam.googleapis.com/locations/global/workforcePools/acme-pool/group/",
        "serviceAccount:acme-prod.svc.id.goog[billing]",
    ] {
        let dir = policy_dir(&[("settings.yaml", &shared_settings()), ("a.yaml", &with(bad))]);
        let got = rendered(&load_at(dir.path(), now()).unwrap_err(), dir.path());
        assert_eq!(got.len(), 1, "{bad}: {got:#?}");
        assert!(got[0].starts_with("a.yaml:14:15: error:"), "{bad}: {got:#?}");
    }
}

#[test]
fn settings_pacing_pins_parse_into_the_model_and_default_to_none() {
    let text = "apiVersion: runwarden.dev/v1\nkind: Settings\nmetadata:\n  name: acme\nspec:\n  auth0:\n    domain: acme.eu.auth0.com\n    clientId: rw-demo-client\n    clientSecretEnv: AUTH0_CLIENT_SECRET\n  principals: {mapping: users, emailDomains: [acme.com]}\n  scope:\n    projects: [acme-prod]\n";
    let pinned = format!(
        "{text}  pacing: {{cloudRunReads: 600/min, writes: 60/min, iap: 10/s, auth0: 5/s, quotaProject: acme-ops}}\n"
    );
    let load = |t: &str| {
        let dir = policy_dir(&[("settings.yaml", t)]);
        runwarden::policy::load_at(dir.path(), now()).expect("loads").settings.pacing
    };
    let pin = |count, secs| Some(runwarden::rate::Rate { count, per: Duration::from_secs(secs) });
    assert_eq!(
        load(&pinned),
        runwarden::policy::model::Pacing {
            cloud_run_reads: pin(600, 60),
            writes: pin(60, 60),
            iap: pin(10, 1),
            auth0: pin(5, 1),
            quota_project: Some("acme-ops".into()),
        }
    );
    assert_eq!(load(text), runwarden::policy::model::Pacing::default());
}
