//! Fault injection: the parsed `faults` section, token-bucket quotas, and the cheap random
//! numbers that decide whether a call fails.
//!
//! Faults are plain values ([`Faults`]) swapped in whole at run time (`POST /sim/faults`,
//! `SimHandle::set_faults`); the mutable bits (bucket levels, burst counters) live in
//! [`FaultState`] next to them, behind one small mutex that is never held across an await.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::SimError;
use super::world::FaultsSpec;

/// The APIs that quotas and rate limits are counted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiClass {
    CloudRunRead,
    CloudRunWrite,
    IapRead,
    IapWrite,
    ResourceManager,
    Auth0,
}

impl ApiClass {
    /// The key used in `faults.rateLimits`.
    pub fn key(self) -> &'static str {
        match self {
            ApiClass::CloudRunRead => "cloudRunRead",
            ApiClass::CloudRunWrite => "cloudRunWrite",
            ApiClass::IapRead => "iapRead",
            ApiClass::IapWrite => "iapWrite",
            ApiClass::ResourceManager => "resourceManager",
            ApiClass::Auth0 => "auth0",
        }
    }

    const ALL: [ApiClass; 6] = [
        ApiClass::CloudRunRead,
        ApiClass::CloudRunWrite,
        ApiClass::IapRead,
        ApiClass::IapWrite,
        ApiClass::ResourceManager,
        ApiClass::Auth0,
    ];

    fn from_key(key: &str) -> Option<ApiClass> {
        ApiClass::ALL.into_iter().find(|c| c.key() == key)
    }
}

/// A rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: u64,
    pub per: Duration,
}

impl Rate {
    fn per_second(self) -> f64 {
        self.count as f64 / self.per.as_secs_f64()
    }
}

/// Parsed faults. `Faults::default()` injects nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Added to every API call.
    pub latency: Duration,
    /// (HTTP status, probability), checked in order.
    pub error_rates: Vec<(u16, f64)>,
    /// Quotas per API.
    pub rate_limits: BTreeMap<ApiClass, Rate>,
    /// Chance that a read arms the concurrent writer for that IAM resource.
    pub concurrent_writer: f64,
    /// Chance that a patch operation ends with an error.
    pub operation_failure_rate: f64,
    /// `operations.wait` returns at once, before the operation is done.
    pub early_wait: bool,
    /// (every, length): after every `every` calls, `length` calls get 429.
    pub bursts: Option<(u64, u64)>,
    /// The Auth0 plan whose rate limit the tenant enforces (unless `rate_limits` has `auth0`).
    pub auth0_tier: Option<Auth0Tier>,
}

/// Auth0 plans, by their Management API rate limit (Auth0's "Rate limit policy" for production
/// tenants, as issue 13 quotes it: free tenants 2 requests/s; self-service plans bursts of 10
/// and about 150/min for most endpoints; Enterprise higher, modelled as 50/s). Auth0 enforces
/// them as a token bucket and reports it on every answer as `x-ratelimit-limit` (the bucket
/// size), `x-ratelimit-remaining` and `x-ratelimit-reset` (epoch seconds when it is full again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth0Tier {
    Free,
    SelfService,
    Enterprise,
}

impl Auth0Tier {
    const ALL: [Auth0Tier; 3] = [Auth0Tier::Free, Auth0Tier::SelfService, Auth0Tier::Enterprise];

    pub fn key(self) -> &'static str {
        match self {
            Auth0Tier::Free => "free",
            Auth0Tier::SelfService => "selfService",
            Auth0Tier::Enterprise => "enterprise",
        }
    }

    /// (sustained rate, bucket size).
    pub fn limit(self) -> (Rate, f64) {
        match self {
            Auth0Tier::Free => (Rate { count: 2, per: Duration::from_secs(1) }, 2.0),
            Auth0Tier::SelfService => (Rate { count: 150, per: Duration::from_secs(60) }, 10.0),
            Auth0Tier::Enterprise => (Rate { count: 50, per: Duration::from_secs(1) }, 50.0),
        }
    }
}

