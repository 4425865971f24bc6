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
//! * [`Pacer`] spaces requests to one API at an adaptive rate ([`Aimd`]: additive increase
//!   while calls succeed, multiplicative decrease on 429) below the limit the project really
//!   has ([`Pace::Limit`], pinned or learned) or probing for it ([`Pace::Probe`]), so a pass
//!   stays inside the quota instead of discovering it through 429s, and processes sharing one
//!   quota settle on a share of it; it pauses every caller of that API when one of them is
//!   told to slow down (never longer than `max_pause`).
//! * [`Poll`] spaces and bounds the polls of a long-running operation.
//!
//! Whatever a server sends, a wait is read as at most [`WAIT_CEILING`] (no overflow, no panic),
//! and every wait here ends at once when the shutdown token it was given is cancelled.
//!
//! Invariant: nothing else in runwarden sleeps and tries again.

use std::fmt;
use std::future::Future;
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

pub use crate::rate::{Rate, RateError};

/// How the requests to one API are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// No spacing; pauses a server asks for are still honoured.
    Off,
    /// A known limit (pinned in Settings, or learned from the quota the project really has):
    /// start there and never go above it; on a 429 halve the rate, then climb back additively.
    Limit(Rate),
    /// An unknown limit: start at this (conservative, documented) rate and probe upward while
    /// calls succeed; on the first 429 halve the rate and from then on climb additively.
    Probe(Rate),
}

impl Pace {
    /// The rate this pace starts at (`None` for [`Pace::Off`]).
    pub fn start(&self) -> Option<Rate> {
        match self {
            Pace::Off => None,
            Pace::Limit(r) | Pace::Probe(r) => Some(*r),
        }
    }
}

impl From<Option<Rate>> for Pace {
    /// `Some(rate)` is a fixed limit, `None` no pacing.
    fn from(rate: Option<Rate>) -> Pace {
        rate.map_or(Pace::Off, Pace::Limit)
    }
}

/// Additive increase, multiplicative decrease of one API's request rate: pure state, fed a
/// clock, no sleeping (the [`Pacer`] applies it).
///
/// The rate stays between a floor and a ceiling. While calls succeed it grows: in the probing
/// phase (limit unknown, no 429 seen yet) by half of itself per second (each success adds
/// 0.5/s), then by [`Aimd::STEP`] of the reference rate per second (each success adds
/// `STEP × reference / rate`). A 429 halves it, at most once per [`Aimd::HOLD`]: the answers
/// to requests sent before the cut are not a second signal. Several processes sharing one
/// quota converge this way to a fair share without a storm of 429s (TCP's AIMD, applied to a
/// request rate).
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    /// Requests per second now.
    rate: f64,
    floor: f64,
    /// `f64::INFINITY` while the limit is unknown.
    ceiling: f64,
    /// The rate the additive step is a fraction of: the ceiling, or the rate at the last cut.
    reference: f64,
    probing: bool,
    last_cut: Option<Instant>,
}

impl Aimd {
    /// Additive step per second, as a fraction of the reference rate.
    pub const STEP: f64 = 0.05;
    /// Multiplicative decrease on a 429.
    pub const CUT: f64 = 0.5;
    /// At most one cut per this long.
    pub const HOLD: Duration = Duration::from_secs(1);
    /// The rate never drops below this fraction of the start rate (nor below 1/min).
    pub const FLOOR: f64 = 0.02;
    /// A probe never goes faster than this many requests per second.
    pub const PROBE_MAX: f64 = 10_000.0;

    /// The state for `pace`; `None` for [`Pace::Off`].
    pub fn new(pace: Pace) -> Option<Aimd> {
        let (start, ceiling, probing) = match pace {
            Pace::Off => return None,
            Pace::Limit(r) => (r.per_sec_f64(), r.per_sec_f64(), false),
            Pace::Probe(r) => (r.per_sec_f64(), f64::INFINITY, true),
        };
        let start = start.max(1.0 / 60.0);
        Some(Aimd {
            rate: start,
            floor: (start * Aimd::FLOOR).max(1.0 / 60.0),
            ceiling,
            reference: if ceiling.is_finite() { ceiling } else { start },
            probing,
            last_cut: None,
        })
    }

    /// Requests per second now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether the limit is still unknown and no 429 was seen.
    pub fn probing(&self) -> bool {
        self.probing
    }

    /// The spacing between two requests at the current rate.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }

