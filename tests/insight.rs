//! Insight commands against the simulator: `check-token` verifies tokens the simulator mints
//! against the tenant's discovery document and JWKS, and explains every refusal.

use std::io::Write;
use std::process::Stdio;

use runwarden::sim::{SimHandle, TokenRequest, World};
use serde_json::json;

use crate::common::{assert_golden, bin, root, runwarden};

fn tenant() -> SimHandle {
    SimHandle::new(&World::from_file(&root().join("deploy/local/world.yaml")).unwrap()).unwrap()
}

/// Runs `runwarden check-token --sim demo-world ARGS` with `token` on stdin.
fn check(token: &str, args: &[&str]) -> (i32, String) {
    let mut child = crate::common::bin()
        .current_dir(root())
        .args(["--sim", "deploy/local/world.yaml", "check-token"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if token.matches('.').count() == 2 {
        assert!(!text.contains(token), "the token must never be printed");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "the signature must never be printed");
    }
    (out.status.code().unwrap(), text)
}

fn billing_admin(mut req: TokenRequest) -> TokenRequest {
    req.extra.insert("https://acme.com/roles".into(), json!(["billing-admin"]));
    req
}

const BILLING_API: &str = "acme-prod/europe-west1/billing-api";

#[test]
fn a_good_token_is_accepted_and_matched_to_the_policies_its_roles_name() {
    let token = tenant().mint_token(&billing_admin(TokenRequest::new("auth0|ada", "https://billing.acme.com"))).unwrap();
    let (code, text) = check(&token, &["--service", BILLING_API]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("verdict: accepted"), "{text}");
    assert!(text.contains("billing via role billing-admin"), "{text}");
}

#[test]
fn each_refusal_is_explained_in_plain_words() {
    let sim = tenant();
    let cases: Vec<(&str, TokenRequest, &str)> = vec![
        ("wrong audience", billing_admin(TokenRequest::new("auth0|ada", "https://payments.acme.com")), "audience mismatch"),
        ("expired", billing_admin(TokenRequest { expires_in: -7200, ..TokenRequest::new("auth0|ada", "https://billing.acme.com") }), "expired:"),
        ("issuer without the trailing slash", billing_admin(TokenRequest { issuer: Some("https://acme.eu.auth0.com".into()), ..TokenRequest::new("auth0|ada", "https://billing.acme.com") }), "trailing slash"),
        ("a revoked, rotated-out key", billing_admin(TokenRequest { kid: Some("acme-2025-10".into()), ..TokenRequest::new("auth0|ada", "https://billing.acme.com") }), "unknown signing key \"acme-2025-10\""),
        ("no roles claim", TokenRequest::new("auth0|ada", "https://billing.acme.com"), "no roles claim"),
    ];
    for (name, req, expected) in cases {
        let token = sim.mint_token(&req).unwrap();
        let (code, text) = check(&token, &["--service", BILLING_API]);
        assert_eq!(code, 1, "{name}: {text}");
        assert!(text.contains("verdict: REFUSED"), "{name}: {text}");
        assert!(text.contains(expected), "{name}: expected {expected:?} in\n{text}");
    }
}

#[test]
fn garbage_on_stdin_is_malformed_and_empty_stdin_is_a_usage_error() {
    let (code, text) = check("not-a-jwt", &[]);
    assert_eq!(code, 1);
    assert!(text.contains("this is not a JWT"), "{text}");
    let (code, text) = check("   ", &[]);
    assert_eq!(code, 1);
    assert!(text.contains("no token on stdin"), "{text}");
}

/// A copy of the demo world whose Payments API does not enforce RBAC (an `error` finding);
/// the directory must outlive the path.
fn world_without_rbac() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let world = std::fs::read_to_string(root().join("deploy/local/world.yaml")).unwrap();
    let off = world.replace("      tokenLifetime: 86400\n      enforcePolicies: true\n", "      tokenLifetime: 86400\n");
    assert_ne!(off, world, "the demo world's Payments API entry changed; update this test");
    let path = dir.path().join("world.yaml");
    std::fs::write(&path, off).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn audit_reports_the_demo_tenants_hygiene_problems_with_evidence_and_fix() {
    let (_dir, world) = world_without_rbac();
    let world = world.as_str();
    let (code, out, err) = runwarden(&["--sim", world, "audit"]);
    assert_eq!(code, 2, "findings exit 2\n{out}{err}");
    assert!(out.contains("error [auth0-rbac-not-enforced] API \"Payments API\" (https://payments.acme.com)"), "{out}");
    assert!(out.contains("warning [auth0-token-lifetime-too-long]") && out.contains("86400s, above maxTokenLifetime 3600s"), "{out}");
    assert!(out.contains("; fix: ") && out.contains("(policies/teams/payments.yaml:"), "{out}");
    // The demo tenant has an organization while the policies name roles (issue 13).
    assert!(out.contains("warning [auth0-roles-via-organizations] the tenant has Organizations (partner-co)"), "{out}");
    assert!(out.trim_end().ends_with("Audit: 3 findings."), "{out}");
    // One catalogue: every line audit prints is printed the same by plan, apply and demo.
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    let (_, plan, _) = runwarden(&["--sim", world, "plan"]);
    let (_, apply, _) = runwarden(&["--sim", world, "apply", "--auto-approve"]);
    let (_, demo, _) = runwarden(&["demo", "--world", world]);
    for line in &lines {
        for (command, text) in [("plan", &plan), ("apply", &apply), ("demo", &demo)] {
            assert!(text.contains(line), "{command} prints {line:?}:\n{text}");
        }
    }
    let count = |text: &str| text.lines().find(|l| l.starts_with("Findings (")).map(str::to_string);
    assert_eq!(count(&plan), count(&apply), "plan and apply show the same findings");
    assert_eq!(count(&plan), count(&demo), "plan and demo show the same findings");

    let (_, json, _) = runwarden(&["--sim", world, "audit", "--format", "json"]);
    let findings: serde_json::Value = serde_json::from_str(&json).unwrap();
    let codes: Vec<&str> = findings.as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["auth0-rbac-not-enforced", "auth0-roles-via-organizations", "auth0-token-lifetime-too-long"], "the codes every plan uses");
}

