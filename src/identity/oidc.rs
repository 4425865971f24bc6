//! The tenant's public OpenID Connect endpoints: the discovery document and the key set (JWKS)
//! that `check-token` verifies tokens against. No Management API token is needed; every GET
//! goes through [`crate::retry`] like any other call.
//!
//! Sources: OpenID Connect Discovery 1.0 §3-4 (the document at
//! `/.well-known/openid-configuration`, with `issuer` and `jwks_uri`); RFC 7517 §5 (a JWK Set is
//! `{"keys": [...]}`); Auth0 publishes its keys at `/.well-known/jwks.json`.

use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use reqwest::{StatusCode, Url};

use crate::endpoints::{BodyError, join_segments, read_body};
use crate::retry::{Classified, ErrorClass, RetryPolicy, retry, server_wait};

/// A discovery document or a key set is a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The tenant's issuer (from its discovery document) and its published keys.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub issuer: String,
    pub jwks: JwkSet,
}

/// Reading the discovery document or the key set failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("GET {url}")]
    Transport {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: HTTP {status}")]
    Status {
        url: Url,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("GET {url}")]
    Body {
        url: Url,
        #[source]
        source: BodyError,
    },
    #[error("GET {url}: unexpected answer")]
    Decode {
        url: Url,
        #[source]
        source: serde_json::Error,
    },
    #[error("the discovery document has no `issuer`")]
    NoIssuer,
    #[error(
        "GET {url}: the discovery document names issuer {named:?}, not the configured {configured:?} \
         (OpenID Connect Discovery §4.3: they must be identical); check spec.auth0.issuers \
         (exactly as tokens carry `iss`, with the trailing slash) and spec.auth0.domain"
    )]
    IssuerMismatch { url: Url, named: String, configured: String },
}