    /// A call succeeded: grow the rate (additively), never above the ceiling.
    pub fn on_success(&mut self) {
        let grown = if self.probing {
            (self.rate + 0.5).min(Aimd::PROBE_MAX)
        } else {
            self.rate + Aimd::STEP * self.reference / self.rate
        };
        self.rate = grown.min(self.ceiling);
    }

    /// A call was throttled (429) at `now`: halve the rate (not below the floor), unless it
    /// was cut less than [`Aimd::HOLD`] ago. Returns whether it was cut.
    pub fn on_throttled(&mut self, now: Instant) -> bool {
        if self.last_cut.is_some_and(|at| now.saturating_duration_since(at) < Aimd::HOLD) {
            return false;
        }
        if self.probing {
            // The rate at the first 429 is the best estimate of the limit there is.
            self.probing = false;
            self.reference = self.rate;
        }
        self.rate = (self.rate * Aimd::CUT).max(self.floor);
        self.last_cut = Some(now);
        true
    }

    /// Sets the rate to `target` requests per second (between the floor and the ceiling): a
    /// budget the server announced, e.g. Auth0's remaining requests spread over the time to
    /// its reset. The limit is known from then on: no more probing.
    pub fn follow(&mut self, target: f64) {
        if target.is_finite() && target >= 0.0 {
            self.rate = target.clamp(self.floor, self.ceiling.max(self.floor));
            self.probing = false;
            self.reference = self.rate.max(self.floor);
        }
    }
}

/// Spaces the requests to one API at an adaptive rate ([`Aimd`]: evenly, a GCRA /
/// virtual-scheduling pacer with no burst), and not before a pause the server asked for has
/// ended.
///
/// Callers queue in order (a fair async lock: one turn at a time); the caller whose turn it is
/// waits until one interval *at the current rate* after the previous request (and until any
/// pause has ended), so a rate that grows or is cut while callers wait applies to the very
/// next request, not only to requests queued later. The state lock is never held across a
/// wait. Callers report each answer ([`Pacer::succeeded`], [`Pacer::throttled`]) so that the
/// rate follows the quota.
///
/// # Guarantees
/// * The rate never exceeds the limit of a [`Pace::Limit`]; a 429 halves it (once per second
///   at most), successes raise it again.
/// * A pause is at most `max_pause` long: a longer server-requested wait is not honoured at
///   all (one `Retry-After: 100000` must not stall every call for a day, nor for `max_pause`
///   either; the call that received it fails, see `RetryPolicy::max_server_wait`, and the
///   other calls find out for themselves).
/// * Once `shutdown` is cancelled every wait ends at once with [`ShuttingDown`], and no caller
///   is let through any more.
#[derive(Debug)]
pub struct Pacer {
    name: &'static str,
    max_pause: Duration,
    shutdown: CancellationToken,
    state: Mutex<PacerState>,
    /// Whose turn it is: callers wait here in order.
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct PacerState {
    /// When the previous request started.
    last_start: Option<Instant>,
    /// No request starts before this (a 429's Retry-After, an exhausted rate-limit bucket).
    paused_until: Option<Instant>,
    /// The current rate; `None` paces nothing.
    aimd: Option<Aimd>,
}

/// A wait ended because the process is shutting down; the request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shutting down: the request was not sent")]
pub struct ShuttingDown;

impl Pacer {
    /// How far behind its schedule a pacer may catch up (see `next_start`).
    pub const CATCH_UP: Duration = Duration::from_millis(100);

    /// A pacer at a fixed limit `rate`; `None` paces nothing (but still honours pauses).
    /// Pauses are capped at [`DEFAULT_MAX_SERVER_WAIT`]; nothing cancels its waits.
    pub fn new(name: &'static str, rate: Option<Rate>) -> Pacer {
        Pacer::with_limits(name, rate.into(), DEFAULT_MAX_SERVER_WAIT, CancellationToken::new())
    }

