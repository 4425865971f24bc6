//! The Auth0 Management API client: token, roles, role members, groups, users.
//!
//! * The Management API token comes from `POST /oauth/token` (client credentials, audience
//!   `https://DOMAIN/api/v2/` — always the Settings' domain, even when the calls go to an
//!   override base URL). It is cached, refreshed shortly before it expires, and dropped when a
//!   call answers 401 so the (single) retry fetches a new one.
//! * The client secret is read from the environment variable the Settings name, when the first
//!   token is needed; it lives in a [`Secret`] whose Debug and Display print `<redacted>`.
//! * Each call makes one attempt (retries are `crate::retry`'s job), waits for a slot in flight
//!   and for the pacer, and feeds the answer's `x-ratelimit-remaining` / `x-ratelimit-reset`
//!   back into the pacer, so the client slows down before Auth0 starts answering 429.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{self, GroupMemberRef, GroupRef, MemberRef, OrganizationRef, RoleRef, UserRef};
use crate::retry::{self, Classified, ErrorClass, Pace, Pacer, Rate};

/// The Management API scopes runwarden's client needs: the one list (the example Settings, the
/// README, the token-refused and 403 hints quote it; a unit test checks the quotes). Sources:
/// the reference OpenAPI `security` of GET `/roles` (read:roles), `/roles/{id}/users`
/// (read:role_members), `/users/{id}` (read:users), `/resource-servers`
/// (read:resource_servers), `/keys/signing` (read:signing_keys), `/organizations`
/// (read:organizations); the group reads postdate it and take the group scopes of
/// auth0-python's `OauthScope` (read:group_roles for a role's groups, read:group_members for a
/// group's members), needed unless Settings say `groups: none`. read:organizations is optional:
/// without it the audit says whether roles are held through organizations is unknown.
pub const MANAGEMENT_SCOPES: &str = "read:roles read:role_members read:users read:group_roles read:group_members read:resource_servers read:signing_keys read:organizations";

/// A secret string. Never printed: Debug and Display show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the client secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// The environment variable of this name (`Settings.auth0.clientSecretEnv`).
    Env(String),
    /// A value handed over directly (the embedded simulator).
    Value(Secret),
}

impl SecretSource {
    /// The secret, or the name of the environment variable that is unset or empty.
    fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretSource::Value(s) => Ok(s.clone()),
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                _ => Err(var.clone()),
            },
        }
    }
}

