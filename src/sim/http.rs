//! The HTTP edge of the simulator: one axum fallback handler that classifies each request by
//! path, applies latency, authentication, quotas and injected errors, dispatches to the
//! synchronous API handlers, and records the request.
//!
//! Routing is by hand rather than with axum routes because Google's custom methods put a colon
//! inside the last path segment (`services/S:getIamPolicy`), which path routers do not split.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

use super::faults::{ApiClass, FaultState};
use super::{RequestRecord, SimHandle, SimState, auth0, google, lock};

/// A request, already read.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub raw_query: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// The first value of a query parameter.
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The bearer token of the `Authorization` header.
    pub fn bearer(&self) -> Option<&str> {
        let value = self.headers.get("authorization")?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }

    /// `http://HOST` as the client addressed us (for the token endpoint's audience).
    pub fn origin(&self) -> String {
        let host = self
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    }

    /// The body as form fields (for `application/x-www-form-urlencoded`).
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    pub fn is_json(&self) -> bool {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"))
    }
}

/// A response, before it becomes HTTP.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// `operations.wait`: sleep until this instant (outside any lock), then answer the operation.
    pub wait: Option<(String, Instant)>,
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: value.to_string(),
            wait: None,
        }
    }

    /// A Google error: `{"error":{"code","message","status"}}`.
    pub fn google(code: u16, status: &str, message: &str) -> Reply {
        Reply::json(
            code,
            &serde_json::json!({"error": {"code": code, "message": message, "status": status}}),
        )
    }

    /// An Auth0 Management API error: `{statusCode, error, message, errorCode?}`.
    pub fn auth0(code: u16, message: &str, error_code: Option<&str>) -> Reply {
        let mut body = serde_json::json!({
            "statusCode": code,
            "error": reason_phrase(code),
            "message": message,
        });
        if let Some(c) = error_code {
            body["errorCode"] = c.into();
        }
        Reply::json(code, &body)
    }

    /// An OAuth token endpoint error: `{error, error_description}`.
    pub fn oauth(code: u16, error: &str, description: &str) -> Reply {
        Reply::json(
            code,
            &serde_json::json!({"error": error, "error_description": description}),
        )
    }
}

fn reason_phrase(code: u16) -> &'static str {
    StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The canonical Google status name for an HTTP status.
pub fn google_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Which API a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Admin,
    GoogleToken,
    Google(Option<ApiClass>),
    Auth0Token,
    Auth0Public,
    Auth0Management,
    Unknown,
}

fn classify(req: &Req) -> Family {
    let p = req.path.as_str();
    if p.starts_with("/sim/") || p == "/sim" {
        Family::Admin
    } else if p == "/token" {
        Family::GoogleToken
    } else if p == "/oauth/token" {
        Family::Auth0Token
    } else if p.starts_with("/.well-known/") {
        Family::Auth0Public
    } else if p.starts_with("/api/v2/") {
        Family::Auth0Management
    } else if p.starts_with("/v1/")
        || p.starts_with("/v2/")
        || p.starts_with("/v3/")
        || p.starts_with("/v1beta1/")
    {
        Family::Google(google::api_class(&req.method, p))
    } else {
        Family::Unknown
    }
}

/// The simulator's router: everything goes through [`handle`].
pub fn router(handle: SimHandle) -> Router {
    Router::new().fallback(handle_request).with_state(handle)
}

