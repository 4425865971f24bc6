//! Cloud Run Admin API v2, IAP v1 and Resource Manager v3 clients.
//!
//! One [`GoogleClient`] holds the shared `reqwest::Client`, the token source, the base URLs,
//! the bound on requests in flight and one [`Pacer`] per API. Every call goes through
//! [`GoogleClient::send`], which makes exactly one attempt and classifies a failure into a
//! [`GoogleError`] with an [`ErrorClass`]; retrying is the caller's business (`crate::retry`).
//!
//! Wire types are private (`wire`); callers get `crate::model::LiveService`, `crate::iam::Policy`
//! and project numbers. The read methods are here; the write methods apply needs
//! (`setIamPolicy`, `services.patch`, `operations.get`) fit the same `send`.
//!
//! Facts this module relies on (see `reference/google/*.json`):
//! * `services.list` is per region, pages with `pageToken`, and omits `nextPageToken` on the
//!   last page (an empty string is treated the same).
//! * `getIamPolicy` is a GET with `options.requestedPolicyVersion=3` on Cloud Run, a POST with
//!   `{"options":{"requestedPolicyVersion":3}}` on IAP.
//! * A 403 means "not allowed to see it", never "it is gone".

mod access;
pub mod auth;
pub mod quota;
mod wire;
mod write;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

pub use auth::{GcpAuth, StaticToken, TokenError, TokenSource};
pub use write::{Operation, ServiceUpdate};

use crate::endpoints::Endpoints;
use crate::iam::Policy;
use crate::model::{LiveService, ServiceId};
use crate::retry::{self, Classified, ErrorClass, Pace, Pacer, Rate};

/// Which Google API a call goes to (each has its own quota and pacer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    CloudRun,
    Iap,
    ResourceManager,
    ServiceUsage,
    /// IAM API v1 (`roles.get`), for the permissions a role carries.
    Iam,
    /// Cloud Logging API v2 (`entries.list`), for who changed a drifted resource.
    Logging,
}

impl Api {
    /// The `api` label of the call metrics.
    pub fn label(self) -> &'static str {
        match self {
            Api::CloudRun => "cloudrun",
            Api::Iap => "iap",
            Api::ResourceManager => "resourcemanager",
            Api::ServiceUsage => "serviceusage",
            Api::Iam => "iam",
            Api::Logging => "logging",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Api::CloudRun => "Cloud Run Admin API",
            Api::Iap => "IAP API",
            Api::ResourceManager => "Resource Manager API",
            Api::ServiceUsage => "Service Usage API",
            Api::Iam => "IAM API",
            Api::Logging => "Cloud Logging API",
        })
    }
}

/// A failed Google call: which API, which request (method and URL path, never a token), and
/// what went wrong, classified.
#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    #[error("{api} {method} {path}: {source}")]
    Token {
        api: Api,
        method: Method,
        path: String,
        #[source]
        source: TokenError,
    },
    #[error("{api} {method} {path}: no answer ({class}): {source}")]
    Transport {
        api: Api,
        method: Method,
        path: String,
        class: ErrorClass,
        #[source]
        source: reqwest::Error,
    },
    #[error("{api} {method} {path}: HTTP {code} {status}: {message}{hint}", hint = hint(*.class, *.api, .method, .path))]
    Api {
        api: Api,
        method: Method,
        path: String,
        class: ErrorClass,
        /// HTTP status code.
        code: u16,
        /// Google's canonical status, e.g. `PERMISSION_DENIED` (empty if the body had none).
        status: String,
        /// Google's message, verbatim.
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{api} {method} {path}: unexpected answer: {reason}")]
    Decode {
        api: Api,
        method: Method,
        path: String,
        reason: String,
    },
    #[error("{api} {method} {path}: {source}")]
    Body {
        api: Api,
        method: Method,
        path: String,
        #[source]
        source: crate::endpoints::BodyError,
    },
    #[error("{api} {method} {path}: not sent: runwarden is shutting down")]
    ShuttingDown {
        api: Api,
        method: Method,
        path: String,
    },
    /// A `getIamPolicy` answer without an etag: a failed read, never an empty policy.
    #[error(
        "{api} {method} {path}: the IAM policy answer has no etag, so it cannot be changed \
         safely (a write without the etag would overwrite every binding, whoever made it); \
         nothing is planned or written for this resource: check that nothing between runwarden \
         and Google drops fields (a proxy, a mock), then run again"
    )]
    NoEtag {
        api: Api,
        method: Method,
        path: String,
    },
    /// A `setIamPolicy` that would carry no etag; refused before anything is sent.
    #[error(
        "{api} {method} {path}: refusing to send setIamPolicy without the etag the change was \
         computed from (it would overwrite every binding unconditionally); nothing was written"
    )]
    WriteWithoutEtag {
        api: Api,
        method: Method,
        path: String,
    },
}

/// What to do about an error class, said once in the message. A 403 on a write names the
/// permission that write needs (deploy/iam/ grants each of them, and says why).
fn hint(class: ErrorClass, api: Api, method: &Method, path: &str) -> &'static str {
    if class == ErrorClass::PermissionDenied {
        if let Some(needed) = write_permission(api, method, path) {
            return needed;
        }
    }
    match (class, api) {
        (ErrorClass::PermissionDenied, Api::CloudRun) => {
            " (runwarden's identity needs run.services.list, run.services.get and \
             run.services.getIamPolicy here, e.g. roles/run.viewer plus roles/iam.securityReviewer)"
        }
        (ErrorClass::PermissionDenied, Api::Iap) => {
            " (runwarden's identity needs iap.webServices.getIamPolicy, e.g. roles/iap.admin)"
        }
        (ErrorClass::PermissionDenied, Api::ServiceUsage) => {
            " (runwarden's identity needs serviceusage.services.use to create the IAP service \
             agent, e.g. roles/serviceusage.serviceUsageConsumer)"
        }
        (ErrorClass::PermissionDenied, Api::ResourceManager) => {
            " (runwarden's identity needs resourcemanager.projects.get, e.g. roles/browser)"
        }
        (ErrorClass::Unauthenticated, _) => {
            " (the access token was refused; check the credentials)"
        }
        _ => "",
    }
}

