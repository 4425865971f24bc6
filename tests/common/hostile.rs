//! A hostile loopback proxy in front of the simulator, for tests that inject what a broken or
//! malicious server could answer. Include it with
//! `#[path = "common/hostile.rs"] mod hostile;` (or `#[path = "../common/hostile.rs"]` from a
//! support module).
//!
//! Every request is logged (method and path with query). The first [`Rule`] that matches a
//! request (method, and a path prefix, substring or exact path, all tried against the path with
//! its query) answers it: a canned status, headers and body; an endless or oversized streamed
//! body; a delay before forwarding. A rule may apply only a number of times. Everything else is
//! forwarded to the upstream simulator unchanged.
//!
//! ```ignore
//! let proxy = hostile::Hostile::start(&sim.base_url).await;
//! proxy.add(Rule::path_contains("billing-api:getIamPolicy").json(200, json!({})));
//! // point runwarden at proxy.base_url (`--endpoint`, or the clients' base URL)
//! assert_eq!(proxy.hits("billing-api:getIamPolicy"), 1);
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// How a rule matches the request's path (with its query string).
#[derive(Debug, Clone)]
pub enum Match {
    Exact(String),
    Prefix(String),
    Contains(String),
}

impl Match {
    fn matches(&self, path: &str, path_and_query: &str) -> bool {
        match self {
            Match::Exact(p) => path == p,
            Match::Prefix(p) => path_and_query.starts_with(p.as_str()),
            Match::Contains(p) => path_and_query.contains(p.as_str()),
        }
    }
}

/// What a matching rule does.
#[derive(Clone)]
pub enum Answer {
    /// This status, these headers and this body.
    Canned {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// This status and a body of `total` bytes sent in chunks of `chunk` bytes (`fill` over and
    /// over), chunked (no `Content-Length`) unless `declare_length`.
    Stream {
        status: u16,
        fill: Vec<u8>,
        total: u64,
        declare_length: bool,
    },
    /// Forward, adding these headers to the upstream's answer (none: unchanged).
    Forward { headers: Vec<(String, String)> },
    /// A JSON answer made from the number of the matching request (0, 1, 2, ...), e.g. a page
    /// whose next-page token never repeats.
    Counted(Arc<dyn Fn(usize) -> (u16, serde_json::Value) + Send + Sync>),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Canned { status, .. } => write!(f, "Canned({status})"),
            Answer::Stream { status, total, .. } => write!(f, "Stream({status}, {total} bytes)"),
            Answer::Forward { headers } => write!(f, "Forward({headers:?})"),
            Answer::Counted(_) => f.write_str("Counted"),
        }
    }
}

/// One fault: which requests, what answer, how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<String>,
    pub matcher: Match,
    pub answer: Answer,
    /// Applies this many times, then lets requests through (`None`: always).
    pub times: Option<usize>,
}

impl Rule {
    pub fn new(matcher: Match) -> Rule {
        Rule {
            method: None,
            matcher,
            answer: Answer::Forward { headers: vec![] },
            times: None,
        }
    }
    pub fn path_exact(path: &str) -> Rule {
        Rule::new(Match::Exact(path.into()))
    }
    pub fn path_prefix(prefix: &str) -> Rule {
        Rule::new(Match::Prefix(prefix.into()))
    }
    pub fn path_contains(fragment: &str) -> Rule {
        Rule::new(Match::Contains(fragment.into()))
    }
    /// Only requests with this method (`GET`, `POST`, ...).
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_ascii_uppercase());
        self
    }
    /// Applies only to the first `n` matching requests.
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
    /// Answers `status` with `body` (no content type).
    pub fn respond(mut self, status: u16, body: impl Into<Vec<u8>>) -> Rule {
        self.answer = Answer::Canned {
            status,
            headers: vec![],
            body: body.into(),
        };
        self
    }
    /// Answers `status` with a JSON body.
    pub fn json(self, status: u16, body: serde_json::Value) -> Rule {
        self.respond(status, body.to_string())
            .header("content-type", "application/json")
    }
    /// Adds a header to a canned answer, or to the forwarded answer of a rule given no answer.
    pub fn header(mut self, name: &str, value: &str) -> Rule {
        if let Answer::Canned { headers, .. } | Answer::Forward { headers } = &mut self.answer {
            headers.push((name.into(), value.into()));
        }
        self
    }
    /// Answers `status` with a body of `total` bytes (`fill` repeated), streamed in chunks;
    /// with `declare_length` the `Content-Length` header announces it up front.
    pub fn stream(mut self, status: u16, fill: &[u8], total: u64, declare_length: bool) -> Rule {
        self.answer = Answer::Stream {
            status,
            fill: fill.to_vec(),
            total,
            declare_length,
        };
        self
    }
    /// Answers with `make(n)` for the rule's `n`-th matching request (from 0).
    pub fn counted(mut self, make: impl Fn(usize) -> (u16, serde_json::Value) + Send + Sync + 'static) -> Rule {
        self.answer = Answer::Counted(Arc::new(make));
        self
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The path with its query string.
    pub path: String,
    /// Whether a rule matched it (else it was forwarded unchanged).
    pub faulted: bool,
}

