//! The two textual time formats of policy files, parsed by hand: durations such as `1h` or `90d`
//! (audits) and RFC 3339 timestamps such as `2027-01-31T00:00:00Z` (time-boxed grants).
//!
//! Both parsers are small and strict on purpose: a policy file is reviewed by people, so a value
//! that could be read two ways is refused with a message that says how to write it.

use std::time::Duration;

/// Parses a duration made of one or more `<number><unit>` parts, e.g. `90d`, `1h30m`, `45s`.
///
/// Units: `s` seconds, `m` minutes, `h` hours, `d` days, `w` weeks. A bare number is refused
/// (seconds or days? the reader cannot tell), as are spaces, signs and fractions.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("an empty duration".to_string());
    }
    let bytes = text.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "`{text}` is not a duration: expected a number at `{}`",
                &text[start..]
            ));
        }
        let number: u64 = text[start..i]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration: the number is too large"))?;
        let Some(&unit) = bytes.get(i) else {
            return Err(format!(
                "`{text}` has no unit: write e.g. `{number}s`, `{number}h` or `{number}d`"
            ));
        };
        let seconds_per_unit: u64 = match unit {
            b's' => 1,
            b'm' => 60,
            b'h' => 3_600,
            b'd' => 86_400,
            b'w' => 604_800,
            _ => {
                return Err(format!(
                    "`{text}` has an unknown unit `{}`: use s, m, h, d or w",
                    text[i..].chars().next().unwrap_or('?')
                ));
            }
        };
        i += 1;
        total = number
            .checked_mul(seconds_per_unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
    }
    Ok(Duration::from_secs(total))
}

pub use crate::time::parse_rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn durations_accept_every_unit_and_combinations() {
        for (text, seconds) in [
            ("45s", 45),
            ("30m", 1_800),
            ("1h", 3_600),
            ("90d", 7_776_000),
            ("2w", 1_209_600),
            ("1h30m", 5_400),
            ("1d12h", 129_600),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
    }

    #[test]
    fn durations_refuse_ambiguous_or_malformed_text() {
        for (text, expected) in [
            ("", "empty"),
            ("3600", "has no unit"),
            ("1y", "unknown unit `y`"),
            ("1 h", "unknown unit ` `"),
            ("-1h", "expected a number"),
            ("1.5h", "unknown unit `.`"),
            ("h", "expected a number"),
            ("99999999999999999999s", "too large"),
            ("99999999999999999w", "too long"),
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn timestamps_parse_to_the_right_instant() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        for (text, expected) in [
            ("1970-01-01T00:00:00Z", at(0)),
            ("2027-01-31T00:00:00Z", at(1_801_353_600)),
            ("2027-01-31T01:00:00+01:00", at(1_801_353_600)),
            ("2027-01-30t19:00:00-05:00", at(1_801_353_600)),
            ("2024-02-29T12:00:00z", at(1_709_208_000)),
            (
                "2027-01-31T00:00:00.5Z",
                at(1_801_353_600) + Duration::from_millis(500),
            ),
        ] {
            assert_eq!(parse_rfc3339(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn timestamps_refuse_dates_that_do_not_exist_and_missing_zones() {
        for (text, expected) in [
            ("2027-01-31", "too short"),
            ("2027-01-31T00:00:00", "too short"),
            ("2027-01-31 00:00:00Z", "joined by `T`"),
            ("2025-02-29T00:00:00Z", "no such date"),
            ("2027-13-01T00:00:00Z", "no such date"),
            ("2027-01-31T24:00:00Z", "no such time"),
            ("2027-01-31T00:00:00+0100", "the zone must be"),
            ("2027-01-31T00:00:00CET", "the zone must be"),
            ("2027-01-31T00:00:00.Z", "digits after"),
            ("2027-xx-31T00:00:00Z", "expected digits"),
            ("2027-01-31T00:00:00Zé", "the zone must be"),
        ] {
            let err = parse_rfc3339(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
