//! The read side of a pass against the simulator: the real Google and Auth0 clients and the
//! reader, over loopback HTTP.

mod access;
mod hostile_answers;
mod oracle;
pub(crate) mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use runwarden::endpoints::Endpoints;
use runwarden::google::GcpAuth;
use runwarden::identity::SecretSource;
use runwarden::live::ServiceId;
use runwarden::live::{
    ClientConfig, Clients, LiveState, ReadProgress, User, read_live, read_live_with_stats,
};
use runwarden::policy::model::Desired;

use support::*;

use crate::common::hostile;

/// A small generated estate: 2 projects × 2 regions × 30 services, teams of 10, 400 users,
/// 4 roles of 150 members (a quarter through a group each).
const GENERATED: &str = r#"
generate:
  seed: 11
  projects: 2
  regions: [europe-west1, us-central1]
  servicesPerRegion: 30
  servicesPerTeam: 10
  users: 400
  roles: 4
  usersPerRole: 150
  publicFraction: 0.3
"#;

/// Policies over the generated estate: team-00 everywhere in gen-project-1 (`"*"`), team-07
/// in one region by selector, one service by name with IAP, and roles (one of them unknown).
fn generated_desired() -> Desired {
    let settings = settings(
        "gen.auth0.example",
        "gen",
        &["gen-project-1", "gen-project-2"],
        &["europe-west1", "us-central1"],
        &["gen.example"],
    );
    let policies = vec![
        policy(
            "a-team-00",
            vec![selector("gen-project-1", None, &[("team", "team-00")])],
            None,
            vec![role("role-001")],
        ),
        policy(
            "b-team-07",
            vec![selector(
                "gen-project-2",
                Some("europe-west1"),
                &[("team", "team-07")],
            )],
            None,
            vec![role("role-002"), role("role-999")],
        ),
        policy(
            "c-console",
            vec![named("gen-project-2", "us-central1", "svc-00005")],
            Some(true),
            vec![
                role("role-001"),
                member("serviceAccount:robot@gen-project-2.iam.gserviceaccount.com"),
            ],
        ),
    ];
    Desired { settings, policies }
}

/// What the generated policies govern, worked out from the simulator's own state: (governed,
/// with IAP).
fn generated_governed(setup: &Setup) -> (BTreeSet<ServiceId>, BTreeSet<ServiceId>) {
    let h = &setup.sim.handle;
    let mut governed = BTreeSet::new();
    let mut iap = BTreeSet::new();
    for id in h.service_ids() {
        let s = h.service(&id).unwrap();
        let team = s.labels.get("team").map(String::as_str);
        let by_selector = (id.project == "gen-project-1" && team == Some("team-00"))
            || (id.project == "gen-project-2"
                && id.region == "europe-west1"
                && team == Some("team-07"));
        let by_name = id == ServiceId::new("gen-project-2", "us-central1", "svc-00005");
        if by_selector || by_name {
            governed.insert(id.clone());
            if by_name || s.iap_enabled {
                iap.insert(id.clone());
            }
        }
    }
    (governed, iap)
}

#[tokio::test]
async fn reads_a_generated_world_exactly_and_reads_iam_only_for_governed_services() {
    let desired = generated_desired();
    let setup = start(world(GENERATED), &desired.settings, &test_client_config()).await;
    let (live, stats) = read_live_with_stats(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    // The oracle below makes its own Auth0 calls: count the reader's first.
    assert_eq!(
        count(&setup.sim, |_, p| p == "/oauth/token"),
        1,
        "one Management API token"
    );
    assert_eq!(
        count(&setup.sim, |_, p| p == "/token"),
        1,
        "one Google token"
    );

    let (governed, iap) = generated_governed(&setup);
    assert!(
        governed.len() >= 15,
        "the fixture governs enough services: {}",
        governed.len()
    );
    let expected_services = oracle::services(&setup.sim.handle, &governed, &iap);
    assert_eq!(live.services, expected_services);
    assert_eq!(
        live.project_numbers,
        oracle::project_numbers(&setup.sim.handle, &["gen-project-1", "gen-project-2"])
    );

    let expected_directory = oracle::directory(
        &setup.sim.base_url,
        &setup.sim.auth0_client(),
        "gen.auth0.example",
        &["role-001", "role-002"],
        true,
    )
    .await;
    assert_eq!(live.directory, expected_directory);
    assert!(
        !live.directory.roles.contains_key("role-999"),
        "an unknown role is absent, not an error"
    );

    // Exactly one IAM read per governed service, one IAP read per IAP resource, none for the
    // ungoverned ones, one list pass per (project, region), one projects.get per project.
    let log = setup.sim.handle.request_log();
    let iam_paths: Vec<&str> = log
        .iter()
        .filter(|r| r.path.ends_with(":getIamPolicy") && r.path.starts_with("/v2/"))
        .map(|r| r.path.as_str())
        .collect();
    let expected_paths: Vec<String> = governed
        .iter()
        .map(|id| format!("/v2/{}:getIamPolicy", id.resource_name()))
        .collect();
    let mut sorted = iam_paths.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        expected_paths
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        count(&setup.sim, |m, p| m == "POST"
            && p.starts_with("/v1/")
            && p.ends_with(":getIamPolicy")),
        iap.len()
    );
    assert_eq!(
        count(&setup.sim, |m, p| m == "GET"
            && p.starts_with("/v2/")
            && p.ends_with("/services")),
        4
    );
    assert_eq!(count(&setup.sim, |_, p| p.starts_with("/v3/projects/")), 2);
    assert_eq!(
        (
            stats.governed,
            stats.iam_reads,
            stats.iap_reads,
            stats.services
        ),
        (governed.len(), governed.len(), iap.len(), 120)
    );
}