/// How to reach one Auth0 tenant, and how hard to use it.
#[derive(Debug, Clone)]
pub struct Auth0Config {
    /// Base URL of the tenant (`https://DOMAIN/`, or an override).
    pub base_url: Url,
    /// Tenant domain from the Settings; the token audience is `https://DOMAIN/api/v2/`.
    pub domain: String,
    /// The Management API client (machine-to-machine application).
    pub client_id: String,
    /// Its client secret.
    pub secret: SecretSource,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Request rate. Auth0's Management API limits depend on the plan (free tenants: 2
    /// requests/s; self-service plans: bursts of 10, about 150/min for most endpoints;
    /// Enterprise: higher), so the default starts at the free tier's 2/s and probes upward
    /// ([`Pace::Probe`]), following the `x-ratelimit-limit/-remaining/-reset` headers of every
    /// answer (Auth0 OpenAPI, "Rate limits"; auth0-python `RateLimitError` reads
    /// `x-ratelimit-reset`): the remaining requests are spread over the time to the reset,
    /// an exhausted budget pauses every call until the reset, a 429 halves the rate. A
    /// Settings pin (`pacing.auth0`) is a [`Pace::Limit`].
    pub rate: Pace,
    /// Items per page (`take` / `per_page`, at most 100).
    pub page_size: u32,
    /// The longest pause a 429 or an exhausted rate-limit bucket imposes on every call.
    pub max_pause: Duration,
    /// Cancelled at shutdown: waits for the pacer or a slot in flight end, and the call fails
    /// as not sent.
    pub shutdown: CancellationToken,
    /// Where every call is counted (`runwarden_api_calls_total{api="auth0"}`).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// The largest Auth0 answer read (a larger one fails the call, not retried): a page holds at
/// most 100 items (roles, users with three fields, groups), a token answer one JWT; both are
/// far below this.
pub const BODY_LIMIT: usize = 4 << 20;

/// A token answer's `expires_in` is trusted up to this (Auth0's maximum token lifetime for an
/// API is 30 days); a larger value, up to `u64::MAX`, is read as this.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// After the token endpoint failed [`TOKEN_TRIES`] times in a row, every call fails at once
/// with that failure for this long instead of asking again: concurrent calls and their retries
/// must not hammer a failing endpoint (a pass asks it a few times; the loop's next pass asks
/// again). A single failure is retried as usual. Five tries in a row, as gcp_auth gives
/// Google's token endpoint: at a 30 % error rate three failures in a row happen to one pass in
/// 37, five to one in 400.
const TOKEN_FAILURE_HOLD: Duration = Duration::from_secs(30);
const TOKEN_TRIES: u32 = 5;

impl Auth0Config {
    /// A configuration with the default limits (4 in flight, from 2 requests/s probing upward, pages of 100).
    pub fn new(base_url: Url, domain: &str, client_id: &str, secret: SecretSource) -> Auth0Config {
        Auth0Config {
            base_url,
            domain: domain.to_string(),
            client_id: client_id.to_string(),
            secret,
            concurrency: 4,
            rate: Pace::Probe(Rate::per_second(2)),
            page_size: 100,
            max_pause: retry::DEFAULT_MAX_SERVER_WAIT,
            shutdown: CancellationToken::new(),
            metrics: std::sync::Arc::default(),
        }
    }
}

/// A failed Auth0 call: which request (method and path; never the token or secret) and what
/// went wrong, classified.
#[derive(Debug, thiserror::Error)]
pub enum Auth0Error {
    #[error(
        "the Auth0 client secret is missing: set the environment variable {var} (named by \
         Settings spec.auth0.clientSecretEnv)"
    )]
    MissingSecret { var: String },
    #[error(
        "Auth0 refused the client credentials of client {client_id:?} for audience {audience} \
         (HTTP {code}: {message}); check the client id, the secret and that the client is \
         authorized for the Management API with the scopes {MANAGEMENT_SCOPES}"
    )]
    TokenRefused {
        client_id: String,
        audience: String,
        code: u16,
        message: String,
    },
    #[error("Auth0 {method} {path}: no answer ({class}): {source}")]
    Transport {
        method: Method,
        path: String,
        class: ErrorClass,
        #[source]
        source: reqwest::Error,
    },
    #[error("Auth0 {method} {path}: HTTP {code} {error}: {message}{hint}", hint = hint(*.class))]
    Api {
        method: Method,
        path: String,
        class: ErrorClass,
        code: u16,
        /// Auth0's `error` (e.g. `Forbidden`).
        error: String,
        /// Auth0's `message`, verbatim.
        message: String,
        /// Auth0's `errorCode` (e.g. `insufficient_scope`), when given.
        error_code: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("Auth0 {method} {path}: unexpected answer: {reason}")]
    Decode {
        method: Method,
        path: String,
        reason: String,
    },
    #[error("Auth0 {method} {path}: {source}")]
    Body {
        method: Method,
        path: String,
        #[source]
        source: crate::endpoints::BodyError,
    },
    #[error("Auth0 {method} {path}: not sent: runwarden is shutting down")]
    ShuttingDown { method: Method, path: String },
    #[error(
        "no Auth0 Management API token: the token endpoint failed {ago_s}s ago ({message}); \
         runwarden asks again after {hold_s}s, not once per call"
    )]
    TokenUnavailable {
        message: String,
        ago_s: u64,
        hold_s: u64,
    },
}

fn hint(class: ErrorClass) -> String {
    match class {
        ErrorClass::PermissionDenied => format!(
            " (grant the Management API client the scopes runwarden needs: {MANAGEMENT_SCOPES}; \
             a tenant without groups can set spec.auth0.groups: none instead of granting the \
             group scopes)"
        ),
        _ => String::new(),
    }
}

