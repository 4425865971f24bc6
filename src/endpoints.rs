//! Where every Google and Auth0 call goes: the production base URLs, or one override for all of
//! them (`--endpoint URL` / `RUNWARDEN_ENDPOINT`, or an embedded simulator).
//!
//! The rule this module enforces: an override must be `https://`, except for loopback addresses
//! (`localhost`, `127.0.0.0/8`, `::1`), where plain `http://` is accepted so a local simulator
//! needs no certificate. Bearer tokens and the Auth0 client secret travel to these URLs, so a
//! plain-text URL to anything but this machine is refused with an error that says so.
//!
//! Paths are not part of a base URL: each client appends the API's own path (`/v2/...` for Cloud
//! Run, `/v1/...` for IAP, `/v3/...` for Resource Manager, `/v1beta1/...` for Service Usage, `/oauth/token` and `/api/v2/...` for
//! Auth0), so one simulator can serve every API on one address.

use std::net::IpAddr;

use reqwest::Url;

/// Production base URL of the Cloud Run Admin API.
pub const CLOUD_RUN: &str = "https://run.googleapis.com/";
/// Production base URL of the IAP API.
pub const IAP: &str = "https://iap.googleapis.com/";
/// Production base URL of the Cloud Resource Manager API.
pub const RESOURCE_MANAGER: &str = "https://cloudresourcemanager.googleapis.com/";
/// Production base URL of the Service Usage API (reference/google/serviceusage.v1beta1.json,
/// `rootUrl`): the IAP service agent is created there.
pub const SERVICE_USAGE: &str = "https://serviceusage.googleapis.com/";
/// Production base URL of the Cloud Logging API (`rootUrl` of logging.v2.json).
pub const LOGGING: &str = "https://logging.googleapis.com/";
/// Production base URL of the IAM API (`rootUrl` of iam.v1.json).
pub const IAM: &str = "https://iam.googleapis.com/";

/// Why a base URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "endpoint {url:?} is not a valid URL ({reason}); expected e.g. https://api.example.com or http://127.0.0.1:8787"
    )]
    Invalid { url: String, reason: String },
    #[error(
        "endpoint {url:?} uses scheme {scheme:?}; only https:// (and http:// for loopback) are supported"
    )]
    Scheme { url: String, scheme: String },
    #[error(
        "endpoint {url:?} uses plain http:// to a non-loopback host ({host}); tokens and secrets would \
         travel unencrypted. Use https://, or http:// only with localhost, 127.0.0.1 or [::1]"
    )]
    PlainHttpNotLoopback { url: String, host: String },
    #[error(
        "endpoint {url:?} carries a query, fragment or credentials; give only scheme, host, port and an optional path prefix"
    )]
    Extra { url: String },
    #[error(
        "Auth0 domain {domain:?} is not a host name (give e.g. acme.eu.auth0.com, without https://)"
    )]
    Auth0Domain { domain: String },
}

/// Parses and checks one base URL: `https://` anywhere, `http://` only for loopback. The result
/// always ends with `/`, so joining a relative path appends to any path prefix it has.
pub fn parse_base_url(text: &str) -> Result<Url, EndpointError> {
    let mut url = Url::parse(text.trim()).map_err(|e| EndpointError::Invalid {
        url: text.into(),
        reason: e.to_string(),
    })?;
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(EndpointError::Extra { url: text.into() });
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointError::Scheme {
            url: text.into(),
            scheme: url.scheme().into(),
        });
    }
    let host = url
        .host_str()
        .ok_or_else(|| EndpointError::Invalid {
            url: text.into(),
            reason: "no host".into(),
        })?
        .to_string();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => {
            return Err(EndpointError::PlainHttpNotLoopback {
                url: text.into(),
                host,
            });
        }
        other => {
            return Err(EndpointError::Scheme {
                url: text.into(),
                scheme: other.into(),
            });
        }
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Whether a URL host names this machine: `localhost`, an address in `127.0.0.0/8`, or `::1`.
fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// The base URLs of every API runwarden calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Cloud Run Admin API v2.
    pub cloud_run: Url,
    /// IAP API v1.
    pub iap: Url,
    /// Cloud Resource Manager API v3.
    pub resource_manager: Url,
    /// Service Usage API v1beta1 (`services.generateServiceIdentity`).
    pub service_usage: Url,
    /// IAM API v1 (role definitions).
    pub iam: Url,
    /// Cloud Logging API v2 (Admin Activity audit entries).
    pub logging: Url,
    /// Base URL of the Auth0 tenant's Management and Authentication APIs. `None` means "derive
    /// it from the Settings' domain" (`https://DOMAIN/`).
    pub auth0: Option<Url>,
}