#[tokio::test]
async fn follows_every_listing_to_its_last_page() {
    let desired = generated_desired();
    let mut config = test_client_config();
    config.google.list_page_size = Some(7);
    config.auth0_page_size = 10;
    let setup = start(world(GENERATED), &desired.settings, &config).await;
    let live = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();

    // The same world read with large pages is the reference.
    let reference = {
        let other = start(world(GENERATED), &desired.settings, &test_client_config()).await;
        read_live(&desired, &other.clients, &quick_retries())
            .await
            .unwrap()
    };
    assert_same_world(&live, &reference);

    // 30 services per region in pages of 7: 5 pages each (the last one without a token).
    for (project, region) in [
        ("gen-project-1", "europe-west1"),
        ("gen-project-2", "us-central1"),
    ] {
        let prefix = format!("/v2/projects/{project}/locations/{region}/services");
        assert_eq!(count(&setup.sim, |_, p| p == prefix), 5, "{prefix}");
    }
    // 4 roles in pages of 10: one page; the totals say it is the last.
    assert_eq!(count(&setup.sim, |_, p| p == "/api/v2/roles"), 1);
    // Role users, role groups and group members: checkpoint pages of 10 to the end.
    let roles = oracle::role_ids(
        &setup.sim.base_url,
        &setup.sim.auth0_client(),
        "gen.auth0.example",
    )
    .await;
    for name in ["role-001", "role-002"] {
        let role = &live.directory.roles[name];
        let direct = role.members.iter().filter(|u| u.direct).count();
        let via_group = role
            .members
            .iter()
            .filter(|u| !u.via_groups.is_empty())
            .count();
        let id = &roles[name];
        assert_eq!(
            count(&setup.sim, |_, p| p == format!("/api/v2/roles/{id}/users")),
            direct.div_ceil(10),
            "{name} users"
        );
        assert_eq!(
            count(&setup.sim, |_, p| p == format!("/api/v2/roles/{id}/groups")),
            1,
            "{name} groups"
        );
        assert!(via_group > 10, "the group spans several pages: {via_group}");
    }
    let group_pages = count(&setup.sim, |_, p| {
        p.starts_with("/api/v2/groups/") && p.ends_with("/members")
    });
    let expected_group_pages: usize = ["role-001", "role-002"]
        .iter()
        .map(|n| {
            live.directory.roles[*n]
                .members
                .iter()
                .filter(|u| !u.via_groups.is_empty())
                .count()
                .div_ceil(10)
        })
        .sum();
    assert_eq!(group_pages, expected_group_pages);
}

/// Two snapshots of equal worlds (etags differ between simulator instances).
fn assert_same_world(a: &LiveState, b: &LiveState) {
    let strip = |s: &LiveState| {
        let mut s = s.clone();
        for svc in s.services.values_mut() {
            svc.etag.clear();
            for p in [&mut svc.iam, &mut svc.iap_iam].into_iter().flatten() {
                p.etag.clear();
            }
        }
        s
    };
    let (a, b) = (strip(a), strip(b));
    assert_eq!(a.services, b.services);
    assert_eq!(a.directory, b.directory);
    assert_eq!(
        a.project_numbers.keys().collect::<Vec<_>>(),
        b.project_numbers.keys().collect::<Vec<_>>()
    );
}

const GROUPS_WORLD: &str = r#"
projects: [{id: p1, number: 111111111111}]
services:
  - {project: p1, region: europe-west1, name: api, labels: {team: a}}
auth0:
  domain: groups.example
  managementClient: {clientId: c1, clientSecret: s1}
  users:
    - {email: ada@acme.com}
    - {email: bob@acme.com}
    - {email: cy@acme.com, emailVerified: false}
    - {email: dee@acme.com}
    - {email: eve@acme.com}
  roles:
    - {name: admins, users: [ada@acme.com, bob@acme.com], groups: [team-g1, team-g2]}
    - {name: oncall, users: [], groups: [team-g1]}
    - {name: unused, users: [eve@acme.com]}
  groups:
    - {name: team-g1, members: [bob@acme.com, cy@acme.com]}
    - {name: team-g2, members: [dee@acme.com]}
"#;

