//! Builders for desired models and a simulator with clients wired to it, shared by the read
//! tests (and mirrored by the benchmark).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use runwarden::iam::Member;
use runwarden::live::{ClientConfig, Clients, ReadConfig};
use runwarden::policy::model::*;
use runwarden::retry::RetryPolicy;
use runwarden::sim::{RunningSim, World};

pub fn src() -> Source {
    Source {
        file: PathBuf::from("test.yaml"),
        line: 1,
        column: 1,
    }
}

/// Settings for a tenant and a scope; `users` mapping with `domains` (empty: workforce pool).
pub fn settings(
    domain: &str,
    client_id: &str,
    projects: &[&str],
    regions: &[&str],
    domains: &[&str],
) -> Settings {
    Settings {
        name: "test".into(),
        source: src(),
        auth0: Auth0Settings {
            domain: domain.into(),
            client_id: client_id.into(),
            client_secret_env: "RUNWARDEN_TEST_UNUSED_SECRET".into(),
            read_groups: true,
            issuers: vec![],
        },
        principals: if domains.is_empty() {
            PrincipalMapping::WorkforcePool {
                pool: "test-pool".into(),
            }
        } else {
            PrincipalMapping::Users {
                email_domains: domains.iter().map(|d| d.to_string()).collect(),
            }
        },
        machines: vec![],
        scope: Scope {
            projects: projects.iter().map(|p| p.to_string()).collect(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
        },
        foreign_members: ForeignMembers::Keep,
        owned: vec![],
        keep: vec![],
        allowed_roles: vec![
            "roles/run.invoker".into(),
            "roles/iap.httpsResourceAccessor".into(),
        ],
        guards: Guards {
            max_removals: 25,
            max_removal_ratio: 0.5,
            allow_once: Vec::new(),
        },
        audits: Audits {
            max_token_lifetime: Duration::from_secs(3600),
            max_signing_key_age: Duration::from_secs(90 * 86400),
            require_coverage: true,
        },
        pacing: Default::default(),
    }
}

/// A service reference by name.
pub fn named(project: &str, region: &str, name: &str) -> ServiceRef {
    ServiceRef {
        project: project.into(),
        region: RegionRef::Named(region.into()),
        target: ServiceTarget::Named(name.into()),
        source: src(),
    }
}

/// A label selector in one region (`None`: every scope region, `"*"`).
pub fn selector(project: &str, region: Option<&str>, labels: &[(&str, &str)]) -> ServiceRef {
    ServiceRef {
        project: project.into(),
        region: match region {
            Some(r) => RegionRef::Named(r.into()),
            None => RegionRef::Any,
        },
        target: ServiceTarget::Selector(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        source: src(),
    }
}

pub fn role(name: &str) -> Invoker {
    Invoker {
        principal: Principal::Auth0Role(name.into()),
        expires: None,
        source: src(),
    }
}

pub fn member(m: &str) -> Invoker {
    Invoker {
        principal: Principal::Member(Member::parse(m).unwrap()),
        expires: None,
        source: src(),
    }
}

pub fn policy(
    name: &str,
    services: Vec<ServiceRef>,
    iap: Option<bool>,
    invokers: Vec<Invoker>,
) -> AccessPolicy {
    AccessPolicy {
        name: name.into(),
        source: src(),
        mode: Mode::Enforce,
        services,
        exposure: Exposure {
            iap,
            ..Exposure::default()
        },
        invokers,
    }
}

/// The demo estate's desired model (common brief): settings `acme` and the four policies.
pub fn demo_desired() -> Desired {
    let mut s = settings(
        "acme.eu.auth0.com",
        "rw-demo-client",
        &["acme-prod", "acme-staging"],
        &["europe-west1", "us-central1"],
        &["acme.com"],
    );
    s.name = "acme".into();
    let mut policies = vec![
        policy(
            "billing",
            vec![
                named("acme-prod", "europe-west1", "billing-api"),
                selector("acme-prod", None, &[("team", "billing")]),
            ],
            None,
            vec![
                role("billing-admin"),
                role("billing-oncall"),
                member("serviceAccount:invoicer@acme-prod.iam.gserviceaccount.com"),
            ],
        ),
        policy(
            "payments",
            vec![named("acme-prod", "europe-west1", "payments-api")],
            None,
            vec![role("payments-engineer")],
        ),
        policy(
            "platform-console",
            vec![named("acme-prod", "europe-west1", "admin-console")],
            Some(true),
            vec![role("platform-admin")],
        ),
        policy(
            "platform-status",
            vec![named("acme-prod", "us-central1", "status-page")],
            None,
            vec![],
        ),
        policy(
            "staging",
            vec![selector(
                "acme-staging",
                Some("europe-west1"),
                &[("team", "billing")],
            )],
            None,
            vec![role("billing-admin")],
        ),
    ];
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Desired {
        settings: s,
        policies,
    }
}

/// A running simulator, clients wired to it, and the directory holding its key file.
pub struct Setup {
    pub sim: RunningSim,
    pub clients: Clients,
    pub dir: tempfile::TempDir,
}

/// Client limits for tests: no pacing (the simulator's own limits are what is tested), quick
/// retries.
pub fn test_client_config() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.google.cloud_run_read_rate = runwarden::retry::Pace::Off;
    c.google.iap_rate = runwarden::retry::Pace::Off;
    c.google.resource_manager_rate = runwarden::retry::Pace::Off;
    c.auth0_rate = runwarden::retry::Pace::Off;
    c
}

pub fn quick_retries() -> ReadConfig {
    ReadConfig {
        retry: RetryPolicy {
            max_retries: 8,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(200),
            max_server_wait: Duration::from_secs(10),
            ..RetryPolicy::default()
        },
        progress: None,
        shard: None,
    }
}

pub fn world(yaml: &str) -> World {
    World::from_yaml(yaml, std::path::Path::new("test-world.yaml")).expect("test world parses")
}

/// Starts a simulator for `world` and clients for `settings` against it, through the
/// production client code (key file, token endpoint, Management API token): the one start-up of
/// the read and apply tests and the read benchmark.
pub async fn start(world: World, settings: &Settings, config: &ClientConfig) -> Setup {
    let sim = runwarden::sim::spawn(world)
        .await
        .expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let clients = runwarden::cmd::embedded::clients_for_sim(&sim, settings, dir.path(), config)
        .expect("clients for the simulator");
    Setup { sim, clients, dir }
}

/// Requests in the simulator's log whose path matches `pred`.
pub fn count(sim: &RunningSim, pred: impl Fn(&str, &str) -> bool) -> usize {
    sim.handle
        .request_log()
        .iter()
        .filter(|r| pred(&r.method, &r.path))
        .count()
}