/// The permission a write needs, as its 403 hint; `None` for a read.
///
/// * Cloud Run `services.setIamPolicy`: `run.services.setIamPolicy`.
/// * IAP `setIamPolicy` on `iap_web/...`: `iap.webServices.setIamPolicy`.
/// * Cloud Run `services.patch`: `run.services.update`, plus `iam.serviceAccounts.actAs` on the
///   service's runtime service account (every update deploys a revision that runs as it), plus
///   `run.services.create` when it turns the invoker IAM check back on
///   (`invokerIamDisabled: false`; Google's "Allowing public access" page,
///   https://cloud.google.com/run/docs/authenticating/public).
/// * Service Usage `generateServiceIdentity`: `serviceusage.services.use`.
fn write_permission(api: Api, method: &Method, path: &str) -> Option<&'static str> {
    let set_iam = *method == Method::POST && path.ends_with(":setIamPolicy");
    match api {
        Api::CloudRun if set_iam => Some(
            " (this write needs run.services.setIamPolicy on the service, e.g. \
             roles/run.admin or runwarden's applier role in deploy/iam/)",
        ),
        Api::Iap if set_iam => Some(
            " (this write needs iap.webServices.setIamPolicy on the service's IAP resource, \
             e.g. roles/iap.admin or runwarden's applier role in deploy/iam/)",
        ),
        Api::CloudRun if *method == Method::PATCH => Some(
            " (this write needs run.services.update on the service and iam.serviceAccounts.actAs \
             on its runtime service account, plus run.services.create to turn the invoker IAM \
             check back on; runwarden's applier role in deploy/iam/ has them)",
        ),
        _ => None,
    }
}

impl GoogleError {
    /// The URL path of the failed request.
    pub fn path(&self) -> &str {
        match self {
            GoogleError::Token { path, .. }
            | GoogleError::Transport { path, .. }
            | GoogleError::Api { path, .. }
            | GoogleError::Decode { path, .. }
            | GoogleError::NoEtag { path, .. }
            | GoogleError::WriteWithoutEtag { path, .. }
            | GoogleError::Body { path, .. }
            | GoogleError::ShuttingDown { path, .. } => path,
        }
    }

