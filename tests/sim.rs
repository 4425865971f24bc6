//! Integration tests of the simulator: every API against a spawned simulator over loopback,
//! through reqwest (and gcp_auth for the token flow), checked against the reference documents.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use runwarden::iam::{Binding, Member, Policy};
use runwarden::live::ServiceId;
use runwarden::sim::{Faults, FaultsSpec, ServicePatch, TokenRequest, World, Writer};
use serde_json::{Value, json};
use support::*;

const BILLING_API: &str = "/v2/projects/acme-prod/locations/europe-west1/services/billing-api";
const STAGING_API: &str = "/v2/projects/acme-staging/locations/europe-west1/services/billing-api";

fn faults(json: Value) -> Faults {
    let spec: FaultsSpec = serde_json::from_value(json).expect("faults spec");
    Faults::from_spec(&spec).expect("valid faults")
}

fn invoker_members(policy: &Value) -> BTreeSet<String> {
    policy["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["role"] == "roles/run.invoker" && b.get("condition").is_none())
        .flat_map(|b| b["members"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m.as_str().map(String::from))
        .collect()
}

// ---------------------------------------------------------------- world file and schema

#[test]
fn world_schema_file_is_fresh() {
    let (name, text) = runwarden::sim::world_schema();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(&name);
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is stale: run `UPDATE_SCHEMAS=1 cargo test --test integration sim::world_schema` and commit it",
        path.display()
    );
    assert!(
        text.contains("draft-07"),
        "yaml-language-server needs draft-07"
    );
}

#[test]
fn world_files_report_what_is_wrong_and_where() {
    let check = |yaml: &str, expected: &str| {
        let err = World::from_yaml(yaml, std::path::Path::new("w.yaml"))
            .expect_err(yaml)
            .to_string();
        assert!(
            err.contains(expected),
            "error for {yaml:?} should mention {expected:?}: {err}"
        );
    };
    check("projects:\n  - id: p\n    numbr: 1\n", "numbr");
    check(
        "services:\n  - {project: nope, region: r, name: s}\n",
        "nope",
    );
    check(
        "projects: [{id: p, number: 1}]\nservices:\n  - project: p\n    region: r\n    name: s\n    iam: {bindings: [{role: roles/run.invoker, members: [ada@acme.com]}]}\n",
        "ada@acme.com",
    );
    check(
        "auth0:\n  domain: d\n  managementClient: {clientId: c}\n  roles: [{name: r, users: [ghost@acme.com]}]\n",
        "ghost@acme.com",
    );
    check(
        "faults: {rateLimits: {cloudRunReed: 1/s}}\n",
        "cloudRunReed",
    );
    check("faults: {latency: soon}\n", "soon");
    check("generate: {seed: 1, publicFraction: 2}\n", "publicFraction");
}

#[test]
fn world_files_with_huge_durations_or_counts_are_refused_with_the_limit_not_a_panic() {
    let check = |yaml: &str, expected: &str| {
        let err = World::from_yaml(yaml, std::path::Path::new("w.yaml"))
            .expect_err(yaml)
            .to_string();
        assert!(
            err.contains("w.yaml") && err.contains(expected),
            "error for {yaml:?} should name the file and {expected:?}: {err}"
        );
    };
    // 10^20 seconds overflowed `Duration` (a panic); a year is the limit.
    let huge = "100000000000000000000s";
    check(&format!("faults: {{latency: {huge}}}\n"), "longer than the limit of 365d");
    check(&format!("simulator: {{operationDelay: {huge}}}\n"), "simulator.operationDelay");
    check("simulator: {accessTokenLifetime: 366d}\n", "longer than the limit of 365d");
    check("simulator: {managementTokenLifetime: 1000000000h}\n", "managementTokenLifetime");
    // Counts that multiplied out to billions of services or users were allocated as asked.
    check(
        "generate: {seed: 1, projects: 4294967295, regions: [r], servicesPerRegion: 4294967295}\n",
        "above the limit of 100000 generated services",
    );
    check("generate: {seed: 1, projects: 4294967295}\n", "projects is 4294967295, above the limit");
    check("generate: {seed: 1, users: 4294967295}\n", "users is 4294967295, above the limit");
    check("generate: {seed: 1, roles: 4294967295}\n", "roles is 4294967295, above the limit");
    check(
        "generate: {seed: 1, users: 100000, roles: 10000, usersPerRole: 100000}\n",
        "roles × usersPerRole is 1000000000",
    );
    // At the limits, a world still loads.
    World::from_yaml(
        "simulator: {accessTokenLifetime: 365d}\ngenerate: {seed: 1, users: 10, roles: 2, usersPerRole: 10}\n",
        std::path::Path::new("w.yaml"),
    )
    .expect("durations and counts within the limits load");
}

/// Issue 18: the hierarchy and settings history of a world file are checked at load, each
/// error naming where it is.
#[test]
fn world_hierarchy_and_settings_history_errors_name_the_entry() {
    let refused = |yaml: &str, expected: &str| {
        let err = World::from_yaml(yaml, std::path::Path::new("w.yaml")).expect_err(yaml).to_string();
        assert!(err.contains("w.yaml") && err.contains(expected), "error for {yaml:?} should say {expected:?}: {err}");
    };
    refused("folders: [{id: \"1\", parent: projects/2}]\n", "folders/1: parent: \"projects/2\" is neither folders/NUMBER nor organizations/NUMBER");
    refused("organizations: [{id: x1}]\n", "\"organizations/x1\" is neither");
    refused("organizations: [{id: \"1\"}, {id: \"1\"}]\n", "organizations/1: listed twice");
    refused("projects: [{id: p, number: 1, parent: folder/3}]\n", "project p: parent:");
    refused(
        "projects: [{id: p, number: 1}]\nservices: [{project: p, region: r, name: s}]\nsettingsHistory: [{service: p/r/s, field: labels, value: {}, by: x@y, at: \"2026-01-01T00:00:00Z\"}]\n",
        "settingsHistory p/r/s: field \"labels\" is not one of",
    );
}

#[test]
fn a_world_file_over_the_size_limit_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(runwarden::sim::MAX_WORLD_FILE_BYTES + 1).unwrap();
    let err = World::from_file(&path).unwrap_err();
    let text = format!("{:#}", anyhow::Error::new(err));
    assert!(
        text.contains("huge.yaml") && text.contains("larger than 64 MiB"),
        "{text}"
    );
}

#[test]
fn demo_world_matches_the_demo_estate() {
    let world = World::from_file(&demo_world_path()).expect("demo world loads");
    let ids: Vec<String> = world
        .services
        .iter()
        .map(|s| format!("{}/{}/{}", s.project, s.region, s.name))
        .collect();
    for expected in [
        "acme-prod/europe-west1/billing-api",
        "acme-prod/europe-west1/billing-worker",
        "acme-prod/us-central1/billing-reports",
        "acme-prod/europe-west1/payments-api",
        "acme-prod/europe-west1/admin-console",
        "acme-prod/us-central1/status-page",
        "acme-staging/europe-west1/billing-api",
        "acme-staging/europe-west1/sandbox",
    ] {
        assert!(ids.iter().any(|i| i == expected), "{expected} missing");
    }
    let numbers: Vec<(String, u64)> = world
        .projects
        .iter()
        .map(|p| (p.id.clone(), p.number))
        .collect();
    assert_eq!(
        numbers,
        [
            ("acme-prod".to_string(), 123456789012),
            ("acme-staging".to_string(), 210987654321)
        ]
    );
    let auth0 = world.auth0.expect("tenant");
    assert_eq!(auth0.domain, "acme.eu.auth0.com");
    assert_eq!(auth0.management_client.client_id, "rw-demo-client");
    let roles: Vec<&str> = auth0.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        roles,
        [
            "billing-admin",
            "billing-oncall",
            "payments-engineer",
            "platform-admin",
            "contractors"
        ]
    );
}

