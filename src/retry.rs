//! The one place where calls are retried and paced.
//!
//! HTTP clients (`google`, `identity`) make exactly one attempt per call and classify what went
//! wrong ([`ErrorClass`]); this module decides what happens next:
//!
//! * [`retry`] re-runs an operation with exponential backoff and jitter (backon) while the error
//!   is retryable: quota (429), transient (500/502/503/504, timeouts, connection errors), and
//!   one retry after an authentication failure (a token that expired in flight). When the server
//!   says how long to wait (`Retry-After`, Google's `RetryInfo`, Auth0's `x-ratelimit-reset`),
//!   the client waits at least that long — unless that is longer than `max_server_wait`: then
//!   the call fails instead of stalling the pass. Not found, permission denied, conflict (409)
//!   and fatal errors are returned at once: retrying them cannot help, and a conflict belongs
//!   to the caller (apply re-reads and re-plans).
//! * [`Pacer`] spaces requests to one API so a pass stays inside the documented request quota
//!   instead of discovering it through 429s, and pauses every caller of that API when one of
//!   them is told to slow down (never longer than `max_pause`).
//! * [`Poll`] spaces and bounds the polls of a long-running operation.
//!
//! Whatever a server sends, a wait is read as at most [`WAIT_CEILING`] (no overflow, no panic),
//! and every wait here ends at once when the shutdown token it was given is cancelled.
//!
//! Invariant: nothing else in runwarden sleeps and tries again.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::HeaderMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (quota and transient errors).
    pub max_retries: usize,
    /// First backoff delay; doubles per retry, with random jitter added.
    pub min_delay: Duration,
    /// Largest computed backoff delay.
    pub max_delay: Duration,
    /// A server-requested wait longer than this is not honoured: the call fails instead of
    /// stalling the pass (for example an Auth0 daily limit, or a `Retry-After: 100000`).
    pub max_server_wait: Duration,
    /// Cancelled when the process shuts down: a wait between two attempts ends at once and the
    /// call returns its last error instead of trying again.
    pub shutdown: CancellationToken,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            max_server_wait: DEFAULT_MAX_SERVER_WAIT,
            shutdown: CancellationToken::new(),
        }
    }
}

/// The longest server-requested wait honoured by default (retries and pacer pauses alike).
pub const DEFAULT_MAX_SERVER_WAIT: Duration = Duration::from_secs(120);

/// Every server-requested wait is read as at most this long. Servers may send anything
/// (`Retry-After: 18446744073709551615`, `retryDelay: "1e20s"`, an `x-ratelimit-reset` in the
/// year 500 billion); clamped here, far above any `max_server_wait`, the call still fails as
/// "too long to wait", and no `Instant + Duration` built from it can overflow.
pub const WAIT_CEILING: Duration = Duration::from_secs(7 * 24 * 3600);

impl RetryPolicy {
    /// A policy that never retries (for callers that handle errors themselves).
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// This policy, with its waits ended by `shutdown`.
    pub fn until(self, shutdown: &CancellationToken) -> RetryPolicy {
        RetryPolicy {
            shutdown: shutdown.clone(),
            ..self
        }
    }

    /// The wait before the next attempt: the computed backoff, or the server's longer wait
    /// (plus a little jitter so parallel callers do not return in lockstep); `None` when the
    /// server asks for more than `max_server_wait`.
    fn next_delay(&self, server: Option<Duration>, computed: Duration) -> Option<Duration> {
        match server {
            Some(wait) if wait > self.max_server_wait => None,
            // Never sooner than the backoff either: a server that keeps answering "retry now"
            // (a reset already in the past) must not be hammered.
            Some(wait) => Some(
                wait.max(computed)
                    .saturating_add(jitter(wait / 10 + Duration::from_millis(50))),
            ),
            None => Some(computed),
        }
    }
}

