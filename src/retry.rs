//! The one place where calls are retried and paced.
//!
//! HTTP clients (`google`, `identity`) make exactly one attempt per call and classify what went
//! wrong ([`ErrorClass`]); this module decides what happens next:
//!
//! * [`retry`] re-runs an operation with exponential backoff and jitter (backon) while the error
//!   is retryable: quota (429), transient (500/502/503/504, timeouts, connection errors), and
//!   one retry after an authentication failure (a token that expired in flight). When the server
//!   says how long to wait (`Retry-After`, Google's `RetryInfo`, Auth0's `x-ratelimit-reset`),
//!   the client waits at least that long. Not found, permission denied, conflict (409) and
//!   fatal errors are returned at once: retrying them cannot help, and a conflict belongs to the
//!   caller (apply re-reads and re-plans).
//! * [`Pacer`] spaces requests to one API so a pass stays inside the documented request quota
//!   instead of discovering it through 429s, and pauses every caller of that API when one of
//!   them is told to slow down.
//!
//! Invariant: nothing else in runwarden sleeps and tries again.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// What kind of failure an API call met; decides whether it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// 404: the resource does not exist.
    NotFound,
    /// 403: the caller may not do this. Never read as "gone": Google answers 403 for resources
    /// that exist but are not visible.
    PermissionDenied,
    /// 409 (Google `ABORTED`): a concurrent change; the caller re-reads.
    Conflict,
    /// 429 (`RESOURCE_EXHAUSTED`, Auth0 `too_many_requests`): slow down and retry.
    Quota,
    /// 500/502/503/504, timeouts, connection failures: retry with backoff.
    Transient,
    /// 401: the token was refused; retried once with a fresh token.
    Unauthenticated,
    /// Anything else (400, malformed answers, configuration errors): not retried.
    Fatal,
}

impl ErrorClass {
    /// The class of an HTTP status code, for APIs whose body adds nothing more precise.
    pub fn from_status(status: u16) -> ErrorClass {
        match status {
            401 => ErrorClass::Unauthenticated,
            403 => ErrorClass::PermissionDenied,
            404 => ErrorClass::NotFound,
            409 => ErrorClass::Conflict,
            408 | 500 | 502 | 503 | 504 => ErrorClass::Transient,
            429 => ErrorClass::Quota,
            _ => ErrorClass::Fatal,
        }
    }

    /// The class of a transport error (no HTTP answer).
    pub fn from_transport(err: &reqwest::Error) -> ErrorClass {
        if err.is_timeout() || err.is_connect() || err.is_request() || err.is_body() {
            ErrorClass::Transient
        } else {
            ErrorClass::Fatal
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::NotFound => "not found",
            ErrorClass::PermissionDenied => "permission denied",
            ErrorClass::Conflict => "conflict",
            ErrorClass::Quota => "quota exceeded",
            ErrorClass::Transient => "transient",
            ErrorClass::Unauthenticated => "unauthenticated",
            ErrorClass::Fatal => "fatal",
        })
    }
}

/// An error that knows its class and, when the server said so, how long to wait.
pub trait Classified {
    fn class(&self) -> ErrorClass;
    /// The server's requested wait before the next attempt, if it gave one.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// How persistently to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (quota and transient errors).
    pub max_retries: usize,
    /// First backoff delay; doubles per retry, with random jitter added.
    pub min_delay: Duration,
    /// Largest computed backoff delay.
    pub max_delay: Duration,
    /// A server-requested wait longer than this is not honoured: the call fails instead of
    /// stalling the pass (for example an Auth0 daily limit).
    pub max_server_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            max_server_wait: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries (for callers that handle errors themselves).
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }
}

/// Runs `op` until it succeeds, fails with an error that is not retryable, or the policy's
/// retries are used up. `what` names the call in log events (never include tokens in it).
///
/// # Guarantees
/// * Quota and transient errors are retried up to `max_retries` times with exponential backoff
///   and jitter; a longer server-requested wait (`retry_after`) replaces the computed delay
///   (plus a little jitter so that parallel callers do not return in lockstep).
/// * An authentication failure is retried once.
/// * Every other class is returned after the first attempt.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, op: F) -> Result<T, E>
where
    E: Classified + fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .with_jitter();
    let unauthenticated_retries = std::sync::atomic::AtomicUsize::new(0);
    let max_server_wait = policy.max_server_wait;
    op.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|err: &E| match err.class() {
            ErrorClass::Quota | ErrorClass::Transient => true,
            ErrorClass::Unauthenticated => {
                unauthenticated_retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0
            }
            _ => false,
        })
        .adjust(|err: &E, computed: Option<Duration>| {
            // `computed` is None once the retries are used up: then stop, whatever the server said.
            let computed = computed?;
            match err.retry_after() {
                Some(wait) if wait > max_server_wait => None,
                // Never sooner than the backoff either: a server that keeps answering "retry
                // now" (a reset already in the past) must not be hammered.
                Some(wait) => {
                    Some(wait.max(computed) + jitter(wait / 10 + Duration::from_millis(50)))
                }
                None => Some(computed),
            }
        })
        .notify(|err: &E, delay: Duration| {
            tracing::warn!(call = what, class = %err.class(), delay_ms = delay.as_millis() as u64,
                error = %err, "retrying after a failed call");
        })
        .await
}

