//! The simulator: Google (Cloud Run Admin v2 and v1 IAM, IAP v1, Resource Manager v3, OAuth) and
//! Auth0 (Management API v2, `/oauth/token`, OIDC discovery, JWKS) on one address, with the real
//! wire formats and semantics, fault injection, and a request log.
//!
//! Layout:
//! * [`world`]: the world file (YAML) types and their JSON Schema.
//! * `state`: the mutable world built from it; `generate`: the synthetic estate.
//! * `http`: the one axum handler that authenticates, injects faults, dispatches and logs.
//! * `google` and `auth0`: the API handlers, synchronous functions over the state.
//! * [`faults`]: parsed faults, token buckets, the PRNG.
//! * `keys`: the embedded, simulator-only RSA test keys.
//!
//! Invariants: no lock is held across an await (handlers are synchronous; only latency and
//! `operations.wait` sleep, outside any lock); a request never clones the whole world; every
//! error is in the shape of the API it imitates.

mod access;
mod auth0;
pub mod faults;
mod generate;
mod google;
mod http;
mod keys;
mod state;
mod user_token;
pub mod world;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::iam::Policy;
use crate::model::ServiceId;

pub use faults::Faults;
pub use state::ServicePatch;
pub use world::{FaultsSpec, IngressValue, World, world_schema};

/// Errors of the simulator: loading a world, validating faults, serving, writing files.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("could not read world file {path}")]
    ReadWorld {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("world file {path} is not valid (fix it and start again): {message}")]
    ParseWorld { path: PathBuf, message: String },
    #[error("world is inconsistent: {0}")]
    World(String),
    #[error("invalid faults: {0}")]
    Faults(String),
    #[error("could not bind the simulator to 127.0.0.1:0")]
    Bind(#[source] std::io::Error),
    #[error("could not write the simulator's credentials to {path}")]
    WriteCredentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mint token: {0}")]
    Mint(String),
}

/// The largest world file the simulator reads: big estates come from the `generate` section,
/// so a hand-written world of a few thousand services fits many times over.
pub const MAX_WORLD_FILE_BYTES: u64 = 64 * 1024 * 1024;

impl World {
    /// Parses a world file; `file` is only used in error messages.
    pub fn from_yaml(text: &str, file: &Path) -> Result<World, SimError> {
        let world: World = serde_saphyr::from_str(text).map_err(|e| SimError::ParseWorld {
            path: file.to_path_buf(),
            message: e.to_string(),
        })?;
        // Build once to report inconsistencies (unknown projects, users, ...) at load time,
        // naming the file.
        let named = |e: SimError| SimError::ParseWorld {
            path: file.to_path_buf(),
            message: e.to_string(),
        };
        state::Store::from_world(&world, 0).map_err(named)?;
        if let Some(f) = &world.faults {
            Faults::from_spec(f).map_err(named)?;
        }
        Ok(world)
    }

    /// Reads and parses a world file.
    pub fn from_file(path: &Path) -> Result<World, SimError> {
        let text = crate::files::read_to_string_capped(path, MAX_WORLD_FILE_BYTES).map_err(|source| SimError::ReadWorld {
            path: path.to_path_buf(),
            source,
        })?;
        World::from_yaml(&text, path)
    }
}

/// How many request records the log keeps (the oldest tenth is dropped when full).
pub const MAX_LOG_RECORDS: usize = 500_000;

/// One request the simulator served.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RequestRecord {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The raw query string (may be empty).
    pub query: String,
    pub status: u16,
    /// Time from receipt to response, injected latency included.
    #[serde(serialize_with = "ser_ms")]
    pub latency: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Who wrote an IAM policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Writer {
    /// A `setIamPolicy` call from a client.
    Client,
    /// The injected concurrent writer (between a client's read and its write).
    ConcurrentWriter,
    /// A test, through [`SimHandle::set_iam_policy_direct`].
    Direct,
}

/// One IAM write, kept so reliability tests can prove no binding was lost.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IamWrite {
    /// The IAM resource name (`projects/P/locations/R/services/S` or the IAP resource).
    pub resource: String,
    pub before: Policy,
    pub after: Policy,
    /// The etag after the write.
    pub etag: String,
    pub writer: Writer,
    /// When (RFC 3339, UTC).
    pub at: String,
}

