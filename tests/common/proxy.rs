//! A loopback proxy in front of the simulator that denies one path with Google's 403, for the
//! test of a permission error on one service (the simulator has no per-resource denial).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

struct Proxy {
    upstream: String,
    /// The denied path; with a leading `*`, every path ending with the rest.
    denied: String,
    hits: AtomicUsize,
    http: reqwest::Client,
}

/// A running proxy: its base URL and how often the denied path was asked for.
pub struct Denying {
    pub base_url: String,
    state: Arc<Proxy>,
}

impl Denying {
    pub fn denied_hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

/// Starts a proxy to `upstream` that answers `denied_path` with 403 PERMISSION_DENIED
/// (`*:getIamPolicy`: every path ending with `:getIamPolicy`).
pub async fn deny(upstream: &str, denied_path: &str) -> Denying {
    let state = Arc::new(Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        denied: denied_path.to_string(),
        hits: AtomicUsize::new(0),
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Denying { base_url, state }
}

async fn forward(
    State(p): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let denied = match p.denied.strip_prefix('*') {
        Some(suffix) => uri.path().ends_with(suffix),
        None => uri.path() == p.denied,
    };
    if denied {
        p.hits.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({"error": {
            "code": 403,
            "message": format!("Permission 'run.services.getIamPolicy' denied on resource '{}'", uri.path()),
            "status": "PERMISSION_DENIED",
        }});
        return (
            StatusCode::FORBIDDEN,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response();
    }
    let target = format!(
        "{}{}",
        p.upstream,
        uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/")
    );
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
    let mut request = p.http.request(method, target).body(body.to_vec());
    for (name, value) in headers.iter() {
        if name != "host" && name != "content-length" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = request.send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            if let (Ok(n), Ok(v)) = (
                axum::http::HeaderName::from_bytes(name.as_str().as_bytes()),
                axum::http::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                out.insert(n, v);
            }
        }
    }
    let bytes = answer.bytes().await.unwrap();
    (status, out, bytes.to_vec()).into_response()
}
