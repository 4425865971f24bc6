//! The concurrent, quota-aware reader: desired model + clients → [`LiveState`].
//!
//! # Expected flow
//! 1. From the policies, work out every (project, region) to list: the scope's projects ×
//!    regions, plus any region a policy names explicitly.
//! 2. Concurrently:
//!    * list each (project, region) to its last page — exactly one list pass each;
//!    * as each page arrives, start one `getIamPolicy` per *governed* service (a policy names
//!      it, or selects it by labels in a named region or in every scope region), and one IAP
//!      `getIamPolicy` when a governing policy wants `iap: true` or the service has IAP on;
//!    * read each project's number once (IAP resource names and the IAP service agent need it);
//!    * read the Auth0 roles the policies name, once each (members too for the `users`
//!      mapping).
//! 3. Ungoverned services are kept in the snapshot (for coverage) without their IAM.
//!
//! # Guarantees
//! * Calls in flight are bounded and paced per API by the clients; every call is retried by
//!   `crate::retry` alone.
//! * A service whose IAM read fails (a 403, retries exhausted, an unreadable member) is kept
//!   with `read_error` set and the rest are read normally: the plan reports it and plans
//!   nothing for it, rather than treating its policy as empty.
//!
//! # Errors
//! A listing that fails is fatal for the pass ([`ReadError::List`]): without it runwarden does
//! not know which services exist. So is a failed Auth0 read, because desired members cannot be
//! computed without it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::OnceCell;

use crate::model::{LiveService, LiveState, ServiceId};
use crate::endpoints::{EndpointError, Endpoints, HttpTimeouts};
use crate::google::{GcpAuth, GoogleClient, GoogleConfig, GoogleError, TokenError, TokenSource};
use crate::identity::{
    Auth0Client, Auth0Config, DirectoryRequest, DirectoryStats, IdentityError, Secret,
    SecretSource, read_directory,
};
use crate::policy::model::{
    AccessPolicy, Desired, Principal, PrincipalMapping, RegionRef, ServiceTarget, Settings,
};
use crate::retry::{Pace, Rate, RetryPolicy, retry};

/// The API clients one pass uses.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Cloud Run, IAP and Resource Manager.
    pub google: GoogleClient,
    /// The Auth0 Management API of the Settings' tenant.
    pub auth0: Auth0Client,
}

/// Limits and timeouts for [`Clients`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Connect and request timeouts of the shared HTTP client.
    pub timeouts: HttpTimeouts,
    /// Concurrency, request rates and page size of the Google clients. Its `max_pause` and
    /// `shutdown` apply to the Auth0 client too.
    pub google: GoogleConfig,
    /// Auth0 requests in flight at once.
    pub auth0_concurrency: usize,
    /// Auth0 request rate (see `Auth0Config::rate`); a Settings pin replaces it.
    pub auth0_rate: Pace,
    /// Items per Auth0 page (at most 100).
    pub auth0_page_size: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeouts: HttpTimeouts::default(),
            google: GoogleConfig::default(),
            auth0_concurrency: 4,
            auth0_rate: Pace::Probe(Rate::per_second(2)),
            auth0_page_size: 100,
        }
    }
}