impl Faults {
    /// Validates a `faults` section.
    pub fn from_spec(spec: &FaultsSpec) -> Result<Faults, SimError> {
        let bad = |what: String| SimError::Faults(what);
        let latency = match &spec.latency {
            Some(text) => parse_duration(text).map_err(|e| bad(format!("latency: {e}")))?,
            None => Duration::ZERO,
        };
        let mut error_rates = Vec::new();
        for (status, p) in &spec.error_rates {
            let code: u16 = status
                .parse()
                .ok()
                .filter(|c| (400..600).contains(c))
                .ok_or_else(|| {
                    bad(format!(
                        "errorRates: {status:?} is not an HTTP error status (400-599)"
                    ))
                })?;
            check_probability(*p).map_err(|e| bad(format!("errorRates.{status}: {e}")))?;
            error_rates.push((code, *p));
        }
        let mut rate_limits = BTreeMap::new();
        for (key, text) in &spec.rate_limits {
            let class = ApiClass::from_key(key).ok_or_else(|| {
                let known: Vec<&str> = ApiClass::ALL.iter().map(|c| c.key()).collect();
                bad(format!(
                    "rateLimits: unknown API {key:?}; known: {}",
                    known.join(", ")
                ))
            })?;
            let rate = parse_rate(text).map_err(|e| bad(format!("rateLimits.{key}: {e}")))?;
            rate_limits.insert(class, rate);
        }
        check_probability(spec.concurrent_writer)
            .map_err(|e| bad(format!("concurrentWriter: {e}")))?;
        check_probability(spec.operation_failure_rate)
            .map_err(|e| bad(format!("operationFailureRate: {e}")))?;
        let auth0_tier = match &spec.auth0_tier {
            None => None,
            Some(t) => Some(Auth0Tier::ALL.into_iter().find(|k| k.key() == t).ok_or_else(|| {
                bad(format!("auth0Tier: unknown plan {t:?}; known: free, selfService, enterprise"))
            })?),
        };
        let bursts = match &spec.bursts {
            Some(b) if b.every == 0 => return Err(bad("bursts.every must be at least 1".into())),
            Some(b) => Some((b.every, b.length)),
            None => None,
        };
        Ok(Faults {
            latency,
            error_rates,
            rate_limits,
            concurrent_writer: spec.concurrent_writer,
            operation_failure_rate: spec.operation_failure_rate,
            early_wait: spec.early_wait,
            bursts,
            auth0_tier,
        })
    }
}

fn check_probability(p: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("{p} is not a probability (0 to 1)"))
    }
}

/// The longest duration a world file may state.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Parses `20ms`, `1.5s`, `5m`, `1h`, `90d`, `500us` (at most [`MAX_DURATION`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 20ms, 1s, 5m, 1h or 90d"))?;
    let seconds = match unit {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("{text:?} has no known unit (us, ms, s, m, h, d)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a valid duration"));
    }
    // Larger values would overflow `Duration` (a panic) or the clock arithmetic that adds them;
    // no simulated latency, delay or token lifetime needs more than a year.
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(format!("{text:?} is longer than the limit of 365d"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `6000/min`, `50/s`, `100/h`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let err = || format!("{text:?} is not a rate such as 6000/min or 50/s");
    let (count, unit) = text.trim().split_once('/').ok_or_else(err)?;
    let count: u64 = count.trim().parse().map_err(|_| err())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "min" | "m" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(err()),
    };
    if count == 0 {
        return Err(format!("{text:?}: a rate must allow at least one request"));
    }
    Ok(Rate { count, per })
}

/// A token bucket. Its capacity is one second's worth of the rate (at least 1), so a quota of
/// `6000/min` is enforced as a steady 100/s rather than a burst of 6,000 followed by silence:
/// that keeps the benchmark's lower bound `calls / quota` meaningful.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub capacity: f64,
    pub rate_per_sec: f64,
    pub tokens: f64,
    pub updated: Instant,
}

impl Bucket {
    /// A bucket holding one second's worth of `rate` (at least one request).
    #[cfg(test)]
    pub fn new(rate: Rate, now: Instant) -> Bucket {
        Bucket::with_burst(rate, rate.per_second().max(1.0).floor(), now)
    }

    /// A bucket of `capacity` requests refilled at `rate`.
    pub fn with_burst(rate: Rate, capacity: f64, now: Instant) -> Bucket {
        let per_sec = rate.per_second();
        let capacity = capacity.max(1.0).floor();
        Bucket {
            capacity,
            rate_per_sec: per_sec,
            tokens: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.capacity);
        self.updated = now;
    }