/// One `services.patch` (or a test's direct settings edit), kept for the Admin Activity log.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceWrite {
    /// `projects/P/locations/R/services/S`.
    pub resource: String,
    /// The `Service` fields the request set (JSON as the API spells them).
    pub service: serde_json::Value,
    /// The update mask paths (camelCase).
    pub mask: Vec<String>,
    pub writer: Writer,
    /// When (RFC 3339, UTC).
    pub at: String,
}

/// A service's state as the simulator holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimService {
    pub id: ServiceId,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub ingress: IngressValue,
    pub invoker_iam_disabled: bool,
    pub custom_audiences: Vec<String>,
    pub iap_enabled: bool,
    pub uri: String,
    pub etag: String,
    pub generation: u64,
}

/// What to put in a token minted with [`SimHandle::mint_token`].
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub subject: String,
    pub audience: Vec<String>,
    /// Seconds from now until `exp` (negative: already expired).
    pub expires_in: i64,
    /// Defaults to the tenant issuer `https://DOMAIN/`.
    pub issuer: Option<String>,
    /// Defaults to the current key; any tenant key (previous, revoked, next) may be named.
    pub kid: Option<String>,
    /// Further claims (e.g. `email`, a namespaced roles claim).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl TokenRequest {
    /// A token for `subject` and `audience`, valid for an hour, signed by the current key.
    pub fn new(subject: &str, audience: &str) -> TokenRequest {
        TokenRequest {
            subject: subject.into(),
            audience: vec![audience.into()],
            expires_in: 3600,
            issuer: None,
            kid: None,
            extra: serde_json::Map::new(),
        }
    }
}

/// Issued bearer tokens and when they expire.
#[derive(Debug, Default)]
struct Tokens {
    google: std::collections::HashMap<String, Instant>,
    management: std::collections::HashMap<String, Instant>,
    counter: u64,
}

/// Shared simulator state. Reach it through a [`SimHandle`].
pub struct SimState {
    store: Mutex<state::Store>,
    faults: Mutex<faults::FaultState>,
    log: Mutex<Vec<RequestRecord>>,
    history: Mutex<Vec<IamWrite>>,
    /// Every `services.patch` and direct settings edit, oldest first.
    service_writes: Mutex<Vec<ServiceWrite>>,
    tokens: Mutex<Tokens>,
    rng: Mutex<faults::SplitMix>,
    keys: keys::Keys,
    print_requests: AtomicBool,
}

impl std::fmt::Debug for SimState {
    // Hand-written so that the client secret and issued tokens never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("services", &lock(&self.store).services.len())
            .field("requests_logged", &lock(&self.log).len())
            .finish_non_exhaustive()
    }
}