async fn handle_request(
    State(sim): State<SimHandle>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let raw_query = uri.query().unwrap_or("").to_string();
    let req = Req {
        method,
        path: uri.path().to_string(),
        query: form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        raw_query,
        headers,
        body,
    };
    let family = classify(&req);
    let st: &SimState = &sim.0;
    let reply = if family == Family::Admin {
        if peer.ip().is_loopback() {
            admin(&sim, &req)
        } else {
            Reply::google(
                403,
                "PERMISSION_DENIED",
                "the simulator's admin endpoints only answer loopback clients",
            )
        }
    } else {
        let latency = lock(&st.faults).faults.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut reply = process(st, &req, family);
        if let Some((name, until)) = reply.wait.take() {
            tokio::time::sleep_until(until.into()).await;
            reply = google::operation_reply(st, &name);
        }
        reply
    };
    let latency = start.elapsed();
    if family != Family::Admin {
        let record = RequestRecord {
            method: req.method.to_string(),
            path: req.path.clone(),
            query: req.raw_query.clone(),
            status: reply.status,
            latency,
        };
        if st.print_requests.load(std::sync::atomic::Ordering::Relaxed) {
            let q = if record.query.is_empty() {
                String::new()
            } else {
                format!("?{}", record.query)
            };
            eprintln!(
                "{} {}{} -> {} ({:.1} ms)",
                record.method,
                record.path,
                q,
                record.status,
                latency.as_secs_f64() * 1000.0
            );
        }
        let mut log = lock(&st.log);
        // A long-running `runwarden sim` under a benchmark must not grow without bound: keep
        // the most recent records (far more than one pass over a 10,000-service estate makes).
        if log.len() >= super::MAX_LOG_RECORDS {
            log.drain(..super::MAX_LOG_RECORDS / 10);
        }
        log.push(record);
    }
    into_response(reply)
}

fn into_response(reply: Reply) -> Response {
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    response
}

fn process(st: &SimState, req: &Req, family: Family) -> Reply {
    match family {
        Family::Admin => unreachable!("admin requests are answered before"),
        Family::GoogleToken => google::token(st, req),
        Family::Unknown => Reply::google(
            404,
            "NOT_FOUND",
            &format!(
                "The requested URL {} was not found on this server.",
                req.path
            ),
        ),
        Family::Google(class) => {
            if let Err(reply) = google::authenticate(st, req) {
                return reply;
            }
            if let Err(reply) = inject(st, class, &req.path, false).map(|_| ()) {
                return reply;
            }
            google::handle(st, req)
        }
        Family::Auth0Token | Family::Auth0Public | Family::Auth0Management => {
            let authed = if family == Family::Auth0Management {
                auth0::authenticate(st, req)
            } else {
                Ok(())
            };
            let (mut reply, limit) = match inject(st, Some(ApiClass::Auth0), &req.path, true) {
                Err(reply) => (reply, None),
                Ok(limit) => match authed {
                    Err(reply) => (reply, limit),
                    Ok(()) => {
                        let reply = match family {
                            Family::Auth0Token => auth0::token(st, req),
                            Family::Auth0Public => auth0::public(st, req),
                            _ => auth0::management(st, req),
                        };
                        (reply, limit)
                    }
                },
            };
            if let Some(headers) = limit {
                reply.headers.extend(headers);
            }
            reply
        }
    }
}