    /// A pacer for `pace` whose pauses last at most `max_pause` and whose waits end when
    /// `shutdown` is cancelled.
    pub fn with_limits(
        name: &'static str,
        pace: Pace,
        max_pause: Duration,
        shutdown: CancellationToken,
    ) -> Pacer {
        Pacer {
            name,
            max_pause: max_pause.min(WAIT_CEILING),
            shutdown,
            state: Mutex::new(PacerState {
                last_start: None,
                paused_until: None,
                aimd: Aimd::new(pace),
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The API this pacer spaces (for logs).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The current rate in requests per second (`None`: not paced).
    pub fn rate(&self) -> Option<f64> {
        self.state.lock().expect("pacer lock poisoned").aimd.as_ref().map(Aimd::rate)
    }

    /// Waits until this caller may send one request: its turn, then one interval at the
    /// current rate after the previous request, and the end of any pause (re-checked after
    /// every wait: a 429 may cut the rate or pause the API meanwhile).
    pub async fn acquire(&self) -> Result<(), ShuttingDown> {
        if self.shutdown.is_cancelled() {
            return Err(ShuttingDown);
        }
        let _turn = tokio::select! {
            turn = self.turn.lock() => turn,
            _ = self.shutdown.cancelled() => return Err(ShuttingDown),
        };
        loop {
            let start = self.next_start();
            if start <= Instant::now() {
                // The planned start, not the (slightly later) wake-up: late wake-ups must not
                // add up to a lower rate.
                self.state.lock().expect("pacer lock poisoned").last_start = Some(start);
                return Ok(());
            }
            if !sleep_until_unless_cancelled(start, &self.shutdown).await {
                return Err(ShuttingDown);
            }
        }
    }

    /// When the next request may start, as things stand now: one interval after the previous
    /// one; a caller that comes late (a busy runtime wakes it late) may catch up by at most
    /// [`Pacer::CATCH_UP`], so late wake-ups do not add up to a lower rate, and an idle pacer
    /// never saves up more than that for a burst.
    fn next_start(&self) -> Instant {
        let now = Instant::now();
        let mut state = self.state.lock().expect("pacer lock poisoned");
        let interval = state.aimd.as_ref().map_or(Duration::ZERO, Aimd::interval);
        let earliest = now.checked_sub(Pacer::CATCH_UP).unwrap_or(now);
        let mut start = state.last_start.map_or(now, |last| (last + interval).max(earliest));
        if let Some(until) = state.paused_until {
            // Never before the end of a pause, catching up included.
            start = start.max(until);
            if until <= now {
                state.paused_until = None;
            }
        }
        start
    }

    /// A request paced here got an answer that was not a 429: the rate may grow.
    pub fn succeeded(&self) {
        if let Some(aimd) = self.state.lock().expect("pacer lock poisoned").aimd.as_mut() {
            aimd.on_success();
        }
    }

    /// A request paced here was throttled (429): the rate is cut (see [`Aimd::on_throttled`])
    /// and, when the server said how long to wait, every caller pauses that long.
    pub fn throttled(&self, wait: Option<Duration>) {
        let now = Instant::now();
        {
            let mut state = self.state.lock().expect("pacer lock poisoned");
            if let Some(aimd) = state.aimd.as_mut() {
                if aimd.on_throttled(now) {
                    tracing::debug!(api = self.name, rate = aimd.rate(), "throttled: slowing down");
                }
            }
        }
        if let Some(wait) = wait {
            self.pause_for(wait);
        }
    }

    /// Sets the rate to `per_second` (see [`Aimd::follow`]).
    pub fn follow(&self, per_second: f64) {
        if let Some(aimd) = self.state.lock().expect("pacer lock poisoned").aimd.as_mut() {
            aimd.follow(per_second);
        }
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

    /// Takes a response's rate-limit budget into account (Auth0's `x-ratelimit-*`): the
    /// remaining requests are spread over the time to the reset (the rate becomes
    /// `remaining / reset_in`, with the reset counted as at least one second away: it is given
    /// in whole epoch seconds), never above a pinned limit; and when at most `reserve`
    /// requests are left, every caller pauses until the reset (unless that is more than
    /// `max_pause` away), so the requests still in flight do not run into 429s.
    pub fn observe_budget(&self, remaining: u64, reset_in: Duration, reserve: u64) {
        if remaining <= reserve {
            self.pause_for(reset_in);
        } else {
            self.follow(remaining as f64 / reset_in.max(Duration::from_secs(1)).as_secs_f64());
        }
    }

    /// [`Pacer::observe_budget`] for a token bucket whose size is known (Auth0's
    /// `x-ratelimit-limit`): until the reset (the bucket full again) the server allows the
    /// requests left plus those it refills meanwhile, `limit` in all, so the rate becomes
    /// `limit / reset_in` (the reset counted as at least one second away). This settles on the
    /// refill rate once the bucket runs low (where the whole-second reset is precise enough).
    /// Every caller pauses until the reset when at most `in_flight` requests (but less than
    /// half the bucket: a small bucket must not pause at every answer) are left.
    pub fn observe_bucket(&self, limit: u64, remaining: u64, reset_in: Duration, in_flight: u64) {
        if remaining <= in_flight.min(limit.saturating_sub(1) / 2) {
            self.pause_for(reset_in);
        } else {
            self.follow(limit as f64 / reset_in.max(Duration::from_secs(1)).as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
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
        let pacer = Pacer::with_limits("t", Pace::Off, Duration::from_secs(30), CancellationToken::new());
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
        let pacer = Pacer::with_limits("t", Pace::Off, Duration::from_secs(120), stop.clone());
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

    #[test]
    fn aimd_starts_at_a_known_limit_and_never_exceeds_it() {
        let mut aimd = Aimd::new(Pace::Limit(Rate::per_second(100))).unwrap();
        assert_eq!(aimd.rate(), 100.0);
        for _ in 0..1000 {
            aimd.on_success();
        }
        assert_eq!(aimd.rate(), 100.0, "successes never raise a rate above its limit");
        assert!(Aimd::new(Pace::Off).is_none());
    }

    #[test]
    fn aimd_halves_on_a_429_once_per_hold_and_climbs_back_additively() {
        let t0 = Instant::now();
        let mut aimd = Aimd::new(Pace::Limit(Rate::per_second(100))).unwrap();
        assert!(aimd.on_throttled(t0));
        assert_eq!(aimd.rate(), 50.0);
        // More 429s within the hold (answers to requests sent before the cut): no second cut.
        assert!(!aimd.on_throttled(t0 + Duration::from_millis(500)));
        assert_eq!(aimd.rate(), 50.0);
        assert!(aimd.on_throttled(t0 + Aimd::HOLD));
        assert_eq!(aimd.rate(), 25.0);
        // One second of successes at the current rate adds STEP × the limit (5/s).
        let before = aimd.rate();
        for _ in 0..25 {
            aimd.on_success();
        }
        let added = aimd.rate() - before;
        assert!((4.0..6.0).contains(&added), "added {added}/s in about one second");
        // It gets back to the limit, and no further.
        for _ in 0..100_000 {
            aimd.on_success();
        }
        assert_eq!(aimd.rate(), 100.0);
    }

    #[test]
    fn aimd_never_drops_below_its_floor_whatever_the_429s() {
        let t0 = Instant::now();
        let mut aimd = Aimd::new(Pace::Limit(Rate::per_second(100))).unwrap();
        for i in 0..100 {
            aimd.on_throttled(t0 + Aimd::HOLD * i);
        }
        assert_eq!(aimd.rate(), 100.0 * Aimd::FLOOR);
        assert!(aimd.interval() <= Duration::from_millis(500));
    }

    #[test]
    fn aimd_probes_an_unknown_limit_upward_then_backs_off_at_the_first_429() {
        let t0 = Instant::now();
        let mut aimd = Aimd::new(Pace::Probe(Rate::per_second(10))).unwrap();
        assert!(aimd.probing());
        // Successes at the current rate for about three seconds: the rate grows by half of
        // itself per second (×1.5 per second or so), well past 20/s.
        let mut elapsed = 0.0;
        while elapsed < 3.0 {
            elapsed += 1.0 / aimd.rate();
            aimd.on_success();
        }
        assert!(aimd.rate() > 30.0, "probed up to {}", aimd.rate());
        let at_429 = aimd.rate();
        aimd.on_throttled(t0);
        assert!(!aimd.probing());
        assert_eq!(aimd.rate(), at_429 / 2.0);
        // From then on the climb is additive: STEP × the rate of the 429 per second.
        let before = aimd.rate();
        let mut elapsed = 0.0;
        while elapsed < 1.0 {
            elapsed += 1.0 / aimd.rate();
            aimd.on_success();
        }
        let added = aimd.rate() - before;
        assert!(added <= Aimd::STEP * at_429 * 1.2, "added {added}/s, probe rate was {at_429}");
    }

    #[test]
    fn two_aimd_clients_sharing_one_quota_settle_near_it_with_few_429s() {
        // A token bucket of 100/s (one second of burst), two clients starting at the full
        // quota each: simulated in steps of 1 ms.
        let t0 = Instant::now();
        let quota: f64 = 100.0;
        let mut bucket = quota;
        let mut clients = [
            Aimd::new(Pace::Limit(Rate::per_second(100))).unwrap(),
            Aimd::new(Pace::Limit(Rate::per_second(100))).unwrap(),
        ];
        let mut next = [0.0f64, 0.0];
        let (mut sent, mut throttled, mut served) = (0u32, 0u32, 0u32);
        for ms in 0..60_000u64 {
            let now_s = ms as f64 / 1000.0;
            bucket = (bucket + quota / 1000.0).min(quota);
            for (c, client) in clients.iter_mut().enumerate() {
                while next[c] <= now_s {
                    next[c] += 1.0 / client.rate();
                    sent += 1;
                    if bucket >= 1.0 {
                        bucket -= 1.0;
                        served += 1;
                        client.on_success();
                    } else {
                        throttled += 1;
                        client.on_throttled(t0 + Duration::from_millis(ms));
                    }
                }
            }
        }
        let share = throttled as f64 / sent as f64;
        assert!(share <= 0.05, "{throttled} of {sent} throttled");
        // Served at least 80% of what the quota allows in that minute.
        assert!(served as f64 >= 0.8 * quota * 60.0, "served {served}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_bucket_budget_paces_at_its_size_over_the_time_to_full_and_pauses_when_low() {
        let probe = Pacer::with_limits("t", Pace::Probe(Rate::per_second(2)), DEFAULT_MAX_SERVER_WAIT, CancellationToken::new());
        // A bucket of 10 refilled at 2.5/s, run low: 5 left, full again in 2 s -> 10 / 2 s.
        probe.observe_bucket(10, 5, Duration::from_secs(2), 4);
        assert_eq!(probe.rate(), Some(5.0));
        // Nearly full (reset within the second): its size per second.
        probe.observe_bucket(50, 49, Duration::ZERO, 4);
        assert_eq!(probe.rate(), Some(50.0));
        // A free plan's bucket of 2 with 1 left is not "low" for 4 callers in flight: half the
        // bucket is the most that is held back.
        let t0 = Instant::now();
        probe.acquire().await.unwrap();
        probe.observe_bucket(2, 1, Duration::from_secs(1), 4);
        assert_eq!(probe.rate(), Some(2.0));
        probe.observe_bucket(2, 0, Duration::from_secs(1), 4);
        probe.acquire().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(1), "an empty bucket pauses until the reset");
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_sets_the_rate_within_a_pin_and_an_exhausted_one_pauses() {
        let pacer = Pacer::new("t", Some(Rate::per_second(100)));
        pacer.observe_budget(20, Duration::from_secs(2), 4);
        assert_eq!(pacer.rate(), Some(10.0), "20 left over 2 s: 10/s");
        pacer.observe_budget(50, Duration::ZERO, 4);
        assert_eq!(pacer.rate(), Some(50.0), "50 left, reset within the second: 50/s");
        pacer.observe_budget(500, Duration::ZERO, 4);
        assert_eq!(pacer.rate(), Some(100.0), "never above the pin");
        let probe = Pacer::with_limits("t", Pace::Probe(Rate::per_second(2)), DEFAULT_MAX_SERVER_WAIT, CancellationToken::new());
        probe.observe_budget(49, Duration::from_secs(1), 4);
        assert_eq!(probe.rate(), Some(49.0), "a free start follows the first answer's budget");
        let t0 = Instant::now();
        probe.acquire().await.unwrap();
        probe.observe_budget(3, Duration::from_secs(2), 4);
        probe.acquire().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(2), "an exhausted budget pauses until the reset");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_pacer_spaces_requests_at_the_cut_rate_and_pauses_for_the_server() {
        let pacer = Pacer::new("t", Some(Rate::per_second(10)));
        pacer.acquire().await.unwrap();
        let t0 = Instant::now();
        pacer.throttled(Some(Duration::from_secs(2)));
        assert_eq!(pacer.rate(), Some(5.0));
        pacer.acquire().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(2), "the server's wait is honoured");
        pacer.acquire().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(2200), "then 5/s");
    }

    #[tokio::test(start_paused = true)]
    async fn callers_queued_before_a_429_reserve_again_at_the_cut_rate_after_the_pause() {
        let pacer = Arc::new(Pacer::new("t", Some(Rate::per_second(10))));
        let t0 = Instant::now();
        let mut queued = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let pacer = pacer.clone();
            queued.spawn(async move {
                pacer.acquire().await.unwrap();
                t0.elapsed()
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The first went out at 0; the other four hold slots at 100..400 ms when a 429 asks
        // for one second: they go out after it, 200 ms apart (the rate was halved).
        pacer.throttled(Some(Duration::from_secs(1)));
        let mut done = Vec::new();
        while let Some(at) = queued.join_next().await {
            done.push(at.unwrap());
        }
        done.sort();
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(done, vec![ms(0), ms(1050), ms(1250), ms(1450), ms(1650)]);
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
