//! Hostile answers on the read side, injected through the fault proxy
//! (`tests/common/hostile.rs`) between the real clients and the simulator: listings that cycle,
//! bodies too large to be real, redirects, a failing token endpoint, a day-long wait.

use std::time::{Duration, Instant};

use crate::common::hostile::{Hostile, Rule};
use super::support::*;
use super::{GENERATED, generated_desired, generated_governed};
use runwarden::endpoints::Endpoints;
use runwarden::google::GcpAuth;
use runwarden::identity::{Secret, SecretSource};
use runwarden::live::{Clients, LiveState, read_live};
use serde_json::json;

/// A generated world, a proxy in front of it, and clients that go through the proxy for every
/// call (Google tokens too: the key file's token URI is the proxy).
struct Via {
    setup: Setup,
    proxy: Hostile,
    clients: Clients,
}

async fn through_proxy() -> Via {
    let desired = generated_desired();
    let setup = start(world(GENERATED), &desired.settings, &test_client_config()).await;
    let proxy = Hostile::start(&setup.sim.base_url).await;
    let key = setup.dir.path().join("via-proxy.json");
    std::fs::write(&key, setup.sim.handle.key_file_json(&proxy.base_url)).unwrap();
    let (client_id, secret) = setup.sim.auth0_client();
    let clients = Clients::from_parts(
        &desired.settings,
        Endpoints::single(runwarden::endpoints::parse_base_url(&proxy.base_url).unwrap()),
        std::sync::Arc::new(GcpAuth::from_key_file(&key).unwrap()),
        SecretSource::Value(Secret::new(secret)),
        Some(&client_id),
        &test_client_config(),
    )
    .unwrap();
    Via {
        setup,
        proxy,
        clients,
    }
}

impl Via {
    /// Reads the generated estate within a bound (a loop or a stall fails the test).
    async fn read(&self) -> Result<LiveState, String> {
        tokio::time::timeout(
            Duration::from_secs(60),
            read_live(&generated_desired(), &self.clients, &quick_retries()),
        )
        .await
        .expect("the read ends")
        .map_err(|e| format!("{e:#}"))
    }
}

#[tokio::test]
async fn a_services_listing_whose_page_tokens_cycle_fails_the_read_instead_of_looping() {
    let h = through_proxy().await;
    let list = "/v2/projects/gen-project-1/locations/europe-west1/services?pageSize=500";
    let page = |next: &str| json!({"services": [], "nextPageToken": next});
    // A → B → C → A: no token repeats the one just followed.
    h.proxy
        .add(Rule::path_prefix(&format!("{list}&pageToken=A")).json(200, page("B")))
        .add(Rule::path_prefix(&format!("{list}&pageToken=B")).json(200, page("C")))
        .add(Rule::path_prefix(&format!("{list}&pageToken=C")).json(200, page("A")))
        .add(Rule::path_prefix(list).json(200, page("A")));
    let err = h.read().await.unwrap_err();
    assert!(
        err.contains("gen-project-1") && err.contains("europe-west1") && err.contains("returned twice"),
        "{err}"
    );
    assert_eq!(h.proxy.hits(list), 4, "stopped at the first repeated token");
}

#[tokio::test]
async fn a_services_listing_that_never_ends_fails_the_read_after_a_bounded_number_of_pages() {
    let h = through_proxy().await;
    let list = "/v2/projects/gen-project-1/locations/europe-west1/services?pageSize=500";
    // A fresh token on every page: no token ever repeats.
    h.proxy.add(
        Rule::path_prefix(list).counted(|n| (200, json!({"services": [], "nextPageToken": format!("t{n}")}))),
    );
    let err = h.read().await.unwrap_err();
    assert!(err.contains("did not end after 100 pages") && err.contains("gen-project-1"), "{err}");
    assert_eq!(h.proxy.hits(list), 100);
}

#[tokio::test]
async fn an_auth0_checkpoint_that_cycles_fails_the_directory_read_instead_of_looping() {
    let h = through_proxy().await;
    let page = |next: &str| json!({"users": [], "next": next});
    h.proxy
        .add(Rule::path_contains("/users?take=100&from=A").json(200, page("B")))
        .add(Rule::path_contains("/users?take=100&from=B").json(200, page("A")))
        .add(Rule::path_contains("/users?take=100").json(200, page("A")));
    let err = h.read().await.unwrap_err();
    assert!(err.contains("does not end") && err.contains("\"A\""), "{err}");
}