type RateHeaders = Vec<(&'static str, String)>;

fn rate_headers(f: &mut FaultState, class: ApiClass, path: &str) -> Option<RateHeaders> {
    let b = f.bucket(class, path, Instant::now())?;
    let now = super::state::epoch_seconds(std::time::SystemTime::now());
    Some(vec![
        ("x-ratelimit-limit", format!("{}", b.capacity as u64)),
        (
            "x-ratelimit-remaining",
            format!("{}", b.tokens.max(0.0).floor() as u64),
        ),
        (
            "x-ratelimit-reset",
            format!("{}", now + b.seconds_to_full().ceil() as u64),
        ),
    ])
}

/// Quotas, bursts and injected errors. `Ok` carries Auth0's rate-limit headers.
fn inject(
    st: &SimState,
    class: Option<ApiClass>,
    path: &str,
    auth0_shape: bool,
) -> Result<Option<RateHeaders>, Reply> {
    let mut f = lock(&st.faults);
    f.calls += 1;
    let now = Instant::now();
    let limited = match class.and_then(|c| f.bucket(c, path, now).map(|b| b.take(now))) {
        Some(Err(wait)) => Some(wait),
        _ => None,
    };
    let headers = if auth0_shape {
        class.and_then(|c| rate_headers(&mut f, c, path))
    } else {
        None
    };
    let too_many = |wait, headers| too_many(class, auth0_shape, wait, headers);
    if let Some(wait) = limited {
        return Err(too_many(wait, headers));
    }
    if let Some((every, length)) = f.faults.bursts {
        let position = (f.calls - 1) % (every + length);
        if position >= every {
            return Err(too_many(Duration::from_secs(1), headers));
        }
    }
    let rates = f.faults.error_rates.clone();
    drop(f);
    if !rates.is_empty() {
        let mut rng = lock(&st.rng);
        for (status, p) in rates {
            if rng.next_f64() < p {
                drop(rng);
                let mut reply = if status == 429 {
                    too_many(Duration::from_secs(1), headers)
                } else if auth0_shape {
                    Reply::auth0(status, "Injected fault (simulator)", None)
                } else {
                    let message = if status == 503 {
                        "The service is currently unavailable."
                    } else {
                        "Injected fault (simulator)."
                    };
                    Reply::google(status, google_status(status), message)
                };
                if status == 429 {
                    reply.status = 429;
                }
                return Err(reply);
            }
        }
    }
    Ok(headers)
}

/// A `429`: Auth0's shape (with its rate-limit headers) or Google's `RESOURCE_EXHAUSTED`, with
/// a `Retry-After` of `wait` (at least one second).
fn too_many(
    class: Option<ApiClass>,
    auth0_shape: bool,
    wait: Duration,
    headers: Option<RateHeaders>,
) -> Reply {
    let mut reply = if auth0_shape {
        let mut r = Reply::auth0(
            429,
            "Global limit has been reached",
            Some("too_many_requests"),
        );
        r.headers.extend(headers.unwrap_or_default());
        r
    } else {
        let api = class.map(|c| c.key()).unwrap_or("api");
        Reply::json(
            429,
            &serde_json::json!({"error": {
                "code": 429,
                "message": format!("Quota exceeded for quota metric '{api}' and limit '{api} per minute' of the simulated service."),
                "status": "RESOURCE_EXHAUSTED",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "RATE_LIMIT_EXCEEDED",
                    "domain": "googleapis.com",
                    "metadata": {"quota_metric": api}
                }]
            }}),
        )
    };
    reply.headers.push((
        "retry-after",
        format!("{}", wait.as_secs_f64().ceil().max(1.0) as u64),
    ));
    reply
}

/// `/sim/...`: request log, faults, state dump, IAM history.
fn admin(sim: &SimHandle, req: &Req) -> Reply {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/sim/requests") => Reply::json(
            200,
            &serde_json::to_value(sim.request_log()).unwrap_or_default(),
        ),
        ("DELETE", "/sim/requests") => {
            sim.clear_log();
            Reply::json(200, &serde_json::json!({}))
        }
        ("GET", "/sim/history") => Reply::json(
            200,
            &serde_json::to_value(sim.history()).unwrap_or_default(),
        ),
        ("GET", "/sim/state") => Reply::json(200, &sim.state_dump()),
        ("POST", "/sim/token") => super::user_token::user_token(sim, &req.body, req.headers.get("host").and_then(|h| h.to_str().ok())),
        ("GET", "/sim/faults") => Reply::json(200, &super::faults_to_json(&sim.faults())),
        ("POST", "/sim/faults") | ("PUT", "/sim/faults") => {
            let spec: super::FaultsSpec = match serde_json::from_slice(&req.body) {
                Ok(s) => s,
                Err(e) => {
                    return Reply::google(
                        400,
                        "INVALID_ARGUMENT",
                        &format!("faults body is not a faults section: {e}"),
                    );
                }
            };
            match sim.set_faults_spec(&spec) {
                Ok(()) => Reply::json(200, &super::faults_to_json(&sim.faults())),
                Err(e) => Reply::google(400, "INVALID_ARGUMENT", &e.to_string()),
            }
        }
        _ => Reply::google(
            404,
            "NOT_FOUND",
            "admin endpoints: GET/DELETE /sim/requests, GET /sim/history, GET /sim/state, GET/POST /sim/faults, POST /sim/token",
        ),
    }
}