/// Building the clients failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("invalid endpoint: {0}")]
    Endpoint(#[from] EndpointError),
    #[error("setting up Google credentials failed: {0}")]
    Credentials(#[from] TokenError),
    #[error("building the HTTP client failed: {0}")]
    Http(#[source] reqwest::Error),
}

/// The client limits with the Settings' `pacing` applied: each pinned rate becomes a fixed
/// limit ([`Pace::Limit`]: no learning for that API), and the Google limits still to be
/// learned are read from `pacing.quotaProject`, else the first project in scope (unless the
/// configuration names a quota project itself).
fn paced_by_settings(config: &ClientConfig, settings: &Settings) -> (GoogleConfig, Pace) {
    let pin = |p: Option<Rate>, default: Pace| p.map_or(default, Pace::Limit);
    let pacing = &settings.pacing;
    let mut google = config.google.clone();
    google.cloud_run_read_rate = pin(pacing.cloud_run_reads, google.cloud_run_read_rate);
    google.write_rate = pin(pacing.writes, google.write_rate);
    google.iap_rate = pin(pacing.iap, google.iap_rate);
    if google.quota_project.is_none() {
        google.quota_project = pacing
            .quota_project
            .clone()
            .or_else(|| settings.scope.projects.first().cloned());
    }
    (google, pin(pacing.auth0, config.auth0_rate))
}

impl Clients {
    /// Production clients: Google credentials from gcp_auth's chain, Auth0 secret from the
    /// environment variable the Settings name, every API on its real URL unless `endpoint`
    /// (`--endpoint` / `RUNWARDEN_ENDPOINT`) overrides them all.
    pub async fn connect(
        settings: &Settings,
        endpoint: Option<&str>,
        config: &ClientConfig,
    ) -> Result<Clients, ClientsError> {
        let endpoints = Endpoints::from_override(endpoint)?;
        let tokens = Arc::new(GcpAuth::discover().await?);
        Clients::from_parts(
            settings,
            endpoints,
            tokens,
            SecretSource::Env(settings.auth0.client_secret_env.clone()),
            None,
            config,
        )
    }

    /// Clients from explicit parts (tests, the simulator). `client_id` overrides the
    /// Settings' Management API client id when given.
    pub fn from_parts(
        settings: &Settings,
        endpoints: Endpoints,
        tokens: Arc<dyn TokenSource>,
        secret: SecretSource,
        client_id: Option<&str>,
        config: &ClientConfig,
    ) -> Result<Clients, ClientsError> {
        let http = crate::endpoints::http_client(config.timeouts).map_err(ClientsError::Http)?;
        let auth0_base = endpoints.auth0_base(&settings.auth0.domain)?;
        let (google_config, auth0_rate) = paced_by_settings(config, settings);
        let google = GoogleClient::new(http.clone(), tokens, endpoints, google_config);
        let mut auth0_config = Auth0Config::new(
            auth0_base,
            &settings.auth0.domain,
            client_id.unwrap_or(&settings.auth0.client_id),
            secret,
        );
        auth0_config.concurrency = config.auth0_concurrency;
        auth0_config.rate = auth0_rate;
        auth0_config.page_size = config.auth0_page_size.clamp(1, 100);
        auth0_config.max_pause = config.google.max_pause;
        auth0_config.shutdown = config.google.shutdown.clone();
        auth0_config.metrics = config.google.metrics.clone();
        let auth0 = Auth0Client::new(http, auth0_config);
        Ok(Clients { google, auth0 })
    }

    /// Clients for a running simulator: every call to `base_url`, Google tokens from the
    /// simulator's key file (through gcp_auth, like production), the Auth0 Management API
    /// client id and secret the simulator issued.
    pub fn for_simulator(
        settings: &Settings,
        base_url: &str,
        key_file: &Path,
        auth0_client: (String, String),
        config: &ClientConfig,
    ) -> Result<Clients, ClientsError> {
        let endpoints = Endpoints::single(crate::endpoints::parse_base_url(base_url)?);
        let tokens = Arc::new(GcpAuth::from_key_file(key_file)?);
        let (id, secret) = auth0_client;
        Clients::from_parts(
            settings,
            endpoints,
            tokens,
            SecretSource::Value(Secret::new(secret)),
            Some(&id),
            config,
        )
    }
}

/// A progress report, for a terminal progress line or logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadProgress {
    /// A page of `services.list` arrived (sent before the reads it starts).
    Page {
        project: String,
        region: String,
        services: usize,
    },
    /// One (project, region) was listed to its end and its governed services read.
    Listed {
        project: String,
        region: String,
        services: usize,
        governed: usize,
    },
    /// IAM reads finished so far, and how many have been started (grows while listing).
    IamRead { done: usize, started: usize },
    /// The Auth0 directory was read.
    DirectoryRead { roles: usize },
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&ReadProgress) + Send + Sync>;

/// How one read behaves (the clients carry the limits).
#[derive(Clone, Default)]
pub struct ReadConfig {
    /// How each call is retried.
    pub retry: RetryPolicy,
    /// Called with progress reports (from reader tasks; keep it cheap).
    pub progress: Option<ProgressFn>,
    /// Only this shard's services are kept and read (the listings are still complete).
    pub shard: Option<Shard>,
}

/// One shard of the estate (`--shard I/N`, 0-based like `CLOUD_RUN_TASK_INDEX`): the services
/// whose stable hash falls on `index`. Every service is in exactly one shard of `count`, and
/// the split does not depend on which other services exist, so shards never overlap or miss
/// one while the estate changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` with `0 <= I < N`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (i, n) = text.split_once('/').ok_or_else(|| format!("{text:?} is not I/N (e.g. 0/4)"))?;
        let index: u32 = i.trim().parse().map_err(|_| format!("{text:?}: {i:?} is not a number"))?;
        let count: u32 = n.trim().parse().map_err(|_| format!("{text:?}: {n:?} is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("{text:?}: the index must be 0 ≤ I < N (shards are numbered from 0, like CLOUD_RUN_TASK_INDEX)"));
        }
        Ok(Shard { index, count })
    }

    /// The shard of a Cloud Run job task (`CLOUD_RUN_TASK_INDEX` of `CLOUD_RUN_TASK_COUNT`),
    /// when the job has more than one task.
    pub fn from_env(index: Option<&str>, count: Option<&str>) -> Result<Option<Shard>, String> {
        match (index, count) {
            (Some(i), Some(n)) => {
                let shard = Shard::parse(&format!("{i}/{n}"))?;
                Ok((shard.count > 1).then_some(shard))
            }
            _ => Ok(None),
        }
    }

    /// Whether `id` belongs to this shard (FNV-1a over `project/region/name`).
    pub fn contains(&self, id: &ServiceId) -> bool {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [id.project.as_bytes(), b"/", id.region.as_bytes(), b"/", id.name.as_bytes()] {
            for byte in part {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::fmt::Debug for ReadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadConfig")
            .field("retry", &self.retry)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What a read cost, by kind of call (successful logical calls; retries not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// (project, region) pairs listed.
    pub listings: usize,
    pub list_pages: usize,
    pub services: usize,
    pub governed: usize,
    pub iam_reads: usize,
    pub iap_reads: usize,
    pub project_reads: usize,
    pub directory: DirectoryStats,
}

/// A read failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "listing the Cloud Run services of project {project} in {region} failed, so the pass \
         cannot know which services exist: {source}"
    )]
    List {
        project: String,
        region: String,
        #[source]
        source: GoogleError,
    },
    #[error("reading the Auth0 directory failed: {0}")]
    Directory(#[from] IdentityError),
    #[error("a reader task failed unexpectedly: {0}")]
    Task(String),
}

/// Reads the live world the desired model is about. See the module docs.
pub async fn read_live(
    desired: &Desired,
    clients: &Clients,
    config: &ReadConfig,
) -> Result<LiveState, ReadError> {
    read_live_with_stats(desired, clients, config)
        .await
        .map(|(state, _)| state)
}

/// [`read_live`], also returning what the read cost.
pub async fn read_live_with_stats(
    desired: &Desired,
    clients: &Clients,
    config: &ReadConfig,
) -> Result<(LiveState, ReadStats), ReadError> {
    let governance = Arc::new(Governance::new(desired));
    let targets = list_targets(desired);
    let projects: BTreeSet<String> = targets.iter().map(|(p, _)| p.clone()).collect();
    tracing::info!(
        listings = targets.len(),
        projects = projects.len(),
        "reading the live state"
    );

    let shared = Arc::new(Shared {
        google: clients.google.clone(),
        retry: config.retry.clone(),
        // One cell per project: the number is read once, by whoever needs it first.
        numbers: projects
            .iter()
            .map(|p| (p.clone(), OnceCell::new()))
            .collect(),
        counters: Counters::default(),
        progress: config.progress.clone(),
        shard: config.shard,
    });

    let google = read_services(&shared, &governance, &projects, &targets);

    let directory = async {
        let request = directory_request(desired);
        let (directory, stats) = read_directory(&clients.auth0, &request, &config.retry).await?;
        if let Some(progress) = &config.progress {
            progress(&ReadProgress::DirectoryRead {
                roles: directory.roles.len(),
            });
        }
        Ok::<_, ReadError>((directory, stats))
    };

    let (services, directory) = tokio::join!(google, directory);
    let (services, other_shards) = services?;
    let (directory, directory_stats) = directory?;

    let read_projects = || shared.numbers.iter().filter_map(|(project, cell)| Some((project, cell.get()?.as_ref().ok()?)));
    let project_numbers = read_projects().map(|(project, (n, _))| (project.clone(), *n)).collect();
    let project_parents = read_projects()
        .filter_map(|(project, (_, parent))| Some((project.clone(), parent.as_ref().ok()?.clone())))
        .collect();
    let stats = shared.stats(targets.len(), services.len(), directory_stats);
    tracing::info!(
        services = stats.services,
        governed = stats.governed,
        iam_reads = stats.iam_reads,
        iap_reads = stats.iap_reads,
        roles = directory.roles.len(),
        "read the live state"
    );
    Ok((
        LiveState {
            services,
            project_numbers,
            project_parents,
            directory,
            other_shards,
        },
        stats,
    ))
}

/// Every service of every listing, with the project numbers read alongside (each kept in its
/// project's cell; a failure is reported per service that needs it).
async fn read_services(
    shared: &Arc<Shared>,
    governance: &Arc<Governance>,
    projects: &BTreeSet<String>,
    targets: &BTreeSet<(String, String)>,
) -> Result<(BTreeMap<ServiceId, LiveService>, BTreeMap<ServiceId, BTreeMap<String, String>>), ReadError> {
    let mut number_tasks = tokio::task::JoinSet::new();
    for project in projects {
        let (shared, project) = (shared.clone(), project.clone());
        number_tasks.spawn(async move {
            // The result is kept in the cell; failures are reported per service.
            let _ = shared.project_number(&project).await;
        });
    }
    let mut list_tasks = tokio::task::JoinSet::new();
    for (project, region) in targets.iter().cloned() {
        let (shared, governance) = (shared.clone(), governance.clone());
        list_tasks.spawn(read_region(shared, governance, project, region));
    }
    let mut services = BTreeMap::new();
    let mut other_shards = BTreeMap::new();
    while let Some(joined) = list_tasks.join_next().await {
        let (listed, elsewhere) = joined.map_err(|e| ReadError::Task(e.to_string()))??;
        for s in listed {
            services.insert(s.id.clone(), s);
        }
        other_shards.extend(elsewhere);
    }
    while let Some(joined) = number_tasks.join_next().await {
        joined.map_err(|e| ReadError::Task(e.to_string()))?;
    }
    Ok((services, other_shards))
}

/// What the Auth0 read must cover: every role an invoker names; members only for `users`.
pub fn directory_request(desired: &Desired) -> DirectoryRequest {
    let roles = desired
        .policies
        .iter()
        .flat_map(|p| &p.invokers)
        .filter_map(|i| match &i.principal {
            Principal::Auth0Role(name) => Some(name.clone()),
            _ => None,
        })
        .collect();
    let resolve_members = matches!(desired.settings.principals, PrincipalMapping::Users { .. });
    DirectoryRequest {
        roles,
        resolve_members,
        read_groups: desired.settings.auth0.read_groups,
    }
}

/// Every (project, region) to list: scope projects × scope regions, plus the regions policies
/// name explicitly, and every scope region of projects that `"*"` refs name.
pub fn list_targets(desired: &Desired) -> BTreeSet<(String, String)> {
    let scope = &desired.settings.scope;
    let mut targets: BTreeSet<(String, String)> = scope
        .projects
        .iter()
        .flat_map(|p| scope.regions.iter().map(move |r| (p.clone(), r.clone())))
        .collect();
    for r in desired.policies.iter().flat_map(|p| &p.services) {
        match &r.region {
            RegionRef::Named(region) => {
                targets.insert((r.project.clone(), region.clone()));
            }
            RegionRef::Any => {
                for region in &scope.regions {
                    targets.insert((r.project.clone(), region.clone()));
                }
            }
        }
    }
    targets
}

/// Which policies govern a service: an owned index of every service reference, so reader
/// tasks can share it.
#[derive(Debug, Clone)]
pub struct Governance {
    rules: Vec<Rule>,
    scope_regions: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// Index into `Desired.policies`.
    policy: usize,
    project: String,
    region: RegionRef,
    target: ServiceTarget,
    wants_iap: bool,
}

impl Governance {
    /// Indexes every service reference of `desired`.
    pub fn new(desired: &Desired) -> Governance {
        let rules = desired
            .policies
            .iter()
            .enumerate()
            .flat_map(|(i, p): (usize, &AccessPolicy)| {
                p.services.iter().map(move |r| Rule {
                    policy: i,
                    project: r.project.clone(),
                    region: r.region.clone(),
                    target: r.target.clone(),
                    wants_iap: p.exposure.iap == Some(true),
                })
            })
            .collect();
        Governance {
            rules,
            scope_regions: desired.settings.scope.regions.iter().cloned().collect(),
        }
    }

    fn matching<'s>(
        &'s self,
        id: &'s ServiceId,
        labels: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'s Rule> + 's {
        self.rules.iter().filter(move |r| {
            r.project == id.project
                && match &r.region {
                    RegionRef::Named(region) => *region == id.region,
                    RegionRef::Any => self.scope_regions.contains(&id.region),
                }
                && match &r.target {
                    ServiceTarget::Named(name) => *name == id.name,
                    ServiceTarget::Selector(selector) => {
                        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                    }
                }
        })
    }

    /// Indices (into `Desired.policies`, ascending, no repeats) of the policies that govern
    /// the service `id` with these labels.
    pub fn governing(&self, id: &ServiceId, labels: &BTreeMap<String, String>) -> Vec<usize> {
        let set: BTreeSet<usize> = self.matching(id, labels).map(|r| r.policy).collect();
        set.into_iter().collect()
    }

    /// (governed by any policy, some governing policy wants IAP).
    fn classify(&self, id: &ServiceId, labels: &BTreeMap<String, String>) -> (bool, bool) {
        let mut governed = false;
        for r in self.matching(id, labels) {
            governed = true;
            if r.wants_iap {
                return (true, true);
            }
        }
        (governed, false)
    }
}

#[derive(Default)]
struct Counters {
    list_pages: AtomicUsize,
    governed: AtomicUsize,
    iam_reads: AtomicUsize,
    iap_reads: AtomicUsize,
    project_reads: AtomicUsize,
    started: AtomicUsize,
    done: AtomicUsize,
}

/// What every reader task shares.
struct Shared {
    google: GoogleClient,
    retry: RetryPolicy,
    numbers: HashMap<String, OnceCell<Result<(u64, Result<Option<String>, String>), String>>>,
    counters: Counters,
    progress: Option<ProgressFn>,
    shard: Option<Shard>,
}

impl Shared {
    /// The read's counters, once every call is done.
    fn stats(&self, listings: usize, services: usize, directory: DirectoryStats) -> ReadStats {
        let c = &self.counters;
        ReadStats {
            listings,
            list_pages: c.list_pages.load(Ordering::Relaxed),
            services,
            governed: c.governed.load(Ordering::Relaxed),
            iam_reads: c.iam_reads.load(Ordering::Relaxed),
            iap_reads: c.iap_reads.load(Ordering::Relaxed),
            project_reads: c.project_reads.load(Ordering::Relaxed),
            directory,
        }
    }

    /// The project's number, read once per pass; the error text when it cannot be read.
    async fn project_number(&self, project: &str) -> Result<u64, String> {
        let Some(cell) = self.numbers.get(project) else {
            return Err(format!("project {project} was not among the projects read"));
        };
        cell.get_or_init(|| async {
            let result = retry(&self.retry, "projects.get", || {
                self.google.get_project(project)
            })
            .await;
            match result {
                Ok(n) => {
                    self.counters.project_reads.fetch_add(1, Ordering::Relaxed);
                    Ok(n)
                }
                Err(e) => {
                    tracing::warn!(project, error = %e, "could not read the project number");
                    Err(format!(
                        "reading the number of project {project} failed: {e}"
                    ))
                }
            }
        })
        .await
        .clone()
        .map(|(number, _)| number)
    }

    fn report(&self, event: ReadProgress) {
        if let Some(progress) = &self.progress {
            progress(&event);
        }
    }
}

/// The most `services.list` pages one (project, region) may take: Cloud Run allows at most
/// 1,000 services per region and project, which is 10 pages at the API's smallest default page
/// size of 100. A listing that goes on with fresh page tokens is not followed forever.
const MAX_LIST_PAGES: usize = 100;

/// Lists one (project, region) to its last page, starting the IAM reads of governed services
/// as their pages arrive; returns every listed service, governed ones with their policies.
async fn read_region(
    shared: Arc<Shared>,
    governance: Arc<Governance>,
    project: String,
    region: String,
) -> Result<(Vec<LiveService>, Vec<(ServiceId, BTreeMap<String, String>)>), ReadError> {
    let mut ready = Vec::new();
    let mut elsewhere = Vec::new();
    let mut reads = tokio::task::JoinSet::new();
    let mut page_token: Option<String> = None;
    let mut seen_tokens = std::collections::HashSet::new();
    let mut governed = 0;
    loop {
        let what = format!("services.list {project}/{region}");
        let page = retry(&shared.retry, &what, || {
            shared
                .google
                .list_services_page(&project, &region, page_token.as_deref())
        })
        .await
        .map_err(|source| ReadError::List {
            project: project.clone(),
            region: region.clone(),
            source,
        })?;
        shared.counters.list_pages.fetch_add(1, Ordering::Relaxed);
        shared.report(ReadProgress::Page {
            project: project.clone(),
            region: region.clone(),
            services: page.services.len(),
        });
        for service in page.services {
            if shared.shard.is_some_and(|shard| !shard.contains(&service.id)) {
                elsewhere.push((service.id, service.labels)); // another shard's: not read
                continue;
            }
            let (is_governed, wants_iap) = governance.classify(&service.id, &service.labels);
            if !is_governed {
                ready.push(service);
                continue;
            }
            governed += 1;
            shared.counters.governed.fetch_add(1, Ordering::Relaxed);
            let started = shared.counters.started.fetch_add(1, Ordering::Relaxed) + 1;
            let done = shared.counters.done.load(Ordering::Relaxed);
            if started % 100 == 0 {
                shared.report(ReadProgress::IamRead { done, started });
            }
            let read_iap = wants_iap || service.settings.iap_enabled;
            reads.spawn(read_service(shared.clone(), service, read_iap));
        }
        match follow_token(&mut seen_tokens, page.next_page_token) {
            Ok(Some(next)) => page_token = Some(next),
            Ok(None) => break,
            Err(reason) => {
                return Err(ReadError::List {
                    project,
                    region,
                    source: GoogleError::Decode {
                        api: crate::google::Api::CloudRun,
                        method: reqwest::Method::GET,
                        path: "services.list".into(),
                        reason,
                    },
                });
            }
        }
    }
    let listed = ready.len() + reads.len();
    while let Some(joined) = reads.join_next().await {
        ready.push(joined.map_err(|e| ReadError::Task(e.to_string()))?);
    }
    tracing::debug!(
        project,
        region,
        services = listed,
        governed,
        "listed a region"
    );
    shared.report(ReadProgress::Listed {
        project,
        region,
        services: listed,
        governed,
    });
    Ok((ready, elsewhere))
}

/// Where a listing goes after a page: the next page token, the end (`None`), or why the
/// listing cannot be read to its end.
fn follow_token(
    seen_tokens: &mut std::collections::HashSet<String>,
    next: Option<String>,
) -> Result<Option<String>, String> {
    let Some(next) = next else { return Ok(None) };
    // A token already followed (at once, or after a cycle of any length) would be followed
    // forever.
    if !seen_tokens.insert(next.clone()) {
        return Err(format!(
            "the page token {next:?} was returned twice (after {} pages): the \
             listing cycles and cannot be read to its end; nothing is planned \
             from it, the next pass lists again",
            seen_tokens.len()
        ));
    }
    if seen_tokens.len() >= MAX_LIST_PAGES {
        return Err(format!(
            "the listing did not end after {MAX_LIST_PAGES} pages (a region holds \
             at most 1,000 services); nothing is planned from it, the next pass \
             lists again"
        ));
    }
    Ok(Some(next))
}

/// Reads a governed service's IAM policy (and its IAP resource's, when wanted) concurrently.
/// Failures land in `read_error`; the service is never dropped.
async fn read_service(
    shared: Arc<Shared>,
    mut service: LiveService,
    read_iap: bool,
) -> LiveService {
    let id = service.id.clone();
    let iam = async {
        let what = format!("getIamPolicy {id}");
        let result = retry(&shared.retry, &what, || shared.google.get_iam_policy(&id)).await;
        if result.is_ok() {
            shared.counters.iam_reads.fetch_add(1, Ordering::Relaxed);
        }
        result.map_err(|e| format!("reading the IAM policy failed: {e}"))
    };
    let iap = async {
        if !read_iap {
            return None;
        }
        let number = match shared.project_number(&id.project).await {
            Ok(n) => n,
            Err(e) => return Some(Err(format!("cannot read the IAP policy: {e}"))),
        };
        let what = format!("IAP getIamPolicy {id}");
        let result = retry(&shared.retry, &what, || {
            shared.google.get_iap_iam_policy(&id, number)
        })
        .await;
        if result.is_ok() {
            shared.counters.iap_reads.fetch_add(1, Ordering::Relaxed);
        }
        Some(result.map_err(|e| format!("reading the IAP IAM policy failed: {e}")))
    };
    let (iam, iap) = tokio::join!(iam, iap);
    let mut errors = Vec::new();
    match iam {
        Ok(p) => service.iam = Some(p),
        Err(e) => errors.push(e),
    }
    match iap {
        Some(Ok(p)) => service.iap_iam = Some(p),
        Some(Err(e)) => errors.push(e),
        None => {}
    }
    if !errors.is_empty() {
        tracing::warn!(service = %id, error = %errors.join("; "), "could not read a governed service");
        service.read_error = Some(errors.join("; "));
    }
    let done = shared.counters.done.fetch_add(1, Ordering::Relaxed) + 1;
    if done % 100 == 0 {
        let started = shared.counters.started.load(Ordering::Relaxed);
        shared.report(ReadProgress::IamRead { done, started });
    }
    service
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::Member;
    use crate::policy::model::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn src() -> Source {
        Source {
            file: PathBuf::from("t.yaml"),
            line: 1,
            column: 1,
        }
    }

    fn desired(policies: Vec<AccessPolicy>, mapping: PrincipalMapping) -> Desired {
        Desired {
            settings: Settings {
                name: "s".into(),
                source: src(),
                auth0: Auth0Settings {
                    domain: "t.example".into(),
                    client_id: "c".into(),
                    client_secret_env: "V".into(),
                    read_groups: true,
                    issuers: vec![],
                },
                principals: mapping,
                machines: vec![],
                scope: Scope {
                    projects: vec!["p1".into(), "p2".into()],
                    regions: vec!["r1".into(), "r2".into()],
                },
                foreign_members: ForeignMembers::Keep,
                owned: vec![],
                keep: vec![],
                allowed_roles: vec![],
                guards: Guards {
                    max_removals: 1,
                    max_removal_ratio: 1.0,
                    allow_once: Vec::new(),
                },
                audits: Audits {
                    max_token_lifetime: Duration::from_secs(1),
                    max_signing_key_age: Duration::from_secs(1),
                    require_coverage: false,
                },
                pacing: Default::default(),
            },
            policies,
        }
    }

    fn sref(project: &str, region: Option<&str>, target: ServiceTarget) -> ServiceRef {
        ServiceRef {
            project: project.into(),
            region: region.map_or(RegionRef::Any, |r| RegionRef::Named(r.into())),
            target,
            source: src(),
        }
    }

    fn name(n: &str) -> ServiceTarget {
        ServiceTarget::Named(n.into())
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn policy(
        services: Vec<ServiceRef>,
        iap: Option<bool>,
        invokers: Vec<Principal>,
    ) -> AccessPolicy {
        AccessPolicy {
            name: "p".into(),
            source: src(),
            mode: Mode::Enforce,
            services,
            exposure: Exposure {
                iap,
                ..Exposure::default()
            },
            invokers: invokers
                .into_iter()
                .map(|principal| Invoker {
                    principal,
                    expires: None,
                    source: src(),
                })
                .collect(),
        }
    }

    fn users() -> PrincipalMapping {
        PrincipalMapping::Users {
            email_domains: vec!["a.example".into()],
        }
    }

    #[test]
    fn lists_scope_regions_plus_regions_policies_name() {
        let d = desired(
            vec![policy(
                vec![
                    sref("p1", Some("r9"), name("x")),
                    sref("p3", None, ServiceTarget::Selector(labels(&[("t", "a")]))),
                ],
                None,
                vec![],
            )],
            users(),
        );
        let got: Vec<(String, String)> = list_targets(&d).into_iter().collect();
        let want: Vec<(String, String)> = [
            ("p1", "r1"),
            ("p1", "r2"),
            ("p1", "r9"),
            ("p2", "r1"),
            ("p2", "r2"),
            ("p3", "r1"),
            ("p3", "r2"),
        ]
        .iter()
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn decides_which_policies_govern_a_service() {
        let d = desired(
            vec![
                policy(vec![sref("p1", Some("r1"), name("api"))], None, vec![]),
                policy(
                    vec![sref(
                        "p1",
                        None,
                        ServiceTarget::Selector(labels(&[("team", "a")])),
                    )],
                    Some(true),
                    vec![],
                ),
                policy(
                    vec![sref(
                        "p2",
                        Some("r2"),
                        ServiceTarget::Selector(labels(&[("team", "a"), ("tier", "1")])),
                    )],
                    Some(false),
                    vec![],
                ),
            ],
            users(),
        );
        let g = Governance::new(&d);
        // (project, region, name, labels) -> (governing policy indices, wants IAP)
        // (project, region, name, labels, governing policies, wants IAP)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [usize],
            bool,
        );
        let cases: &[Case] = &[
            ("p1", "r1", "api", &[], &[0], false),
            ("p1", "r1", "api", &[("team", "a")], &[0, 1], true),
            ("p1", "r2", "other", &[("team", "a")], &[1], true),
            ("p1", "r9", "other", &[("team", "a")], &[], false), // "*" means scope regions only
            ("p1", "r1", "api2", &[("team", "b")], &[], false),
            ("p2", "r2", "s", &[("team", "a")], &[], false), // every selector label must match
            (
                "p2",
                "r2",
                "s",
                &[("team", "a"), ("tier", "1"), ("x", "y")],
                &[2],
                false,
            ),
            ("p2", "r1", "api", &[], &[], false), // the project must match
        ];
        for (p, r, n, l, want, iap) in cases {
            let id = ServiceId::new(p, r, n);
            let l = labels(l);
            assert_eq!(g.governing(&id, &l), *want, "{id} {l:?}");
            assert_eq!(g.classify(&id, &l), (!want.is_empty(), *iap), "{id} {l:?}");
        }
    }

    #[test]
    fn asks_auth0_for_named_roles_and_members_only_for_the_users_mapping() {
        let sa = Member::parse("serviceAccount:a@p.iam.gserviceaccount.com").unwrap();
        let policies = vec![
            policy(
                vec![],
                None,
                vec![Principal::Auth0Role("b".into()), Principal::Member(sa)],
            ),
            policy(
                vec![],
                None,
                vec![
                    Principal::Auth0Role("a".into()),
                    Principal::Machine("m".into()),
                    Principal::Auth0Role("b".into()),
                ],
            ),
        ];
        let r = directory_request(&desired(policies.clone(), users()));
        assert_eq!(
            r.roles.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(r.resolve_members);
        let pool = directory_request(&desired(
            policies,
            PrincipalMapping::WorkforcePool { pool: "x".into() },
        ));
        assert!(!pool.resolve_members);
        assert!(
            directory_request(&desired(vec![], users()))
                .roles
                .is_empty()
        );
    }
}