#[tokio::test]
async fn role_members_include_members_of_groups_assigned_to_the_role() {
    let settings = settings(
        "groups.example",
        "c1",
        &["p1"],
        &["europe-west1"],
        &["acme.com"],
    );
    let desired = Desired {
        settings,
        policies: vec![policy(
            "a",
            vec![named("p1", "europe-west1", "api")],
            None,
            vec![role("admins"), role("oncall")],
        )],
    };
    let setup = start(
        world(GROUPS_WORLD),
        &desired.settings,
        &test_client_config(),
    )
    .await;
    let live = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    let summary = |name: &str| -> Vec<(String, bool, bool, Vec<String>)> {
        live.directory.roles[name]
            .members
            .iter()
            .map(|u: &User| {
                (
                    u.email.clone().unwrap(),
                    u.direct,
                    u.email_verified,
                    u.via_groups.clone(),
                )
            })
            .collect()
    };
    let g = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    // Members are sorted by user id; the simulator derives ids from e-mails, so sort alike.
    let mut admins = summary("admins");
    admins.sort();
    assert_eq!(
        admins,
        vec![
            ("ada@acme.com".into(), true, true, g(&[])),
            ("bob@acme.com".into(), true, true, g(&["team-g1"])),
            ("cy@acme.com".into(), false, false, g(&["team-g1"])),
            ("dee@acme.com".into(), false, true, g(&["team-g2"])),
        ]
    );
    let mut oncall = summary("oncall");
    oncall.sort();
    assert_eq!(
        oncall,
        vec![
            ("bob@acme.com".into(), false, true, g(&["team-g1"])),
            ("cy@acme.com".into(), false, false, g(&["team-g1"]))
        ]
    );
    assert!(live.directory.members_resolved);
    assert!(
        !live.directory.roles.contains_key("unused"),
        "only roles that policies name are read"
    );
    let ids: Vec<&str> = live.directory.roles["admins"]
        .members
        .iter()
        .map(|u| u.user_id.as_str())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "members are sorted by user id");
    // A group shared by two roles is listed once per pass; verification comes from each
    // member's own record, read once however many roles the member holds (no search).
    assert_eq!(
        count(&setup.sim, |_, p| p.starts_with("/api/v2/groups/")
            && p.ends_with("/members")),
        2
    );
    assert_eq!(count(&setup.sim, |_, p| p == "/api/v2/users"), 0, "no user search");
    assert_eq!(
        count(&setup.sim, |_, p| p.starts_with("/api/v2/users/")),
        4,
        "one look-up per distinct member"
    );
}