    /// The HTTP status code, when the API answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            GoogleError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl Classified for GoogleError {
    fn class(&self) -> ErrorClass {
        match self {
            // gcp_auth already tried the token endpoint 5 times; more rounds, one per call and
            // retry, only hammer a failing endpoint. The pass fails; the next pass asks again.
            GoogleError::Token { .. } => ErrorClass::Fatal,
            GoogleError::Transport { class, .. } | GoogleError::Api { class, .. } => *class,
            // A body that broke off is a transport failure; one too large will not shrink.
            GoogleError::Body { source: crate::endpoints::BodyError::Transport(_), .. } => {
                ErrorClass::Transient
            }
            GoogleError::Decode { .. }
            | GoogleError::NoEtag { .. }
            | GoogleError::WriteWithoutEtag { .. }
            | GoogleError::Body { .. }
            | GoogleError::ShuttingDown { .. } => ErrorClass::Fatal,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            GoogleError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Classifies a Google error answer: the canonical status first, the HTTP code when the body
/// has none.
///
/// HTTP 412 (a stale etag or precondition, whatever canonical status the body carries) is a
/// conflict, like 409 ABORTED: re-read, re-plan, write again. Google's Terraform provider does
/// the same in its IAM read-modify-write loop (`IsConflictError`: `e.Code == 409 || e.Code ==
/// 412`, hashicorp/terraform-provider-google, tpgresource/utils.go). A 400 FAILED_PRECONDITION
/// is not an etag mismatch (Google answers a stale IAM etag with 409 ABORTED; a 400 precondition
/// is about the resource's state) and stays fatal.
fn classify(code: u16, status: &str, reasons: &[&str]) -> ErrorClass {
    if code == 412 {
        return ErrorClass::Conflict;
    }
    let rate_limited = reasons
        .iter()
        .any(|r| matches!(*r, "RATE_LIMIT_EXCEEDED" | "rateLimitExceeded"));
    match status {
        "NOT_FOUND" => ErrorClass::NotFound,
        // Some Google APIs still answer quota exhaustion with 403 rateLimitExceeded.
        "PERMISSION_DENIED" if rate_limited => ErrorClass::Quota,
        "PERMISSION_DENIED" => ErrorClass::PermissionDenied,
        "ABORTED" => ErrorClass::Conflict,
        "RESOURCE_EXHAUSTED" => ErrorClass::Quota,
        "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED" => ErrorClass::Transient,
        "UNAUTHENTICATED" => ErrorClass::Unauthenticated,
        "" => match code {
            403 if rate_limited => ErrorClass::Quota,
            _ => ErrorClass::from_status(code),
        },
        // INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, UNIMPLEMENTED, ...
        _ => ErrorClass::Fatal,
    }
}

/// The largest answer runwarden reads from each kind of call; a larger one fails the call
/// (not retried) instead of being buffered. Each is far above what the API can legitimately
/// return, and far below what would hurt.
pub mod body_limits {
    /// An IAM policy holds at most 1,500 principals (Google's documented limit) of at most a
    /// few hundred bytes each, plus conditions: well under 1 MiB.
    pub const IAM_POLICY: usize = 2 << 20;
    /// One service (`services.get`), a `services.patch` operation or an `operations.wait`
    /// answer: a service resource with its revision template is tens of KiB.
    pub const SERVICE: usize = 4 << 20;
    /// One `services.list` page: runwarden asks for at most 500 services a page (Google's
    /// maximum `pageSize` is 1000); at 64 KiB a service that is 32 MiB.
    pub const SERVICE_PAGE: usize = 64 << 20;
    /// A Resource Manager project.
    pub const PROJECT: usize = 1 << 20;
    /// One IAM role: `roles/owner` lists some thousands of permissions of < 100 bytes each.
    pub const ROLE: usize = 4 << 20;
    /// One page of at most 20 audit log entries.
    pub const LOG_PAGE: usize = 8 << 20;
}

/// Limits of a [`GoogleClient`].
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// Requests in flight at once, across all Google APIs.
    pub concurrency: usize,
    /// Cloud Run Admin API read requests. Google counts them against the quota "Read requests
    /// per minute per region" of the quota project (cloud.google.com/run/quotas). By default
    /// ([`Pace::Probe`]) the limit is learned from Service Usage (see `quota_project`), else
    /// probed for from this start; a [`Pace::Limit`] (a Settings pin) is used as it is.
    pub cloud_run_read_rate: Pace,
    /// Whether `cloud_run_read_rate` applies per region (as Google counts it) or to all
    /// regions together (a simulator or proxy with one global limit).
    pub cloud_run_rate_per_region: bool,
    /// Cloud Run Admin API and IAP write requests (setIamPolicy, services.patch), all together.
    /// Learned like reads (Cloud Run's "Write requests per minute per region"; the write pacer
    /// is one for all regions, so the default bucket applies), else probed from this start.
    pub write_rate: Pace,
    /// IAP API requests; learned like Cloud Run reads (IAP's read request metric).
    pub iap_rate: Pace,
    /// Resource Manager, IAM, Logging and Service Usage requests (a few per pass): not learned.
    pub resource_manager_rate: Pace,
    /// The project whose quotas are read (once per process, at the first paced call) to learn
    /// the limits of every [`Pace::Probe`] above; `None` reads none (the pacers probe).
    /// Needs `serviceusage.quotas.get`; without it the pacers probe.
    pub quota_project: Option<String>,
    /// `pageSize` for `services.list` (`None` = the API's default).
    pub list_page_size: Option<u32>,
    /// The longest pause a server's 429 imposes on every caller of one API (a longer wait is
    /// not honoured; the call that received it fails, see `RetryPolicy::max_server_wait`).
    pub max_pause: Duration,
    /// Cancelled at shutdown: every wait for a pacer slot or a request slot ends, and the call
    /// fails as not sent.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Where every call is counted (`runwarden_api_calls_total`); the Auth0 client shares it.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Default for GoogleConfig {
    fn default() -> Self {
        GoogleConfig {
            concurrency: 16,
            // Where the limit cannot be learned: start below the usual default quotas
            // (Cloud Run reads 1,000/min per region, writes 180/min... as the quotas page
            // lists them; see README › Performance) and probe upward.
            cloud_run_read_rate: Pace::Probe(Rate::per_minute(900)),
            cloud_run_rate_per_region: true,
            write_rate: Pace::Probe(Rate::per_minute(120)),
            iap_rate: Pace::Probe(Rate::per_minute(900)),
            resource_manager_rate: Pace::Limit(Rate::per_minute(600)),
            quota_project: None,
            list_page_size: Some(500),
            max_pause: retry::DEFAULT_MAX_SERVER_WAIT,
            shutdown: tokio_util::sync::CancellationToken::new(),
            metrics: std::sync::Arc::default(),
        }
    }
}

/// One page of `services.list`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePage {
    /// The page's services, converted (IAM not read).
    pub services: Vec<LiveService>,
    /// `None` on the last page.
    pub next_page_token: Option<String>,
}

/// What one call is, for pacing and for its errors.
#[derive(Clone, Copy)]
struct Call<'a> {
    api: Api,
    write: bool,
    method: &'a Method,
    path: &'a str,
}

/// Which pacer a call waits for: each has its own quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PacerKind {
    /// Cloud Run reads, one pacer per region.
    RunReads,
    /// Cloud Run and IAP writes, all together.
    Writes,
    Iap,
    /// Resource Manager, IAM, Logging, Service Usage.
    Other,
}

impl PacerKind {
    fn name(self) -> &'static str {
        match self {
            PacerKind::RunReads => "cloud-run",
            PacerKind::Writes => "google-writes",
            PacerKind::Iap => "iap",
            PacerKind::Other => "resource-manager",
        }
    }
}

/// The Google API client (cheap to clone: everything is shared).
#[derive(Clone)]
pub struct GoogleClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    endpoints: Endpoints,
    permits: Semaphore,
    config: GoogleConfig,
    /// Pacers by kind and region (Cloud Run reads and writes; "" for the others and when the
    /// rate is global), created on first use with the limit learned by then.
    pacers: std::sync::Mutex<std::collections::HashMap<(PacerKind, String), Arc<Pacer>>>,
    /// The quotas read from Service Usage, once per client (one client per process).
    learned: tokio::sync::OnceCell<quota::Learned>,
}

