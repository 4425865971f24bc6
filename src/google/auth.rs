//! Where Google access tokens come from.
//!
//! Production uses `gcp_auth`'s provider chain (a `GOOGLE_APPLICATION_CREDENTIALS` key file,
//! gcloud's application-default credentials, the metadata server on Cloud Run, `gcloud auth
//! print-access-token`), and gcp_auth caches and refreshes the token. The simulator passes a
//! provider built from the key file it wrote, whose `token_uri` points at the simulator, so the
//! same code path runs in tests. Nothing here builds or signs a token by hand.
//!
//! gcp_auth has its own HTTP client (hyper): it follows no redirect (a `3xx` is a failed token
//! request, so a signed assertion is never re-sent elsewhere), tries a failing token endpoint 5
//! times over about a second, and reads the token answer without a size limit (the endpoint is
//! the key file's `token_uri` or the metadata server, both trusted). After such a failure
//! [`GcpAuth`] holds it for 30 s, so concurrent calls do not each ask again.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

/// The OAuth scope every Cloud Run, IAP and Resource Manager call needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A boxed future, so the trait stays object safe without extra dependencies.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of bearer tokens for Google APIs.
pub trait TokenSource: Send + Sync {
    /// A currently valid access token. Implementations cache; this is called once per request.
    fn token(&self) -> BoxFuture<'_, Result<String, TokenError>>;

    /// The API refused `token` (401): drop it so the next `token()` fetches a new one.
    fn invalidate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, ()> {
        let _ = token;
        Box::pin(async {})
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account \
         key file, run `gcloud auth application-default login`, or run on Google Cloud: {0}"
    )]
    Discover(#[source] gcp_auth::Error),
    #[error("could not read the service-account key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: gcp_auth::Error,
    },
    #[error("the Google token endpoint did not issue a token: {0}")]
    Fetch(#[source] gcp_auth::Error),
    #[error(
        "no Google access token: the token endpoint failed {ago_s}s ago ({message}); runwarden \
         asks again after {hold_s}s, not once per call"
    )]
    Held {
        message: String,
        ago_s: u64,
        hold_s: u64,
    },
}

/// After gcp_auth failed to get a token (it tries 5 times itself, over about a second), every
/// call fails at once with that failure for this long instead of asking again: concurrent
/// calls must not each hammer a failing token endpoint (one pass asks it once; the loop's next
/// pass asks again).
const TOKEN_FAILURE_HOLD: std::time::Duration = std::time::Duration::from_secs(30);

/// gcp_auth's provider chain, or one explicit key file.
///
/// gcp_auth caches tokens until shortly before they expire and has no way to drop one, so
/// when an API refuses a token (revoked, or the clock of the token server disagrees) the
/// provider itself is rebuilt — from the same key file, or by running the chain again — which
/// starts with an empty cache.
pub struct GcpAuth {
    origin: Origin,
    provider: tokio::sync::RwLock<Arc<dyn gcp_auth::TokenProvider>>,
    /// One caller at a time asks gcp_auth: its providers do not re-check the cache after
    /// taking their write lock, so thousands of concurrent first calls would each fetch a
    /// token. Serialised, the first fetches and the rest find it cached. Holds the last
    /// failure: when, and what it said.
    single_flight: tokio::sync::Mutex<Option<(tokio::time::Instant, String)>>,
}

/// How to build the provider again.
#[derive(Debug, Clone)]
enum Origin {
    Chain,
    KeyFile(std::path::PathBuf),
    Given,
}

impl std::fmt::Debug for GcpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpAuth")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl GcpAuth {
    /// The real credential chain (`gcp_auth::provider()`).
    pub async fn discover() -> Result<GcpAuth, TokenError> {
        let provider = gcp_auth::provider().await.map_err(TokenError::Discover)?;
        Ok(GcpAuth::with(Origin::Chain, provider))
    }

    fn with(origin: Origin, provider: Arc<dyn gcp_auth::TokenProvider>) -> GcpAuth {
        GcpAuth {
            origin,
            provider: tokio::sync::RwLock::new(provider),
            single_flight: tokio::sync::Mutex::new(None),
        }
    }

    async fn rebuild(&self) -> Result<Arc<dyn gcp_auth::TokenProvider>, TokenError> {
        Ok(match &self.origin {
            Origin::Chain => gcp_auth::provider().await.map_err(TokenError::Discover)?,
            Origin::KeyFile(path) => Arc::new(
                gcp_auth::CustomServiceAccount::from_file(path).map_err(|source| {
                    TokenError::KeyFile {
                        path: path.display().to_string(),
                        source,
                    }
                })?,
            ),
            Origin::Given => self.provider.read().await.clone(),
        })
    }

    /// A service-account key file (for example the one a simulator wrote).
    pub fn from_key_file(path: &Path) -> Result<GcpAuth, TokenError> {
        let account = gcp_auth::CustomServiceAccount::from_file(path).map_err(|source| {
            TokenError::KeyFile {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(GcpAuth::with(
            Origin::KeyFile(path.to_path_buf()),
            Arc::new(account),
        ))
    }

    /// Wraps any gcp_auth provider (it cannot be rebuilt after a refused token).
    pub fn from_provider(provider: Arc<dyn gcp_auth::TokenProvider>) -> GcpAuth {
        GcpAuth::with(Origin::Given, provider)
    }
}

impl TokenSource for GcpAuth {
    fn token(&self) -> BoxFuture<'_, Result<String, TokenError>> {
        Box::pin(async move {
            let mut failed = self.single_flight.lock().await;
            if let Some((at, message)) = failed.as_ref() {
                if at.elapsed() < TOKEN_FAILURE_HOLD {
                    return Err(TokenError::Held {
                        message: message.clone(),
                        ago_s: at.elapsed().as_secs(),
                        hold_s: TOKEN_FAILURE_HOLD.as_secs(),
                    });
                }
            }
            let provider = self.provider.read().await.clone();
            match provider.token(&[CLOUD_PLATFORM_SCOPE]).await {
                Ok(token) => {
                    *failed = None;
                    Ok(token.as_str().to_string())
                }
                Err(e) => {
                    let e = TokenError::Fetch(e);
                    *failed = Some((tokio::time::Instant::now(), e.to_string()));
                    Err(e)
                }
            }
        })
    }

    fn invalidate<'a>(&'a self, refused: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut provider = self.provider.write().await;
            // Several calls may have been refused the same token: rebuild only once.
            let current = provider.token(&[CLOUD_PLATFORM_SCOPE]).await;
            if current.is_ok_and(|t| t.as_str() != refused) {
                return;
            }
            match self.rebuild().await {
                Ok(fresh) => {
                    tracing::info!(origin = ?self.origin, "Google refused the access token; rebuilt the credentials");
                    *provider = fresh;
                }
                Err(e) => tracing::warn!(error = %e, "could not rebuild the Google credentials"),
            }
        })
    }
}

/// A fixed token (tests, or a token handed over by a wrapper). Its Debug output hides it.
pub struct StaticToken(pub String);

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<String, TokenError>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}