impl Classified for Auth0Error {
    fn class(&self) -> ErrorClass {
        match self {
            Auth0Error::MissingSecret { .. } | Auth0Error::TokenRefused { .. } => ErrorClass::Fatal,
            Auth0Error::Transport { class, .. } | Auth0Error::Api { class, .. } => *class,
            Auth0Error::Body { source: crate::endpoints::BodyError::Transport(_), .. } => {
                ErrorClass::Transient
            }
            Auth0Error::Decode { .. }
            | Auth0Error::Body { .. }
            | Auth0Error::ShuttingDown { .. }
            | Auth0Error::TokenUnavailable { .. } => ErrorClass::Fatal,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Auth0Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// One page of a checkpoint listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// One page of an offset listing with the total count.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetPage<T> {
    pub items: Vec<T>,
    pub total: Option<u64>,
}

/// The Auth0 Management API client (cheap to clone).
#[derive(Clone)]
pub struct Auth0Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: Auth0Config,
    token: Mutex<TokenState>,
    permits: Semaphore,
    pacer: Pacer,
}

#[derive(Default)]
struct TokenState {
    cached: Option<CachedToken>,
    /// Failures of the token endpoint in a row.
    failures: u32,
    /// The last failure of the token endpoint: when, and what it said.
    failed: Option<(Instant, String)>,
}

struct CachedToken {
    value: Secret,
    /// Refresh at or after this instant (a margin before the real expiry).
    refresh_at: Instant,
}

impl fmt::Debug for Auth0Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth0Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Auth0Client {
    /// A client on the shared HTTP client; no call is made until the first request.
    pub fn new(http: reqwest::Client, config: Auth0Config) -> Auth0Client {
        Auth0Client {
            inner: Arc::new(Inner {
                http,
                permits: Semaphore::new(config.concurrency.max(1)),
                pacer: Pacer::with_limits("auth0", config.rate, config.max_pause, config.shutdown.clone()),
                config,
                token: Mutex::new(TokenState::default()),
            }),
        }
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &Auth0Config {
        &self.inner.config
    }

    /// The Management API audience: `https://DOMAIN/api/v2/`.
    pub fn audience(&self) -> String {
        format!("https://{}/api/v2/", self.inner.config.domain)
    }

    /// One page of `GET /api/v2/roles` (offset paging, with totals).
    pub async fn roles_page(&self, page: u32) -> Result<OffsetPage<RoleRef>, Auth0Error> {
        let size = self.inner.config.page_size.to_string();
        let page = page.to_string();
        let answer: wire::RolesAnswer = self
            .get(
                &["roles"],
                &[
                    ("per_page", &size),
                    ("page", &page),
                    ("include_totals", "true"),
                ],
            )
            .await?;
        Ok(match answer {
            wire::RolesAnswer::Page { roles, total } => OffsetPage {
                items: roles,
                total,
            },
            wire::RolesAnswer::Array(roles) => OffsetPage {
                items: roles,
                total: None,
            },
        })
    }

    /// `GET /api/v2/roles?name_filter=NAME`: roles whose name contains `name` (any case).
    pub async fn roles_named(&self, name: &str) -> Result<Vec<RoleRef>, Auth0Error> {
        let size = self.inner.config.page_size.to_string();
        let answer: wire::RolesAnswer = self
            .get(
                &["roles"],
                &[
                    ("name_filter", name),
                    ("per_page", &size),
                    ("include_totals", "true"),
                ],
            )
            .await?;
        Ok(match answer {
            wire::RolesAnswer::Page { roles, .. } | wire::RolesAnswer::Array(roles) => roles,
        })
    }

    /// One checkpoint page of `GET /api/v2/roles/{id}/users` (direct assignments only).
    pub async fn role_users_page(
        &self,
        role_id: &str,
        from: Option<&str>,
    ) -> Result<Checkpoint<MemberRef>, Auth0Error> {
        self.checkpoint(&["roles", role_id, "users"], from).await
    }

    /// One checkpoint page of `GET /api/v2/roles/{id}/groups` (groups assigned to the role).
    pub async fn role_groups_page(
        &self,
        role_id: &str,
        from: Option<&str>,
    ) -> Result<Checkpoint<GroupRef>, Auth0Error> {
        self.checkpoint(&["roles", role_id, "groups"], from).await
    }

    /// One checkpoint page of `GET /api/v2/groups/{id}/members`.
    pub async fn group_members_page(
        &self,
        group_id: &str,
        from: Option<&str>,
    ) -> Result<Checkpoint<GroupMemberRef>, Auth0Error> {
        self.checkpoint(&["groups", group_id, "members"], from)
            .await
    }

    /// The first checkpoint page of `GET /api/v2/organizations` (`take` items): enough to know
    /// whether the tenant has any (scope read:organizations or read:organizations_summary).
    pub async fn organizations_page(&self, take: u32) -> Result<Checkpoint<OrganizationRef>, Auth0Error> {
        let take = take.clamp(1, 100).to_string();
        let answer: wire::CheckpointAnswer<OrganizationRef> = self.get(&["organizations"], &[("take", take.as_str())]).await?;
        let (items, next) = answer.into_parts();
        Ok(Checkpoint { items, next })
    }

    /// One page of `GET /api/v2/users?q=QUERY&search_engine=v3` with the fields runwarden
    /// needs. Auth0 returns at most 1,000 results per query across pages.
    pub async fn search_users_page(
        &self,
        query: &str,
        page: u32,
    ) -> Result<OffsetPage<UserRef>, Auth0Error> {
        let size = self.inner.config.page_size.to_string();
        let page = page.to_string();
        let answer: wire::UsersAnswer = self
            .get(
                &["users"],
                &[
                    ("q", query),
                    ("search_engine", "v3"),
                    ("per_page", &size),
                    ("page", &page),
                    ("include_totals", "true"),
                    ("fields", "user_id,email,email_verified"),
                    ("include_fields", "true"),
                ],
            )
            .await?;
        Ok(match answer {
            wire::UsersAnswer::Page { users, total } => OffsetPage {
                items: users,
                total,
            },
            wire::UsersAnswer::Array(users) => OffsetPage {
                items: users,
                total: None,
            },
        })
    }

    /// `GET /api/v2/users/{id}` with the fields runwarden needs: the one source runwarden
    /// trusts for a user's e-mail, its verification and whether it is blocked (user search is
    /// eventually consistent and capped).
    pub async fn get_user(&self, user_id: &str) -> Result<UserRef, Auth0Error> {
        self.get(
            &["users", user_id],
            &[
                ("fields", "user_id,email,email_verified,blocked"),
                ("include_fields", "true"),
            ],
        )
        .await
    }

    async fn checkpoint<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        from: Option<&str>,
    ) -> Result<Checkpoint<T>, Auth0Error> {
        let take = self.inner.config.page_size.min(100).to_string();
        let mut query = vec![("take", take.as_str())];
        if let Some(from) = from {
            query.push(("from", from));
        }
        let answer: wire::CheckpointAnswer<T> = self.get(segments, &query).await?;
        let (items, next) = answer.into_parts();
        Ok(Checkpoint { items, next })
    }