/// Runs `op` until it succeeds, fails with an error that is not retryable, or the policy's
/// retries are used up. `what` names the call in log events (never include tokens in it).
///
/// # Guarantees
/// * Quota and transient errors are retried up to `max_retries` times with exponential backoff
///   and jitter; a longer server-requested wait (`retry_after`) replaces the computed delay.
///   A server-requested wait above `max_server_wait` is not waited for: the error is returned.
/// * An authentication failure is retried once.
/// * Every other class is returned after the first attempt.
/// * Once `policy.shutdown` is cancelled, no new attempt starts: a wait in progress ends at
///   once and the last error is returned.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T, E>
where
    E: Classified + fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .with_jitter()
        .build();
    let mut unauthenticated = 0;
    loop {
        let err = match op().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let retryable = match err.class() {
            ErrorClass::Quota | ErrorClass::Transient => true,
            ErrorClass::Unauthenticated => {
                unauthenticated += 1;
                unauthenticated == 1
            }
            _ => false,
        };
        // The iterator ends once the retries are used up: then stop, whatever the server said.
        let Some(computed) = delays.next().filter(|_| retryable) else {
            return Err(err);
        };
        let Some(delay) = policy.next_delay(err.retry_after(), computed) else {
            tracing::warn!(call = what, class = %err.class(),
                wait_s = err.retry_after().unwrap_or_default().as_secs(),
                max_wait_s = policy.max_server_wait.as_secs(), error = %err,
                "the server asks to wait longer than runwarden waits; the call fails");
            return Err(err);
        };
        tracing::warn!(call = what, class = %err.class(), delay_ms = delay.as_millis() as u64,
            error = %err, "retrying after a failed call");
        if !sleep_unless_cancelled(delay, &policy.shutdown).await {
            tracing::info!(call = what, "shutting down: not retrying");
            return Err(err);
        }
    }
}

/// Sleeps for `delay` unless `shutdown` is cancelled first; `false` when it was.
pub async fn sleep_unless_cancelled(delay: Duration, shutdown: &CancellationToken) -> bool {
    sleep_until_unless_cancelled(Instant::now() + delay.min(WAIT_CEILING), shutdown).await
}

/// Sleeps until `deadline` unless `shutdown` is cancelled first; `false` when it was.
pub async fn sleep_until_unless_cancelled(deadline: Instant, shutdown: &CancellationToken) -> bool {
    if shutdown.is_cancelled() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(deadline) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Paces the polls of something that finishes later (a long-running operation): the first poll
/// at once, each next one at least `interval` after the previous one started (the interval
/// grows by half each time, up to `max_interval`), none after `total` has passed or shutdown.
/// A server that answers "not done" at once is therefore asked a bounded number of times.
#[derive(Debug)]
pub struct Poll {
    deadline: Instant,
    interval: Duration,
    max_interval: Duration,
    last: Option<Instant>,
    shutdown: CancellationToken,
}

/// Why [`Poll::ready`] said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollEnd {
    /// `total` has passed.
    TimedOut,
    /// Shutdown was requested.
    ShuttingDown,
}

impl Poll {
    /// Polls for at most `total`, from 1 s apart up to 10 s apart.
    pub fn new(total: Duration, shutdown: &CancellationToken) -> Poll {
        Poll {
            deadline: Instant::now() + total.min(WAIT_CEILING),
            interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
            last: None,
            shutdown: shutdown.clone(),
        }
    }

    /// Time left until the deadline.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Waits until the next poll may start.
    pub async fn ready(&mut self) -> Result<(), PollEnd> {
        if let Some(last) = self.last {
            let next = (last + self.interval).min(self.deadline);
            self.interval = (self.interval * 3 / 2).min(self.max_interval);
            if !sleep_until_unless_cancelled(next, &self.shutdown).await {
                return Err(PollEnd::ShuttingDown);
            }
        }
        if self.shutdown.is_cancelled() {
            return Err(PollEnd::ShuttingDown);
        }
        if Instant::now() >= self.deadline {
            return Err(PollEnd::TimedOut);
        }
        self.last = Some(Instant::now());
        Ok(())
    }
}

/// A random duration in `[0, up_to)`.
/// `base` plus up to `fraction` of it at random (the loop's interval and requeue waits).
pub fn jittered(base: Duration, fraction: f64) -> Duration {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let unit = f64::from(nanos % 1_000_000) / 1_000_000.0;
    // Saturating: a huge base (the caller bounds it, but this never panics) stays huge.
    Duration::try_from_secs_f64(base.as_secs_f64() * (1.0 + fraction.max(0.0) * unit)).unwrap_or(Duration::MAX)
}

/// The waits of a run of failed passes (`reconcile`'s requeue): from `min`, doubling per
/// failure, capped at `max`, never ending; jitter is added by the caller ([`jittered`]).
pub fn requeue_backoff(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    ExponentialBuilder::default().with_min_delay(min).with_max_delay(max).without_max_times().build()
}

fn jitter(up_to: Duration) -> Duration {
    let nanos = up_to.as_nanos().min(u64::MAX as u128) as u64;
    if nanos == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(fastrand::u64(0..nanos))
    }
}