#[test]
fn an_old_signing_key_and_hygiene_findings_show_up_in_every_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (_rbac_off, rbac_off) = world_without_rbac();
    let world = std::fs::read_to_string(&rbac_off).unwrap();
    let aged = world.replace(
        r#"{kid: acme-2026-10, status: current, createdAt: "2026-10-01T00:00:00.000Z"}"#,
        r#"{kid: acme-2026-10, status: current, createdAt: "2024-10-01T00:00:00.000Z"}"#,
    );
    assert_ne!(aged, world, "the demo world's current key entry changed; update this test");
    let path = dir.path().join("world.yaml");
    std::fs::write(&path, aged).unwrap();
    let (code, out, err) = runwarden(&["--sim", path.to_str().unwrap(), "plan"]);
    assert_eq!(code, 1, "an error finding (auth0-rbac-not-enforced) fails plan\n{out}{err}");
    assert!(out.contains("[auth0-signing-key-too-old]"), "{out}");
    assert!(out.contains("[auth0-rbac-not-enforced]"), "{out}");
}

#[test]
fn an_error_finding_fails_plan_after_the_whole_plan_and_apply_after_applying_what_is_safe() {
    let (_dir, world) = world_without_rbac();
    for format in ["text", "markdown", "json"] {
        let (code, out, err) = runwarden(&["--sim", &world, "plan", "--format", format]);
        assert_eq!(code, 1, "{format}: an error finding fails plan\n{out}{err}");
        assert!(out.contains("payments-api") && out.contains("auth0-rbac-not-enforced"), "{format}: the whole plan is printed first\n{out}");
        assert!(err.contains("the plan has 1 error finding (auth0-rbac-not-enforced); `runwarden plan` exits 1"), "{format}: {err}");
    }
    let (_, text, _) = runwarden(&["--sim", &world, "plan"]);
    assert!(text.trim_end().ends_with("findings (1 error)."), "the summary counts the errors\n{text}");
    let (code, out, err) = runwarden(&["--sim", &world, "apply", "--auto-approve"]);
    assert_eq!(code, 1, "error findings remain after apply\n{out}{err}");
    assert!(out.contains("Apply complete: 5 services changed"), "what is safe is applied\n{out}");
    assert!(err.contains("`runwarden apply` exits 1"), "{err}");
    // Warnings never change an exit code: the demo world has one (a long token lifetime) and
    // plans changes.
    let (code, out, err) = runwarden(&["--sim", "deploy/local/world.yaml", "plan"]);
    assert!(out.contains("warning [auth0-token-lifetime-too-long]") && !out.contains("error ["), "{out}");
    assert_eq!(code, 2, "{out}{err}");
    let (code, out, err) = runwarden(&["--sim", "deploy/local/world.yaml", "apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Golden outputs of `runwarden plan` in all three formats on the real demo world (through the
/// embedded simulator and the real clients), at a fixed clock. `RUNWARDEN_BLESS=1` rewrites.
#[test]
fn plan_outputs_on_the_demo_world_match_the_golden_files() {
    for (format, file) in [("text", "demo-world.plan.txt"), ("markdown", "demo-world.plan.md"), ("json", "demo-world.plan.json")] {
        let out = bin()
            .args(["--sim", "deploy/local/world.yaml", "plan", "--format", format])
            .env("RUNWARDEN_NOW", "2026-12-01T00:00:00Z")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        let actual = String::from_utf8(out.stdout).unwrap();
        assert_golden(&root().join("tests/golden").join(file), &actual, "review and re-run with RUNWARDEN_BLESS=1");
    }
}

/// Each plan change points at the line of the exposure field that causes it, not at the first
/// line of the `exposure:` block: `iap: true` for the IAP agent's grant and `iapEnabled`,
/// `public: false` for removing `allUsers`, `audiences:` for `customAudiences` (the demo
/// policies put each on its own line, after `ingress:`).
#[test]
fn plan_changes_point_at_the_exposure_field_that_causes_them() {
    let out = bin()
        .args(["--sim", "deploy/local/world.yaml", "plan", "--format", "json"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let line_of = |file: &str, text: &str| {
        let content = std::fs::read_to_string(root().join(file)).unwrap();
        let n = content.lines().position(|l| l.trim() == text).unwrap_or_else(|| panic!("{file} has {text:?}"));
        format!("{file}:{}", n + 1)
    };
    let service = |name: &str| plan["services"].as_array().unwrap().iter().find(|s| s["id"].as_str().is_some_and(|s| s.ends_with(name))).unwrap_or_else(|| panic!("{name} planned: {plan}")).clone();
    let console = service("/admin-console");
    let setting = |s: &serde_json::Value, field: &str| s["settings"].as_array().unwrap().iter().find(|c| c["field"] == field).unwrap()["sources"].clone();
    assert_eq!(setting(&console, "iapEnabled"), json!([line_of("policies/teams/platform.yaml", "iap: true")]));
    let worker = service("/billing-worker");
    let removal = worker["iam"]["changes"].as_array().unwrap().iter().find(|c| c["members"] == json!(["allUsers"])).unwrap();
    assert_eq!(removal["sources"], json!([line_of("policies/teams/billing.yaml", "public: false")]));
    let payments = service("/payments-api");
    assert_eq!(setting(&payments, "customAudiences"), json!([line_of("policies/teams/payments.yaml", "audiences: [https://payments.acme.com]")]));
}

/// A user's token the way the tenant issues one, from a running `runwarden sim`: `POST
/// /sim/token` (loopback only) with a user and an API. margaret holds `billing-admin` through
/// the `billing-team` group; her token for the billing API is accepted by `check-token` and
/// matched to the billing policy; an audience that is not one of the tenant's APIs is refused
/// as Auth0 refuses it, and an unknown user is a 400 that says what to give.
#[test]
fn the_simulator_mints_a_users_token_that_check_token_accepts() {
    use std::io::{BufRead, BufReader};
    let mut sim = bin()
        .current_dir(root())
        .args(["sim", "--world", "deploy/local/world.yaml", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kept open while the simulator runs: it prints more lines after its address.
    let mut stdout = BufReader::new(sim.stdout.take().unwrap()).lines();
    let endpoint = stdout
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("export RUNWARDEN_ENDPOINT=").map(str::to_string))
        .expect("the simulator prints its address");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let post = |body: serde_json::Value| {
        rt.block_on(async {
            let r = reqwest::Client::new().post(format!("{endpoint}/sim/token")).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        })
    };
    let (status, answer) = post(json!({"user": "margaret@acme.com", "audience": "https://billing.acme.com"}));
    let (wrong_api, refused) = post(json!({"user": "margaret@acme.com", "audience": "https://nope.acme.com"}));
    let (unknown_user, unknown) = post(json!({"user": "nobody@acme.com", "audience": "https://billing.acme.com"}));
    let _ = std::process::Command::new("kill").args(["-TERM", &sim.id().to_string()]).status();
    let _ = sim.wait();
    drop(stdout);

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["roles"], json!(["billing-admin"]), "{answer}");
    assert_eq!(answer["expires_in"], 3600, "the API's token lifetime: {answer}");
    let token = answer["access_token"].as_str().unwrap();
    let (code, text) = check(token, &["--service", BILLING_API]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("verdict: accepted"), "{text}");
    assert!(text.contains("billing via role billing-admin"), "{text}");
    assert_eq!(wrong_api, 403, "{refused}");
    assert!(refused["error_description"].as_str().unwrap().contains("Service not found: https://nope.acme.com"), "{refused}");
    assert_eq!(unknown_user, 400, "{unknown}");
    assert!(unknown["error_description"].as_str().unwrap().contains("no user \"nobody@acme.com\""), "{unknown}");
}

#[test]
fn a_signing_key_served_without_current_since_is_aged_from_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let world = std::fs::read_to_string(root().join("deploy/local/world.yaml")).unwrap();
    // As real tenants serve it: no `current_since`; the key's certificate (the simulator's
    // embedded one) became valid on 2026-11-29.
    let bare = world.replace(
        r#"{kid: acme-2026-10, status: current, createdAt: "2026-10-01T00:00:00.000Z"}"#,
        r#"{kid: acme-2026-10, status: current, createdAt: "2026-10-01T00:00:00.000Z", omitCurrentSince: true}"#,
    );
    assert_ne!(bare, world, "the demo world's current key entry changed; update this test");
    let path = dir.path().join("world.yaml");
    std::fs::write(&path, bare).unwrap();
    let audit_at = |now: &str| {
        let out = bin()
            .args(["--sim", path.to_str().unwrap(), "audit"])
            .env("RUNWARDEN_NOW", now)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The demo Settings say maxSigningKeyAge: 90d. 92 days after the certificate: too old...
    let late = audit_at("2027-03-01T00:00:00Z");
    assert!(late.contains("[auth0-signing-key-too-old]"), "{late}");
    // ...83 days after it is not, though the createdAt of 2026-10-01 (not served) would make it
    // 142 days old.
    let early = audit_at("2027-02-20T00:00:00Z");
    assert!(!early.contains("[auth0-signing-key-too-old]"), "{early}");
}

/// Issue 18: a project-level binding of a role carrying `run.routes.invoke` is a plan finding
/// naming the governed services it reaches, except those where the policies grant the member.
#[test]
fn a_project_level_invoking_role_is_a_bypass_finding_except_where_a_policy_grants_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let world = std::fs::read_to_string(root().join("deploy/local/world.yaml")).unwrap();
    let project_binding = "        - role: roles/run.developer\n          members: [group:billing-devs@acme.com]\n";
    assert!(world.contains(project_binding), "the demo world's project binding moved; update this test");
    // ada@acme.com is granted billing-api by the billing policy (through her Auth0 role).
    let granted = world.replacen(
        project_binding,
        "        - role: roles/run.admin\n          members: [user:ada@acme.com]\n",
        1,
    );
    let path = dir.path().join("world.yaml");
    std::fs::write(&path, granted).unwrap();
    let (code, out, err) = runwarden(&["--sim", path.to_str().unwrap(), "plan"]);
    assert_eq!(code, 2, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("[invoke-bypass] user:ada@acme.com"))
        .unwrap_or_else(|| panic!("no bypass finding for ada: {out}"));
    assert!(line.contains("roles/run.admin on project acme-prod"), "{line}");
    assert!(line.contains("acme-prod/europe-west1/payments-api"), "{line}");
    assert!(!line.contains("acme-prod/europe-west1/billing-api"), "granted there by a policy: {line}");
    assert!(line.contains("gcloud projects remove-iam-policy-binding acme-prod --member=user:ada@acme.com --role=roles/run.admin"), "{line}");
    // Without any project binding, no inherited bypass is reported.
    let none = world.replacen(project_binding, "", 1);
    std::fs::write(&path, none).unwrap();
    let (_, out, _) = runwarden(&["--sim", path.to_str().unwrap(), "plan"]);
    assert!(!out.contains("on project acme-prod"), "{out}");
}

/// Issue 18: `explain --service` shows a path inherited from the project, with role and where.
#[test]
fn explain_shows_a_project_level_developer_group_as_a_path_to_billing_api() {
    let (code, out, err) = runwarden(&[
        "--sim", "deploy/local/world.yaml", "explain", "--service", "acme-prod/europe-west1/billing-api",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Other paths to invoke"), "{out}");
    assert!(
        out.contains("group:billing-devs@acme.com  roles/run.developer  on project acme-prod (inherited)  (Google group: members not expanded)"),
        "{out}"
    );
    // Issue 18: the folder above acme-prod grants the on-call group Cloud Run Invoker.
    assert!(
        out.contains("group:oncall@acme.com  roles/run.invoker  on folder 200000000001 (inherited)  (Google group: members not expanded)"),
        "{out}"
    );
    assert!(out.contains("Google groups are named, not expanded: runwarden does not read the Cloud Identity Groups API"), "{out}");
    assert!(
        out.contains("user:contractor@partner.example  roles/run.invoker  — added by ops-oncall@acme.com (console) 2026-11-29 14:02 UTC"),
        "{out}"
    );
    let (code, json, err) = runwarden(&[
        "--sim", "deploy/local/world.yaml", "explain", "--service", "acme-prod/europe-west1/billing-api", "--format", "json",
    ]);
    assert_eq!(code, 0, "{json}{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let contractor = v["attribution"].as_array().unwrap().iter()
        .find(|a| a["member"] == "user:contractor@partner.example").expect("attributed");
    assert_eq!(contractor["addedBy"]["by"], "ops-oncall@acme.com");
    assert!(v["attribution"].as_array().unwrap().iter().all(|a| a["service"] == "acme-prod/europe-west1/billing-api"));
    let paths = v["otherPaths"].as_array().unwrap();
    assert!(paths.iter().any(|p| p["member"] == "group:billing-devs@acme.com" && p["boundOn"]["kind"] == "project"), "{paths:?}");
    assert!(paths.iter().any(|p| p["member"] == "group:oncall@acme.com" && p["boundOn"] == serde_json::json!({"kind": "folder", "name": "folders/200000000001"})), "{paths:?}");
}

/// Issue 18: `explain --member user:x` says that groups are not expanded and lists the groups
/// holding access on the services in scope, with where.
#[test]
fn explain_member_lists_the_groups_not_expanded_that_hold_access() {
    let (code, out, err) = runwarden(&["--sim", "deploy/local/world.yaml", "explain", "--member", "user:ada@acme.com"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Through Google groups (not expanded): user:ada@acme.com may also invoke services through a group it is in."), "{out}");
    let line = |g: &str| out.lines().find(|l| l.starts_with(&format!("  {g}  "))).unwrap_or_else(|| panic!("{g} not listed: {out}")).to_string();
    assert!(line("group:oncall@acme.com").contains("acme-prod/europe-west1/billing-api"), "{out}");
    assert!(line("group:billing-devs@acme.com").starts_with("  group:billing-devs@acme.com  6 services: "), "{out}");
    assert!(!out.contains("group:security@acme.com"), "roles/run.viewer does not invoke: {out}");
    assert!(out.contains("cloud-identity.groups.readonly"), "{out}");
    let (code, json, err) = runwarden(&["--sim", "deploy/local/world.yaml", "explain", "--member", "user:ada@acme.com", "--format", "json"]);
    assert_eq!(code, 0, "{json}{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let oncall = v["groupsNotExpanded"]["group:oncall@acme.com"].as_array().expect("listed");
    assert!(oncall.iter().any(|s| s == "acme-prod/europe-west1/billing-api"), "{v}");
    // A group asked about is not told about other groups.
    let (code, out, err) = runwarden(&["--sim", "deploy/local/world.yaml", "explain", "--member", "group:oncall@acme.com"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("on folder 200000000001 (inherited)"), "{out}");
    assert!(!out.contains("Through Google groups"), "{out}");
}

/// Issue 18: the audit events of an apply say who added each member it removes.
#[test]
fn apply_audit_lines_say_who_added_the_member_they_remove() {
    let (code, out, err) = runwarden(&["--sim", "deploy/local/world.yaml", "apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("- user:leaver@acme.com roles/run.invoker"))
        .unwrap_or_else(|| panic!("no removal of the leaver: {out}"));
    assert!(line.ends_with("— added by platform-admin@acme.com (api) 2026-03-02 08:30 UTC"), "{line}");
    let public = out.lines().find(|l| l.starts_with("- allUsers roles/run.invoker on acme-prod/europe-west1/billing-worker")).expect("allUsers removed");
    // Issue 18: a reverted setting says who set the live value.
    let ingress = out
        .lines()
        .find(|l| l.starts_with("~ ingress ") && l.contains("on acme-prod/europe-west1/payments-api"))
        .unwrap_or_else(|| panic!("no ingress change on payments-api: {out}"));
    assert!(ingress.ends_with("— changed by dev-lead@acme.com (console) 2026-11-28 16:45 UTC"), "{ingress}");
    assert!(public.contains("added by dev-intern@acme.com (gcloud)"), "{public}");
}

/// Issue 18: `explain --service` says who set each setting that differs from the policies
/// (text and JSON), from the Admin Activity log's UpdateService entries.
#[test]
fn explain_service_says_who_set_the_settings_that_differ() {
    let args = ["--sim", "deploy/local/world.yaml", "explain", "--service", "acme-prod/europe-west1/payments-api"];
    let (code, out, err) = runwarden(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("  ingress: \"INGRESS_TRAFFIC_ALL\" (the policies want \"INGRESS_TRAFFIC_INTERNAL_ONLY\")  — changed by dev-lead@acme.com (console) 2026-11-28 16:45 UTC"),
        "{out}"
    );
    assert!(out.contains("  customAudiences: [] (the policies want [\"https://payments.acme.com\"])  — changed by: unknown ("), "{out}");
    let (code, json, err) = runwarden(&[&args[..], &["--format", "json"]].concat());
    assert_eq!(code, 0, "{json}{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ingress = v["settingsAttribution"].as_array().unwrap().iter().find(|s| s["field"] == "ingress").expect("listed");
    assert_eq!(ingress["changedBy"], "changed by dev-lead@acme.com (console) 2026-11-28 16:45 UTC");
    assert_eq!(ingress["live"], "INGRESS_TRAFFIC_ALL");
}

/// Issue 13, custom domains: `spec.auth0.issuers` lists the issuers tokens may carry (default
/// the canonical `https://DOMAIN/`). The simulator serves the tenant under two names: the
/// canonical issuer at `http://127.0.0.1:PORT` (the `--endpoint` stands for the canonical
/// domain) and the custom domain `http://localhost:PORT/`, which names itself as the issuer.
/// A token is accepted only when its issuer is configured; otherwise the refusal names the
/// issuer and the setting, and nothing is fetched from the URL the token names (a second
/// loopback server standing for a stranger's issuer sees no request).
#[test]
fn check_token_accepts_only_the_configured_issuers_and_fetches_keys_only_from_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut world = World::from_file(&root().join("deploy/local/world.yaml")).unwrap();
    world.auth0.as_mut().unwrap().custom_domains = vec!["localhost".into()];
    let sim = rt.block_on(runwarden::sim::spawn(world)).unwrap();
    let stranger = rt.block_on(crate::common::hostile::Hostile::start(&sim.base_url));
    let port = sim.base_url.rsplit(':').next().unwrap().to_string();
    let (canonical, custom) = ("https://acme.eu.auth0.com/".to_string(), format!("http://localhost:{port}/"));
    let stranger_issuer = format!("{}/", stranger.base_url);
    // A user's token issued through the custom domain carries it as `iss`.
    let through_custom = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("http://localhost:{port}/sim/token"))
            .json(&json!({"user": "ada@acme.com", "audience": "https://billing.acme.com"}))
            .send()
            .await
            .unwrap();
        r.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
    });
    let mint = |iss: &str| {
        sim.handle
            .mint_token(&billing_admin(TokenRequest { issuer: Some(iss.into()), ..TokenRequest::new("auth0|ada", "https://billing.acme.com") }))
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let key = sim.write_credentials(dir.path()).unwrap();
    let (_, secret) = sim.auth0_client();
    let run = |issuers: Option<&[&str]>, token: &str| {
        let policies = dir.path().join("policies");
        let _ = std::fs::remove_dir_all(&policies);
        crate::common::copy_dir(&root().join("policies"), &policies);
        let path = policies.join("settings.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let line = issuers.map(|list| format!("    issuers: [{}]\n", list.join(", "))).unwrap_or_default();
        let edited = text.replace("    issuers: [https://acme.eu.auth0.com/]\n", &line);
        assert_ne!(edited, text, "the example Settings' issuers changed; update this test");
        std::fs::write(&path, edited).unwrap();
        let mut child = bin()
            .args(["--endpoint", &sim.base_url, "check-token", "--policies", policies.to_str().unwrap()])
            .env("GOOGLE_APPLICATION_CREDENTIALS", &key)
            .env("AUTH0_CLIENT_SECRET", &secret)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let both = [canonical.as_str(), custom.as_str()];
    let custom_only = [custom.as_str()];
    // (case, spec.auth0.issuers, token, accepted)
    let cases: Vec<(&str, Option<&[&str]>, String, bool)> = vec![
        ("default: the canonical issuer", None, mint(&canonical), true),
        ("default: a custom domain is not configured", None, mint(&custom), false),
        ("custom domain configured", Some(&custom_only), mint(&custom), true),
        ("a user's token issued through the custom domain", Some(&custom_only), through_custom.clone(), true),
        ("custom domain only: the canonical issuer is not configured", Some(&custom_only), mint(&canonical), false),
        ("both configured: canonical", Some(&both), mint(&canonical), true),
        ("both configured: custom", Some(&both), mint(&custom), true),
        ("a stranger's issuer", Some(&both), mint(&stranger_issuer), false),
    ];
    for (name, issuers, token, accepted) in cases {
        let (code, text) = run(issuers, &token);
        if accepted {
            assert_eq!(code, 0, "{name}: {text}");
            assert!(text.contains("verdict: accepted"), "{name}: {text}");
        } else {
            let iss = runwarden::audit::token::claimed_issuer(&token).unwrap();
            assert_eq!(code, 1, "{name}: {text}");
            assert!(text.contains(&format!("issued by {iss:?}, which is not a configured issuer (Settings spec.auth0.issuers: ")), "{name}: {text}");
        }
    }
    assert!(stranger.requests().is_empty(), "nothing is fetched from an issuer the Settings do not name: {:?}", stranger.requests().len());
    // A configured issuer whose discovery document names another issuer is not trusted.
    let (code, text) = run(Some(&[&format!("http://127.0.0.1:{port}/")]), &mint(&format!("http://127.0.0.1:{port}/")));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("names issuer \"https://acme.eu.auth0.com/\", not the configured \"http://127.0.0.1:"), "{text}");
}

/// Issue 13, RBAC audit by subject: the simulator serves each API's access policies as Auth0
/// does (`subject_type_authorization`), and the audit reads them: the demo Payments API (no
/// RBAC) is an error while any application may get a user's token, a warning once only granted
/// applications may, and no RBAC finding once users get no token at all, which the policies
/// granting people through it then hear about.
#[test]
fn the_audit_reads_each_apis_access_policy_per_subject_from_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (_rbac_off_dir, rbac_off) = world_without_rbac();
    let world = std::fs::read_to_string(rbac_off).unwrap();
    let payments = "      name: Payments API\n";
    assert!(world.contains(payments), "the demo world's Payments API changed; update this test");
    for (policies, expected) in [
        ("", vec![("auth0-rbac-not-enforced", "error")]),
        ("      userAccessPolicy: require_client_grant\n", vec![("auth0-rbac-not-enforced", "warning")]),
        ("      userAccessPolicy: deny_all\n      clientAccessPolicy: deny_all\n", vec![("auth0-api-denies-clients", "warning"), ("auth0-api-denies-users", "warning")]),
    ] {
        let path = dir.path().join("world.yaml");
        std::fs::write(&path, world.replace(payments, &format!("{payments}{policies}"))).unwrap();
        let (_, out, err) = runwarden(&["--sim", path.to_str().unwrap(), "audit", "--format", "json"]);
        let findings: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
        let found: Vec<(&str, &str)> = findings
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["evidence"].as_str().unwrap().contains("Payments API") && f["code"] != "auth0-token-lifetime-too-long")
            .map(|f| (f["code"].as_str().unwrap(), f["severity"].as_str().unwrap()))
            .collect();
        assert_eq!(found, expected, "Payments API with {policies:?}");
    }
}

/// Issue 13, Organizations: `read:organizations` is optional. A client without it still plans
/// (the pass does not fail: exit 2, changes), and the finding says the answer is unknown instead
/// of claiming the tenant has no organizations.
#[test]
fn a_client_without_read_organizations_plans_and_says_organization_roles_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let world = std::fs::read_to_string(root().join("deploy/local/world.yaml")).unwrap();
    let client = "    clientId: rw-demo-client\n";
    assert!(world.contains(client), "the demo world's management client changed; update this test");
    let scopes = runwarden::identity::auth0::MANAGEMENT_SCOPES.replace(" read:organizations", "");
    assert_ne!(scopes, runwarden::identity::auth0::MANAGEMENT_SCOPES);
    let path = dir.path().join("world.yaml");
    std::fs::write(&path, world.replace(client, &format!("{client}    scopes: [{}]\n", scopes.replace(' ', ", ")))).unwrap();
    let (code, out, err) = runwarden(&["--sim", path.to_str().unwrap(), "plan"]);
    assert_eq!(code, 2, "the pass does not fail\n{out}{err}");
    assert!(out.contains("info [auth0-organizations-unknown] whether the roles the policies name (billing-admin, billing-oncall, payments-engineer, platform-admin) are also held through Organizations is unknown: the Management API client may not list organizations (HTTP 403; scope read:organizations)"), "{out}");
    assert!(!out.contains("auth0-roles-via-organizations"), "{out}");
    assert!(!out.contains("auth0-audit-skipped"), "the rest of the audit ran: {out}");
}

/// Issue 13, one scope list: when the hygiene reads are refused (the client lacks
/// read:signing_keys), the pass still plans and the `auth0-audit-skipped` finding quotes the
/// one list, `MANAGEMENT_SCOPES`, like the example Settings, the README and the 403 hint.
#[test]
fn a_refused_hygiene_read_is_a_finding_that_quotes_the_one_scope_list() {
    let dir = tempfile::tempdir().unwrap();
    let world = std::fs::read_to_string(root().join("deploy/local/world.yaml")).unwrap();
    let client = "    clientId: rw-demo-client\n";
    let all = runwarden::identity::auth0::MANAGEMENT_SCOPES;
    let scopes = all.replace(" read:signing_keys", "");
    assert_ne!(scopes, all);
    let path = dir.path().join("world.yaml");
    std::fs::write(&path, world.replace(client, &format!("{client}    scopes: [{}]\n", scopes.replace(' ', ", ")))).unwrap();
    let (code, out, err) = runwarden(&["--sim", path.to_str().unwrap(), "plan"]);
    assert_eq!(code, 2, "the pass does not fail\n{out}{err}");
    let line = out.lines().find(|l| l.contains("[auth0-audit-skipped]")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("Insufficient scope, expected: read:signing_keys"), "{line}");
    assert!(line.contains(&format!("grant the Management API client the scopes runwarden needs: {all}")), "{line}");
}