/// A random duration in `[0, up_to)`.
fn jitter(up_to: Duration) -> Duration {
    let nanos = up_to.as_nanos().min(u64::MAX as u128) as u64;
    if nanos == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(fastrand::u64(0..nanos))
    }
}

/// The wait a response asks for: `Retry-After` (seconds or an HTTP date), else
/// `x-ratelimit-reset` (Auth0: epoch seconds at which the bucket refills), relative to `now`.
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(value) = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
        }
    }
    rate_limit_reset(headers).map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `x-ratelimit-reset` as a point in time.
pub fn rate_limit_reset(headers: &HeaderMap) -> Option<SystemTime> {
    let secs = header_u64(headers, "x-ratelimit-reset")?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// A numeric header such as `x-ratelimit-remaining`.
pub fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A request rate: `count` requests per `per`. Written `6000/min`, `50/s`, `100/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// `count` requests per second.
    pub fn per_second(count: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(1),
        }
    }
    /// `count` requests per minute.
    pub fn per_minute(count: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(60),
        }
    }
    /// Requests per second as a float.
    pub fn per_sec_f64(&self) -> f64 {
        self.count as f64 / self.per.as_secs_f64()
    }
    /// The spacing between two requests at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
    /// This rate scaled by `factor` (e.g. 0.95 to keep a margin below a quota).
    pub fn scaled(&self, factor: f64) -> Rate {
        let count = ((self.count as f64) * factor).floor().max(1.0) as u32;
        Rate {
            count,
            per: self.per,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s".to_string(),
            60 => "min".to_string(),
            3600 => "h".to_string(),
            _ => format!("{}ms", self.per.as_millis()),
        };
        write!(f, "{}/{}", self.count, unit)
    }
}

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {text:?}: write COUNT/UNIT with a positive COUNT and UNIT s, min or h (e.g. 900/min)"
)]
pub struct RateError {
    pub text: String,
}

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(text: &str) -> Result<Rate, RateError> {
        let err = || RateError { text: text.into() };
        let (count, unit) = text.trim().split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(err()),
        };
        if count == 0 {
            return Err(err());
        }
        Ok(Rate { count, per })
    }
}

/// Spaces the requests to one API: at most `rate`, evenly (a GCRA / virtual-scheduling pacer
/// with no burst), and not before a pause the server asked for has ended.
///
/// Each caller reserves the next free slot under a short lock and then sleeps outside it, so
/// waiting callers are served in order and never hold the lock while sleeping.
#[derive(Debug)]
pub struct Pacer {
    name: &'static str,
    interval: Option<Duration>,
    state: Mutex<PacerState>,
}

#[derive(Debug)]
struct PacerState {
    /// When the next request may start.
    next_slot: Instant,
    /// No request starts before this (a 429's Retry-After, an exhausted rate-limit bucket).
    paused_until: Option<Instant>,
}

impl Pacer {
    /// A pacer for `rate`; `None` paces nothing (but still honours pauses).
    pub fn new(name: &'static str, rate: Option<Rate>) -> Pacer {
        Pacer {
            name,
            interval: rate.map(|r| r.interval()),
            state: Mutex::new(PacerState {
                next_slot: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// The API this pacer spaces (for logs).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Waits until this caller may send one request.
    pub async fn acquire(&self) {
        let start = {
            let now = Instant::now();
            let mut state = self.state.lock().expect("pacer lock poisoned");
            let mut start = state.next_slot.max(now);
            if let Some(until) = state.paused_until {
                if until > start {
                    start = until;
                } else if until <= now {
                    state.paused_until = None;
                }
            }
            state.next_slot = start + self.interval.unwrap_or(Duration::ZERO);
            start
        };
        if start > Instant::now() {
            tokio::time::sleep_until(start).await;
        }
    }

    /// Holds every caller back for `wait` from now (extends, never shortens, a pause).
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut state = self.state.lock().expect("pacer lock poisoned");
        if state.paused_until.is_none_or(|p| p < until) {
            tracing::debug!(
                api = self.name,
                wait_ms = wait.as_millis() as u64,
                "pausing requests"
            );
            state.paused_until = Some(until);
        }
    }

    /// Takes a response's rate-limit budget into account: when at most `reserve` requests are
    /// left in the current window, pauses until the window resets, so the requests still in
    /// flight do not run into 429s.
    pub fn observe_budget(&self, remaining: u64, reset_in: Duration, reserve: u64) {
        if remaining <= reserve {
            self.pause_for(reset_in);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct E(ErrorClass, Option<Duration>);
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)
        }
    }
    impl Classified for E {
        fn class(&self) -> ErrorClass {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    /// Runs `retry` over a script of failures (then success) and returns (attempts, result ok).
    async fn run_script(script: Vec<E>) -> (usize, Result<(), ErrorClass>) {
        let attempts = AtomicUsize::new(0);
        let script = Mutex::new(script.into_iter());
        let policy = RetryPolicy {
            max_retries: 3,
            ..RetryPolicy::default()
        };
        let result = retry(&policy, "test", || {
            attempts.fetch_add(1, Ordering::SeqCst);
            let next = script.lock().unwrap().next();
            async move { next.map_or(Ok(()), Err) }
        })
        .await;
        (attempts.load(Ordering::SeqCst), result.map_err(|e| e.0))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_quota_and_transient_errors_until_success() {
        let script = vec![E(ErrorClass::Quota, None), E(ErrorClass::Transient, None)];
        assert_eq!(run_script(script).await, (3, Ok(())));
    }

    #[tokio::test(start_paused = true)]
    async fn returns_non_retryable_classes_after_one_attempt() {
        for class in [
            ErrorClass::NotFound,
            ErrorClass::PermissionDenied,
            ErrorClass::Conflict,
            ErrorClass::Fatal,
        ] {
            assert_eq!(
                run_script(vec![E(class, None)]).await,
                (1, Err(class)),
                "{class}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_an_authentication_failure_exactly_once() {
        let once = vec![E(ErrorClass::Unauthenticated, None)];
        assert_eq!(run_script(once).await, (2, Ok(())));
        let twice = vec![
            E(ErrorClass::Unauthenticated, None),
            E(ErrorClass::Unauthenticated, None),
        ];
        assert_eq!(
            run_script(twice).await,
            (2, Err(ErrorClass::Unauthenticated))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_retries() {
        let script = (0..10).map(|_| E(ErrorClass::Transient, None)).collect();
        assert_eq!(run_script(script).await, (4, Err(ErrorClass::Transient)));
    }

    #[tokio::test(start_paused = true)]
    async fn honours_the_server_requested_wait() {
        let t0 = Instant::now();
        let script = vec![E(ErrorClass::Quota, Some(Duration::from_secs(7)))];
        assert_eq!(run_script(script).await, (2, Ok(())));
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_secs(7), "waited {waited:?}");
        assert!(waited < Duration::from_secs(8), "waited {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_to_stall_on_an_absurd_server_wait() {
        let script = vec![E(ErrorClass::Quota, Some(Duration::from_secs(86_400)))];
        assert_eq!(run_script(script).await, (1, Err(ErrorClass::Quota)));
    }

    #[test]
    fn classifies_http_statuses() {
        for (status, class) in [
            (401, ErrorClass::Unauthenticated),
            (403, ErrorClass::PermissionDenied),
            (404, ErrorClass::NotFound),
            (409, ErrorClass::Conflict),
            (429, ErrorClass::Quota),
            (500, ErrorClass::Transient),
            (503, ErrorClass::Transient),
            (504, ErrorClass::Transient),
            (400, ErrorClass::Fatal),
        ] {
            assert_eq!(ErrorClass::from_status(status), class, "{status}");
        }
    }

    #[test]
    fn reads_server_waits_from_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let check = |pairs: &[(&'static str, String)], want: Option<u64>| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            assert_eq!(
                server_wait(&h, now),
                want.map(Duration::from_secs),
                "{pairs:?}"
            );
        };
        check(&[("retry-after", "30".into())], Some(30));
        check(
            &[(
                "retry-after",
                httpdate::fmt_http_date(now + Duration::from_secs(12)),
            )],
            Some(12),
        );
        check(&[("x-ratelimit-reset", "1000005".into())], Some(5));
        check(&[("x-ratelimit-reset", "999999".into())], Some(0));
        check(
            &[
                ("retry-after", "3".into()),
                ("x-ratelimit-reset", "1000009".into()),
            ],
            Some(3),
        );
        check(&[], None);
    }

    #[test]
    fn parses_and_prints_rates() {
        for (text, count, secs, shown) in [
            ("6000/min", 6000, 60, "6000/min"),
            ("50/s", 50, 1, "50/s"),
            (" 10 / h ", 10, 3600, "10/h"),
        ] {
            let rate: Rate = text.parse().unwrap();
            assert_eq!((rate.count, rate.per.as_secs()), (count, secs), "{text}");
            assert_eq!(rate.to_string(), shown);
        }
        for bad in ["", "10", "0/s", "x/s", "10/day", "-1/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_requests_evenly_at_the_rate() {
        let pacer = Pacer::new("t", Some(Rate::per_second(10)));
        let t0 = Instant::now();
        for _ in 0..21 {
            pacer.acquire().await;
        }
        // The first request starts at once, the other 20 each 100 ms later.
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_pause_holds_every_caller_back() {
        let pacer = Pacer::new("t", None);
        pacer.acquire().await;
        let t0 = Instant::now();
        pacer.pause_for(Duration::from_secs(3));
        pacer.pause_for(Duration::from_secs(1)); // a shorter pause does not shorten it
        pacer.acquire().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        pacer.observe_budget(5, Duration::from_secs(2), 2); // plenty left: no pause
        let t1 = Instant::now();
        pacer.acquire().await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
        pacer.observe_budget(1, Duration::from_secs(2), 2);
        pacer.acquire().await;
        assert_eq!(t1.elapsed(), Duration::from_secs(2));
    }
}