/// The wait a response asks for: `Retry-After` (seconds or an HTTP date), else
/// `x-ratelimit-reset` (Auth0: epoch seconds at which the bucket refills), relative to `now`;
/// at most [`WAIT_CEILING`].
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(value) = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        if let Some(secs) = whole_seconds(value) {
            return Some(secs);
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(WAIT_CEILING));
        }
    }
    rate_limit_reset_in(headers, now)
}

/// A header value of decimal seconds as a wait, at most [`WAIT_CEILING`].
fn whole_seconds(value: &str) -> Option<Duration> {
    Some(Duration::from_secs(decimal(value)?).min(WAIT_CEILING))
}

/// A decimal number; one too large for `u64` saturates (a huge wait is a very long wait, not
/// an unreadable one).
fn decimal(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().unwrap_or(u64::MAX))
}

/// How long until `x-ratelimit-reset` (Auth0: the epoch second at which the bucket refills),
/// from `now`: zero when it has passed, at most [`WAIT_CEILING`].
pub fn rate_limit_reset_in(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let at = decimal(headers.get("x-ratelimit-reset")?.to_str().ok()?.trim())?;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    Some(Duration::from_secs(at).saturating_sub(since_epoch).min(WAIT_CEILING))
}

/// A server-sent wait in (fractional) seconds, such as Google's `RetryInfo.retryDelay`, at
/// most [`WAIT_CEILING`]; `None` for NaN or a negative number.
pub fn wait_from_secs_f64(secs: f64) -> Option<Duration> {
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).unwrap_or(WAIT_CEILING).min(WAIT_CEILING))
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
///
/// # Guarantees
/// * A pause is at most `max_pause` long: a longer server-requested wait is not honoured at
///   all (one `Retry-After: 100000` must not stall every call for a day, nor for `max_pause`
///   either; the call that received it fails, see `RetryPolicy::max_server_wait`, and the
///   other calls find out for themselves).
/// * Once `shutdown` is cancelled every wait ends at once with [`ShuttingDown`], and no caller
///   is let through any more.
#[derive(Debug)]
pub struct Pacer {
    name: &'static str,
    interval: Option<Duration>,
    max_pause: Duration,
    shutdown: CancellationToken,
    state: Mutex<PacerState>,
}

#[derive(Debug)]
struct PacerState {
    /// When the next request may start.
    next_slot: Instant,
    /// No request starts before this (a 429's Retry-After, an exhausted rate-limit bucket).
    paused_until: Option<Instant>,
}

/// A wait ended because the process is shutting down; the request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shutting down: the request was not sent")]
pub struct ShuttingDown;

impl Pacer {
    /// A pacer for `rate`; `None` paces nothing (but still honours pauses). Pauses are capped
    /// at [`DEFAULT_MAX_SERVER_WAIT`]; nothing cancels its waits.
    pub fn new(name: &'static str, rate: Option<Rate>) -> Pacer {
        Pacer::with_limits(name, rate, DEFAULT_MAX_SERVER_WAIT, CancellationToken::new())
    }