impl Endpoints {
    /// The production endpoints.
    pub fn production() -> Endpoints {
        Endpoints {
            cloud_run: Url::parse(CLOUD_RUN).expect("constant URL"),
            iap: Url::parse(IAP).expect("constant URL"),
            resource_manager: Url::parse(RESOURCE_MANAGER).expect("constant URL"),
            service_usage: Url::parse(SERVICE_USAGE).expect("constant URL"),
            iam: Url::parse(IAM).expect("constant URL"),
            logging: Url::parse(LOGGING).expect("constant URL"),
            auth0: None,
        }
    }

    /// Every API on one base URL (a simulator, or a proxy).
    pub fn single(base: Url) -> Endpoints {
        Endpoints {
            cloud_run: base.clone(),
            iap: base.clone(),
            resource_manager: base.clone(),
            service_usage: base.clone(),
            iam: base.clone(),
            logging: base.clone(),
            auth0: Some(base),
        }
    }

    /// Production endpoints, or everything on `override_url` when one is given
    /// (`--endpoint` / `RUNWARDEN_ENDPOINT`).
    pub fn from_override(override_url: Option<&str>) -> Result<Endpoints, EndpointError> {
        match override_url {
            None => Ok(Endpoints::production()),
            Some(text) => Ok(Endpoints::single(parse_base_url(text)?)),
        }
    }

    /// The Auth0 base URL for a tenant domain: the override when there is one, else
    /// `https://DOMAIN/`.
    pub fn auth0_base(&self, domain: &str) -> Result<Url, EndpointError> {
        if let Some(url) = &self.auth0 {
            return Ok(url.clone());
        }
        auth0_domain_url(domain)
    }
}

/// `https://DOMAIN/` for an Auth0 tenant domain given without a scheme.
pub fn auth0_domain_url(domain: &str) -> Result<Url, EndpointError> {
    let bad = || EndpointError::Auth0Domain {
        domain: domain.into(),
    };
    if domain.is_empty() || domain.contains("://") || domain.contains('/') {
        return Err(bad());
    }
    let url = Url::parse(&format!("https://{domain}/")).map_err(|_| bad())?;
    if url.host_str().is_none() || url.path() != "/" {
        return Err(bad());
    }
    Ok(url)
}

/// `base` with `segments` appended to its path, each segment percent-encoded so that only
/// RFC 3986 unreserved characters (and `:`, which Google's custom methods need) stay literal:
/// a name can never smuggle in a `/`, `?` or `#`, and Auth0 user ids (`auth0|123`) are sent
/// as `auth0%7C123`, as Auth0 documents.
pub fn join_segments(base: &Url, segments: &[&str]) -> Url {
    let mut path = base.path().trim_end_matches('/').to_string();
    for segment in segments {
        path.push('/');
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':') {
                path.push(byte as char);
            } else {
                path.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    let mut url = base.clone();
    url.set_path(&path);
    url
}

/// Timeouts of the shared HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Establishing a connection (TCP and TLS).
    pub connect: std::time::Duration,
    /// One whole request, from sending to the last byte of the answer.
    pub request: std::time::Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: std::time::Duration::from_secs(10),
            request: std::time::Duration::from_secs(60),
        }
    }
}

/// The one `reqwest::Client` every API client shares (one connection pool, one TLS setup).
/// A timed-out request is a transient error, retried by `retry`.
///
/// Redirects are never followed: no Google or Auth0 API call runwarden makes answers with one,
/// and following a `307` re-sends the request body, which for `POST /oauth/token` is the Auth0
/// client secret, to wherever `Location` points. A `3xx` answer fails the call instead.
pub fn http_client(timeouts: HttpTimeouts) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("runwarden/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
}