impl fmt::Debug for GoogleClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleClient")
            .field("endpoints", &self.inner.endpoints)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What an error answer says: Google's status, its message, the `ErrorInfo` reasons and a
/// `RetryInfo` delay; for a body that is not Google's error JSON, its first 300 characters (or
/// where a redirect points).
fn error_parts(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    bytes: &[u8],
) -> (String, String, Vec<String>, Option<Duration>) {
    match serde_json::from_slice::<wire::ErrorBody>(bytes) {
        Ok(body) => {
            let reasons: Vec<String> = body.error.reasons().map(String::from).collect();
            let wait = body.error.retry_delay();
            (body.error.status, body.error.message, reasons, wait)
        }
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            let mut text: String = text.chars().take(300).collect::<String>().trim().to_string();
            if let Some(to) = status.is_redirection().then(|| headers.get("location")).flatten() {
                text = format!("a redirect to {:?}, which runwarden does not follow", String::from_utf8_lossy(to.as_bytes()));
            }
            (String::new(), text, vec![], None)
        }
    }
}

impl GoogleClient {
    /// A client on the shared HTTP client; no call is made until the first request.
    pub fn new(
        http: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
        endpoints: Endpoints,
        config: GoogleConfig,
    ) -> GoogleClient {
        GoogleClient {
            inner: Arc::new(Inner {
                http,
                tokens,
                permits: Semaphore::new(config.concurrency.max(1)),
                pacers: std::sync::Mutex::new(std::collections::HashMap::new()),
                learned: tokio::sync::OnceCell::new(),
                endpoints,
                config,
            }),
        }
    }

    /// The limits this client was built with.
    pub fn config(&self) -> &GoogleConfig {
        &self.inner.config
    }