    /// A pacer whose pauses last at most `max_pause` and whose waits end when `shutdown` is
    /// cancelled.
    pub fn with_limits(
        name: &'static str,
        rate: Option<Rate>,
        max_pause: Duration,
        shutdown: CancellationToken,
    ) -> Pacer {
        Pacer {
            name,
            interval: rate.map(|r| r.interval()),
            max_pause: max_pause.min(WAIT_CEILING),
            shutdown,
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
    pub async fn acquire(&self) -> Result<(), ShuttingDown> {
        if self.shutdown.is_cancelled() {
            return Err(ShuttingDown);
        }
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
        if start > Instant::now() && !sleep_until_unless_cancelled(start, &self.shutdown).await {
            return Err(ShuttingDown);
        }
        Ok(())
    }

    /// Holds every caller back for `wait` from now (extends, never shortens, a pause); a wait
    /// longer than `max_pause` is not honoured.
    pub fn pause_for(&self, wait: Duration) {
        if wait > self.max_pause {
            tracing::warn!(
                api = self.name,
                asked_s = wait.as_secs(),
                max_pause_s = self.max_pause.as_secs(),
                "the server asks every caller to wait longer than runwarden pauses; not pausing"
            );
            return;
        }
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
    /// left in the current window, pauses until the window resets (unless that is more than
    /// `max_pause` away), so the requests still in flight do not run into 429s.
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
            pacer.acquire().await.unwrap();
        }
        // The first request starts at once, the other 20 each 100 ms later.
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_pause_holds_every_caller_back() {
        let pacer = Pacer::new("t", None);
        pacer.acquire().await.unwrap();
        let t0 = Instant::now();
        pacer.pause_for(Duration::from_secs(3));
        pacer.pause_for(Duration::from_secs(1)); // a shorter pause does not shorten it
        pacer.acquire().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        pacer.observe_budget(5, Duration::from_secs(2), 2); // plenty left: no pause
        let t1 = Instant::now();
        pacer.acquire().await.unwrap();
        assert_eq!(t1.elapsed(), Duration::ZERO);
        pacer.observe_budget(1, Duration::from_secs(2), 2);
        pacer.acquire().await.unwrap();
        assert_eq!(t1.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn absurd_server_waits_are_clamped_never_overflow() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let wait = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            server_wait(&h, now)
        };
        for huge in ["18446744073709551615", "99999999999999999999999999"] {
            assert_eq!(wait(&[("retry-after", huge)]), Some(WAIT_CEILING), "{huge}");
            assert_eq!(wait(&[("x-ratelimit-reset", huge)]), Some(WAIT_CEILING), "{huge}");
        }
        assert_eq!(wait(&[("retry-after", "-5")]), None);
        assert_eq!(wait(&[("retry-after", "1.5")]), None);
        assert_eq!(wait(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]), Some(WAIT_CEILING));
        for (secs, want) in [
            (1e20, Some(WAIT_CEILING)),
            (f64::INFINITY, Some(WAIT_CEILING)),
            (1.5, Some(Duration::from_millis(1500))),
            (f64::NAN, None),
            (-1.0, None),
        ] {
            assert_eq!(wait_from_secs_f64(secs), want, "{secs}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_server_wait_fails_the_call_without_panicking() {
        for wait in [Duration::MAX, WAIT_CEILING, Duration::from_secs(100_000)] {
            let script = vec![E(ErrorClass::Quota, Some(wait))];
            assert_eq!(run_script(script).await, (1, Err(ErrorClass::Quota)), "{wait:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pacer_does_not_pause_for_longer_than_its_maximum_whatever_the_server_asks() {
        let pacer = Pacer::with_limits("t", None, Duration::from_secs(30), CancellationToken::new());
        pacer.pause_for(Duration::MAX);
        pacer.observe_budget(0, Duration::MAX, 2);
        pacer.pause_for(Duration::from_secs(31));
        let t0 = Instant::now();
        pacer.acquire().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO, "a day-long pause stalls nobody");
        pacer.pause_for(Duration::from_secs(30));
        pacer.acquire().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(30), "a pause within the maximum is honoured");
        let default = Pacer::new("t", None);
        default.pause_for(Duration::from_secs(100_000));
        default.pause_for(DEFAULT_MAX_SERVER_WAIT);
        let t1 = Instant::now();
        default.acquire().await.unwrap();
        assert_eq!(t1.elapsed(), DEFAULT_MAX_SERVER_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_pacer_wait_at_once() {
        let stop = CancellationToken::new();
        let pacer = Pacer::with_limits("t", None, Duration::from_secs(120), stop.clone());
        pacer.pause_for(Duration::from_secs(100));
        let t0 = Instant::now();
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        assert_eq!(pacer.acquire().await, Err(ShuttingDown));
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert_eq!(pacer.acquire().await, Err(ShuttingDown), "nobody is let through after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_wait_between_attempts_and_returns_the_last_error() {
        let stop = CancellationToken::new();
        let policy = RetryPolicy::default().until(&stop);
        let attempts = AtomicUsize::new(0);
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            canceller.cancel();
        });
        let t0 = Instant::now();
        let result: Result<(), E> = retry(&policy, "test", || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err(E(ErrorClass::Quota, Some(Duration::from_secs(60)))) }
        })
        .await;
        assert_eq!(result.unwrap_err().0, ErrorClass::Quota);
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "no attempt after shutdown");
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn polls_are_spaced_and_bounded_even_when_each_answers_at_once() {
        let mut poll = Poll::new(Duration::from_secs(60), &CancellationToken::new());
        let t0 = Instant::now();
        let mut polls = 0;
        while poll.ready().await.is_ok() {
            polls += 1; // the server answers "not done" at once
        }
        // 0, 1, 2.5, 4.75, 8.1, 13.2, 20.8, 30.8, 40.8, 50.8 s, then the deadline.
        assert_eq!(polls, 10);
        assert_eq!(t0.elapsed(), Duration::from_secs(60));
        let stop = CancellationToken::new();
        let mut poll = Poll::new(Duration::from_secs(60), &stop);
        poll.ready().await.unwrap();
        stop.cancel();
        assert_eq!(poll.ready().await, Err(PollEnd::ShuttingDown));
    }
}
