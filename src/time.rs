//! Time as runwarden reads and writes it: RFC 3339 in UTC, over `SystemTime`, with the
//! proleptic Gregorian calendar done by hand (Howard Hinnant's public-domain algorithms) rather
//! than a date-time dependency. The one place dates are converted: policy files, IAM condition
//! titles, logs, audit events and the simulator all use it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The clock of a command: now, or `RUNWARDEN_NOW` (RFC 3339) to run as of another instant —
/// to see which grants will have expired by a date, or to make outputs reproducible in tests.
/// Commands read it once and pass it down: nothing below them reads a clock.
pub fn command_now() -> SystemTime {
    match std::env::var("RUNWARDEN_NOW") {
        Ok(text) => parse_rfc3339(text.trim()).unwrap_or_else(|e| {
            eprintln!("warning: RUNWARDEN_NOW={text:?} is not an RFC 3339 time ({e}); using the current time");
            SystemTime::now()
        }),
        Err(_) => SystemTime::now(),
    }
}

/// How many fractional digits [`format_rfc3339`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    /// `2027-01-31T00:00:00Z` (IAM conditions, plans, token claims).
    Seconds,
    /// `2027-01-31T00:00:00.000Z` (log entries).
    Millis,
    /// `2027-01-31T00:00:00.000000Z` (Google's timestamps, in the simulator).
    Micros,
}

/// Formats `t` in UTC. Times before 1970 are clamped to the epoch (nothing runwarden writes
/// needs them).
pub fn format_rfc3339(t: SystemTime, fraction: Fraction) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let clock = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    match fraction {
        Fraction::Seconds => format!("{clock}Z"),
        Fraction::Millis => format!("{clock}.{:03}Z", since.subsec_millis()),
        Fraction::Micros => format!("{clock}.{:06}Z", since.subsec_micros()),
    }
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

/// Days since 1970-01-01 → (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
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
    fn formats_known_instants_at_each_precision() {
        let at = |secs: u64, micros: u64| UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
        assert_eq!(format_rfc3339(at(0, 0), Fraction::Seconds), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(at(951_782_400, 5_000), Fraction::Millis), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_rfc3339(at(1_801_353_600, 7), Fraction::Micros), "2027-01-31T00:00:00.000007Z");
        assert_eq!(format_rfc3339(at(4_107_542_399, 0), Fraction::Seconds), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn civil_conversions_round_trip_across_four_centuries() {
        for days in (-146_097..146_097 * 2).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