impl Classified for OidcError {
    fn class(&self) -> ErrorClass {
        match self {
            OidcError::Transport { source, .. } => ErrorClass::from_transport(source),
            OidcError::Status { status, .. } => ErrorClass::from_status(status.as_u16()),
            OidcError::Body { source: BodyError::Transport(_), .. } => ErrorClass::Transient,
            OidcError::Body { .. } | OidcError::Decode { .. } | OidcError::NoIssuer | OidcError::IssuerMismatch { .. } => {
                ErrorClass::Fatal
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            OidcError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The issuer and keys of the tenant at `base`. Only the path of the discovery document's
/// `jwks_uri` is used: keys always come from the configured tenant, never from a host a
/// document (or a token) names.
pub async fn fetch_issuer(http: &reqwest::Client, base: &Url, policy: &RetryPolicy) -> Result<Issuer, OidcError> {
    let discovery_url = join_segments(base, &[".well-known", "openid-configuration"]);
    let discovery: serde_json::Value = get_json(http, &discovery_url, policy).await?;
    let issuer = discovery["issuer"].as_str().ok_or(OidcError::NoIssuer)?.to_string();
    let jwks_path = discovery["jwks_uri"]
        .as_str()
        .and_then(|u| Url::parse(u).ok())
        .map(|u| u.path().to_string())
        .unwrap_or_else(|| "/.well-known/jwks.json".into());
    let segments: Vec<&str> = jwks_path.split('/').filter(|s| !s.is_empty()).collect();
    let jwks: JwkSet = get_json(http, &join_segments(base, &segments), policy).await?;
    Ok(Issuer { issuer, jwks })
}

/// Where a configured issuer's discovery document and keys are read: the canonical issuer
/// (`https://DOMAIN/`) at `canonical_base` (the tenant, or the `--endpoint` override, which
/// stands for the canonical domain); any other configured issuer (a custom domain) at its own
/// URL. Only configured issuers reach this: a URL a token names is never fetched unless the
/// Settings list it.
pub fn issuer_base(issuer: &str, canonical: &str, canonical_base: &Url) -> Result<Url, crate::endpoints::EndpointError> {
    if issuer == canonical { Ok(canonical_base.clone()) } else { crate::endpoints::parse_base_url(issuer) }
}

/// [`fetch_issuer`] for a configured issuer read at `base`: the document must name exactly
/// `configured` (OpenID Connect Discovery 1.0 §4.3), else its keys are not trusted.
pub async fn fetch_configured(http: &reqwest::Client, configured: &str, base: &Url, policy: &RetryPolicy) -> Result<Issuer, OidcError> {
    let issuer = fetch_issuer(http, base, policy).await?;
    if issuer.issuer != configured {
        return Err(OidcError::IssuerMismatch {
            url: join_segments(base, &[".well-known", "openid-configuration"]),
            named: issuer.issuer,
            configured: configured.to_string(),
        });
    }
    Ok(issuer)
}

/// One JSON document, retried as `crate::retry` decides.
async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &Url, policy: &RetryPolicy) -> Result<T, OidcError> {
    retry(policy, url.path(), || get_json_once(http, url)).await
}

async fn get_json_once<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &Url) -> Result<T, OidcError> {
    let response = http
        .get(url.clone())
        .send()
        .await
        .map_err(|source| OidcError::Transport { url: url.clone(), source })?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = server_wait(response.headers(), SystemTime::now());
        return Err(OidcError::Status { url: url.clone(), status, retry_after });
    }
    let body = read_body(response, MAX_DOCUMENT_BYTES)
        .await
        .map_err(|source| OidcError::Body { url: url.clone(), source })?;
    serde_json::from_slice(&body).map_err(|source| OidcError::Decode { url: url.clone(), source })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::*;

    /// A loopback tenant whose discovery document fails with `failures` 503s before answering.
    async fn flaky_tenant(failures: usize) -> (Url, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let seen = seen.clone();
                    async move {
                        if seen.fetch_add(1, Ordering::SeqCst) < failures {
                            return Err(StatusCode::SERVICE_UNAVAILABLE);
                        }
                        // A document naming another host: only its path is used.
                        Ok(r#"{"issuer":"https://tenant.example/","jwks_uri":"https://elsewhere.example/.well-known/jwks.json"}"#)
                    }
                }),
            )
            .route("/.well-known/jwks.json", get(|| async { r#"{"keys":[]}"# }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Url::parse(&format!("http://{addr}/")).unwrap(), calls)
    }

    fn quick(max_retries: usize) -> RetryPolicy {
        RetryPolicy { max_retries, min_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5), ..RetryPolicy::default() }
    }

    #[tokio::test]
    async fn a_discovery_document_that_fails_transiently_is_retried_and_the_keys_come_from_the_tenant() {
        let (base, calls) = flaky_tenant(2).await;
        let http = reqwest::Client::new();
        let issuer = fetch_issuer(&http, &base, &quick(3)).await.expect("read after two 503s");
        assert_eq!(issuer.issuer, "https://tenant.example/");
        assert!(issuer.jwks.keys.is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "two failures, then the answer");
    }

    #[tokio::test]
    async fn a_tenant_that_keeps_failing_is_reported_with_the_url_and_status_after_the_retries() {
        let (base, calls) = flaky_tenant(usize::MAX).await;
        let http = reqwest::Client::new();
        let err = fetch_issuer(&http, &base, &quick(2)).await.unwrap_err();
        assert!(err.to_string().ends_with("/.well-known/openid-configuration: HTTP 503 Service Unavailable"), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "the first attempt and two retries");
    }

    #[tokio::test]
    async fn a_document_naming_another_issuer_is_refused_and_custom_domains_are_read_at_their_own_url() {
        let (base, _) = flaky_tenant(0).await;
        let http = reqwest::Client::new();
        let ok = fetch_configured(&http, "https://tenant.example/", &base, &quick(0)).await.expect("the named issuer");
        assert_eq!(ok.issuer, "https://tenant.example/");
        let err = fetch_configured(&http, "https://login.tenant.example/", &base, &quick(0)).await.unwrap_err();
        assert!(err.to_string().contains("names issuer \"https://tenant.example/\", not the configured \"https://login.tenant.example/\""), "{err}");
        let canonical_base = Url::parse("http://127.0.0.1:9/").unwrap();
        let canonical = "https://acme.eu.auth0.com/";
        assert_eq!(issuer_base(canonical, canonical, &canonical_base).unwrap(), canonical_base);
        assert_eq!(issuer_base("https://login.acme.com/", canonical, &canonical_base).unwrap().as_str(), "https://login.acme.com/");
        assert!(issuer_base("http://login.acme.com/", canonical, &canonical_base).is_err(), "plain http only on loopback");
    }
}