/// A cheap, cloneable handle on the simulator's state: what tests use to look inside and steer.
#[derive(Debug, Clone)]
pub struct SimHandle(Arc<SimState>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler must not take the whole simulator down with a poisoned lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimHandle {
    /// Builds the state from a world (runs `generate`, validates `faults`).
    pub fn new(world: &World) -> Result<SimHandle, SimError> {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7)
            ^ (std::process::id() as u64) << 32;
        let store = state::Store::from_world(world, seed)?;
        let faults = match &world.faults {
            Some(f) => Faults::from_spec(f)?,
            None => Faults::default(),
        };
        Ok(SimHandle(Arc::new(SimState {
            store: Mutex::new(store),
            faults: Mutex::new(faults::FaultState::new(faults)),
            log: Mutex::new(Vec::new()),
            history: Mutex::new(Vec::new()),
            service_writes: Mutex::new(Vec::new()),
            tokens: Mutex::new(Tokens {
                counter: seed,
                ..Tokens::default()
            }),
            rng: Mutex::new(faults::SplitMix(seed.rotate_left(13))),
            keys: keys::Keys::load(),
            print_requests: AtomicBool::new(false),
        })))
    }

    fn store(&self) -> MutexGuard<'_, state::Store> {
        lock(&self.0.store)
    }

    /// Every request served so far, oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        lock(&self.0.log).clone()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        lock(&self.0.log).clear();
    }

    /// Prints each request on stderr as it is served (`runwarden sim --log-requests`).
    pub fn set_print_requests(&self, on: bool) {
        self.0.print_requests.store(on, Ordering::Relaxed);
    }

    /// Replaces the injected faults (quota buckets start full).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.0.faults) = faults::FaultState::new(faults);
    }

    /// Replaces the injected faults from a `faults` section.
    pub fn set_faults_spec(&self, spec: &FaultsSpec) -> Result<(), SimError> {
        self.set_faults(Faults::from_spec(spec)?);
        Ok(())
    }

    /// The injected faults.
    pub fn faults(&self) -> Faults {
        lock(&self.0.faults).faults.clone()
    }

    /// How long `services.patch` operations run.
    pub fn set_operation_delay(&self, delay: Duration) {
        self.store().config.operation_delay = delay;
    }

    /// Lifetime of Google access tokens issued from now on.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.store().config.access_token_lifetime = lifetime;
    }

    /// Lifetime of Auth0 Management API tokens issued from now on.
    pub fn set_management_token_lifetime(&self, lifetime: Duration) {
        self.store().config.management_token_lifetime = lifetime;
    }

    /// Expires every Google and Auth0 token issued so far (clients must fetch new ones).
    pub fn expire_tokens(&self) {
        let mut t = lock(&self.0.tokens);
        t.google.clear();
        t.management.clear();
    }

    /// The Management API client: (client id, client secret).
    pub fn auth0_client(&self) -> (String, String) {
        let s = self.store();
        (s.tenant.client_id.clone(), s.tenant.client_secret.clone())
    }

    /// The Auth0 tenant domain.
    pub fn auth0_domain(&self) -> String {
        self.store().tenant.domain.clone()
    }

    /// The `client_email` of the service-account key file.
    pub fn service_account(&self) -> String {
        self.store().config.service_account.clone()
    }

    /// The project number of a project id.
    pub fn project_number(&self, project: &str) -> Option<u64> {
        self.store().projects.get(project).map(|p| p.number)
    }

    /// A service's settings.
    pub fn service(&self, id: &ServiceId) -> Option<SimService> {
        let mut s = self.store();
        s.settle(Instant::now());
        let svc = s.services.get(&key(id))?;
        Some(SimService {
            id: id.clone(),
            labels: svc.labels.clone(),
            annotations: svc.annotations.clone(),
            ingress: svc.ingress,
            invoker_iam_disabled: svc.invoker_iam_disabled,
            custom_audiences: svc.custom_audiences.clone(),
            iap_enabled: svc.iap_enabled,
            uri: svc.uri.clone(),
            etag: svc.etag.clone(),
            generation: svc.generation,
        })
    }

    /// Every service id, in (project, region, name) order.
    pub fn service_ids(&self) -> Vec<ServiceId> {
        self.store()
            .services
            .keys()
            .map(|(p, r, n)| ServiceId::new(p, r, n))
            .collect()
    }

    /// Changes a service's settings directly (drift injected by a test; no operation), recorded
    /// in the Admin Activity log as a console `UpdateService` ([`Writer::Direct`]).
    pub fn update_service(&self, id: &ServiceId, patch: &ServicePatch) -> bool {
        let mut s = self.store();
        let etag = s.next_service_etag();
        let found = match s.services.get_mut(&key(id)) {
            Some(svc) => {
                state::apply_patch(svc, patch);
                svc.generation += 1;
                svc.etag = etag;
                true
            }
            None => false,
        };
        drop(s);
        if found {
            let (service, mask) = access::patch_request(patch);
            lock(&self.0.service_writes).push(ServiceWrite {
                resource: id.resource_name(),
                service,
                mask,
                writer: Writer::Direct,
                at: state::rfc3339(SystemTime::now()),
            });
        }
        found
    }

    /// A service's stored IAM policy (all bindings, conditions included; `version` 0 when empty).
    pub fn iam_policy(&self, id: &ServiceId) -> Option<Policy> {
        self.store()
            .services
            .get(&key(id))
            .map(|s| google::stored_view(&s.iam.policy))
    }

    /// The stored policy of an IAM resource by name: `projects/P/locations/R/services/S` or
    /// `projects/NUMBER/iap_web/cloud_run-R/services/S`.
    pub fn policy(&self, resource: &str) -> Option<Policy> {
        if let Some(id) = ServiceId::parse(resource) {
            return self.iam_policy(&id);
        }
        let parts: Vec<&str> = resource.split('/').collect();
        match parts.as_slice() {
            ["projects", number, "iap_web", kind, "services", name] => {
                let region = kind.strip_prefix("cloud_run-")?;
                let number: u64 = number.parse().ok()?;
                let project = self.store().project_by_number.get(&number)?.clone();
                self.iap_policy(&ServiceId::new(&project, region, name))
            }
            _ => None,
        }
    }

    /// The IAP resource's stored IAM policy for a service.
    pub fn iap_policy(&self, id: &ServiceId) -> Option<Policy> {
        self.store()
            .services
            .get(&key(id))
            .map(|s| google::stored_view(&s.iap.policy))
    }

    /// Replaces a service's IAM policy as if someone clicked it in the console (new etag;
    /// recorded in the history as [`Writer::Direct`]). Returns the new etag.
    pub fn set_iam_policy_direct(&self, id: &ServiceId, policy: Policy) -> Option<String> {
        self.set_direct(id, policy, false)
    }

    /// Replaces the IAP resource's policy directly (see [`SimHandle::set_iam_policy_direct`]).
    pub fn set_iap_policy_direct(&self, id: &ServiceId, policy: Policy) -> Option<String> {
        self.set_direct(id, policy, true)
    }

    fn set_direct(&self, id: &ServiceId, policy: Policy, iap: bool) -> Option<String> {
        let mut s = self.store();
        let etag = s.next_etag();
        let number = s.projects.get(&id.project)?.number;
        let svc = s.services.get_mut(&key(id))?;
        let res = if iap { &mut svc.iap } else { &mut svc.iam };
        let before = google::stored_view(&res.policy);
        let mut bindings = Vec::new();
        for b in policy.bindings {
            state::merge_binding(&mut bindings, b.role, b.members, b.condition);
        }
        res.policy = Policy {
            version: 1,
            etag: etag.clone(),
            bindings,
        };
        let after = google::stored_view(&res.policy);
        let resource = if iap {
            id.iap_resource_name(number)
        } else {
            id.resource_name()
        };
        drop(s);
        lock(&self.0.history).push(IamWrite {
            resource,
            before,
            after,
            etag: etag.clone(),
            writer: Writer::Direct,
            at: state::rfc3339(SystemTime::now()),
        });
        Some(etag)
    }

    /// Every IAM write so far (client, concurrent writer, direct), oldest first.
    pub fn history(&self) -> Vec<IamWrite> {
        lock(&self.0.history).clone()
    }

    /// Assigns a role to a user directly (by role name and e-mail). False if either is unknown.
    pub fn add_role_user(&self, role: &str, email: &str) -> bool {
        auth0::edit_role_user(&mut self.store(), role, email, true)
    }

    /// Removes a user's direct assignment of a role. False if either is unknown.
    pub fn remove_role_user(&self, role: &str, email: &str) -> bool {
        auth0::edit_role_user(&mut self.store(), role, email, false)
    }

    /// Deletes a user's own record (`GET /api/v2/users/{id}` answers 404) while role and group
    /// listings still carry it: a user deleted between the listing and the look-up. False if
    /// no user has this e-mail.
    pub fn delete_user_record(&self, email: &str) -> bool {
        let mut s = self.store();
        let t = &mut s.tenant;
        let Some(u) = t.users.iter().find(|u| u.email.eq_ignore_ascii_case(email)) else {
            return false;
        };
        let id = u.user_id.clone();
        t.user_by_id.remove(&id).is_some()
    }

    /// Changes a user's `email_verified` and/or `blocked` (by e-mail), as an administrator, a
    /// SCIM sync or the user's own verification would: `GET /api/v2/users/{id}` sees it at once,
    /// user search only after `simulator.searchIndexLag`. False if no user has this e-mail.
    pub fn update_user(&self, email: &str, email_verified: Option<bool>, blocked: Option<bool>) -> bool {
        let mut s = self.store();
        let lag = s.config.search_index_lag;
        let now = std::time::Instant::now();
        let Some(u) = s.tenant.users.iter_mut().find(|u| u.email.eq_ignore_ascii_case(email)) else {
            return false;
        };
        let before = u.as_searched(now);
        u.searched = Some(state::SearchView { email_verified: before.email_verified, blocked: before.blocked, until: now + lag });
        u.email_verified = email_verified.unwrap_or(u.email_verified);
        u.blocked = blocked.unwrap_or(u.blocked);
        true
    }

    /// How long user changes take to reach user search from now on.
    pub fn set_search_index_lag(&self, lag: Duration) {
        self.store().config.search_index_lag = lag;
    }

    /// Removes every member of an Auth0 group (by name). False if the group is unknown.
    pub fn empty_group(&self, group: &str) -> bool {
        auth0::empty_group(&mut self.store(), group)
    }

    /// Mints an RS256 token signed by a tenant key (for token-check tests).
    pub fn mint_token(&self, req: &TokenRequest) -> Result<String, SimError> {
        auth0::mint(&self.0, &self.store().tenant, req)
    }

    /// A JSON dump of the simulated world (services with policies, tenant summary).
    pub fn state_dump(&self) -> serde_json::Value {
        google::dump(&mut self.store())
    }

    /// The service-account key file (JSON) whose `token_uri` is `base_url + "/token"`.
    pub fn key_file_json(&self, base_url: &str) -> String {
        let sa = self.service_account();
        let project = sa
            .split('@')
            .nth(1)
            .and_then(|d| d.split('.').next())
            .unwrap_or("sim-project");
        let key = serde_json::json!({
            "type": "service_account",
            "project_id": project,
            "private_key_id": "sim0000000000000000000000000000000000key",
            "private_key": keys::GOOGLE_SA_KEY_PEM,
            "client_email": sa,
            "client_id": "100000000000000000001",
            "auth_uri": format!("{base_url}/o/oauth2/auth"),
            "token_uri": format!("{base_url}/token"),
            "auth_provider_x509_cert_url": format!("{base_url}/oauth2/v1/certs"),
            "client_x509_cert_url": format!("{base_url}/robot/v1/metadata/x509/{sa}"),
            "universe_domain": "googleapis.com",
        });
        serde_json::to_string_pretty(&key).expect("JSON values serialize")
    }
}