#[tokio::test]
async fn the_workforce_pool_mapping_reads_only_the_role_list() {
    let settings = settings("groups.example", "c1", &["p1"], &["europe-west1"], &[]);
    let desired = Desired {
        settings,
        policies: vec![policy(
            "a",
            vec![named("p1", "europe-west1", "api")],
            None,
            vec![role("admins"), role("ghost")],
        )],
    };
    let setup = start(
        world(GROUPS_WORLD),
        &desired.settings,
        &test_client_config(),
    )
    .await;
    let live = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    assert!(!live.directory.members_resolved);
    assert_eq!(live.directory.roles.keys().collect::<Vec<_>>(), ["admins"]);
    assert!(live.directory.roles["admins"].members.is_empty());
    let auth0_calls: Vec<String> = setup
        .sim
        .handle
        .request_log()
        .iter()
        .filter(|r| r.path.starts_with("/api/v2/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(auth0_calls, ["/api/v2/roles"]);
}

/// A world with one region of `n` services, all labelled `team: t`, and a tenant with roles.
fn paced_world(n: usize, faults: &str) -> String {
    format!(
        r#"
generate:
  seed: 3
  projects: 1
  regions: [europe-west1]
  servicesPerRegion: {n}
  servicesPerTeam: 100000
  users: 600
  roles: 3
  usersPerRole: 300
faults:
{faults}
"#
    )
}

fn paced_desired() -> Desired {
    let settings = settings(
        "gen.auth0.example",
        "gen",
        &["gen-project-1"],
        &["europe-west1"],
        &["gen.example"],
    );
    Desired {
        settings,
        policies: vec![policy(
            "all",
            vec![selector("gen-project-1", None, &[("team", "team-00")])],
            None,
            vec![role("role-001"), role("role-002"), role("role-003")],
        )],
    }
}

#[tokio::test]
async fn pacing_to_the_quota_avoids_429s_and_reads_everything() {
    // Cloud Run reads limited to 100/s and Auth0 to 20/s by the simulator; the clients pace
    // a little below that.
    let yaml = paced_world(150, "  rateLimits: {cloudRunRead: 100/s, auth0: 20/s}");
    let desired = paced_desired();
    let mut config = test_client_config();
    config.google.cloud_run_read_rate = runwarden::retry::Pace::Limit("90/s".parse().unwrap());
    config.google.cloud_run_rate_per_region = false;
    config.auth0_rate = runwarden::retry::Pace::Limit("18/s".parse().unwrap());
    config.auth0_page_size = 25;
    let setup = start(world(&yaml), &desired.settings, &config).await;
    let live = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();

    let throttled = setup
        .sim
        .handle
        .request_log()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(throttled, 0, "no 429 when pacing below the quota");
    assert_eq!(live.services.len(), 150);
    assert!(
        live.services
            .values()
            .all(|s| s.iam.is_some() && s.read_error.is_none())
    );
    assert_eq!(live.directory.roles.len(), 3);
    assert!(
        live.directory
            .roles
            .values()
            .all(|r| r.members.len() == 300)
    );
}

#[tokio::test]
async fn auth0_rate_limit_headers_keep_an_unpaced_client_out_of_a_429_storm() {
    // No client-side rate at all: only x-ratelimit-remaining/-reset slow the client down.
    let yaml = paced_world(5, "  rateLimits: {auth0: 15/s}");
    let desired = paced_desired();
    let mut config = test_client_config();
    config.auth0_page_size = 10;
    let setup = start(world(&yaml), &desired.settings, &config).await;
    let live = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();

    let log = setup.sim.handle.request_log();
    let auth0: Vec<_> = log
        .iter()
        .filter(|r| r.path.starts_with("/api/v2/") || r.path == "/oauth/token")
        .collect();
    let throttled = auth0.iter().filter(|r| r.status == 429).count();
    assert!(
        auth0.len() > 60,
        "enough calls to exhaust the bucket several times: {}",
        auth0.len()
    );
    assert!(
        throttled * 10 <= auth0.len(),
        "{throttled} of {} Auth0 calls throttled",
        auth0.len()
    );
    assert!(
        live.directory
            .roles
            .values()
            .all(|r| r.members.len() == 300)
    );
}

#[tokio::test]
async fn quota_errors_are_retried_after_the_requested_wait_until_everything_is_read() {
    // Every 20 calls, the next 5 get 429: an unpaced client must back off and finish.
    let yaml = paced_world(60, "  bursts: {every: 20, length: 5}");
    let desired = paced_desired();
    let setup = start(world(&yaml), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    let throttled = setup
        .sim
        .handle
        .request_log()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert!(throttled >= 5, "the bursts happened: {throttled}");
    assert_eq!(live.services.len(), 60);
    assert!(
        live.services
            .values()
            .all(|s| s.iam.is_some() && s.read_error.is_none())
    );
}

#[tokio::test]
async fn injected_503s_are_retried_and_the_result_is_unchanged() {
    let desired = generated_desired();
    let faulty = format!("{GENERATED}faults:\n  errorRates: {{\"503\": 0.15}}\n");
    let setup = start(world(&faulty), &desired.settings, &test_client_config()).await;
    let with_faults = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    let failed = setup
        .sim
        .handle
        .request_log()
        .iter()
        .filter(|r| r.status == 503)
        .count();
    assert!(failed > 0, "the fault was injected");

    setup
        .sim
        .handle
        .set_faults(runwarden::sim::Faults::default());
    let clean = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    assert_eq!(with_faults, clean);
}

#[tokio::test]
async fn revoked_google_and_auth0_tokens_are_replaced_after_one_401() {
    let desired = generated_desired();
    let setup = start(world(GENERATED), &desired.settings, &test_client_config()).await;
    let first = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    setup.sim.handle.clear_log();
    setup.sim.handle.expire_tokens();
    let second = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    assert_eq!(first, second);
    let log = setup.sim.handle.request_log();
    assert!(
        log.iter()
            .any(|r| r.status == 401 && r.path.starts_with("/v")),
        "Google refused the old token"
    );
    assert!(
        log.iter()
            .any(|r| r.status == 401 && r.path.starts_with("/api/v2/")),
        "Auth0 refused the old token"
    );
    assert_eq!(
        log.iter().filter(|r| r.path == "/oauth/token").count(),
        1,
        "one new Management API token"
    );
}

#[tokio::test]
async fn tokens_that_expire_mid_pass_are_refreshed() {
    let desired = generated_desired();
    let mut client_config = test_client_config();
    client_config.auth0_page_size = 10;
    let setup = start(world(GENERATED), &desired.settings, &client_config).await;
    // Every call takes 15 ms, so the Auth0 read (a dozen sequential pages per role) outlives a
    // 300 ms Management API token: the client must renew it before it expires.
    setup
        .sim
        .handle
        .set_management_token_lifetime(Duration::from_millis(300));
    setup
        .sim
        .handle
        .set_faults_spec(&runwarden::sim::FaultsSpec {
            latency: Some("15ms".into()),
            ..Default::default()
        })
        .unwrap();
    // Revoke every token as soon as the first page of services arrives: the IAM reads that
    // page starts go out with a token Google no longer accepts.
    let handle = setup.sim.handle.clone();
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = fired.clone();
    let mut config = quick_retries();
    config.progress = Some(Arc::new(move |p: &ReadProgress| {
        if matches!(p, ReadProgress::Page { .. })
            && !flag.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            handle.expire_tokens();
        }
    }));
    let live = read_live(&desired, &setup.clients, &config).await.unwrap();
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst));
    let (governed, _) = generated_governed(&setup);
    assert!(
        governed
            .iter()
            .all(|id| live.services[id].iam.is_some() && live.services[id].read_error.is_none())
    );
    assert!(
        live.directory
            .roles
            .values()
            .all(|r| r.members.len() == 150)
    );
    let log = setup.sim.handle.request_log();
    assert!(
        log.iter()
            .any(|r| r.status == 401 && r.path.starts_with("/v2/")),
        "Google refused the revoked token"
    );
    assert!(
        count(&setup.sim, |_, p| p == "/token") >= 2,
        "a new Google token was fetched"
    );
    let tokens = count(&setup.sim, |_, p| p == "/oauth/token");
    assert!(
        tokens >= 2,
        "the Management API token was renewed: {tokens}"
    );
}