#[tokio::test]
async fn an_oversized_iam_policy_fails_that_read_without_buffering_it_and_the_rest_are_read() {
    let h = through_proxy().await;
    let (governed, _) = generated_governed(&h.setup);
    let mut ids = governed.iter();
    let (streamed, declared) = (ids.next().unwrap().clone(), ids.next().unwrap().clone());
    let path = |id: &runwarden::live::ServiceId| format!("/v2/{}:getIamPolicy", id.resource_name());
    // 300 MB with no Content-Length, and 2 GB announced by Content-Length.
    h.proxy
        .add(Rule::path_contains(&path(&streamed)).stream(200, b"{\"etag\":\"x\",\"bindings\":[", 300 << 20, false))
        .add(Rule::path_contains(&path(&declared)).stream(200, b" ", 2 << 30, true));
    let started = Instant::now();
    let live = h.read().await.unwrap();
    for (id, says) in [(&streamed, "larger than 2097152 bytes"), (&declared, "Content-Length 2147483648")] {
        let error = live.services[id].read_error.as_deref().unwrap_or_default();
        assert!(error.contains(says) && error.contains("was not read"), "{id}: {error}");
        assert!(live.services[id].iam.is_none());
        assert_eq!(h.proxy.hits(&path(id)), 1, "{id}: not retried");
    }
    for id in governed.iter().filter(|id| **id != streamed && **id != declared) {
        assert!(live.services[id].iam.is_some(), "{id}");
    }
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

#[tokio::test]
async fn an_oversized_auth0_answer_fails_the_directory_read() {
    let h = through_proxy().await;
    h.proxy.add(Rule::path_prefix("/api/v2/roles").method("GET").stream(200, b"[", 100 << 20, false));
    let err = h.read().await.unwrap_err();
    assert!(err.contains("larger than 4194304 bytes") && err.contains("/api/v2/roles"), "{err}");
    assert_eq!(h.proxy.hits("/api/v2/roles?"), 1, "not retried");
}

#[tokio::test]
async fn redirects_are_never_followed_so_the_client_secret_never_leaves() {
    for (rule_path, method) in [("/oauth/token", "POST"), ("/v2/projects/gen-project-1/locations/europe-west1/services", "GET")] {
        let h = through_proxy().await;
        let thief = Hostile::start(&h.setup.sim.base_url).await;
        let elsewhere = format!("{}/collect", thief.base_url);
        h.proxy.add(
            Rule::path_prefix(rule_path)
                .method(method)
                .respond(307, "")
                .header("location", &elsewhere),
        );
        let err = h.read().await.unwrap_err();
        assert!(err.contains("307") && err.contains("redirect") && err.contains(&elsewhere), "{rule_path}: {err}");
        assert!(thief.requests().is_empty(), "{rule_path}: followed to {:?}", thief.requests());
    }
    // Google's token endpoint is asked by gcp_auth's own HTTP client (hyper), which follows no
    // redirect either: the signed assertion stays where it was sent.
    let h = through_proxy().await;
    let thief = Hostile::start(&h.setup.sim.base_url).await;
    h.proxy.add(
        Rule::path_exact("/token")
            .respond(307, "")
            .header("location", &format!("{}/token", thief.base_url)),
    );
    let err = h.read().await.unwrap_err();
    assert!(err.contains("token"), "{err}");
    assert!(thief.requests().is_empty(), "followed to {:?}", thief.requests());
}

#[tokio::test]
async fn a_failing_token_endpoint_is_asked_a_few_times_per_pass_not_once_per_call() {
    // Auth0's token endpoint: five tries in a row, then the failure is shared by every call.
    let h = through_proxy().await;
    h.proxy.add(Rule::path_exact("/oauth/token").json(503, json!({"error": "temporarily_unavailable"})));
    let err = h.read().await.unwrap_err();
    assert!(err.contains("503"), "{err}");
    assert_eq!(h.proxy.hits("/oauth/token"), 5);
    // One failure is retried like any other.
    let h = through_proxy().await;
    h.proxy.add(
        Rule::path_exact("/oauth/token")
            .json(503, json!({"error": "temporarily_unavailable"}))
            .times(1),
    );
    h.read().await.unwrap();
    assert_eq!(h.proxy.hits("/oauth/token"), 2);
    // Google's token endpoint: gcp_auth tries 5 times itself, then the failure is shared.
    let h = through_proxy().await;
    h.proxy.add(Rule::path_exact("/token").json(503, json!({"error": "backendError"})));
    let err = h.read().await.unwrap_err();
    assert!(err.contains("token"), "{err}");
    let asked = h.proxy.requests().iter().filter(|r| r.path == "/token").count();
    assert!((1..=5).contains(&asked), "asked {asked} times");
}

#[tokio::test]
async fn a_day_long_retry_after_fails_that_call_and_stalls_nobody() {
    let h = through_proxy().await;
    let (governed, _) = generated_governed(&h.setup);
    let victim = governed.iter().next().unwrap().clone();
    let path = format!("/v2/{}:getIamPolicy", victim.resource_name());
    h.proxy.add(
        Rule::path_contains(&path)
            .json(429, json!({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}))
            .header("retry-after", "100000"),
    );
    let started = Instant::now();
    let live = h.read().await.unwrap();
    let error = live.services[&victim].read_error.as_deref().unwrap_or_default();
    assert!(error.contains("429"), "{error}");
    assert_eq!(h.proxy.hits(&path), 1, "a wait longer than max_server_wait is not waited for");
    for id in governed.iter().filter(|id| **id != victim) {
        assert!(live.services[id].iam.is_some(), "{id}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn an_absurd_token_lifetime_is_not_a_panic() {
    let h = through_proxy().await;
    h.proxy.add(
        Rule::path_exact("/oauth/token")
            .json(200, json!({"access_token": "forged", "token_type": "Bearer", "expires_in": u64::MAX})),
    );
    // The forged token is refused by the Management API; the read fails, the process lives.
    let err = h.read().await.unwrap_err();
    assert!(err.contains("401"), "{err}");
}

#[tokio::test]
async fn an_audit_log_that_cannot_be_read_leaves_attribution_unknown_with_why_and_fails_nothing() {
    let h = through_proxy().await;
    h.proxy.add(Rule::path_contains("/v2/entries:list").json(
        403,
        json!({"error": {"code": 403, "status": "PERMISSION_DENIED",
            "message": "Permission 'logging.logEntries.list' denied on resource (or it may not exist)."}}),
    ));
    let (governed, _) = generated_governed(&h.setup);
    let id = governed.iter().next().unwrap().clone();
    let drifted = std::collections::BTreeMap::from([(id.clone(), vec![("roles/run.invoker".to_string(), "user:x@example.com".to_string())])]);
    let found = runwarden::live::read_attribution(&h.clients.google, &drifted).await;
    let why = found[&(id, "roles/run.invoker".to_string(), "user:x@example.com".to_string())].as_ref().unwrap_err();
    assert!(why.contains("the audit log could not be read") && why.contains("403"), "{why}");
    assert!(runwarden::insight::access::attribution_suffix(&Err(why.clone())).starts_with("— added by: unknown ("));
    assert_eq!(h.proxy.hits("/v2/entries:list"), 1, "one query, not retried on a 403");
}

#[tokio::test]
async fn a_transient_failure_of_an_effective_access_read_is_retried_not_reported_as_unreadable() {
    // The reads behind effective access (project policy, role) inform findings only, yet a
    // single 503 must not turn into "access-unchecked": they are retried like any other read.
    let h = through_proxy().await;
    let live = h.read().await.unwrap();
    let project = live.services.keys().next().unwrap().project.clone();
    let policy_path = format!("/v3/projects/{project}:getIamPolicy");
    for path in [policy_path.as_str(), "/v1/roles/run.invoker"] {
        h.proxy.add(Rule::path_exact(path).json(503, json!({"error": {"code": 503, "status": "UNAVAILABLE"}})).times(1));
    }
    let facts = runwarden::live::read_access(&h.clients.google, &live).await;
    assert!(facts.projects[&project].is_ok(), "{:?}", facts.projects[&project]);
    assert_eq!(facts.invoking["roles/run.invoker"], Ok(true));
    assert_eq!(h.proxy.hits(&policy_path), 2, "one 503, one retry");
    assert_eq!(h.proxy.hits("/v1/roles/run.invoker"), 2, "one 503, one retry");
}
