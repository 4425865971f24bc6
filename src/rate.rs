//! A request rate (`count` requests per `per`), written `6000/min`, `50/s`, `100/h`: the one
//! type and the one parser for every rate runwarden reads — the pins of `spec.pacing`, the
//! limits learned from Google's quotas and Auth0's headers, and the pacers' (`retry`) limits.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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
