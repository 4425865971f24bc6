//! The two textual time formats of policy files, parsed by hand: durations such as `1h` or `90d`
//! (audits) and RFC 3339 timestamps such as `2027-01-31T00:00:00Z` (time-boxed grants).
//!
//! Both parsers are small and strict on purpose: a policy file is reviewed by people, so a value
//! that could be read two ways is refused with a message that says how to write it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Parses an RFC 3339 timestamp (`2027-01-31T00:00:00Z`, `2027-01-31T09:30:00+01:00`,
/// optionally with fractional seconds). The offset is required: a time without a zone would
/// expire at a different moment depending on where runwarden runs.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let bad = |why: &str| {
        format!("`{text}` is not an RFC 3339 timestamp ({why}); write e.g. 2027-01-31T00:00:00Z")
    };
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err(bad("too short"));
    }
    let digits = |from: usize, to: usize| -> Result<i64, String> {
        let part = &text[from..to];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            Ok(part.parse::<i64>().expect("ASCII digits parse"))
        } else {
            Err(bad("expected digits"))
        }
    };
    if !b[..19].is_ascii() {
        return Err(bad("expected digits"));
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    if !matches!(b[10], b'T' | b't') {
        return Err(bad("date and time must be joined by `T`"));
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("no such time of day"));
    }
    let mut rest = &text[19..];
    let mut nanos: u32 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return Err(bad("expected digits after `.`"));
        }
        let kept = &fraction[..len.min(9)];
        nanos = kept.parse::<u32>().expect("ASCII digits parse") * 10u32.pow(9 - kept.len() as u32);
        rest = &fraction[len..];
    }
    let offset_seconds: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || !rest.is_ascii() || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return Err(bad("the zone must be `Z` or `+HH:MM`/`-HH:MM`"));
            }
            let (oh, om) = (digits_of(&rest[1..3]), digits_of(&rest[4..6]));
            let (Some(oh), Some(om)) = (oh, om) else {
                return Err(bad("the zone must be `Z` or `+HH:MM`/`-HH:MM`"));
            };
            if oh > 23 || om > 59 {
                return Err(bad("no such zone offset"));
            }
            let sign = if ob[0] == b'-' { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
    };
    // A leap second (`:60`) is folded into the next second, as IAM's CEL timestamps do.
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_seconds;
    let time = if seconds >= 0 {
        UNIX_EPOCH + Duration::new(seconds as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
            + Duration::from_nanos(nanos.into())
    };
    Ok(time)
}

fn digits_of(text: &str) -> Option<i64> {
    text.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| text.parse().ok())
        .flatten()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

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