    /// `{base}/api/v2/{segments...}?{query}`, every segment percent-encoded (user ids contain
    /// `|`).
    fn api_url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut all = vec!["api", "v2"];
        all.extend_from_slice(segments);
        let mut url = crate::endpoints::join_segments(&self.inner.config.base_url, &all);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// A GET on the Management API: one attempt, classified.
    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, Auth0Error> {
        let url = self.api_url(segments, query);
        let token = self.token().await?;
        let (status, headers, bytes) = self
            .exchange(Method::GET, url.clone(), Some(&token), None)
            .await?;
        let path = url.path().to_string();
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| Auth0Error::Decode {
                method: Method::GET,
                path,
                reason: format!("invalid JSON for this call: {e}"),
            });
        }
        if status.as_u16() == 401 {
            self.forget_token(&token).await;
        }
        Err(api_error(
            Method::GET,
            path,
            status.as_u16(),
            &headers,
            &bytes,
        ))
    }

    /// Sends one request within the concurrency bound and the pacer, and feeds the rate-limit
    /// headers back into the pacer.
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        bearer: Option<&Secret>,
        json: Option<serde_json::Value>,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>), Auth0Error> {
        let path = url.path().to_string();
        let transport = |source: reqwest::Error| Auth0Error::Transport {
            method: method.clone(),
            path: path.clone(),
            class: ErrorClass::from_transport(&source),
            source,
        };
        // The pacer first, then a slot in flight: a caller waiting for its turn holds no slot.
        let shutting_down = || Auth0Error::ShuttingDown { method: method.clone(), path: path.clone() };
        self.inner.pacer.acquire().await.map_err(|_| shutting_down())?;
        let _permit = tokio::select! {
            permit = self.inner.permits.acquire() => permit.expect("semaphore never closed"),
            _ = self.inner.config.shutdown.cancelled() => return Err(shutting_down()),
        };
        let started = std::time::Instant::now();
        let mut request = self.inner.http.request(method.clone(), url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token.expose());
        }
        if let Some(body) = json {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            self.inner.config.metrics.record_api_call("auth0", 0);
            transport(e)
        })?;
        let status = response.status();
        self.inner.config.metrics.record_api_call("auth0", status.as_u16());
        let headers = response.headers().clone();
        let bytes = crate::endpoints::read_body(response, BODY_LIMIT)
            .await
            .map_err(|source| Auth0Error::Body { method: method.clone(), path: path.clone(), source })?;
        tracing::debug!(method = %method, path = %path, status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64, "auth0 call");
        let now = SystemTime::now();
        if status.as_u16() == 429 {
            self.inner.pacer.throttled(retry::server_wait(&headers, now));
            return Ok((status, headers, bytes));
        }
        self.inner.pacer.succeeded();
        if let (Some(remaining), Some(reset_in)) = (
            retry::header_u64(&headers, "x-ratelimit-remaining"),
            retry::rate_limit_reset_in(&headers, now),
        ) {
            // Requests already in flight may spend the rest of the budget.
            let in_flight = self.inner.config.concurrency as u64;
            match retry::header_u64(&headers, "x-ratelimit-limit") {
                Some(limit) if limit >= remaining => {
                    self.inner.pacer.observe_bucket(limit, remaining, reset_in, in_flight)
                }
                _ => self.inner.pacer.observe_budget(remaining, reset_in, in_flight),
            }
        }
        Ok((status, headers, bytes))
    }

    /// A valid Management API token: the cached one, or a new one from `/oauth/token`. Callers
    /// queue on the lock, so concurrent calls fetch one token, not one each; after
    /// [`TOKEN_TRIES`] failures in a row, calls fail at once for [`TOKEN_FAILURE_HOLD`] instead
    /// of asking again.
    async fn token(&self) -> Result<Secret, Auth0Error> {
        let mut state = self.inner.token.lock().await;
        if let Some(t) = state.cached.as_ref() {
            if Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        if let Some((at, message)) = state.failed.as_ref().filter(|_| state.failures >= TOKEN_TRIES) {
            if at.elapsed() < TOKEN_FAILURE_HOLD {
                return Err(Auth0Error::TokenUnavailable {
                    message: message.clone(),
                    ago_s: at.elapsed().as_secs(),
                    hold_s: TOKEN_FAILURE_HOLD.as_secs(),
                });
            }
        }
        match self.fetch_token().await {
            Ok((value, lifetime)) => {
                // Refresh a minute early, or halfway through a short-lived token.
                let margin = Duration::from_secs(60).min(lifetime / 2);
                state.cached = Some(CachedToken {
                    value: value.clone(),
                    refresh_at: Instant::now() + (lifetime - margin),
                });
                state.failed = None;
                state.failures = 0;
                Ok(value)
            }
            Err(e) => {
                // A 429 says when to come back (the retry honours it); it is not a failing
                // endpoint. A missing secret or shutdown never reached it.
                let counts = e.class() != ErrorClass::Quota
                    && !matches!(e, Auth0Error::MissingSecret { .. } | Auth0Error::ShuttingDown { .. });
                if counts {
                    state.failed = Some((Instant::now(), e.to_string()));
                    state.failures += 1;
                }
                Err(e)
            }
        }
    }

    /// One `POST /oauth/token`: the token and how long it lives (at most
    /// [`MAX_TOKEN_LIFETIME`], whatever `expires_in` says).
    async fn fetch_token(&self) -> Result<(Secret, Duration), Auth0Error> {
        let config = &self.inner.config;
        let secret = config
            .secret
            .resolve()
            .map_err(|var| Auth0Error::MissingSecret { var })?;
        let url = crate::endpoints::join_segments(&config.base_url, &["oauth", "token"]);
        let audience = self.audience();
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": config.client_id,
            "client_secret": secret.expose(),
            "audience": audience,
        });
        let (status, headers, bytes) = self
            .exchange(Method::POST, url.clone(), None, Some(body))
            .await?;
        let code = status.as_u16();
        if !status.is_success() {
            if matches!(code, 400 | 401 | 403) {
                let e: wire::ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
                let message = e
                    .error_description
                    .or(e.message)
                    .or(e.error)
                    .unwrap_or_else(|| "no message".into());
                return Err(Auth0Error::TokenRefused {
                    client_id: config.client_id.clone(),
                    audience,
                    code,
                    message,
                });
            }
            return Err(api_error(
                Method::POST,
                url.path().to_string(),
                code,
                &headers,
                &bytes,
            ));
        }
        let t: wire::TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| Auth0Error::Decode {
                method: Method::POST,
                path: url.path().to_string(),
                reason: format!("not a token answer: {e}"),
            })?;
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(86_400)).min(MAX_TOKEN_LIFETIME);
        tracing::debug!(
            lifetime_s = lifetime.as_secs(),
            "fetched an Auth0 Management API token"
        );
        Ok((Secret(t.access_token), lifetime))
    }

    /// Drops the cached token if it is still `used` (a 401 answered it), so the next call
    /// fetches a fresh one.
    async fn forget_token(&self, used: &Secret) {
        let mut state = self.inner.token.lock().await;
        if state.cached.as_ref().is_some_and(|t| &t.value == used) {
            state.cached = None;
        }
    }
}