    /// Takes one token; `Err(wait)` when empty, with how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.rate_per_sec,
            ))
        }
    }

    /// Seconds until the bucket is full again.
    pub fn seconds_to_full(&self) -> f64 {
        (self.capacity - self.tokens).max(0.0) / self.rate_per_sec
    }
}

/// Faults plus their mutable state.
#[derive(Debug)]
pub(crate) struct FaultState {
    pub faults: Faults,
    /// Quota buckets by API and region, created on first use. Google counts Cloud Run
    /// requests per consumer project and region (the quota unit `1/min/{project}/{region}`);
    /// every caller of the simulator is one consumer project, so the key is the region of the
    /// request for Cloud Run, "" for the other APIs.
    pub buckets: BTreeMap<(ApiClass, String), Bucket>,
    /// API calls counted for bursts.
    pub calls: u64,
}

/// Auth0's default when no `auth0` limit is configured: generous, so nothing is throttled, but
/// the `x-ratelimit-*` headers are still sent on every response as Auth0 does.
pub(crate) const AUTH0_DEFAULT_RATE: Rate = Rate {
    count: 1000,
    per: Duration::from_secs(1),
};

impl FaultState {
    pub fn new(faults: Faults) -> FaultState {
        FaultState {
            faults,
            buckets: BTreeMap::new(),
            calls: 0,
        }
    }

    /// The quota of `class` as enforced: (rate, bucket size); `None` when it has none.
    pub fn limit(&self, class: ApiClass) -> Option<(Rate, f64)> {
        let configured = self.faults.rate_limits.get(&class).map(|r| (*r, r.per_second().max(1.0).floor()));
        match class {
            ApiClass::Auth0 => configured
                .or_else(|| self.faults.auth0_tier.map(Auth0Tier::limit))
                .or(Some((AUTH0_DEFAULT_RATE, AUTH0_DEFAULT_RATE.per_second()))),
            _ => configured,
        }
    }

    /// The bucket a request of `class` to `path` draws from (see `buckets`).
    pub fn bucket(&mut self, class: ApiClass, path: &str, now: Instant) -> Option<&mut Bucket> {
        let (rate, burst) = self.limit(class)?;
        let region = match class {
            ApiClass::CloudRunRead | ApiClass::CloudRunWrite => {
                let mut segments = path.split('/');
                segments.find(|s| *s == "locations");
                segments.next().unwrap_or("").to_string()
            }
            _ => String::new(),
        };
        Some(self.buckets.entry((class, region)).or_insert_with(|| Bucket::with_burst(rate, burst, now)))
    }
}

/// A small, fast, lock-free-enough PRNG (SplitMix64). Used for fault rolls and for the
/// seed-reproducible generator; not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_rates_of_the_design_examples() {
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86400)
        );
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("20").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_rate("6000/min").unwrap().count, 6000);
        assert_eq!(parse_rate("50/s").unwrap().per, Duration::from_secs(1));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("50 per second").is_err());
    }

    #[test]
    fn rejects_unknown_apis_and_bad_probabilities() {
        let mut spec = FaultsSpec::default();
        spec.rate_limits
            .insert("cloudRunReads".into(), "1/s".into());
        assert!(
            Faults::from_spec(&spec)
                .unwrap_err()
                .to_string()
                .contains("cloudRunRead")
        );
        let spec = FaultsSpec {
            concurrent_writer: 1.5,
            ..FaultsSpec::default()
        };
        assert!(Faults::from_spec(&spec).is_err());
        let mut spec = FaultsSpec::default();
        spec.error_rates.insert("200".into(), 0.1);
        assert!(Faults::from_spec(&spec).is_err());
    }

    #[test]
    fn bucket_refuses_when_empty_and_refills_with_time() {
        let start = Instant::now();
        let mut b = Bucket::new(parse_rate("2/s").unwrap(), start);
        assert!(b.take(start).is_ok());
        assert!(b.take(start).is_ok());
        assert!(b.take(start).is_err());
        assert!(b.take(start + Duration::from_millis(600)).is_ok());
    }
}