struct Rules {
    rule: Rule,
    used: AtomicUsize,
}

struct Proxy {
    upstream: String,
    rules: Mutex<Vec<Arc<Rules>>>,
    log: Mutex<Vec<Seen>>,
    http: reqwest::Client,
}

/// A running hostile proxy.
#[derive(Clone)]
pub struct Hostile {
    /// `http://127.0.0.1:PORT`, the base URL to point runwarden at.
    pub base_url: String,
    state: Arc<Proxy>,
}

impl Hostile {
    /// Starts a proxy to `upstream` (a base URL such as the simulator's) with no rules yet.
    pub async fn start(upstream: &str) -> Hostile {
        let state = Arc::new(Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Hostile { base_url, state }
    }

    /// Adds a rule (after the ones already there: the first match wins).
    pub fn add(&self, rule: Rule) -> &Hostile {
        self.state.rules.lock().unwrap().push(Arc::new(Rules {
            rule,
            used: AtomicUsize::new(0),
        }));
        self
    }

    /// Removes every rule: from now on everything is forwarded.
    pub fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests whose path (with query) contains `fragment`.
    pub fn hits(&self, fragment: &str) -> usize {
        self.requests()
            .iter()
            .filter(|s| s.path.contains(fragment))
            .count()
    }
}

fn pick(p: &Proxy, method: &Method, uri: &Uri) -> Option<Answer> {
    let path_and_query = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let rules = p.rules.lock().unwrap();
    for r in rules.iter() {
        let rule = &r.rule;
        if rule.method.as_deref().is_some_and(|m| m != method.as_str()) {
            continue;
        }
        if !rule.matcher.matches(uri.path(), path_and_query) {
            continue;
        }
        let n = r.used.fetch_add(1, Ordering::SeqCst);
        if rule.times.is_some_and(|times| n >= times) {
            continue;
        }
        return Some(match &rule.answer {
            Answer::Counted(make) => {
                let (status, body) = make(n);
                Answer::Canned {
                    status,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body.to_string().into_bytes(),
                }
            }
            other => other.clone(),
        });
    }
    None
}

async fn handle(
    State(p): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = pick(&p, &method, &uri);
    let faulted = answer.is_some();
    p.log.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .to_string(),
        faulted,
    });
    match answer {
        Some(Answer::Canned {
            status,
            headers,
            body,
        }) => {
            let mut out = HeaderMap::new();
            for (k, v) in headers {
                out.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(&v).unwrap(),
                );
            }
            (StatusCode::from_u16(status).unwrap(), out, body).into_response()
        }
        Some(Answer::Stream {
            status,
            fill,
            total,
            declare_length,
        }) => stream(status, fill, total, declare_length),
        Some(Answer::Forward { headers: extra }) => {
            let mut response = forward(&p, method, &uri, headers, body).await;
            for (k, v) in extra {
                response.headers_mut().insert(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(&v).unwrap(),
                );
            }
            response
        }
        Some(Answer::Counted(_)) => unreachable!("turned into a canned answer by pick"),
        None => forward(&p, method, &uri, headers, body).await,
    }
}

/// A body of `total` bytes, produced lazily (a 2 GB body costs the proxy nothing).
fn stream(status: u16, fill: Vec<u8>, total: u64, declare_length: bool) -> Response {
    let chunk = Bytes::from(fill.repeat((64 * 1024 / fill.len().max(1)).max(1)));
    let chunks = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = (total - sent).min(chunk.len() as u64) as usize;
            Some((
                Ok::<Bytes, std::convert::Infallible>(chunk.slice(..n)),
                sent + n as u64,
            ))
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json"),
    );
    if declare_length {
        response
            .headers_mut()
            .insert("content-length", HeaderValue::from(total));
    }
    response
}

async fn forward(p: &Proxy, method: Method, uri: &Uri, headers: HeaderMap, body: Bytes) -> Response {
    let target = format!(
        "{}{}",
        p.upstream,
        uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/")
    );
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
    let mut request = p.http.request(method, target).body(body.to_vec());
    // The Host header is kept: the simulator checks a Google token request's audience against
    // the address it was asked on, which is the proxy's.
    for (name, value) in headers.iter() {
        if name != "content-length" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_str().as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                out.append(n, v);
            }
        }
    }
    match answer.bytes().await {
        Ok(bytes) => (status, out, bytes.to_vec()).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