/// Builds the classified error of a non-2xx answer.
fn api_error(
    method: Method,
    path: String,
    code: u16,
    headers: &reqwest::header::HeaderMap,
    bytes: &[u8],
) -> Auth0Error {
    let body: wire::ErrorBody = serde_json::from_slice(bytes).unwrap_or_default();
    let redirect = (300..400).contains(&code).then(|| headers.get("location")).flatten();
    let message = body.message.or(body.error_description);
    let message = message.or_else(|| {
        redirect.map(|to| {
            format!("a redirect to {:?}, which runwarden does not follow", String::from_utf8_lossy(to.as_bytes()))
        })
    });
    let message = message.unwrap_or_else(|| {
        String::from_utf8_lossy(bytes)
            .chars()
            .take(300)
            .collect::<String>()
            .trim()
            .to_string()
    });
    Auth0Error::Api {
        method,
        path,
        class: ErrorClass::from_status(code),
        code,
        error: body.error.unwrap_or_default(),
        message,
        error_code: body.error_code,
        retry_after: retry::server_wait(headers, SystemTime::now()),
    }
}

/// The tenant settings hygiene audits read: APIs (resource servers) and signing keys. The wire
/// shapes are private here; `signing_secret` (present on HS256 APIs) is never deserialized.
mod tenant_wire {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    pub struct ResourceServer {
        #[serde(default)]
        pub identifier: String,
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub token_lifetime: Option<u64>,
        #[serde(default)]
        pub enforce_policies: bool,
        #[serde(default)]
        pub token_dialect: Option<String>,
        #[serde(default)]
        pub is_system: bool,
        /// auth0-python `ResourceServerSubjectTypeAuthorization {user, client, anonymous_user}`.
        #[serde(default)]
        pub subject_type_authorization: Option<SubjectTypeAuthorization>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct SubjectTypeAuthorization {
        #[serde(default)]
        pub user: Option<SubjectPolicy>,
        #[serde(default)]
        pub client: Option<SubjectPolicy>,
    }