#[test]
fn generated_worlds_follow_the_naming_contract_and_are_reproducible() {
    let yaml = |seed: u64| {
        format!(
            "generate:\n  seed: {seed}\n  projects: 2\n  regions: [europe-west1, us-central1]\n  servicesPerRegion: 30\n  servicesPerTeam: 20\n  users: 500\n  roles: 12\n  usersPerRole: 40\n  publicFraction: 0.25\n"
        )
    };
    let dump = |seed: u64| {
        let handle = runwarden::sim::SimHandle::new(&world(&yaml(seed))).unwrap();
        (handle.state_dump(), handle)
    };
    let (a, ha) = dump(7);
    let (b, _) = dump(7);
    let (c, _) = dump(8);
    let strip = |v: &Value| {
        let mut v = v.clone();
        v["now"] = Value::Null;
        v
    };
    assert_eq!(strip(&a)["services"].as_array().unwrap().len(), 120);
    // Same seed, same estate (timestamps aside, which are all "now").
    let names = |v: &Value| -> Vec<(String, Value, Value)> {
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["labels"].clone(),
                    s["iamPolicy"]["bindings"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(names(&a), names(&b));
    assert_eq!(a["projects"], b["projects"]);
    assert_ne!(
        a["projects"], c["projects"],
        "project numbers derive from the seed"
    );
    let first = &a["services"][0];
    assert_eq!(
        first["name"],
        "projects/gen-project-1/locations/europe-west1/services/svc-00001"
    );
    assert_eq!(first["labels"]["team"], "team-00");
    // Teams are consecutive in generation order: services 21..40 are team-01.
    assert_eq!(a["services"][20]["labels"]["team"], "team-01");
    assert_eq!(
        a["services"][30]["name"],
        "projects/gen-project-1/locations/us-central1/services/svc-00001"
    );
    assert_eq!(a["services"][119]["labels"]["team"], "team-05");
    let public = a["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| invoker_members(&s["iamPolicy"]).contains("allUsers"))
        .count();
    assert!(
        (10..=50).contains(&public),
        "about a quarter public, got {public}"
    );
    assert_eq!(a["auth0"]["domain"], "gen.auth0.example");
    assert_eq!(a["auth0"]["clientId"], "gen");
    assert_eq!(a["auth0"]["users"], 500);
    let roles = a["auth0"]["roles"].as_array().unwrap();
    assert_eq!(roles[0]["name"], "role-001");
    assert_eq!(roles.len(), 12);
    for r in roles {
        assert_eq!(
            r["users"].as_u64().unwrap() + 10,
            40,
            "30 direct + 10 through group-NNN"
        );
        assert_eq!(r["groups"], 1);
    }
    assert_eq!(
        ha.project_number("gen-project-1")
            .map(|n| n.to_string().len()),
        Some(12)
    );
}

#[test]
fn generating_a_large_estate_is_fast_enough_for_benchmarks() {
    // Not a timing assertion: a sanity check that 10,000 services and 50,000 users build at all
    // (a quadratic generator would make this test hang rather than fail).
    let w = world(
        "generate: {seed: 1, projects: 2, regions: [europe-west1, us-central1], servicesPerRegion: 2500, users: 50000, roles: 200, usersPerRole: 250, publicFraction: 0.1}\n",
    );
    let handle = runwarden::sim::SimHandle::new(&w).unwrap();
    assert_eq!(handle.service_ids().len(), 10_000);
    assert_eq!(handle.service_ids()[9_999].name, "svc-02500");
}

// ---------------------------------------------------------------- Google auth

#[tokio::test]
async fn google_calls_need_a_valid_bearer_token() {
    let env = demo().await;
    for path in [
        "/v3/projects/acme-prod",
        "/v2/projects/acme-prod/locations/europe-west1/services",
        "/v2/projects/acme-prod/locations/europe-west1/services/billing-api:getIamPolicy",
        "/v1/projects/acme-prod/locations/europe-west1/services/billing-api:getIamPolicy",
    ] {
        for token in [None, Some("ya29.forged")] {
            let r = env.raw(Method::GET, path, token, None).await;
            assert_google_error(&r, 401, "UNAUTHENTICATED");
        }
    }
    assert_eq!(env.gget("/v3/projects/acme-prod").await.status, 200);
    // Expired tokens stop working; gcp_auth-style clients must fetch a new one.
    env.sim.handle.expire_tokens();
    assert_google_error(
        &env.gget("/v3/projects/acme-prod").await,
        401,
        "UNAUTHENTICATED",
    );
}

#[tokio::test]
async fn token_endpoint_verifies_the_assertion_against_the_issued_key() {
    let env = demo().await;
    let sa = env.sim.handle.service_account();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&env.key_file).unwrap()).unwrap();
    assert_eq!(key_json["token_uri"], format!("{}/token", env.sim.base_url));
    let good_key = jsonwebtoken::EncodingKey::from_rsa_pem(
        key_json["private_key"].as_str().unwrap().as_bytes(),
    )
    .unwrap();
    let other_key =
        jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("../src/sim/keys/auth0-1.key.pem"))
            .unwrap();
    let assertion = |key: &jsonwebtoken::EncodingKey, iss: &str, aud: String, exp: u64| {
        let claims = json!({"iss": iss, "aud": aud, "scope": "https://www.googleapis.com/auth/cloud-platform", "iat": now, "exp": exp});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            key,
        )
        .unwrap()
    };
    let token_uri = format!("{}/token", env.sim.base_url);
    let cases = [
        (
            "valid",
            assertion(&good_key, &sa, token_uri.clone(), now + 3600),
            200,
        ),
        (
            "signed by another key",
            assertion(&other_key, &sa, token_uri.clone(), now + 3600),
            400,
        ),
        (
            "wrong issuer",
            assertion(
                &good_key,
                "mallory@evil.example",
                token_uri.clone(),
                now + 3600,
            ),
            400,
        ),
        (
            "wrong audience",
            assertion(
                &good_key,
                &sa,
                "https://example.com/token".into(),
                now + 3600,
            ),
            400,
        ),
        (
            "expired",
            assertion(&good_key, &sa, token_uri.clone(), now - 600),
            400,
        ),
    ];
    for (what, jwt, status) in cases {
        let resp = env
            .http
            .post(env.url("/token"))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", jwt.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let body: Value = resp.json().await.unwrap();
        if status == 200 {
            assert_eq!(body["token_type"], "Bearer");
            assert_eq!(body["expires_in"], 3600);
            assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));
        } else {
            assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
        }
    }
    let resp = env
        .http
        .post(env.url("/token"))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn access_token_lifetime_is_configurable() {
    let env = demo().await;
    env.sim
        .handle
        .set_access_token_lifetime(Duration::from_millis(300));
    let provider = gcp_auth::CustomServiceAccount::from_file(&env.key_file).unwrap();
    use gcp_auth::TokenProvider;
    let token = provider
        .token(&["https://www.googleapis.com/auth/cloud-platform"])
        .await
        .unwrap();
    let short = token.as_str().to_string();
    assert_eq!(
        env.raw(Method::GET, "/v3/projects/acme-prod", Some(&short), None)
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_google_error(
        &env.raw(Method::GET, "/v3/projects/acme-prod", Some(&short), None)
            .await,
        401,
        "UNAUTHENTICATED",
    );
}

// ---------------------------------------------------------------- Resource Manager

#[tokio::test]
async fn projects_get_answers_by_id_and_number_and_denies_foreign_projects() {
    let env = demo().await;
    let allowed = google_schema("cloudresourcemanager.v3.json", "Project");
    for given in ["acme-prod", "123456789012"] {
        let r = env.gget(&format!("/v3/projects/{given}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["name"], "projects/123456789012");
        assert_eq!(r.body["projectId"], "acme-prod");
        assert_eq!(r.body["state"], "ACTIVE");
        if let Some(a) = &allowed {
            assert_fields_in(&r.body, a, "Project");
        }
    }
    assert_google_error(
        &env.gget("/v3/projects/someone-elses").await,
        403,
        "PERMISSION_DENIED",
    );
}

// ---------------------------------------------------------------- Cloud Run services

#[tokio::test]
async fn services_list_pages_to_the_end_in_name_order() {
    let env = start(world(
        "generate: {seed: 3, projects: 1, regions: [europe-west1], servicesPerRegion: 250}\n",
    ))
    .await;
    let base = "/v2/projects/gen-project-1/locations/europe-west1/services";
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &token {
            Some(t) => format!("{base}?pageSize=100&pageToken={t}"),
            None => format!("{base}?pageSize=100"),
        };
        let r = env.gget(&path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        pages += 1;
        names.extend(
            r.body["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string()),
        );
        match r.body.get("nextPageToken") {
            Some(t) => token = Some(t.as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 250);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "services come in name order");
    assert_eq!(
        names.iter().collect::<BTreeSet<_>>().len(),
        250,
        "no duplicates across pages"
    );
    // Another region of the same project is empty: `{}` (proto3 JSON omits empty lists).
    let r = env
        .gget("/v2/projects/gen-project-1/locations/us-central1/services")
        .await;
    assert_eq!(r.body, json!({}));
    assert_google_error(
        &env.gget(&format!("{base}?pageToken=%%%")).await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_google_error(
        &env.gget("/v2/projects/not-mine/locations/europe-west1/services")
            .await,
        403,
        "PERMISSION_DENIED",
    );
}

#[tokio::test]
async fn services_use_the_reference_field_names_and_wire_conventions() {
    let env = demo().await;
    let r = env.gget(BILLING_API).await;
    assert_eq!(r.status, 200);
    let s = &r.body;
    if let Some(allowed) = google_schema("run.v2.json", "GoogleCloudRunV2Service") {
        assert_fields_in(s, &allowed, "Service");
    }
    assert_eq!(
        s["name"],
        "projects/acme-prod/locations/europe-west1/services/billing-api"
    );
    assert!(s["generation"].is_string(), "generation is a JSON string");
    assert_eq!(s["ingress"], "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER");
    assert_eq!(s["customAudiences"], json!(["https://billing.acme.com"]));
    assert_eq!(s["labels"]["team"], "billing");
    assert!(
        s["uri"]
            .as_str()
            .unwrap()
            .starts_with("https://billing-api-")
    );
    assert!(s["etag"].is_string() && s["uid"].is_string() && s["latestReadyRevision"].is_string());
    // Defaults are omitted, as proto3 JSON does: no `iapEnabled: false`.
    assert!(s.get("iapEnabled").is_none() && s.get("invokerIamDisabled").is_none());
    let missing = env
        .gget("/v2/projects/acme-prod/locations/europe-west1/services/ghost")
        .await;
    assert_google_error(&missing, 404, "NOT_FOUND");
}

#[tokio::test]
async fn patch_returns_an_operation_that_finishes_after_the_delay() {
    let env = demo().await;
    env.sim
        .handle
        .set_operation_delay(Duration::from_millis(300));
    let before = env
        .gget("/v2/projects/acme-prod/locations/europe-west1/services/payments-api")
        .await
        .body;
    let body = json!({"ingress": "INGRESS_TRAFFIC_INTERNAL_ONLY", "etag": before["etag"]});
    let r = env
        .google(Method::PATCH, "/v2/projects/acme-prod/locations/europe-west1/services/payments-api?updateMask=ingress", Some(&body))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let op = r.body["name"].as_str().unwrap().to_string();
    assert!(
        op.starts_with("projects/acme-prod/locations/europe-west1/operations/"),
        "{op}"
    );
    assert!(r.body.get("done").is_none(), "not done yet: {}", r.body);
    if let Some(allowed) = google_schema("run.v2.json", "GoogleLongrunningOperation") {
        assert_fields_in(&r.body, &allowed, "Operation");
    }
    let polled = env.gget(&format!("/v2/{op}")).await;
    assert!(
        polled.body.get("done").is_none(),
        "still running right after the patch"
    );
    let waited = env
        .gpost(&format!("/v2/{op}:wait"), &json!({"timeout": "10s"}))
        .await;
    assert_eq!(waited.body["done"], true, "{}", waited.body);
    assert_eq!(
        waited.body["response"]["@type"],
        "type.googleapis.com/google.cloud.run.v2.Service"
    );
    assert!(waited.body.get("error").is_none());
    let after = env
        .gget("/v2/projects/acme-prod/locations/europe-west1/services/payments-api")
        .await
        .body;
    assert_eq!(after["ingress"], "INGRESS_TRAFFIC_INTERNAL_ONLY");
    assert_ne!(after["etag"], before["etag"]);
    assert_eq!(after["generation"], "2");
    // The old etag is now stale.
    let stale = env
        .google(Method::PATCH, "/v2/projects/acme-prod/locations/europe-west1/services/payments-api?updateMask=ingress", Some(&body))
        .await;
    assert_google_error(&stale, 409, "ABORTED");
    assert_google_error(
        &env.gget("/v2/projects/acme-prod/locations/europe-west1/operations/nope")
            .await,
        404,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn patch_accepts_only_the_managed_fields_in_the_update_mask() {
    let env = demo().await;
    env.sim.handle.set_operation_delay(Duration::ZERO);
    let body = json!({"iapEnabled": true, "invokerIamDisabled": false, "customAudiences": ["https://a.example"], "labels": {"team": "platform", "tier": "1"}, "ingress": "INGRESS_TRAFFIC_ALL"});
    let path = "/v2/projects/acme-prod/locations/europe-west1/services/admin-console";
    for mask in ["template", "iapEnabled,scaling", "name"] {
        let r = env
            .google(
                Method::PATCH,
                &format!("{path}?updateMask={mask}"),
                Some(&body),
            )
            .await;
        assert_google_error(&r, 400, "INVALID_ARGUMENT");
    }
    let r = env
        .google(
            Method::PATCH,
            &format!(
                "{path}?updateMask=iapEnabled,customAudiences,labels,invoker_iam_disabled,ingress"
            ),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let op = r.body["name"].as_str().unwrap();
    assert_eq!(env.gget(&format!("/v2/{op}")).await.body["done"], true);
    let id = ServiceId::new("acme-prod", "europe-west1", "admin-console");
    let svc = env.sim.handle.service(&id).unwrap();
    assert!(svc.iap_enabled);
    assert_eq!(svc.custom_audiences, ["https://a.example"]);
    assert_eq!(svc.labels.get("tier").map(String::as_str), Some("1"));
    let bad = env
        .google(
            Method::PATCH,
            &format!("{path}?updateMask=ingress"),
            Some(&json!({"ingress": "SOMETIMES"})),
        )
        .await;
    assert_google_error(&bad, 400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn failing_operations_end_with_an_error_and_change_nothing() {
    let env = demo().await;
    env.sim.handle.set_operation_delay(Duration::ZERO);
    env.sim
        .handle
        .set_faults(faults(json!({"operationFailureRate": 1.0})));
    let path =
        "/v2/projects/acme-prod/locations/europe-west1/services/payments-api?updateMask=ingress";
    let r = env
        .google(
            Method::PATCH,
            path,
            Some(&json!({"ingress": "INGRESS_TRAFFIC_NONE"})),
        )
        .await;
    let op = r.body["name"].as_str().unwrap().to_string();
    let done = env.gpost(&format!("/v2/{op}:wait"), &json!({})).await.body;
    assert_eq!(done["done"], true);
    assert!(
        done["error"]["code"].is_number() && done["error"]["message"].is_string(),
        "{done}"
    );
    assert!(done.get("response").is_none());
    let id = ServiceId::new("acme-prod", "europe-west1", "payments-api");
    assert_eq!(
        env.sim.handle.service(&id).unwrap().ingress,
        runwarden::sim::IngressValue::IngressTrafficAll
    );
}

// ---------------------------------------------------------------- IAM semantics

#[tokio::test]
async fn an_empty_policy_reads_as_acab_and_every_write_changes_the_etag() {
    let env = start(world(
        "projects: [{id: p, number: 111111111111}]\nservices: [{project: p, region: r, name: s}]\n",
    ))
    .await;
    let path = "/v2/projects/p/locations/r/services/s";
    let r = env.gget(&format!("{path}:getIamPolicy")).await;
    assert_eq!(r.body, json!({"etag": "ACAB"}));
    if let Some(allowed) = google_schema("run.v2.json", "GoogleIamV1Policy") {
        assert_fields_in(&r.body, &allowed, "Policy");
    }
    let set = |etag: Option<&str>, member: &str| {
        let mut policy = json!({"bindings": [{"role": "roles/run.invoker", "members": [member]}]});
        if let Some(e) = etag {
            policy["etag"] = e.into();
        }
        json!({"policy": policy})
    };
    let first = env
        .gpost(
            &format!("{path}:setIamPolicy"),
            &set(Some("ACAB"), "user:ada@acme.com"),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let etag1 = first.body["etag"].as_str().unwrap().to_string();
    assert_ne!(etag1, "ACAB");
    assert_eq!(first.body["version"], 1);
    // A stale etag is refused with ABORTED and changes nothing.
    let stale = env
        .gpost(
            &format!("{path}:setIamPolicy"),
            &set(Some("ACAB"), "user:eve@acme.com"),
        )
        .await;
    assert_google_error(&stale, 409, "ABORTED");
    assert_eq!(
        invoker_members(&env.gget(&format!("{path}:getIamPolicy")).await.body),
        BTreeSet::from(["user:ada@acme.com".to_string()])
    );
    // An omitted etag overwrites.
    let blind = env
        .gpost(
            &format!("{path}:setIamPolicy"),
            &set(None, "user:bob@acme.com"),
        )
        .await;
    assert_eq!(blind.status, 200);
    let etag2 = blind.body["etag"].as_str().unwrap().to_string();
    assert_ne!(etag2, etag1);
    // Writing no bindings empties the policy: etag only, no version.
    let empty = env
        .gpost(
            &format!("{path}:setIamPolicy"),
            &json!({"policy": {"etag": etag2}}),
        )
        .await;
    assert_eq!(empty.status, 200);
    assert!(
        empty.body.get("version").is_none() && empty.body.get("bindings").is_none(),
        "{}",
        empty.body
    );
    let history = env.sim.handle.history();
    assert_eq!(history.len(), 3);
    assert!(
        history.iter().all(
            |w| w.writer == Writer::Client && w.resource == "projects/p/locations/r/services/s"
        )
    );
}

#[tokio::test]
async fn conditional_bindings_need_policy_version_3() {
    let env = demo().await;
    // The staging policy has a conditional binding. Read at version 3: conditions shown.
    let v3 = env
        .gget(&format!(
            "{STAGING_API}:getIamPolicy?options.requestedPolicyVersion=3"
        ))
        .await
        .body;
    assert_eq!(v3["version"], 3);
    assert!(
        v3["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["condition"]["title"] == "temporary-debugging")
    );
    // Read at version 1 (or unspecified): Google's documented `_withcond_` rendering.
    for q in ["?options.requestedPolicyVersion=1", ""] {
        let v1 = env
            .gget(&format!("{STAGING_API}:getIamPolicy{q}"))
            .await
            .body;
        assert_eq!(v1["version"], 1, "{v1}");
        let roles: Vec<&str> = v1["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["role"].as_str().unwrap())
            .collect();
        assert!(
            roles
                .iter()
                .any(|r| r.starts_with("roles/run.invoker_withcond_")),
            "{roles:?}"
        );
        assert!(
            v1["bindings"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b.get("condition").is_none())
        );
    }
    assert_google_error(
        &env.gget(&format!(
            "{STAGING_API}:getIamPolicy?options.requestedPolicyVersion=2"
        ))
        .await,
        400,
        "INVALID_ARGUMENT",
    );
    let etag = v3["etag"].as_str().unwrap();
    let conditional = json!({"role": "roles/run.invoker", "members": ["user:ada@acme.com"], "condition": {"title": "until-2027", "expression": "request.time < timestamp(\"2027-01-31T00:00:00Z\")"}});
    for version in [Value::Null, json!(1)] {
        let mut policy = json!({"etag": etag, "bindings": [conditional.clone()]});
        if !version.is_null() {
            policy["version"] = version;
        }
        let r = env
            .gpost(
                &format!("{STAGING_API}:setIamPolicy"),
                &json!({"policy": policy}),
            )
            .await;
        assert_google_error(&r, 400, "INVALID_ARGUMENT");
    }
    // A version-1 write with the etag over a conditional policy would drop conditions: refused.
    let r = env.gpost(&format!("{STAGING_API}:setIamPolicy"), &json!({"policy": {"version": 1, "etag": etag, "bindings": [{"role": "roles/run.invoker", "members": ["user:ada@acme.com"]}]}})).await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    let ok = env
        .gpost(
            &format!("{STAGING_API}:setIamPolicy"),
            &json!({"policy": {"version": 3, "etag": etag, "bindings": [conditional]}}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["version"], 3);
    assert_eq!(ok.body["bindings"][0]["condition"]["title"], "until-2027");
}

#[tokio::test]
async fn policies_over_1500_members_are_refused() {
    let env = demo().await;
    let members = |n: usize| {
        (0..n)
            .map(|i| format!("user:u{i}@acme.com"))
            .collect::<Vec<_>>()
    };
    let set = |n: usize| json!({"policy": {"bindings": [{"role": "roles/run.invoker", "members": members(n)}]}});
    let path = format!("{BILLING_API}:setIamPolicy");
    assert_eq!(env.gpost(&path, &set(1500)).await.status, 200);
    assert_google_error(&env.gpost(&path, &set(1501)).await, 400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn policies_over_250_groups_and_domains_are_refused() {
    let env = demo().await;
    let members = |n: usize| {
        let mut m: Vec<String> = (0..n - 1).map(|i| format!("group:g{i}@acme.com")).collect();
        m.push("domain:partner.example".into());
        m
    };
    let set = |n: usize| json!({"policy": {"bindings": [{"role": "roles/run.invoker", "members": members(n)}]}});
    let path = format!("{BILLING_API}:setIamPolicy");
    assert_eq!(env.gpost(&path, &set(250)).await.status, 200);
    let r = env.gpost(&path, &set(251)).await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("groups and domains"), "{}", r.body);
}

#[tokio::test]
async fn malformed_members_and_roles_are_invalid_arguments() {
    let env = demo().await;
    let path = format!("{BILLING_API}:setIamPolicy");
    let check = |role: &'static str, member: &'static str| (role, member);
    for (role, member) in [
        check("roles/run.invoker", "ada@acme.com"),
        check("roles/run.invoker", "user:"),
        check("roles/run.invoker", "robot:x@acme.com"),
        check("roles/run.invoker", "allusers"),
        check("roles/run.invoker", "deleted:user:gone@acme.com?uid=123"),
        check("run.invoker", "user:ada@acme.com"),
        check("roles/run.invoker_withcond_abc", "user:ada@acme.com"),
    ] {
        let r = env
            .gpost(
                &path,
                &json!({"policy": {"bindings": [{"role": role, "members": [member]}]}}),
            )
            .await;
        assert_google_error(&r, 400, "INVALID_ARGUMENT");
    }
    // A deleted member already in the policy survives a read-modify-write.
    let id = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    let deleted = Member::parse("deleted:user:gone@acme.com?uid=123").unwrap();
    let etag = env
        .sim
        .handle
        .set_iam_policy_direct(
            &id,
            Policy {
                version: 1,
                etag: String::new(),
                bindings: vec![Binding {
                    role: "roles/run.invoker".into(),
                    members: BTreeSet::from([deleted]),
                    condition: None,
                }],
            },
        )
        .unwrap();
    let r = env
        .gpost(&path, &json!({"policy": {"etag": etag, "bindings": [{"role": "roles/run.invoker", "members": ["deleted:user:gone@acme.com?uid=123", "user:ada@acme.com"]}]}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn gcloud_v1_iam_paths_serve_the_same_policy() {
    let env = demo().await;
    let v1 = env.gget("/v1/projects/acme-prod/locations/europe-west1/services/billing-api:getIamPolicy?alt=json&options.requestedPolicyVersion=3").await;
    let v2 = env
        .gget(&format!(
            "{BILLING_API}:getIamPolicy?options.requestedPolicyVersion=3"
        ))
        .await;
    assert_eq!(v1.body, v2.body);
    assert!(invoker_members(&v1.body).contains("user:leaver@acme.com"));
    let etag = v1.body["etag"].as_str().unwrap();
    let r = env
        .gpost("/v1/projects/acme-prod/locations/europe-west1/services/billing-api:setIamPolicy?alt=json", &json!({"policy": {"etag": etag, "bindings": [{"role": "roles/run.invoker", "members": ["user:ada@acme.com"]}]}}))
        .await;
    assert_eq!(r.status, 200);
    let id = ServiceId::new("acme-prod", "europe-west1", "billing-api");
    assert_eq!(env.sim.handle.iam_policy(&id).unwrap().member_count(), 1);
}

#[tokio::test]
async fn iap_policies_live_on_the_project_number_resource() {
    let env = demo().await;
    let path = "/v1/projects/123456789012/iap_web/cloud_run-europe-west1/services/admin-console";
    let r = env
        .gpost(
            &format!("{path}:getIamPolicy"),
            &json!({"options": {"requestedPolicyVersion": 3}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["bindings"][0]["role"],
        "roles/iap.httpsResourceAccessor"
    );
    let etag = r.body["etag"].as_str().unwrap();
    let set = env
        .gpost(&format!("{path}:setIamPolicy"), &json!({"policy": {"etag": etag, "bindings": [{"role": "roles/iap.httpsResourceAccessor", "members": ["user:grace@acme.com", "user:ada@acme.com"]}]}}))
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let id = ServiceId::new("acme-prod", "europe-west1", "admin-console");
    assert_eq!(env.sim.handle.iap_policy(&id).unwrap().member_count(), 2);
    let by_name = env
        .sim
        .handle
        .policy("projects/123456789012/iap_web/cloud_run-europe-west1/services/admin-console");
    assert_eq!(by_name, env.sim.handle.iap_policy(&id));
    assert_eq!(
        env.sim.handle.history()[0].resource,
        "projects/123456789012/iap_web/cloud_run-europe-west1/services/admin-console"
    );
    let other = env.gpost("/v1/projects/999999999999/iap_web/cloud_run-europe-west1/services/admin-console:getIamPolicy", &json!({})).await;
    assert_google_error(&other, 403, "PERMISSION_DENIED");
}

#[tokio::test]
async fn test_iam_permissions_echoes_what_the_caller_holds() {
    let env = demo().await;
    let asked = json!({"permissions": ["run.services.getIamPolicy", "run.services.setIamPolicy"]});
    let r = env
        .gpost(&format!("{BILLING_API}:testIamPermissions"), &asked)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["permissions"], asked["permissions"]);
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn the_concurrent_writer_strikes_between_a_read_and_the_next_write() {
    let env = demo().await;
    env.sim
        .handle
        .set_faults(faults(json!({"concurrentWriter": 1.0})));
    let read = env
        .gget(&format!(
            "{BILLING_API}:getIamPolicy?options.requestedPolicyVersion=3"
        ))
        .await
        .body;
    let mut policy = read.clone();
    policy["bindings"] = json!([{"role": "roles/run.invoker", "members": ["user:ada@acme.com"]}]);
    let r = env
        .gpost(
            &format!("{BILLING_API}:setIamPolicy"),
            &json!({"policy": policy}),
        )
        .await;
    assert_google_error(&r, 409, "ABORTED");
    env.sim.handle.set_faults(Faults::default());
    let reread = env
        .gget(&format!(
            "{BILLING_API}:getIamPolicy?options.requestedPolicyVersion=3"
        ))
        .await
        .body;
    let foreign: Vec<String> = invoker_members(&reread)
        .into_iter()
        .filter(|m| m.ends_with("@foreign.example"))
        .collect();
    assert_eq!(foreign.len(), 1, "{reread}");
    let history = env.sim.handle.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].writer, Writer::ConcurrentWriter);
    assert_eq!(
        history[0].resource,
        "projects/acme-prod/locations/europe-west1/services/billing-api"
    );
    // A correct client re-reads and keeps the foreign member.
    let mut members: Vec<String> = vec!["user:ada@acme.com".into()];
    members.extend(foreign.clone());
    let ok = env.gpost(&format!("{BILLING_API}:setIamPolicy"), &json!({"policy": {"etag": reread["etag"], "bindings": [{"role": "roles/run.invoker", "members": members}]}})).await;
    assert_eq!(ok.status, 200);
    assert!(invoker_members(&ok.body).contains(&foreign[0]));
}

#[tokio::test]
async fn injected_error_rates_answer_in_the_apis_own_shape() {
    let env = demo().await;
    let token = env.management_token().await;
    env.sim
        .handle
        .set_faults(faults(json!({"errorRates": {"503": 1.0}})));
    assert_google_error(&env.gget(BILLING_API).await, 503, "UNAVAILABLE");
    let a = env
        .raw(Method::GET, "/api/v2/roles", Some(&token), None)
        .await;
    assert_auth0_error(&a, 503);
    env.sim
        .handle
        .set_faults(faults(json!({"errorRates": {"429": 1.0}})));
    assert_google_error(&env.gget(BILLING_API).await, 429, "RESOURCE_EXHAUSTED");
    env.sim.handle.set_faults(Faults::default());
    assert_eq!(env.gget(BILLING_API).await.status, 200);
}

#[tokio::test]
async fn quotas_refuse_calls_beyond_the_rate_with_429() {
    let env = demo().await;
    env.sim.handle.set_faults(faults(
        json!({"rateLimits": {"cloudRunRead": "2/min", "cloudRunWrite": "600/min"}}),
    ));
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(env.gget(BILLING_API).await.status);
        }
        v
    };
    // `2/min` allows a bucket of one call (one second's worth, at least one).
    assert_eq!(statuses[0], 200);
    let refused = env.gget(BILLING_API).await;
    assert_google_error(&refused, 429, "RESOURCE_EXHAUSTED");
    assert!(refused.header("retry-after").is_some());
    // Other APIs are not affected by the read quota.
    assert_eq!(env.gget("/v3/projects/acme-prod").await.status, 200);
}

#[tokio::test]
async fn bursts_of_429_recur_after_every_n_calls() {
    let env = demo().await;
    env.sim
        .handle
        .set_faults(faults(json!({"bursts": {"every": 2, "length": 1}})));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(env.gget("/v3/projects/acme-prod").await.status);
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
}

#[tokio::test]
async fn latency_is_added_to_every_call_and_logged() {
    let env = demo().await;
    env.sim.handle.clear_log();
    env.sim
        .handle
        .set_faults(faults(json!({"latency": "60ms"})));
    assert_eq!(env.gget(BILLING_API).await.status, 200);
    let log = env.sim.handle.request_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, BILLING_API);
    assert_eq!(log[0].status, 200);
    assert!(
        log[0].latency >= Duration::from_millis(60),
        "{:?}",
        log[0].latency
    );
}

#[tokio::test]
async fn admin_endpoints_expose_the_log_and_take_faults() {
    let env = demo().await;
    let _ = env.gget(BILLING_API).await;
    let log: Value = env
        .http
        .get(env.url("/sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|r| r["path"] == BILLING_API && r["status"] == 200)
    );
    let r = env
        .http
        .post(env.url("/sim/faults"))
        .json(&json!({"errorRates": {"503": 1.0}, "rateLimits": {"auth0": "50/s"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_google_error(&env.gget(BILLING_API).await, 503, "UNAVAILABLE");
    let bad = env
        .http
        .post(env.url("/sim/faults"))
        .json(&json!({"errorRates": {"ok": 1.0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let r = env
        .http
        .post(env.url("/sim/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(env.gget(BILLING_API).await.status, 200);
    let state: Value = env
        .http
        .get(env.url("/sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["services"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn direct_edits_inject_drift_and_are_recorded() {
    let env = demo().await;
    let id = ServiceId::new("acme-prod", "europe-west1", "payments-api");
    let before = env
        .gget("/v2/projects/acme-prod/locations/europe-west1/services/payments-api:getIamPolicy")
        .await
        .body;
    let policy = Policy {
        version: 1,
        etag: String::new(),
        bindings: vec![Binding {
            role: "roles/run.invoker".into(),
            members: BTreeSet::from([Member::parse("allUsers").unwrap()]),
            condition: None,
        }],
    };
    let etag = env.sim.handle.set_iam_policy_direct(&id, policy).unwrap();
    let after = env
        .gget("/v2/projects/acme-prod/locations/europe-west1/services/payments-api:getIamPolicy")
        .await
        .body;
    assert_eq!(after["etag"], etag.as_str());
    assert_ne!(after["etag"], before["etag"]);
    assert_eq!(
        invoker_members(&after),
        BTreeSet::from(["allUsers".to_string()])
    );
    assert_eq!(env.sim.handle.history()[0].writer, Writer::Direct);
    assert!(env.sim.handle.update_service(
        &id,
        &ServicePatch {
            iap_enabled: Some(true),
            ..ServicePatch::default()
        }
    ));
    assert_eq!(
        env.gget("/v2/projects/acme-prod/locations/europe-west1/services/payments-api")
            .await
            .body["iapEnabled"],
        true
    );
}

// ---------------------------------------------------------------- Auth0

#[tokio::test]
async fn auth0_client_credentials_accept_json_and_form_and_refuse_bad_secrets() {
    let env = demo().await;
    let (id, secret) = env.sim.auth0_client();
    assert_eq!(id, "rw-demo-client");
    assert!(secret.len() >= 32, "a generated secret");
    let audience = "https://acme.eu.auth0.com/api/v2/";
    let form = env
        .http
        .post(env.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("audience", audience),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 200);
    assert!(form.headers().get("x-ratelimit-limit").is_some());
    let body: Value = form.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let header = jsonwebtoken::decode_header(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(
        header.kid.as_deref(),
        Some("acme-2026-10"),
        "signed by the current key"
    );
    let cases = [
        (
            json!({"grant_type": "client_credentials", "client_id": id, "client_secret": "wrong", "audience": audience}),
            401,
            "access_denied",
        ),
        (
            json!({"grant_type": "client_credentials", "client_id": "other", "client_secret": secret, "audience": audience}),
            401,
            "access_denied",
        ),
        (
            json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret, "audience": "https://elsewhere/api/v2/"}),
            403,
            "access_denied",
        ),
        (
            json!({"grant_type": "password", "client_id": id, "client_secret": secret, "audience": audience}),
            400,
            "unsupported_grant_type",
        ),
    ];
    for (body, status, error) in cases {
        let r = env
            .raw(Method::POST, "/oauth/token", None, Some(&body))
            .await;
        assert_eq!(r.status, status, "{body}");
        assert_eq!(r.body["error"], error);
    }
    let wrong = env
        .raw(
            Method::POST,
            "/oauth/token",
            None,
            Some(&cases_wrong_secret(&id, audience)),
        )
        .await;
    assert_eq!(
        wrong.body,
        json!({"error": "access_denied", "error_description": "Unauthorized"})
    );
}

fn cases_wrong_secret(id: &str, audience: &str) -> Value {
    json!({"grant_type": "client_credentials", "client_id": id, "client_secret": "nope", "audience": audience})
}

#[tokio::test]
async fn management_calls_need_the_management_token() {
    let env = demo().await;
    for token in [None, Some("not-a-token")] {
        let r = env.raw(Method::GET, "/api/v2/roles", token, None).await;
        assert_auth0_error(&r, 401);
    }
    let google = env.google_token.clone();
    assert_auth0_error(
        &env.raw(Method::GET, "/api/v2/roles", Some(&google), None)
            .await,
        401,
    );
    let token = env.management_token().await;
    env.sim.handle.expire_tokens();
    assert_auth0_error(
        &env.raw(Method::GET, "/api/v2/roles", Some(&token), None)
            .await,
        401,
    );
    assert_auth0_error(&env.aget("/api/v2/nothing-here").await, 404);
}

#[tokio::test]
async fn roles_page_by_offset_with_totals_and_filter_by_name() {
    let env = start(world(
        "generate: {seed: 5, users: 300, roles: 120, usersPerRole: 10}\n",
    ))
    .await;
    let mut all = Vec::new();
    for page in 0.. {
        let r = env
            .aget(&format!("/api/v2/roles?page={page}&per_page=50"))
            .await;
        let roles = r.body.as_array().unwrap().clone();
        if roles.is_empty() {
            break;
        }
        all.extend(roles);
    }
    assert_eq!(all.len(), 120, "offset past the end returns an empty page");
    let totals = env
        .aget("/api/v2/roles?page=1&per_page=50&include_totals=true")
        .await
        .body;
    assert_eq!(
        (
            totals["start"].as_u64(),
            totals["limit"].as_u64(),
            totals["total"].as_u64()
        ),
        (Some(50), Some(50), Some(120))
    );
    assert_eq!(totals["roles"].as_array().unwrap().len(), 50);
    if let Some(allowed) = auth0_schema("get_organization_member_roles_200_response_oneOf") {
        assert_fields_in(&totals, &allowed, "roles with totals");
    }
    if let Some(allowed) = auth0_schema("get_organization_member_roles_200_response_oneOf_inner") {
        assert_fields_in(&totals["roles"][0], &allowed, "role");
    }
    let filtered = env.aget("/api/v2/roles?name_filter=ROLE-007").await.body;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    let role = &filtered[0];
    assert_eq!(role["name"], "role-007");
    let one = env
        .aget(&format!("/api/v2/roles/{}", role["id"].as_str().unwrap()))
        .await;
    assert_eq!(one.body, *role);
    assert_auth0_error(&env.aget("/api/v2/roles/rol_missing").await, 404);
    assert_auth0_error(&env.aget("/api/v2/roles?per_page=101").await, 400);
}

#[tokio::test]
async fn role_users_page_by_checkpoint_to_the_end_and_offset_stops_at_1000() {
    let env = start(world(
        "generate: {seed: 9, users: 2000, roles: 1, usersPerRole: 1600}\n",
    ))
    .await;
    let role = env.aget("/api/v2/roles").await.body[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // 1,600 members: 400 through group-001, 1,200 direct.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let path = match &from {
            Some(f) => format!("/api/v2/roles/{role}/users?take=100&from={f}"),
            None => format!("/api/v2/roles/{role}/users?take=100"),
        };
        let r = env.aget(&path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        seen.extend(
            r.body["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["user_id"].as_str().unwrap().to_string()),
        );
        match r.body.get("next") {
            Some(n) => from = Some(n.as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1200);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        1200,
        "no duplicates"
    );
    let ok = env
        .aget(&format!(
            "/api/v2/roles/{role}/users?page=9&per_page=100&include_totals=true"
        ))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["total"], 1200);
    if let Some(allowed) = auth0_schema("get_role_user_200_response_oneOf_inner") {
        assert_fields_in(&ok.body["users"][0], &allowed, "role user");
    }
    if let Some(allowed) = auth0_schema("get_role_user_200_response_oneOf") {
        assert_fields_in(&ok.body, &allowed, "role users with totals");
    }
    let refused = env
        .aget(&format!("/api/v2/roles/{role}/users?page=10&per_page=100"))
        .await;
    assert_auth0_error(&refused, 400);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("checkpoint pagination")
    );
    // The groups assigned to the role and their members complete the picture.
    let groups = env.aget(&format!("/api/v2/roles/{role}/groups")).await.body;
    assert_eq!(groups[0]["name"], "group-001");
    let gid = groups[0]["id"].as_str().unwrap();
    let members = env
        .aget(&format!(
            "/api/v2/groups/{gid}/members?include_totals=true&per_page=100"
        ))
        .await
        .body;
    assert_eq!(members["total"], 400);
}

#[tokio::test]
async fn demo_roles_resolve_through_direct_users_and_groups() {
    let env = demo().await;
    let roles = env
        .aget("/api/v2/roles?name_filter=billing-admin")
        .await
        .body;
    let id = roles[0]["id"].as_str().unwrap().to_string();
    let direct = env.aget(&format!("/api/v2/roles/{id}/users")).await.body;
    let emails: Vec<&str> = direct
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    // Sorted by user id; the blocked leaver is still assigned the role.
    assert_eq!(emails, ["leaver@acme.com", "ada@acme.com"]);
    for field in ["user_id", "email", "picture", "name"] {
        assert!(direct[0][field].is_string(), "{field}");
    }
    let groups = env.aget(&format!("/api/v2/roles/{id}/groups")).await.body;
    assert_eq!(groups[0]["name"], "billing-team");
    let members = env
        .aget(&format!(
            "/api/v2/groups/{}/members",
            groups[0]["id"].as_str().unwrap()
        ))
        .await
        .body;
    // Group members are GroupMember {id, member_type, type, connection_id, created_at}: ids,
    // never e-mails (auth0-python types/group_member.py).
    let members = members.as_array().unwrap();
    for m in members {
        assert_eq!(m["member_type"], "user");
        assert!(m.get("email").is_none() && m.get("user_id").is_none(), "{m}");
    }
    let emails: BTreeSet<String> = {
        let mut out = BTreeSet::new();
        for m in members {
            let id = m["id"].as_str().unwrap().replace('|', "%7C");
            let user = env.aget(&format!("/api/v2/users/{id}")).await.body;
            out.insert(user["email"].as_str().unwrap().to_string());
        }
        out
    };
    assert_eq!(
        emails,
        BTreeSet::from(["ada@acme.com", "margaret@acme.com", "rita@acme.com"].map(String::from))
    );
    // Leaver handling: removing a direct assignment shows at the next read.
    assert!(
        env.sim
            .handle
            .remove_role_user("billing-admin", "ada@acme.com")
    );
    let left = env.aget(&format!("/api/v2/roles/{id}/users")).await.body;
    let left: Vec<&str> = left.as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(left, ["leaver@acme.com"]);
}

#[tokio::test]
async fn users_are_found_by_id_and_unverified_users_in_bulk() {
    let env = demo().await;
    let r = env
        .aget("/api/v2/users?q=email_verified:false&search_engine=v3&include_totals=true")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // ken@acme.com and rita@acme.com (in billing-team) are unverified.
    assert_eq!(r.body["total"], 2);
    assert_eq!(r.body["length"], 2);
    if let Some(allowed) = auth0_schema("get_users_200_response_oneOf") {
        assert_fields_in(&r.body, &allowed, "users with totals");
    }
    let ken = r.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "ken@acme.com")
        .expect("ken is unverified");
    assert_eq!(ken["email_verified"], false);
    if let Some(allowed) = auth0_schema("get_users_200_response_oneOf_inner") {
        assert_fields_in(ken, &allowed, "user");
    }
    let id = ken["user_id"].as_str().unwrap();
    let encoded: String = id.replace('|', "%7C");
    let one = env.aget(&format!("/api/v2/users/{encoded}")).await;
    assert_eq!(one.body["email"], "ken@acme.com");
    assert_auth0_error(&env.aget("/api/v2/users/auth0%7Cnobody").await, 404);
    assert_auth0_error(&env.aget("/api/v2/users?q=name:*ada*").await, 400);
    let by_email = env
        .aget("/api/v2/users?q=email:%22grace@acme.com%22")
        .await
        .body;
    assert_eq!(by_email.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn resource_servers_signing_keys_and_discovery_use_auth0_shapes() {
    let env = demo().await;
    let rs = env.aget("/api/v2/resource-servers").await.body;
    let list = rs.as_array().unwrap();
    assert!(
        list.iter()
            .any(|r| r["is_system"] == true
                && r["identifier"] == "https://acme.eu.auth0.com/api/v2/")
    );
    let payments = list
        .iter()
        .find(|r| r["identifier"] == "https://payments.acme.com")
        .unwrap();
    assert_eq!(payments["token_lifetime"], 86400);
    if let Some(mut allowed) = auth0_schema("resourceServer") {
        // The reference predates the API access policies: `subject_type_authorization` is
        // auth0-python's `ResourceServer.subject_type_authorization` (its shape is checked by
        // the contract tests with the SDK's models).
        allowed.push("subject_type_authorization".into());
        let billing = list.iter().find(|r| r["identifier"] == "https://billing.acme.com").unwrap();
        assert_eq!(billing["subject_type_authorization"]["user"]["policy"], "require_client_grant");
        assert!(payments.get("subject_type_authorization").is_none(), "served only when the world sets a policy");
        for r in list {
            assert_fields_in(r, &allowed, "resource server");
        }
    }
    let keys = env.aget("/api/v2/keys/signing").await.body;
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 4);
    let current = keys.iter().find(|k| k["current"] == true).unwrap();
    assert_eq!(current["kid"], "acme-2026-10");
    assert!(
        current["cert"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    if let Some(allowed) = auth0_schema("get_signing_keys_200_response_inner") {
        for k in keys {
            assert_fields_in(k, &allowed, "signing key");
        }
    }
    let oidc = env
        .raw(Method::GET, "/.well-known/openid-configuration", None, None)
        .await
        .body;
    assert_eq!(oidc["issuer"], "https://acme.eu.auth0.com/");
    assert_eq!(
        oidc["jwks_uri"],
        "https://acme.eu.auth0.com/.well-known/jwks.json"
    );
    let jwks = env
        .raw(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .body;
    let kids: BTreeSet<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        BTreeSet::from(["acme-2026-10", "acme-2027-01", "acme-2026-04"]),
        "revoked keys are not published"
    );
}

#[tokio::test]
async fn minted_tokens_verify_against_the_published_jwks() {
    let env = demo().await;
    let jwks: jsonwebtoken::jwk::JwkSet = env
        .http
        .get(env.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let verify = |token: &str, aud: &str| {
        let header = jsonwebtoken::decode_header(token).unwrap();
        let kid = header.kid.unwrap();
        let jwk = jwks
            .find(&kid)
            .ok_or_else(|| format!("kid {kid} not in JWKS"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&[aud]);
        v.set_issuer(&["https://acme.eu.auth0.com/"]);
        jsonwebtoken::decode::<Value>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    };
    let mut req = TokenRequest::new("auth0|ada", "https://billing.acme.com");
    req.extra.insert("email".into(), "ada@acme.com".into());
    let token = env.sim.handle.mint_token(&req).unwrap();
    let claims = verify(&token, "https://billing.acme.com").unwrap();
    assert_eq!(claims["email"], "ada@acme.com");
    assert!(
        verify(&token, "https://payments.acme.com").is_err(),
        "wrong audience"
    );
    let expired = env
        .sim
        .handle
        .mint_token(&TokenRequest {
            expires_in: -600,
            ..TokenRequest::new("auth0|ada", "https://billing.acme.com")
        })
        .unwrap();
    assert!(
        verify(&expired, "https://billing.acme.com")
            .unwrap_err()
            .contains("Expired")
    );
    let revoked = env
        .sim
        .handle
        .mint_token(&TokenRequest {
            kid: Some("acme-2025-10".into()),
            ..TokenRequest::new("auth0|ada", "https://billing.acme.com")
        })
        .unwrap();
    assert!(
        verify(&revoked, "https://billing.acme.com")
            .unwrap_err()
            .contains("not in JWKS")
    );
    let previous = env
        .sim
        .handle
        .mint_token(&TokenRequest {
            kid: Some("acme-2026-04".into()),
            ..TokenRequest::new("auth0|ada", "https://billing.acme.com")
        })
        .unwrap();
    assert!(verify(&previous, "https://billing.acme.com").is_ok());
    assert!(
        env.sim
            .handle
            .mint_token(&TokenRequest {
                kid: Some("nope".into()),
                ..TokenRequest::new("a", "b")
            })
            .is_err()
    );
}

#[tokio::test]
async fn auth0_rate_limits_send_headers_and_the_429_body() {
    let env = demo().await;
    let token = env.management_token().await;
    let r = env
        .raw(Method::GET, "/api/v2/roles", Some(&token), None)
        .await;
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(
            r.header(h).and_then(|v| v.parse::<u64>().ok()).is_some(),
            "{h} on every Auth0 response"
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        r.header("x-ratelimit-reset")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= now,
        "reset is epoch seconds"
    );
    env.sim
        .handle
        .set_faults(faults(json!({"rateLimits": {"auth0": "2/s"}})));
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            env.raw(Method::GET, "/api/v2/roles", Some(&token), None)
                .await,
        );
    }
    let last = last.unwrap();
    assert_eq!(last.status, 429);
    assert_eq!(last.body["statusCode"], 429);
    assert_eq!(last.body["error"], "Too Many Requests");
    assert_eq!(last.body["errorCode"], "too_many_requests");
    assert_eq!(last.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(last.header("x-ratelimit-remaining"), Some("0"));
}

#[tokio::test]
async fn an_auth0_plan_sets_the_tenants_bucket_and_its_headers() {
    let env = demo().await;
    let token = env.management_token().await;
    // Self-service plans: bursts of 10, refilled at 150/min.
    env.sim.handle.set_faults(faults(json!({"auth0Tier": "selfService"})));
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..11 {
        let r = env.raw(Method::GET, "/api/v2/roles", Some(&token), None).await;
        statuses.push(r.status);
        last = Some(r);
    }
    let last = last.unwrap();
    assert!(statuses[..9].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(last.status, 429, "{statuses:?}");
    assert_eq!(last.header("x-ratelimit-limit"), Some("10"));
    // A configured rate wins over the plan; an unknown plan is refused with the known ones.
    env.sim.handle.set_faults(faults(json!({"auth0Tier": "free", "rateLimits": {"auth0": "50/s"}})));
    let r = env.raw(Method::GET, "/api/v2/roles", Some(&token), None).await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("50"));
    let spec: runwarden::sim::FaultsSpec = serde_json::from_value(json!({"auth0Tier": "gold"})).unwrap();
    let err = runwarden::sim::Faults::from_spec(&spec).unwrap_err().to_string();
    assert!(err.contains("free, selfService, enterprise"), "{err}");
}

#[tokio::test]
async fn unknown_paths_are_404_in_the_right_shape() {
    let env = demo().await;
    assert_google_error(
        &env.gget("/v2/projects/acme-prod/locations/europe-west1/jobs")
            .await,
        404,
        "NOT_FOUND",
    );
    assert_google_error(
        &env.raw(Method::GET, "/nothing", None, None).await,
        404,
        "NOT_FOUND",
    );
}

// ---------------------------------------------------------------- runwarden sim (the binary)

#[test]
fn runwarden_sim_refuses_non_loopback_addresses() {
    let out = crate::common::bin()
        .args(["sim", "--world"])
        .arg(demo_world_path())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .expect("runwarden runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loopback") && stderr.contains("--allow-non-loopback"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing is served, nothing exported");
}

#[tokio::test]
async fn runwarden_sim_prints_the_export_lines_and_serves_them() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(["sim", "--world"])
        .arg(demo_world_path())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("runwarden sim starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut exports = std::collections::BTreeMap::new();
    while exports.len() < 4 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("export lines in time")
            .unwrap()
            .expect("a line");
        let (name, value) = line
            .strip_prefix("export ")
            .and_then(|l| l.split_once('='))
            .unwrap_or_else(|| panic!("not an export line: {line}"));
        exports.insert(name.to_string(), value.to_string());
    }
    let endpoint = &exports["RUNWARDEN_ENDPOINT"];
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert_eq!(exports["AUTH0_CLIENT_ID"], "rw-demo-client");
    let key: Value = serde_json::from_str(
        &std::fs::read_to_string(&exports["GOOGLE_APPLICATION_CREDENTIALS"]).unwrap(),
    )
    .unwrap();
    assert_eq!(key["token_uri"], format!("{endpoint}/token"));
    let body = json!({"grant_type": "client_credentials", "client_id": exports["AUTH0_CLIENT_ID"], "client_secret": exports["AUTH0_CLIENT_SECRET"], "audience": "https://acme.eu.auth0.com/api/v2/"});
    let r = reqwest::Client::new()
        .post(format!("{endpoint}/oauth/token"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "the printed secret is the served one"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn debug_output_never_shows_the_client_secret() {
    let env = demo().await;
    let (_, secret) = env.sim.auth0_client();
    let shown = format!("{:?} {:?}", env.sim, env.sim.handle);
    assert!(!shown.contains(&secret), "{shown}");
    assert!(!shown.contains(&env.google_token));
}

#[test]
fn the_design_documents_generate_and_faults_sections_parse_as_written() {
    // Verbatim from DESIGN §7: benchmarks and reliability tests are written against it.
    let yaml = r#"
generate:                 # add a synthetic estate, reproducible from the seed
  seed: 1
  projects: 2             # named gen-project-1 ... (numbers derived from the seed)
  regions: [europe-west1, us-central1]
  servicesPerRegion: 500  # svc-00001 ... numbered from 1 within each (project, region)
  servicesPerTeam: 20     # label team: team-00, team-01 ... (two digits at least), consecutive
                          # services in generation order (project, then region, then number)
  users: 50000            # user-000001@gen.example ..., e-mail verified
  roles: 200              # role-001 ..., each with usersPerRole members, some through groups
  usersPerRole: 250       # tenant domain gen.auth0.example; Management API client id "gen" (secret in the export lines)
  publicFraction: 0.1     # share of services that start with allUsers as invoker
faults:
  latency: 20ms           # added to every response
  errorRates: {"503": 0.1}
  rateLimits: {cloudRunRead: 6000/min, cloudRunWrite: 600/min, auth0: 50/s}
  concurrentWriter: 0.05  # chance that an IAM policy gains a foreign binding between a read and the next write
  operationFailureRate: 0.0
"#;
    let w = world(yaml);
    let f = Faults::from_spec(w.faults.as_ref().unwrap()).unwrap();
    assert_eq!(f.latency, Duration::from_millis(20));
    assert_eq!(f.error_rates, [(503, 0.1)]);
    assert_eq!(f.rate_limits.len(), 3);
    assert_eq!(f.concurrent_writer, 0.05);
    let handle = runwarden::sim::SimHandle::new(&w).unwrap();
    let ids = handle.service_ids();
    assert_eq!(ids.len(), 2000);
    assert_eq!(
        ids[0],
        ServiceId::new("gen-project-1", "europe-west1", "svc-00001")
    );
    assert_eq!(
        ids[1999],
        ServiceId::new("gen-project-2", "us-central1", "svc-00500")
    );
    assert_eq!(handle.auth0_client().0, "gen");
    assert_eq!(handle.auth0_domain(), "gen.auth0.example");
    let last = handle.service(&ids[1999]).unwrap();
    assert_eq!(last.labels.get("team").map(String::as_str), Some("team-99"));
}

#[test]
fn every_ingress_a_policy_can_write_including_none_is_in_run_v2s_ingress_enum() {
    use runwarden::policy::model::Ingress;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/google/run.v2.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("notice: {} is absent; skipping the enum check", path.display());
        return;
    };
    let doc: Value = serde_json::from_str(&text).unwrap();
    let allowed: Vec<&str> = doc["schemas"]["GoogleCloudRunV2Service"]["properties"]["ingress"]["enum"]
        .as_array()
        .expect("ingress is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for ingress in [Ingress::All, Ingress::Internal, Ingress::InternalAndCloudLoadBalancing, Ingress::None] {
        let value = ingress.api_value();
        assert!(allowed.contains(&value), "{} → {value} is not in run.v2's enum {allowed:?}", ingress.policy_value());
        assert_eq!(Ingress::from_api_value(value), Some(ingress), "{value} reads back");
    }
    assert_eq!(Ingress::None.api_value(), "INGRESS_TRAFFIC_NONE");
}

/// `GET /api/v2/organizations` (issue 13): the demo tenant's organization, in the reference's
/// offset-with-totals shape and its checkpoint shape, with the reference's field names.
#[tokio::test]
async fn organizations_list_in_the_reference_shapes() {
    let env = demo().await;
    let totals = env.aget("/api/v2/organizations?page=0&per_page=5&include_totals=true").await.body;
    assert_eq!(totals["total"], 1, "{totals}");
    assert_eq!(totals["organizations"][0]["name"], "partner-co");
    let checkpoint = env.aget("/api/v2/organizations?take=5").await.body;
    assert_eq!(checkpoint["organizations"][0]["display_name"], "Partner Co", "{checkpoint}");
    assert!(checkpoint.get("next").is_none(), "one page: {checkpoint}");
    for (schema, body) in [("get_organizations_200_response_oneOf", &totals), ("get_organizations_200_response_oneOf_1", &checkpoint)] {
        if let Some(allowed) = auth0_schema(schema) {
            assert_fields_in(body, &allowed, schema);
        }
    }
    if let Some(allowed) = auth0_schema("get_organizations_200_response_oneOf_inner") {
        assert_fields_in(&checkpoint["organizations"][0], &allowed, "organization");
    }
}

/// User search is eventually consistent and capped, as Auth0's (issue 13): a change to a user
/// reaches `GET /users?q=` only after `simulator.searchIndexLag`, while `GET /users/{id}` is
/// current at once; and a search's `total` never says more than 1,000.
#[tokio::test]
async fn user_search_lags_behind_changes_and_caps_its_total() {
    let env = demo().await;
    let handle = &env.sim.handle;
    handle.set_search_index_lag(std::time::Duration::from_secs(3600));
    assert!(handle.update_user("ada@acme.com", Some(false), Some(true)));
    assert!(!handle.update_user("nobody@acme.com", Some(false), None));
    let unverified = env.aget("/api/v2/users?q=email_verified:false&search_engine=v3&include_totals=true").await.body;
    let emails: Vec<&str> = unverified["users"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert!(!emails.contains(&"ada@acme.com"), "search has not caught up: {emails:?}");
    let found = env.aget("/api/v2/users?q=email:%22ada@acme.com%22").await.body;
    assert_eq!(found[0]["email_verified"], true, "search still has the old record: {found}");
    assert!(found[0].get("blocked").is_none(), "{found}");
    let id = found[0]["user_id"].as_str().unwrap().replace('|', "%7C");
    let own = env.aget(&format!("/api/v2/users/{id}")).await.body;
    assert_eq!((own["email_verified"].clone(), own["blocked"].clone()), (json!(false), json!(true)), "the record is current: {own}");
    // With no lag, search sees the next change at once.
    handle.set_search_index_lag(std::time::Duration::ZERO);
    assert!(handle.update_user("ada@acme.com", Some(false), Some(true)));
    let now = env.aget("/api/v2/users?q=email:%22ada@acme.com%22").await.body;
    assert_eq!(now[0]["email_verified"], false, "{now}");

    let mut yaml = String::from("auth0:\n  domain: many.example\n  managementClient: {clientId: c1, clientSecret: s1}\n  users:\n");
    for i in 0..1050 {
        yaml.push_str(&format!("    - {{email: u{i:04}@acme.com, emailVerified: false}}\n"));
    }
    let many = start(World::from_yaml(&yaml, std::path::Path::new("many.yaml")).unwrap()).await;
    let page = many.aget("/api/v2/users?q=email_verified:false&search_engine=v3&include_totals=true&per_page=100").await.body;
    assert_eq!(page["total"], 1000, "the total is capped: {}", page["total"]);
}