/// Why an answer's body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(
        "the answer is larger than {limit} bytes{declared}, more than this call can legitimately \
         return; it was not read (is something other than the API answering?)",
        declared = .declared.map(|n| format!(" (Content-Length {n})")).unwrap_or_default()
    )]
    TooLarge { limit: usize, declared: Option<u64> },
    #[error("the answer's body broke off: {0}")]
    Transport(#[source] reqwest::Error),
}

/// Reads an answer's body, at most `limit` bytes: refused at once when `Content-Length`
/// announces more, and read chunk by chunk otherwise, so an endless or huge body costs at most
/// `limit` bytes of memory.
pub async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    let declared = response.content_length();
    if let Some(len) = declared.filter(|&len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit, declared: Some(len) });
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit, declared: None });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One case: the input and either the normalised URL or a fragment of the error message.
    fn check(input: &str, expect: Result<&str, &str>) {
        match (parse_base_url(input), expect) {
            (Ok(url), Ok(want)) => assert_eq!(url.as_str(), want, "{input}"),
            (Err(err), Err(fragment)) => {
                assert!(
                    err.to_string().contains(fragment),
                    "{input}: {err} lacks {fragment:?}"
                )
            }
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn https_is_accepted_anywhere_and_gets_a_trailing_slash() {
        check(
            "https://run.googleapis.com",
            Ok("https://run.googleapis.com/"),
        );
        check(
            "https://proxy.example.com/google",
            Ok("https://proxy.example.com/google/"),
        );
        check("https://10.0.0.1:8443/", Ok("https://10.0.0.1:8443/"));
    }

    #[test]
    fn plain_http_is_accepted_only_for_loopback() {
        check("http://127.0.0.1:8787", Ok("http://127.0.0.1:8787/"));
        check("http://127.1.2.3:1/", Ok("http://127.1.2.3:1/"));
        check("http://localhost:8787", Ok("http://localhost:8787/"));
        check("http://[::1]:8787", Ok("http://[::1]:8787/"));
        check("http://10.0.0.1:8787", Err("non-loopback host (10.0.0.1)"));
        check("http://sim.example.com", Err("Use https://"));
        check("http://127.0.0.1.example.com", Err("non-loopback"));
        check("http://[::2]:1", Err("non-loopback"));
    }

    #[test]
    fn other_schemes_garbage_and_credentials_are_refused() {
        check("ftp://127.0.0.1", Err("scheme \"ftp\""));
        check("127.0.0.1:8787", Err("not a valid URL"));
        check("localhost:8787", Err("scheme \"localhost\""));
        check("not a url", Err("not a valid URL"));
        check("https://user:pw@example.com", Err("credentials"));
        check("https://example.com/?x=1", Err("query"));
    }

    #[test]
    fn joined_segments_are_percent_encoded_except_unreserved_and_colon() {
        let base = parse_base_url("http://127.0.0.1:9/pre").unwrap();
        let url = join_segments(&base, &["v2", "a|b", "x/../y?z#w", "s:getIamPolicy", "é"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/pre/v2/a%7Cb/x%2F..%2Fy%3Fz%23w/s:getIamPolicy/%C3%A9"
        );
        let root = parse_base_url("https://run.googleapis.com").unwrap();
        assert_eq!(
            join_segments(&root, &["v2"]).as_str(),
            "https://run.googleapis.com/v2"
        );
    }

    #[test]
    fn an_override_sends_every_api_to_one_base_url() {
        let e = Endpoints::from_override(Some("http://127.0.0.1:9")).unwrap();
        for url in [&e.cloud_run, &e.iap, &e.resource_manager, &e.service_usage, &e.iam, &e.logging] {
            assert_eq!(url.as_str(), "http://127.0.0.1:9/");
        }
        assert_eq!(
            e.auth0_base("acme.eu.auth0.com").unwrap().as_str(),
            "http://127.0.0.1:9/"
        );
        let p = Endpoints::from_override(None).unwrap();
        assert_eq!(
            p.auth0_base("acme.eu.auth0.com").unwrap().as_str(),
            "https://acme.eu.auth0.com/"
        );
        assert!(p.auth0_base("https://acme.eu.auth0.com").is_err());
        assert!(p.auth0_base("").is_err());
    }
}