    /// `{policy}` (`ResourceServerSubjectTypeAuthorizationUser`/`...Client`).
    #[derive(Debug, Default, Deserialize)]
    pub struct SubjectPolicy {
        #[serde(default)]
        pub policy: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum ResourceServers {
        Page { resource_servers: Vec<ResourceServer>, #[serde(default)] total: Option<u64> },
        Array(Vec<ResourceServer>),
    }

    #[derive(Debug, Deserialize)]
    pub struct SigningKey {
        pub kid: String,
        #[serde(default)]
        pub current: bool,
        #[serde(default)]
        pub next: bool,
        #[serde(default)]
        pub previous: bool,
        #[serde(default)]
        pub revoked: bool,
        #[serde(default)]
        pub current_since: Option<String>,
        /// The key's X.509 certificate (PEM).
        #[serde(default)]
        pub cert: Option<String>,
    }
}

/// When a signing key's certificate became valid (its `notBefore`), for a key whose record
/// has no `current_since` (real tenants omit it): RFC 5280 §4.1 (`Certificate ::= SEQUENCE {
/// tbsCertificate SEQUENCE { [0] version, serialNumber, signature, issuer, validity SEQUENCE {
/// notBefore, notAfter }, ... } ... }`, times as UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime
/// `YYYYMMDDHHMMSSZ`). `None` for anything that is not such a certificate.
fn cert_not_before(pem: &str) -> Option<SystemTime> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).ok()?;
    let (_, cert, _) = der_tlv(&der)?;
    let (_, mut tbs, _) = der_tlv(cert)?;
    // Skip the optional explicit version [0], then the serial, the signature algorithm and
    // the issuer.
    let (tag, _, after) = der_tlv(tbs)?;
    if tag == 0xa0 {
        tbs = after;
    }
    for _ in 0..3 {
        tbs = der_tlv(tbs)?.2;
    }
    let (tag, validity, _) = der_tlv(tbs)?;
    let (time_tag, value, _) = der_tlv(validity).filter(|_| tag == 0x30)?;
    let text = std::str::from_utf8(value).ok()?;
    let full = match (time_tag, text.len()) {
        (0x17, 13) => format!("{}{text}", if text.get(..2)?.parse::<u8>().ok()? < 50 { "20" } else { "19" }),
        (0x18, 15) => text.to_string(),
        _ => return None,
    };
    let b = full.as_bytes();
    if !b[..14].iter().all(u8::is_ascii_digit) || b[14] != b'Z' {
        return None;
    }
    let rfc3339 = format!("{}-{}-{}T{}:{}:{}Z", &full[0..4], &full[4..6], &full[6..8], &full[8..10], &full[10..12], &full[12..14]);
    crate::policy::parse_rfc3339(&rfc3339).ok()
}

/// One DER element at the start of `bytes`: (tag, contents, the bytes after it).
fn der_tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// One subject's access policy of an API, or Auth0's documented default for that subject when
/// the API carries none (an API created before the policies existed, or never changed): user
/// flows `allow_all`, client credentials `require_client_grant`
/// (https://auth0.com/docs/get-started/apis/api-access-policies-for-applications).
fn subject_policy(
    r: &tenant_wire::ResourceServer,
    pick: impl Fn(&tenant_wire::SubjectTypeAuthorization) -> &Option<tenant_wire::SubjectPolicy>,
    default: crate::model::AccessPolicy,
) -> crate::model::AccessPolicy {
    let value = r.subject_type_authorization.as_ref().and_then(|s| pick(s).as_ref()).and_then(|p| p.policy.as_deref());
    crate::model::AccessPolicy::from_wire(value, default)
}

impl Auth0Client {
    /// Every API (resource server) of the tenant, paging to the end; Auth0's own system API is
    /// left out.
    pub async fn resource_servers(&self) -> Result<Vec<crate::model::ResourceServer>, Auth0Error> {
        let size = self.inner.config.page_size;
        let mut out = Vec::new();
        for page in 0u32.. {
            let (per_page, page_text) = (size.to_string(), page.to_string());
            let answer: tenant_wire::ResourceServers = self
                .get(&["resource-servers"], &[("per_page", &per_page), ("page", &page_text), ("include_totals", "true")])
                .await?;
            let (items, total) = match answer {
                tenant_wire::ResourceServers::Page { resource_servers, total } => (resource_servers, total),
                tenant_wire::ResourceServers::Array(items) => (items, None),
            };
            let got = items.len();
            out.extend(items.into_iter().filter(|r| !r.is_system).map(|r| crate::model::ResourceServer {
                permissions_in_token: r.token_dialect.as_deref().is_some_and(|d| d.ends_with("_authz")),
                user_access: subject_policy(&r, |s| &s.user, crate::model::AccessPolicy::AllowAll),
                client_access: subject_policy(&r, |s| &s.client, crate::model::AccessPolicy::RequireClientGrant),
                identifier: r.identifier,
                name: r.name,
                // Auth0's default lifetime when the field is absent: 86,400 s.
                token_lifetime: r.token_lifetime.unwrap_or(86_400),
                enforce_policies: r.enforce_policies,
            }));
            let seen = (u64::from(page) + 1) * u64::from(size);
            if got < size as usize || total.is_some_and(|t| seen >= t) || seen >= 1000 {
                break;
            }
        }
        Ok(out)
    }