#[tokio::test]
async fn a_permission_error_on_one_service_is_reported_and_the_rest_are_read() {
    let desired = generated_desired();
    let setup = start(world(GENERATED), &desired.settings, &test_client_config()).await;
    let (governed, _) = generated_governed(&setup);
    let denied = governed.iter().next().unwrap().clone();
    let denied_path = format!("/v2/{}:getIamPolicy", denied.resource_name());
    let proxy = hostile::Hostile::start(&setup.sim.base_url).await;
    proxy.add(hostile::Rule::path_exact(&denied_path).json(
        403,
        serde_json::json!({"error": {
            "code": 403,
            "message": format!("Permission 'run.services.getIamPolicy' denied on resource '{denied_path}'"),
            "status": "PERMISSION_DENIED",
        }}),
    ));
    let clients = Clients::for_simulator(
        &desired.settings,
        &proxy.base_url,
        &setup.sim.write_credentials(setup.dir.path()).unwrap(),
        setup.sim.auth0_client(),
        &test_client_config(),
    )
    .unwrap();
    let live = read_live(&desired, &clients, &quick_retries())
        .await
        .unwrap();
    let failed = &live.services[&denied];
    assert!(failed.iam.is_none());
    let message = failed.read_error.as_deref().unwrap();
    assert!(
        message.contains("PERMISSION_DENIED") && message.contains("403"),
        "{message}"
    );
    assert!(
        message.contains("run.services.getIamPolicy"),
        "says what permission is needed: {message}"
    );
    for id in governed.iter().filter(|id| **id != denied) {
        assert!(
            live.services[id].iam.is_some() && live.services[id].read_error.is_none(),
            "{id}"
        );
    }
    // A 403 is not retried (it will not change), and it is not read as "gone".
    assert_eq!(proxy.hits(&denied_path), 1);
}

#[tokio::test]
async fn plain_http_endpoints_are_refused_unless_loopback() {
    let desired = generated_desired();
    let err = Clients::connect(
        &desired.settings,
        Some("http://10.20.30.40:8787"),
        &ClientConfig::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("non-loopback") && err.contains("https://"),
        "{err}"
    );
    let ok = Endpoints::from_override(Some("https://proxy.example.com")).unwrap();
    assert_eq!(
        ok.auth0_base("gen.auth0.example").unwrap().as_str(),
        "https://proxy.example.com/"
    );
    let tokens = Arc::new(runwarden::google::StaticToken("t".into()));
    let clients = Clients::from_parts(
        &desired.settings,
        Endpoints::from_override(Some("http://localhost:1")).unwrap(),
        tokens,
        SecretSource::Env("X".into()),
        None,
        &ClientConfig::default(),
    );
    assert!(clients.is_ok());
}

#[tokio::test]
async fn a_missing_auth0_secret_is_a_clear_error_naming_the_variable() {
    let desired = generated_desired();
    let setup = start(world(GENERATED), &desired.settings, &test_client_config()).await;
    let key = setup.sim.write_credentials(setup.dir.path()).unwrap();
    let clients = Clients::from_parts(
        &desired.settings,
        Endpoints::single(runwarden::endpoints::parse_base_url(&setup.sim.base_url).unwrap()),
        Arc::new(GcpAuth::from_key_file(&key).unwrap()),
        SecretSource::Env("RUNWARDEN_TEST_SECRET_THAT_IS_NOT_SET".into()),
        Some("gen"),
        &test_client_config(),
    )
    .unwrap();
    let err = read_live(&desired, &clients, &quick_retries())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("RUNWARDEN_TEST_SECRET_THAT_IS_NOT_SET"),
        "{err}"
    );
    assert!(
        !err.contains(&setup.sim.auth0_client().1),
        "the real secret never appears"
    );
}

#[tokio::test]
async fn reads_the_demo_world_exactly() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/world.yaml");
    let world = runwarden::sim::World::from_file(&path).expect("the demo world parses");
    let desired = demo_desired();
    let setup = start(world, &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();

    let h = &setup.sim.handle;
    let id = |p: &str, r: &str, n: &str| ServiceId::new(p, r, n);
    let governed: BTreeSet<ServiceId> = [
        id("acme-prod", "europe-west1", "billing-api"),
        id("acme-prod", "europe-west1", "billing-worker"),
        id("acme-prod", "us-central1", "billing-reports"),
        id("acme-prod", "europe-west1", "payments-api"),
        id("acme-prod", "europe-west1", "admin-console"),
        id("acme-prod", "us-central1", "status-page"),
        id("acme-staging", "europe-west1", "billing-api"),
    ]
    .into();
    let iap: BTreeSet<ServiceId> = [id("acme-prod", "europe-west1", "admin-console")].into();
    assert_eq!(live.services, oracle::services(h, &governed, &iap));
    assert!(
        live.services[&id("acme-staging", "europe-west1", "sandbox")]
            .iam
            .is_none(),
        "ungoverned"
    );
    assert_eq!(
        live.project_numbers,
        BTreeMap::from([
            ("acme-prod".to_string(), 123456789012),
            ("acme-staging".to_string(), 210987654321)
        ])
    );
    // The deliberate drift is visible.
    let members = |sid: &ServiceId| -> BTreeSet<String> {
        live.services[sid]
            .iam
            .as_ref()
            .unwrap()
            .bindings
            .iter()
            .flat_map(|b| b.members.iter().map(|m| m.to_string()))
            .collect()
    };
    let billing = id("acme-prod", "europe-west1", "billing-api");
    assert!(members(&billing).contains("user:leaver@acme.com"));
    assert!(members(&billing).contains("user:contractor@partner.example"));
    assert!(members(&id("acme-prod", "europe-west1", "billing-worker")).contains("allUsers"));
    assert!(
        !live.services[&id("acme-prod", "europe-west1", "admin-console")]
            .settings
            .iap_enabled
    );

    let expected_directory = oracle::directory(
        &setup.sim.base_url,
        &setup.sim.auth0_client(),
        "acme.eu.auth0.com",
        &[
            "billing-admin",
            "billing-oncall",
            "payments-engineer",
            "platform-admin",
        ],
        true,
    )
    .await;
    assert_eq!(live.directory, expected_directory);
    let emails = |role: &str| -> Vec<(String, bool)> {
        live.directory.roles[role]
            .members
            .iter()
            .map(|u| (u.email.clone().unwrap_or_default(), u.email_verified))
            .collect()
    };
    assert!(
        emails("billing-admin")
            .iter()
            .any(|(e, _)| e == "margaret@acme.com"),
        "group member of billing-team"
    );
    let oncall = emails("billing-oncall");
    assert!(
        oncall.contains(&("ken@acme.com".into(), false))
            && oncall.contains(&("grace@acme.com".into(), true)),
        "{oncall:?}"
    );
    assert!(!live.directory.roles.contains_key("contractors"));
}