fn key(id: &ServiceId) -> state::SvcKey {
    (id.project.clone(), id.region.clone(), id.name.clone())
}

/// Serves every simulated API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: SimHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = http::router(handle);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A simulator running in the background on `127.0.0.1:PORT`. Shuts down when dropped.
#[derive(Debug)]
pub struct RunningSim {
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    pub handle: SimHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Starts a simulator for `world` on a free loopback port (tests, benchmarks, `--sim`, `demo`).
pub async fn spawn(world: World) -> Result<RunningSim, SimError> {
    let handle = SimHandle::new(&world)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(SimError::Bind)?;
    let addr = listener.local_addr().map_err(SimError::Bind)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, handle.clone(), async move {
        let _ = stopped.await;
    }));
    Ok(RunningSim {
        base_url: format!("http://{addr}"),
        handle,
        stop: Some(stop),
        task: Some(task),
    })
}

impl RunningSim {
    /// Writes `sim-service-account.json` into `dir` and returns its path.
    pub fn write_credentials(&self, dir: &Path) -> Result<PathBuf, SimError> {
        write_key_file(&self.handle, &self.base_url, dir)
    }

    /// The Management API client: (client id, client secret).
    pub fn auth0_client(&self) -> (String, String) {
        self.handle.auth0_client()
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn write_key_file(handle: &SimHandle, base_url: &str, dir: &Path) -> Result<PathBuf, SimError> {
    let path = dir.join("sim-service-account.json");
    std::fs::write(&path, handle.key_file_json(base_url)).map_err(|source| {
        SimError::WriteCredentials {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

/// Faults in the shape of a `faults` section (what `GET /sim/faults` answers).
fn faults_to_json(f: &Faults) -> serde_json::Value {
    let rate = |r: &faults::Rate| match r.per.as_secs() {
        1 => format!("{}/s", r.count),
        60 => format!("{}/min", r.count),
        _ => format!("{}/h", r.count),
    };
    let mut spec = FaultsSpec {
        latency: (!f.latency.is_zero()).then(|| format!("{}us", f.latency.as_micros())),
        concurrent_writer: f.concurrent_writer,
        operation_failure_rate: f.operation_failure_rate,
        early_wait: f.early_wait,
        bursts: f
            .bursts
            .map(|(every, length)| world::BurstSpec { every, length }),
        ..FaultsSpec::default()
    };
    for (status, p) in &f.error_rates {
        spec.error_rates.insert(status.to_string(), *p);
    }
    for (class, r) in &f.rate_limits {
        spec.rate_limits.insert(class.key().to_string(), rate(r));
    }
    spec.auth0_tier = f.auth0_tier.map(|t| t.key().to_string());
    serde_json::to_value(spec).unwrap_or_default()
}