    /// The tenant's signing keys (`GET /api/v2/keys/signing`).
    pub async fn signing_keys(&self) -> Result<Vec<crate::model::SigningKey>, Auth0Error> {
        let keys: Vec<tenant_wire::SigningKey> = self.get(&["keys", "signing"], &[]).await?;
        Ok(keys
            .into_iter()
            .map(|k| crate::model::SigningKey {
                // Real tenants often omit `current_since`: the key is then aged from its
                // certificate's notBefore.
                since: k
                    .current_since
                    .as_deref()
                    .and_then(|t| crate::policy::parse_rfc3339(t).ok())
                    .or_else(|| k.cert.as_deref().and_then(cert_not_before)),
                kid: k.kid,
                current: k.current,
                next: k.next,
                previous: k.previous,
                revoked: k.revoked,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        let source = SecretSource::Value(s);
        assert!(!format!("{source:?}").contains("hunter2"));
        let config = Auth0Config::new(
            Url::parse("https://acme.eu.auth0.com/").unwrap(),
            "acme.eu.auth0.com",
            "id",
            source,
        );
        let client = Auth0Client::new(reqwest::Client::new(), config);
        assert!(!format!("{client:?}").contains("hunter2"));
    }

    #[test]
    fn the_example_settings_and_the_readme_quote_the_one_scope_list() {
        for (file, text) in [
            ("README.md", include_str!("../../README.md")),
            ("policies/settings.yaml", include_str!("../../policies/settings.yaml")),
        ] {
            let flat = text.replace("\n    # ", " ").replace('\n', " ");
            assert!(flat.contains(MANAGEMENT_SCOPES), "{file} does not quote `{MANAGEMENT_SCOPES}`");
        }
    }

    #[test]
    fn a_signing_key_without_current_since_is_aged_from_its_certificate() {
        let pem = include_str!("../sim/keys/auth0-1.cert.pem");
        assert_eq!(
            cert_not_before(pem),
            crate::policy::parse_rfc3339("2026-11-29T02:36:25Z").ok()
        );
        // As Auth0 serves it (CRLF), too.
        assert_eq!(cert_not_before(&pem.replace('\n', "\r\n")), cert_not_before(pem));
        // Anything else: no age, no panic.
        for bad in ["", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "not base64 !!", "MIIB"] {
            assert_eq!(cert_not_before(bad), None, "{bad:?}");
        }
        let mut der = vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff];
        der.extend([0u8; 8]);
        assert_eq!(der_tlv(&der), None);
    }

    #[test]
    fn a_missing_secret_names_the_variable() {
        let var = SecretSource::Env("RUNWARDEN_TEST_SURELY_UNSET_VAR".into())
            .resolve()
            .unwrap_err();
        let err = Auth0Error::MissingSecret { var };
        let text = err.to_string();
        assert!(text.contains("RUNWARDEN_TEST_SURELY_UNSET_VAR"), "{text}");
        assert_eq!(err.class(), ErrorClass::Fatal);
    }

    #[test]
    fn management_urls_encode_user_ids_and_keep_the_base_prefix() {
        let config = Auth0Config::new(
            Url::parse("http://127.0.0.1:9/").unwrap(),
            "acme.eu.auth0.com",
            "id",
            SecretSource::Value(Secret::new("s")),
        );
        let client = Auth0Client::new(reqwest::Client::new(), config);
        let url = client.api_url(&["users", "auth0|abc"], &[("fields", "user_id")]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/api/v2/users/auth0%7Cabc?fields=user_id"
        );
        assert_eq!(client.audience(), "https://acme.eu.auth0.com/api/v2/");
    }

    #[test]
    fn classifies_auth0_answers_and_reads_the_reset_header() {
        let mut headers = reqwest::header::HeaderMap::new();
        let reset = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3;
        headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
        let err = api_error(
            Method::GET,
            "/api/v2/roles".into(),
            429,
            &headers,
            br#"{"statusCode":429,"error":"Too Many Requests","message":"Global limit has been reached","errorCode":"too_many_requests"}"#,
        );
        assert_eq!(err.class(), ErrorClass::Quota);
        let wait = err.retry_after().unwrap();
        assert!(
            wait <= Duration::from_secs(3) && wait >= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(err.to_string().contains("Global limit has been reached"));
        let forbidden = api_error(
            Method::GET,
            "/api/v2/roles/r/users".into(),
            403,
            &reqwest::header::HeaderMap::new(),
            br#"{"statusCode":403,"error":"Forbidden","message":"Insufficient scope, expected any of: read:users","errorCode":"insufficient_scope"}"#,
        );
        assert_eq!(forbidden.class(), ErrorClass::PermissionDenied);
        assert!(forbidden.to_string().contains("read:role_members"));
        assert!(forbidden.to_string().contains(MANAGEMENT_SCOPES));
        let html = api_error(
            Method::GET,
            "/x".into(),
            502,
            &reqwest::header::HeaderMap::new(),
            b"<html>bad gateway</html>",
        );
        assert_eq!(html.class(), ErrorClass::Transient);
        assert!(html.to_string().contains("bad gateway"));
    }
}
