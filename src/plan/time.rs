//! RFC 3339 timestamps (UTC, whole seconds) for condition titles and expressions.
//!
//! Only the one shape runwarden writes is needed (`2027-01-31T00:00:00Z`), so this is a small
//! civil-date conversion rather than a date-time dependency.

use std::time::SystemTime;

use crate::time::{Fraction, format_rfc3339 as format};

/// Formats `t` as `YYYY-MM-DDTHH:MM:SSZ`, truncated to whole seconds. Times before 1970 are
/// clamped to the epoch (IAM conditions never need them).
pub fn format_rfc3339(t: SystemTime) -> String {
    format(t, Fraction::Seconds)
}

/// Parses exactly the shape [`format_rfc3339`] writes (condition titles runwarden generated),
/// nothing else.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    crate::time::parse_rfc3339(s).ok().filter(|t| format_rfc3339(*t) == s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_and_parses_known_instants() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_801_353_600, "2027-01-31T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(format_rfc3339(t), text);
            assert_eq!(parse_rfc3339(text), Some(t), "{text}");
        }
    }

    #[test]
    fn rejects_other_shapes_and_impossible_dates() {
        for text in [
            "2027-01-31",
            "2027-01-31T00:00:00+01:00",
            "2027-02-30T00:00:00Z",
            "2027-13-01T00:00:00Z",
            "x027-01-31T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
    }
}