    /// One page of `services.list` for (project, region).
    pub async fn list_services_page(
        &self,
        project: &str,
        region: &str,
        page_token: Option<&str>,
    ) -> Result<ServicePage, GoogleError> {
        let mut url = self.url(
            Api::CloudRun,
            &["v2", "projects", project, "locations", region, "services"],
        );
        {
            let mut q = url.query_pairs_mut();
            if let Some(size) = self.inner.config.list_page_size {
                q.append_pair("pageSize", &size.to_string());
            }
            if let Some(token) = page_token {
                q.append_pair("pageToken", token);
            }
        }
        let page: wire::ListServicesResponse = self
            .send(Api::CloudRun, Method::GET, url.clone(), None, body_limits::SERVICE_PAGE)
            .await?;
        if !page.unreachable.is_empty() {
            // Only global ("-") listings report unreachable regions; runwarden never asks for
            // one, so an answer that has them is incomplete and must not be taken as the list.
            return Err(self.decode_error(
                Api::CloudRun,
                Method::GET,
                &url,
                format!(
                    "the listing reports unreachable locations {:?}",
                    page.unreachable
                ),
            ));
        }
        let services = page
            .services
            .into_iter()
            .map(|s| wire::service(project, region, s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| self.decode_error(Api::CloudRun, Method::GET, &url, reason))?;
        Ok(ServicePage {
            services,
            next_page_token: page.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    /// `services.get`.
    pub async fn get_service(&self, id: &ServiceId) -> Result<LiveService, GoogleError> {
        let url = self.service_url(id, None);
        let s: wire::Service = self
            .send(Api::CloudRun, Method::GET, url.clone(), None, body_limits::SERVICE)
            .await?;
        wire::service(&id.project, &id.region, s)
            .map_err(|reason| self.decode_error(Api::CloudRun, Method::GET, &url, reason))
    }

    /// The service's IAM policy at version 3 (`services.getIamPolicy`).
    pub async fn get_iam_policy(&self, id: &ServiceId) -> Result<Policy, GoogleError> {
        let mut url = self.service_url(id, Some(":getIamPolicy"));
        url.query_pairs_mut()
            .append_pair("options.requestedPolicyVersion", "3");
        let answer: serde_json::Value = self
            .send(Api::CloudRun, Method::GET, url.clone(), None, body_limits::IAM_POLICY)
            .await?;
        wire::read_policy(answer).map_err(|e| self.policy_error(Api::CloudRun, Method::GET, &url, e))
    }

    /// The IAP resource's IAM policy at version 3 (IAP `getIamPolicy`, a POST).
    pub async fn get_iap_iam_policy(
        &self,
        id: &ServiceId,
        project_number: u64,
    ) -> Result<Policy, GoogleError> {
        let number = project_number.to_string();
        let region = format!("cloud_run-{}", id.region);
        let last = format!("{}:getIamPolicy", id.name);
        let url = self.url(
            Api::Iap,
            &[
                "v1", "projects", &number, "iap_web", &region, "services", &last,
            ],
        );
        let body = serde_json::json!({"options": {"requestedPolicyVersion": 3}});
        let answer: serde_json::Value = self
            .send(Api::Iap, Method::POST, url.clone(), Some(body), body_limits::IAM_POLICY)
            .await?;
        wire::read_policy(answer).map_err(|e| self.policy_error(Api::Iap, Method::POST, &url, e))
    }

    /// The project's number (Resource Manager `projects.get`).
    pub async fn get_project_number(&self, project: &str) -> Result<u64, GoogleError> {
        Ok(self.get_project(project).await?.0)
    }

    /// The project's number and parent (`folders/N`, `organizations/N`, or none; `Err(why)` for
    /// a parent of any other form, which does not spoil the number), from one Resource Manager
    /// `projects.get` (cloudresourcemanager.v3.json `Project.name`, `.parent`): the reader needs
    /// the number, effective access the parent, and the project is read once.
    pub async fn get_project(&self, project: &str) -> Result<(u64, Result<Option<String>, String>), GoogleError> {
        let url = self.url(Api::ResourceManager, &["v3", "projects", project]);
        let p: wire::Project = self
            .send(Api::ResourceManager, Method::GET, url.clone(), None, body_limits::PROJECT)
            .await?;
        let decode = |reason| self.decode_error(Api::ResourceManager, Method::GET, &url, reason);
        let number = wire::project_number(&p).map_err(decode)?;
        let parent = match p.parent {
            Some(parent) if !access::is_ancestor_name(&parent) => {
                Err(format!("parent {parent:?} is neither folders/N nor organizations/N"))
            }
            parent => Ok(parent),
        };
        Ok((number, parent))
    }

    /// `{base}/v2/projects/P/locations/R/services/S{suffix}`.
    fn service_url(&self, id: &ServiceId, suffix: Option<&str>) -> Url {
        let last = format!("{}{}", id.name, suffix.unwrap_or(""));
        self.url(
            Api::CloudRun,
            &[
                "v2",
                "projects",
                &id.project,
                "locations",
                &id.region,
                "services",
                &last,
            ],
        )
    }

    /// The API's base URL with `segments` appended, each percent-encoded (a name can never
    /// smuggle in a `/`, `?` or `#`).
    pub fn url(&self, api: Api, segments: &[&str]) -> Url {
        let base = match api {
            Api::CloudRun => &self.inner.endpoints.cloud_run,
            Api::Iap => &self.inner.endpoints.iap,
            Api::ResourceManager => &self.inner.endpoints.resource_manager,
            Api::ServiceUsage => &self.inner.endpoints.service_usage,
            Api::Iam => &self.inner.endpoints.iam,
            Api::Logging => &self.inner.endpoints.logging,
        };
        crate::endpoints::join_segments(base, segments)
    }

    /// The pacer for a call: writes share one; reads per API, and Cloud Run reads per region
    /// (taken from the URL path `.../locations/REGION/...`) unless the rate is configured as
    /// global. Created on first use: with the limit learned by then (see [`Self::learn`]),
    /// else the configured pace.
    fn pacer_for(&self, api: Api, write: bool, path: &str) -> Arc<Pacer> {
        let config = &self.inner.config;
        let kind = match api {
            _ if write => PacerKind::Writes,
            Api::CloudRun => PacerKind::RunReads,
            Api::Iap => PacerKind::Iap,
            // Role reads are few (one per distinct role per pass); Logging reads are one per
            // drifted resource (the Logging read quota is 60/min).
            Api::ResourceManager | Api::ServiceUsage | Api::Iam | Api::Logging => PacerKind::Other,
        };
        // Cloud Run counts reads and writes per region; IAP's writes share the "" pacer.
        let regional = kind == PacerKind::RunReads || (kind == PacerKind::Writes && api == Api::CloudRun);
        let region = if regional && config.cloud_run_rate_per_region {
            let mut segments = path.split('/');
            segments.find(|s| *s == "locations");
            segments.next().unwrap_or("").to_string()
        } else {
            String::new()
        };
        let mut pacers = self.inner.pacers.lock().expect("pacer map lock poisoned");
        pacers
            .entry((kind, region))
            .or_insert_with_key(|(kind, region)| {
                let pace = self.pace(*kind, region);
                tracing::debug!(api = kind.name(), region = %region, pace = ?pace, "pacing");
                Arc::new(Pacer::with_limits(kind.name(), pace, config.max_pause, config.shutdown.clone()))
            })
            .clone()
    }

    /// The current rate of every pacer made so far, as `(api, region, requests per second)`
    /// sorted (`None`: not paced): what a pass learned and settled on, for logs and tests.
    pub fn pacer_rates(&self) -> Vec<(&'static str, String, Option<f64>)> {
        let pacers = self.inner.pacers.lock().expect("pacer map lock poisoned");
        let mut rates: Vec<_> =
            pacers.iter().map(|((kind, region), pacer)| (kind.name(), region.clone(), pacer.rate())).collect();
        rates.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        rates
    }

    /// The pace of a new pacer: a configured pin or [`Pace::Off`] as it is; a probe replaced
    /// by the limit learned for it, if any.
    fn pace(&self, kind: PacerKind, region: &str) -> Pace {
        let config = &self.inner.config;
        let (configured, learned) = match kind {
            PacerKind::RunReads => (config.cloud_run_read_rate, self.inner.learned.get().map(|l| &l.run_reads)),
            PacerKind::Writes => (config.write_rate, self.inner.learned.get().map(|l| &l.run_writes)),
            PacerKind::Iap => (config.iap_rate, self.inner.learned.get().map(|l| &l.iap_reads)),
            PacerKind::Other => (config.resource_manager_rate, None),
        };
        match (configured, learned.and_then(|l| l.get(region))) {
            (Pace::Probe(_), Some(limit)) => Pace::Limit(limit),
            (pace, _) => pace,
        }
    }

    /// Whether a call waits for the quotas to be learned first: a paced read or write of
    /// Cloud Run or IAP whose limit is not pinned, when a quota project is configured.
    fn must_learn(&self, api: Api, write: bool) -> bool {
        let config = &self.inner.config;
        let pace = match api {
            _ if write => config.write_rate,
            Api::CloudRun => config.cloud_run_read_rate,
            Api::Iap => config.iap_rate,
            _ => return false,
        };
        config.quota_project.is_some() && matches!(pace, Pace::Probe(_))
    }

    /// The quotas of the quota project, read once (the first caller reads, the others wait
    /// for it). Whatever goes wrong, the answer is "nothing learned" and the pacers probe: a
    /// credential without `serviceusage.quotas.get` must not fail the pass.
    async fn learn(&self) -> &quota::Learned {
        self.inner
            .learned
            .get_or_init(|| async {
                let Some(project) = self.inner.config.quota_project.clone() else {
                    return quota::Learned::default();
                };
                let mut learned = quota::Learned::default();
                let failed = |service: &str, e: GoogleError| tracing::warn!(project = %project, service, error = %e,
                    "could not read the request quotas; pacing starts at a conservative rate and probes upward \
                     (grant roles/serviceusage.serviceUsageViewer on the quota project, or pin the rates in Settings `pacing`)");
                match self.consumer_quotas(&project, "run.googleapis.com").await {
                    Ok((reads, writes)) => (learned.run_reads, learned.run_writes) = (reads, writes),
                    Err(e) => failed("run.googleapis.com", e),
                }
                match self.consumer_quotas(&project, "iap.googleapis.com").await {
                    Ok((reads, _)) => learned.iap_reads = reads,
                    Err(e) => failed("iap.googleapis.com", e),
                }
                tracing::info!(project = %project, learned = ?learned, "request quotas");
                learned
            })
            .await
    }

    /// `services.consumerQuotaMetrics.list` (v1beta1, view BASIC) of `service` on `project`,
    /// every page (at most 20), folded into (read, write) limits.
    pub async fn consumer_quotas(
        &self,
        project: &str,
        service: &str,
    ) -> Result<(quota::Limits, quota::Limits), GoogleError> {
        let (mut reads, mut writes) = (quota::Limits::default(), quota::Limits::default());
        let mut token: Option<String> = None;
        for _ in 0..20 {
            let mut url = self.url(
                Api::ServiceUsage,
                &["v1beta1", "projects", project, "services", service, "consumerQuotaMetrics"],
            );
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("view", "BASIC");
                if let Some(t) = &token {
                    q.append_pair("pageToken", t);
                }
            }
            // Not `send`: that waits for the quotas to be learned, which is this call.
            let page: quota::ListConsumerQuotaMetrics = self
                .send_paced(Api::ServiceUsage, false, Method::GET, url, None, body_limits::SERVICE_PAGE)
                .await?;
            quota::fold(&page.metrics, &mut reads, &mut writes);
            token = page.next_page_token.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        Ok((reads, writes))
    }

    fn policy_error(&self, api: Api, method: Method, url: &Url, e: wire::PolicyAnswer) -> GoogleError {
        match e {
            wire::PolicyAnswer::NoEtag => GoogleError::NoEtag {
                api,
                method,
                path: url.path().to_string(),
            },
            wire::PolicyAnswer::Invalid(reason) => self.decode_error(api, method, url, reason),
        }
    }

    fn decode_error(&self, api: Api, method: Method, url: &Url, reason: String) -> GoogleError {
        GoogleError::Decode {
            api,
            method,
            path: url.path().to_string(),
            reason,
        }
    }

    /// Sends one request and decodes a JSON answer, or classifies the failure. Exactly one
    /// attempt: the token is fetched first (outside the concurrency bound, since gcp_auth may
    /// go to the network), then the request waits for its API's pacer and for a slot in
    /// flight. A 429 with a server-requested wait pauses that API's pacer for every caller. An
    /// answer larger than `limit` bytes fails the call (see [`body_limits`]).
    pub async fn send<T: DeserializeOwned>(
        &self,
        api: Api,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        limit: usize,
    ) -> Result<T, GoogleError> {
        self.learn_first(api, false, &method, &url).await?;
        self.send_paced(api, false, method, url, body, limit).await
    }

    /// [`GoogleClient::send`] for a write: paced by the write quota instead of the read quota.
    pub async fn send_write<T: DeserializeOwned>(
        &self,
        api: Api,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        limit: usize,
    ) -> Result<T, GoogleError> {
        self.learn_first(api, true, &method, &url).await?;
        self.send_paced(api, true, method, url, body, limit).await
    }

    /// Before the first paced call whose limit is to be learned: the quotas are read (once;
    /// concurrent callers wait for that one read), unless shutdown comes first.
    async fn learn_first(&self, api: Api, write: bool, method: &Method, url: &Url) -> Result<(), GoogleError> {
        if !self.must_learn(api, write) || self.inner.learned.initialized() {
            return Ok(());
        }
        tokio::select! {
            _ = self.learn() => Ok(()),
            _ = self.inner.config.shutdown.cancelled() => Err(GoogleError::ShuttingDown {
                api,
                method: method.clone(),
                path: url.path().to_string(),
            }),
        }
    }

    /// Waits for the call's pacer slot, then for a slot in flight. In this order: a caller
    /// waiting for its region's (or API's) next slot holds no slot in flight, so requests to
    /// other regions and APIs are not blocked behind it (head-of-line blocking would cut the
    /// rate of a per-region pacer to that of one region).
    async fn admit(
        &self,
        api: Api,
        write: bool,
        path: &str,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, retry::ShuttingDown> {
        self.pacer_for(api, write, path).acquire().await?;
        tokio::select! {
            permit = self.inner.permits.acquire() => Ok(permit.expect("semaphore never closed")),
            _ = self.inner.config.shutdown.cancelled() => Err(retry::ShuttingDown),
        }
    }

    /// One request under its pacer and the in-flight bound: the answer's status, headers and
    /// body (at most `limit` bytes), with the call counted in the metrics.
    async fn exchange(
        &self,
        call: &Call<'_>,
        url: Url,
        token: &str,
        body: Option<serde_json::Value>,
        limit: usize,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>), GoogleError> {
        let Call { api, write, method, path } = *call;
        let _permit = self
            .admit(api, write, path)
            .await
            .map_err(|_| GoogleError::ShuttingDown { api, method: method.clone(), path: path.to_string() })?;
        let started = StdInstant::now();
        let mut request = self.inner.http.request(method.clone(), url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|source| {
            self.inner.config.metrics.record_api_call(api.label(), 0);
            GoogleError::Transport {
                api,
                method: method.clone(),
                path: path.to_string(),
                class: ErrorClass::from_transport(&source),
                source,
            }
        })?;
        let status = response.status();
        self.inner.config.metrics.record_api_call(api.label(), status.as_u16());
        let headers = response.headers().clone();
        let bytes = crate::endpoints::read_body(response, limit).await.map_err(|source| {
            GoogleError::Body { api, method: method.clone(), path: path.to_string(), source }
        })?;
        tracing::debug!(api = %api, method = %method, path = %path, status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64, "google call");
        Ok((status, headers, bytes))
    }

    async fn send_paced<T: DeserializeOwned>(
        &self,
        api: Api,
        write: bool,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        limit: usize,
    ) -> Result<T, GoogleError> {
        let path = url.path().to_string();
        let token = self
            .inner
            .tokens
            .token()
            .await
            .map_err(|source| GoogleError::Token {
                api,
                method: method.clone(),
                path: path.clone(),
                source,
            })?;
        let call = Call { api, write, method: &method, path: &path };
        let (status, headers, bytes) = self.exchange(&call, url, &token, body, limit).await?;
        if status.is_success() {
            self.pacer_for(api, write, &path).succeeded();
            return serde_json::from_slice(&bytes).map_err(|e| GoogleError::Decode {
                api,
                method,
                path,
                reason: format!("invalid JSON for this call: {e}"),
            });
        }
        let code = status.as_u16();
        let (gstatus, message, reasons, detail_wait) = error_parts(status, &headers, &bytes);
        let reasons: Vec<&str> = reasons.iter().map(String::as_str).collect();
        let class = classify(code, &gstatus, &reasons);
        if class == ErrorClass::Unauthenticated {
            self.inner.tokens.invalidate(&token).await;
        }
        let retry_after = retry::server_wait(&headers, SystemTime::now()).or(detail_wait);
        let pacer = self.pacer_for(api, write, &path);
        if class == ErrorClass::Quota {
            pacer.throttled(retry_after);
        } else {
            // Any other answer is not a sign of going too fast.
            pacer.succeeded();
        }
        Err(GoogleError::Api {
            api,
            method,
            path,
            class,
            code,
            status: gstatus,
            message,
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_403_on_each_write_names_the_permission_that_write_needs() {
        let denied = |api, method: Method, path: &str| {
            GoogleError::Api {
                api,
                method,
                path: path.into(),
                class: ErrorClass::PermissionDenied,
                code: 403,
                status: "PERMISSION_DENIED".into(),
                message: "denied".into(),
                retry_after: None,
            }
            .to_string()
        };
        let patch = denied(Api::CloudRun, Method::PATCH, "/v2/projects/p/locations/r/services/s");
        for p in ["run.services.update", "iam.serviceAccounts.actAs", "run.services.create"] {
            assert!(patch.contains(p), "{patch}");
        }
        let set = denied(Api::CloudRun, Method::POST, "/v2/projects/p/locations/r/services/s:setIamPolicy");
        assert!(set.contains("run.services.setIamPolicy") && !set.contains("run.services.list"), "{set}");
        let iap = denied(Api::Iap, Method::POST, "/v1/projects/1/iap_web/cloud_run-r/services/s:setIamPolicy");
        assert!(iap.contains("iap.webServices.setIamPolicy"), "{iap}");
        let agent = denied(Api::ServiceUsage, Method::POST, "/v1beta1/projects/1/services/iap.googleapis.com:generateServiceIdentity");
        assert!(agent.contains("serviceusage.services.use"), "{agent}");
        let read = denied(Api::CloudRun, Method::GET, "/v2/projects/p/locations/r/services/s:getIamPolicy");
        assert!(read.contains("run.services.getIamPolicy"), "{read}");
    }

    #[test]
    fn classifies_google_error_answers() {
        for (code, status, reasons, class) in [
            (404, "NOT_FOUND", &[][..], ErrorClass::NotFound),
            (403, "PERMISSION_DENIED", &[], ErrorClass::PermissionDenied),
            (
                403,
                "PERMISSION_DENIED",
                &["RATE_LIMIT_EXCEEDED"],
                ErrorClass::Quota,
            ),
            (403, "", &["rateLimitExceeded"], ErrorClass::Quota),
            (403, "", &[], ErrorClass::PermissionDenied),
            (409, "ABORTED", &[], ErrorClass::Conflict),
            (409, "ALREADY_EXISTS", &[], ErrorClass::Fatal),
            (429, "RESOURCE_EXHAUSTED", &[], ErrorClass::Quota),
            (503, "UNAVAILABLE", &[], ErrorClass::Transient),
            (500, "INTERNAL", &[], ErrorClass::Transient),
            (504, "DEADLINE_EXCEEDED", &[], ErrorClass::Transient),
            (502, "", &[], ErrorClass::Transient),
            (401, "UNAUTHENTICATED", &[], ErrorClass::Unauthenticated),
            (400, "INVALID_ARGUMENT", &[], ErrorClass::Fatal),
            (400, "FAILED_PRECONDITION", &[], ErrorClass::Fatal),
            (412, "FAILED_PRECONDITION", &[], ErrorClass::Conflict),
            (412, "", &[], ErrorClass::Conflict),
        ] {
            assert_eq!(
                classify(code, status, reasons),
                class,
                "{code} {status} {reasons:?}"
            );
        }
    }

    /// A client with a fixed token, for tests that never reach a server.
    fn test_client(endpoints: Endpoints, config: GoogleConfig) -> GoogleClient {
        GoogleClient::new(reqwest::Client::new(), Arc::new(StaticToken("t".into())), endpoints, config)
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait_for_the_quota_read_and_the_call_is_not_sent() {
        // A Service Usage that accepts the connection and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = crate::endpoints::parse_base_url(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let config = GoogleConfig { quota_project: Some("p".into()), shutdown: stop.clone(), ..GoogleConfig::default() };
        let client = test_client(Endpoints::single(base), config);
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            canceller.cancel();
        });
        let t0 = std::time::Instant::now();
        let err = client.list_services_page("p", "r", None).await.unwrap_err();
        assert!(matches!(err, GoogleError::ShuttingDown { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
        held.abort();
    }

    #[test]
    fn urls_are_built_from_encoded_segments_on_the_base() {
        let base = crate::endpoints::parse_base_url("http://127.0.0.1:9/prefix").unwrap();
        let client = test_client(Endpoints::single(base), GoogleConfig::default());
        let id = ServiceId::new("acme-prod", "europe-west1", "billing-api");
        assert_eq!(
            client.service_url(&id, Some(":getIamPolicy")).as_str(),
            "http://127.0.0.1:9/prefix/v2/projects/acme-prod/locations/europe-west1/services/billing-api:getIamPolicy"
        );
        let evil = ServiceId::new("p", "r", "x/../../y?z#w");
        assert_eq!(
            client.service_url(&evil, None).path(),
            "/prefix/v2/projects/p/locations/r/services/x%2F..%2F..%2Fy%3Fz%23w"
        );
        let prod = GoogleClient::new(
            reqwest::Client::new(),
            Arc::new(StaticToken("t".into())),
            Endpoints::production(),
            GoogleConfig::default(),
        );
        assert_eq!(
            prod.url(Api::ResourceManager, &["v3", "projects", "acme-prod"])
                .as_str(),
            "https://cloudresourcemanager.googleapis.com/v3/projects/acme-prod"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cloud_run_reads_are_paced_per_region_unless_the_rate_is_global() {
        let client = |per_region| {
            let config = GoogleConfig {
                cloud_run_read_rate: Pace::Limit(Rate::per_second(1)),
                cloud_run_rate_per_region: per_region,
                ..GoogleConfig::default()
            };
            GoogleClient::new(
                reqwest::Client::new(),
                Arc::new(StaticToken("t".into())),
                Endpoints::production(),
                config,
            )
        };
        let paths = [
            "/v2/projects/p/locations/europe-west1/services",
            "/v2/projects/p/locations/us-central1/services/s:getIamPolicy",
            "/v2/projects/q/locations/europe-west1/services/s",
        ];
        // (per region?, seconds until the three calls may all start)
        for (per_region, want) in [(true, 1), (false, 2)] {
            let c = client(per_region);
            let t0 = tokio::time::Instant::now();
            for path in paths {
                c.pacer_for(Api::CloudRun, false, path).acquire().await.unwrap();
            }
            assert_eq!(
                t0.elapsed(),
                Duration::from_secs(want),
                "per region: {per_region}"
            );
        }
    }

    /// Region A's callers waiting for A's next slot must not hold the slots in flight that
    /// region B's callers could use now: with two regions at 1/s each and two slots in flight,
    /// four calls per region are all admitted within 3 s (at 0, 1, 2 and 3 s in each region),
    /// not 7 s (one region after the other).
    #[tokio::test(start_paused = true)]
    async fn a_caller_waiting_for_its_regions_pacer_does_not_block_other_regions() {
        let config = GoogleConfig {
            concurrency: 2,
            cloud_run_read_rate: Pace::Limit(Rate::per_second(1)),
            cloud_run_rate_per_region: true,
            ..GoogleConfig::default()
        };
        let client = test_client(Endpoints::production(), config);
        let t0 = tokio::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        // Region A's calls are queued first, as when its listing arrives first.
        for region in ["region-a", "region-b"] {
            for _ in 0..4 {
                let client = client.clone();
                let path = format!("/v2/projects/p/locations/{region}/services/s:getIamPolicy");
                calls.spawn(async move {
                    let _permit = client.admit(Api::CloudRun, false, &path).await.unwrap();
                    // The request itself takes a moment.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    t0.elapsed()
                });
                tokio::task::yield_now().await;
            }
        }
        let mut last = Duration::ZERO;
        while let Some(done) = calls.join_next().await {
            last = last.max(done.unwrap());
        }
        assert!(last < Duration::from_millis(3100), "the last call finished after {last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait_for_a_pacer_slot_and_the_call_is_not_sent() {
        let stop = tokio_util::sync::CancellationToken::new();
        let config = GoogleConfig {
            cloud_run_read_rate: Pace::Limit(Rate::per_minute(1)),
            shutdown: stop.clone(),
            ..GoogleConfig::default()
        };
        let client = test_client(Endpoints::production(), config);
        let path = "/v2/projects/p/locations/r/services";
        drop(client.admit(Api::CloudRun, false, path).await.unwrap());
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let t0 = tokio::time::Instant::now();
        // The next slot is a minute away; shutdown after 1 s ends the wait.
        let err = client
            .list_services_page("p", "r", None)
            .await
            .unwrap_err();
        assert!(matches!(err, GoogleError::ShuttingDown { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Fatal);
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
    }
}