#[tokio::test]
async fn verification_comes_from_each_members_own_record_however_many_users_are_unverified() {
    // 1,050 unverified users: a bulk search would stop at 1,000 and take u1049 for verified;
    // each member's own record says otherwise.
    let mut yaml = String::from(
        "projects: [{id: p1, number: 111111111111}]\nauth0:\n  domain: many.example\n  managementClient: {clientId: c1, clientSecret: s1}\n  users:\n",
    );
    for i in 0..1050 {
        yaml.push_str(&format!(
            "    - {{email: u{i:04}@acme.com, emailVerified: false}}\n"
        ));
    }
    yaml.push_str("    - {email: ok@acme.com}\n  roles:\n    - {name: r, users: [u0001@acme.com, u1049@acme.com, ok@acme.com]}\n");
    let settings = settings(
        "many.example",
        "c1",
        &["p1"],
        &["europe-west1"],
        &["acme.com"],
    );
    let desired = Desired {
        settings,
        policies: vec![policy(
            "a",
            vec![named("p1", "europe-west1", "api")],
            None,
            vec![role("r")],
        )],
    };
    let setup = start(world(&yaml), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    let verified: BTreeMap<String, bool> = live.directory.roles["r"]
        .members
        .iter()
        .map(|u| (u.email.clone().unwrap(), u.email_verified))
        .collect();
    assert_eq!(
        verified,
        BTreeMap::from([
            ("ok@acme.com".to_string(), true),
            ("u0001@acme.com".to_string(), false),
            ("u1049@acme.com".to_string(), false)
        ])
    );
    assert_eq!(count(&setup.sim, |_, p| p == "/api/v2/users"), 0, "no user search");
    assert_eq!(
        count(&setup.sim, |_, p| p.starts_with("/api/v2/users/")),
        3,
        "then one look-up per member"
    );
    assert!(
        setup
            .sim
            .handle
            .request_log()
            .iter()
            .all(|r| r.status < 400),
        "never asks beyond the window"
    );
}

const REAL_TENANT_WORLD: &str = r#"
projects: [{id: p1, number: 111111111111}]
services:
  - {project: p1, region: europe-west1, name: api, labels: {team: a}}
auth0:
  domain: real.example
  managementClient: {clientId: c1, clientSecret: s1}
  users:
    - {email: ada@acme.com}
    - {email: leaver@acme.com, blocked: true}
    - {email: cy@acme.com}
    - {email: dee@acme.com}
    - {email: gone@acme.com}
  roles:
    - {name: admins, users: [ada@acme.com, leaver@acme.com, gone@acme.com], groups: [outer]}
  groups:
    - {name: outer, members: [cy@acme.com], groups: [inner]}
    - {name: inner, members: [dee@acme.com]}
"#;

async fn read_real_tenant(prepare: impl FnOnce(&runwarden::sim::SimHandle)) -> (Vec<User>, Setup) {
    let settings = settings("real.example", "c1", &["p1"], &["europe-west1"], &["acme.com"]);
    let desired = Desired {
        settings,
        policies: vec![policy(
            "a",
            vec![named("p1", "europe-west1", "api")],
            None,
            vec![role("admins")],
        )],
    };
    let setup = start(world(REAL_TENANT_WORLD), &desired.settings, &test_client_config()).await;
    prepare(&setup.sim.handle);
    let live = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    (live.directory.roles["admins"].members.clone(), setup)
}

#[tokio::test]
async fn group_members_listed_by_id_get_their_email_from_their_own_user_record() {
    let (members, setup) = read_real_tenant(|_| {}).await;
    let cy = members.iter().find(|u| u.via_groups == ["outer"]).expect("cy via outer");
    assert_eq!(cy.email.as_deref(), Some("cy@acme.com"));
    assert!(cy.email_verified && !cy.blocked && !cy.direct);
    assert_eq!(count(&setup.sim, |_, p| p == "/api/v2/users"), 0, "no user search");
}

#[tokio::test]
async fn a_blocked_user_is_read_as_blocked_from_its_user_record() {
    let (members, _setup) = read_real_tenant(|_| {}).await;
    let blocked: Vec<(&str, bool)> = members
        .iter()
        .map(|u| (u.email.as_deref().unwrap(), u.blocked))
        .filter(|(_, b)| *b)
        .collect();
    assert_eq!(blocked, [("leaver@acme.com", true)]);
}

#[tokio::test]
async fn members_of_a_nested_group_hold_nothing_through_the_outer_group() {
    let (members, setup) = read_real_tenant(|_| {}).await;
    let emails: BTreeSet<&str> = members.iter().filter_map(|u| u.email.as_deref()).collect();
    assert!(!emails.contains("dee@acme.com"), "{emails:?}");
    assert!(emails.contains("cy@acme.com"), "{emails:?}");
    // The nested group's own id is never looked up as a user.
    assert_eq!(
        count(&setup.sim, |_, p| p.starts_with("/api/v2/users/grp_")),
        0
    );
}

#[tokio::test]
async fn a_user_deleted_between_the_listing_and_the_lookup_holds_nothing_and_the_pass_goes_on() {
    let (members, setup) = read_real_tenant(|h| assert!(h.delete_user_record("gone@acme.com"))).await;
    let emails: BTreeSet<&str> = members.iter().filter_map(|u| u.email.as_deref()).collect();
    assert_eq!(
        emails,
        BTreeSet::from(["ada@acme.com", "cy@acme.com", "leaver@acme.com"])
    );
    assert_eq!(
        count(&setup.sim, |_, p| p.starts_with("/api/v2/users/")),
        4,
        "every listed user was looked up, the deleted one too"
    );
}

/// The real-tenant world with a client granted `scopes` only.
fn scoped_world(scopes: &str) -> runwarden::sim::World {
    world(&REAL_TENANT_WORLD.replace(
        "managementClient: {clientId: c1, clientSecret: s1}",
        &format!("managementClient: {{clientId: c1, clientSecret: s1, scopes: [{scopes}]}}"),
    ))
}

fn admins_desired(read_groups: bool) -> Desired {
    let mut settings = settings("real.example", "c1", &["p1"], &["europe-west1"], &["acme.com"]);
    settings.auth0.read_groups = read_groups;
    Desired {
        settings,
        policies: vec![policy(
            "a",
            vec![named("p1", "europe-west1", "api")],
            None,
            vec![role("admins")],
        )],
    }
}

#[tokio::test]
async fn a_client_without_the_group_scopes_fails_the_pass_naming_the_scope_and_the_groups_setting() {
    let desired = admins_desired(true);
    let setup = start(scoped_world("read:roles, read:users"), &desired.settings, &test_client_config()).await;
    let err = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .expect_err("groups could not be read: the pass must not go on as if nobody held a role through one")
        .to_string();
    assert!(err.contains("Insufficient scope, expected: read:group_roles"), "{err}");
    assert!(err.contains("spec.auth0.groups: none"), "{err}");
    assert!(err.contains(runwarden::identity::auth0::MANAGEMENT_SCOPES), "{err}");
    // The simulator answered in Auth0's shape, and the refusal was not retried.
    let denied: Vec<_> = setup
        .sim
        .handle
        .request_log()
        .into_iter()
        .filter(|r| r.status == 403)
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(denied[0].path.ends_with("/groups"), "{denied:?}");
}

#[tokio::test]
async fn groups_none_reads_no_groups_and_needs_no_group_scope() {
    let desired = admins_desired(false);
    let setup = start(scoped_world("read:roles, read:users"), &desired.settings, &test_client_config()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries())
        .await
        .unwrap();
    let emails: BTreeSet<&str> = live.directory.roles["admins"]
        .members
        .iter()
        .filter_map(|u| u.email.as_deref())
        .collect();
    assert_eq!(emails, BTreeSet::from(["ada@acme.com", "gone@acme.com", "leaver@acme.com"]));
    assert_eq!(count(&setup.sim, |_, p| p.contains("/groups")), 0);
}

/// Issue 13: user search lags behind changes (the simulator's `searchIndexLag`); runwarden reads
/// each member's own record, so a user unverified or blocked a moment ago is read as such
/// although a search would still return the old state.
#[tokio::test]
async fn a_change_user_search_has_not_caught_up_with_is_read_from_the_users_own_record() {
    let (members, setup) = read_real_tenant(|sim| {
        sim.set_search_index_lag(std::time::Duration::from_secs(3600));
        assert!(sim.update_user("cy@acme.com", Some(false), None));
        assert!(sim.update_user("ada@acme.com", None, Some(true)));
    })
    .await;
    let by_email = |e: &str| members.iter().find(|u| u.email.as_deref() == Some(e)).unwrap_or_else(|| panic!("{e} in {members:?}"));
    assert!(!by_email("cy@acme.com").email_verified, "unverified a moment ago");
    assert!(by_email("ada@acme.com").blocked, "blocked a moment ago");
    assert_eq!(count(&setup.sim, |_, p| p == "/api/v2/users"), 0, "no user search");
}

/// Calls to Service Usage `consumerQuotaMetrics.list` in the simulator's log, by status.
fn quota_reads(setup: &Setup) -> Vec<u16> {
    setup
        .sim
        .handle
        .request_log()
        .iter()
        .filter(|r| r.path.ends_with("/consumerQuotaMetrics"))
        .map(|r| r.status)
        .collect()
}

/// The rate each Cloud Run read pacer settled on, by region.
fn cloud_run_read_rates(setup: &Setup) -> Vec<(String, f64)> {
    setup
        .clients
        .google
        .pacer_rates()
        .into_iter()
        .filter(|(api, _, _)| *api == "cloud-run")
        .map(|(_, region, rate)| (region, rate.expect("Cloud Run reads are paced")))
        .collect()
}

fn throttled(setup: &Setup) -> usize {
    setup.sim.handle.request_log().iter().filter(|r| r.status == 429).count()
}

#[tokio::test]
async fn default_clients_learn_the_quota_once_and_pace_by_it_without_429s() {
    // No client rate configured: the limit comes from the simulator's Service Usage answer
    // (100/s per region); reading faster than that would draw 429s, slower would be slow.
    let yaml = paced_world(300, "  rateLimits: {cloudRunRead: 100/s, auth0: 50/s}")
        .replace("usersPerRole: 300", "usersPerRole: 8");
    let desired = paced_desired();
    let setup = start(world(&yaml), &desired.settings, &ClientConfig::default()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    assert_eq!(live.services.len(), 300);
    assert_eq!(quota_reads(&setup), vec![200, 200], "run and iap quotas, read once");
    assert_eq!(throttled(&setup), 0, "paced at the learned limit: no 429");
    // Paced at the learned 100/s from the start (not the 900/min = 15/s of an unknown limit).
    let rates = cloud_run_read_rates(&setup);
    assert!(!rates.is_empty() && rates.iter().all(|(_, r)| (r - 100.0).abs() < 1e-6), "{rates:?}");
    read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    assert_eq!(quota_reads(&setup).len(), 2, "never again per pass");
}

#[tokio::test]
async fn a_credential_that_may_not_read_quotas_still_reads_everything_probing_upward() {
    let yaml = format!(
        "{}simulator:\n  missingPermissions: [serviceusage.quotas.get]\n",
        paced_world(200, "  rateLimits: {cloudRunRead: 100/s}").replace("usersPerRole: 300", "usersPerRole: 8")
    );
    let desired = paced_desired();
    let setup = start(world(&yaml), &desired.settings, &ClientConfig::default()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    assert!(live.services.values().all(|s| s.iam.is_some() && s.read_error.is_none()));
    assert_eq!(quota_reads(&setup), vec![403, 403], "asked once per API, refused, not retried");
    // From 900/min (15/s) the probe climbs while calls succeed.
    let rates = cloud_run_read_rates(&setup);
    assert!(!rates.is_empty() && rates.iter().all(|(_, r)| *r > 15.0), "the probe climbed: {rates:?}");
}

#[tokio::test]
async fn settings_pins_are_the_ceiling_and_turn_learning_off() {
    // The simulator allows 1,000/s; the pin says 20/s: 41 calls take at least 2 s, and no
    // quota is read because every Google limit to learn is pinned.
    let yaml = paced_world(40, "  rateLimits: {cloudRunRead: 1000/s}").replace("usersPerRole: 300", "usersPerRole: 8");
    let mut desired = paced_desired();
    let pin = |count, secs| Some(runwarden::rate::Rate { count, per: Duration::from_secs(secs) });
    desired.settings.pacing = runwarden::policy::model::Pacing {
        cloud_run_reads: pin(20, 1),
        writes: pin(1, 1),
        iap: pin(10, 1),
        auth0: pin(100, 1),
        quota_project: None,
    };
    let setup = start(world(&yaml), &desired.settings, &ClientConfig::default()).await;
    let started = std::time::Instant::now();
    read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    let took = started.elapsed();
    assert!(quota_reads(&setup).is_empty(), "pinned limits are not learned");
    assert!(took >= Duration::from_secs(2), "41 Cloud Run reads at 20/s took {took:?}");
    let rates = cloud_run_read_rates(&setup);
    assert!(!rates.is_empty() && rates.iter().all(|(_, r)| (r - 20.0).abs() < 1e-6), "the pin is the ceiling: {rates:?}");
}

#[tokio::test]
async fn a_free_plan_tenant_is_read_completely_from_a_2_per_second_start() {
    // Auth0's free plan: 2 requests/s. The client starts there and follows x-ratelimit-*.
    let yaml = paced_world(3, "  auth0Tier: free").replace("usersPerRole: 300", "usersPerRole: 8");
    let mut desired = paced_desired();
    desired.policies[0].invokers.truncate(1);
    let setup = start(world(&yaml), &desired.settings, &ClientConfig::default()).await;
    let live = read_live(&desired, &setup.clients, &quick_retries()).await.unwrap();
    assert!(live.directory.roles.values().all(|r| r.members.len() == 8));
    let log = setup.sim.handle.request_log();
    let auth0 = log.iter().filter(|r| r.path.starts_with("/api/v2/") || r.path == "/oauth/token").count();
    let limited = log.iter().filter(|r| r.status == 429).count();
    assert!(limited * 20 <= auth0, "{limited} of {auth0} Auth0 calls throttled");
}
