//! Time as runwarden reads and writes it: RFC 3339 in UTC, over `SystemTime`. The calendar
//! (which dates exist, days since the epoch, offsets) is the `time` crate's; what is written by
//! hand here is only the syntax check of [`parse_rfc3339`], so that a policy author learns which
//! part of a timestamp is wrong. The one place dates are converted: policy files, IAM condition
//! titles, logs, audit events and the simulator all use it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::macros::format_description;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

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
/// needs them), times after 9999 to its last second (nothing runwarden reads can name them).
pub fn format_rfc3339(t: SystemTime, fraction: Fraction) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let utc = i64::try_from(since.as_secs())
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .map(|t| t.replace_nanosecond(since.subsec_nanos()).unwrap_or(t))
        .unwrap_or_else(|| PrimitiveDateTime::MAX.assume_utc());
    let written = match fraction {
        Fraction::Seconds => utc.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        )),
        Fraction::Millis => utc.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        )),
        Fraction::Micros => utc.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        )),
    };
    // Formatting a valid date with a fixed description into a String cannot fail.
    written.unwrap_or_default()
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
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok());
    let date = month.and_then(|m| Date::from_calendar_date(year as i32, m, day as u8).ok());
    let Some(date) = date else {
        return Err(bad("no such date"));
    };
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
    let offset = match rest {
        "Z" | "z" => UtcOffset::UTC,
        _ => zone_offset(rest).map_err(bad)?,
    };
    // A leap second (`:60`) is folded into the next second, as IAM's CEL timestamps do.
    let time = Time::from_hms_nano(hour as u8, minute as u8, second.min(59) as u8, nanos)
        .map_err(|_| bad("no such time of day"))?;
    let leap = Duration::from_secs(u64::from(second == 60));
    let at = PrimitiveDateTime::new(date, time).assume_offset(offset);
    let since_epoch = at - OffsetDateTime::UNIX_EPOCH;
    let instant = if since_epoch.is_negative() {
        UNIX_EPOCH - since_epoch.unsigned_abs()
    } else {
        UNIX_EPOCH + since_epoch.unsigned_abs()
    };
    Ok(instant + leap)
}

/// `+HH:MM` / `-HH:MM` (hours to 23), the only numeric zones RFC 3339 allows; the error says
/// what is wrong with it.
fn zone_offset(rest: &str) -> Result<UtcOffset, &'static str> {
    const SHAPE: &str = "the zone must be `Z` or `+HH:MM`/`-HH:MM`";
    let ob = rest.as_bytes();
    if ob.len() != 6 || !rest.is_ascii() || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
        return Err(SHAPE);
    }
    let (Some(oh), Some(om)) = (digits_of(&rest[1..3]), digits_of(&rest[4..6])) else {
        return Err(SHAPE);
    };
    if oh > 23 || om > 59 {
        return Err("no such zone offset");
    }
    let sign = if ob[0] == b'-' { -1 } else { 1 };
    UtcOffset::from_hms(sign * oh as i8, sign * om as i8, 0).map_err(|_| "no such zone offset")
}

fn digits_of(text: &str) -> Option<i64> {
    text.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| text.parse().ok())
        .flatten()
}

/// The Julian day number of 1970-01-01.
const EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// Days since 1970-01-01 → (year, month, day). Days outside the years ±9999 are clamped to them.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let julian = (days + EPOCH_JULIAN_DAY).clamp(
        Date::MIN.to_julian_day().into(),
        Date::MAX.to_julian_day().into(),
    );
    let date = Date::from_julian_day(julian as i32).unwrap_or(Date::MIN);
    (
        date.year().into(),
        i64::from(u8::from(date.month())),
        date.day().into(),
    )
}

/// (year, month, day) → days since 1970-01-01, or `None` for a date that does not exist.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?);
    Some(i64::from(date.ok()?.to_julian_day()) - EPOCH_JULIAN_DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants_at_each_precision() {
        let at = |secs: u64, micros: u64| {
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
        };
        assert_eq!(
            format_rfc3339(at(0, 0), Fraction::Seconds),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            format_rfc3339(at(951_782_400, 5_000), Fraction::Millis),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            format_rfc3339(at(1_801_353_600, 7), Fraction::Micros),
            "2027-01-31T00:00:00.000007Z"
        );
        assert_eq!(
            format_rfc3339(at(4_107_542_399, 0), Fraction::Seconds),
            "2100-02-28T23:59:59Z"
        );
    }

    #[test]
    fn civil_conversions_round_trip_across_four_centuries() {
        for days in (-146_097..146_097 * 2).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), Some(days));
        }
    }

    #[test]
    fn a_leap_second_folds_into_the_next_and_absurd_offsets_and_years_are_handled() {
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2017-01-01T00:00:00Z")
        );
        let err = parse_rfc3339("2027-01-31T00:00:00+24:00").unwrap_err();
        assert!(err.contains("no such zone offset"), "{err}");
        let before_epoch = parse_rfc3339("1969-12-31T23:59:59.5Z").unwrap();
        assert_eq!(
            UNIX_EPOCH.duration_since(before_epoch).unwrap(),
            Duration::from_millis(500)
        );
        let far = UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(
            format_rfc3339(far, Fraction::Seconds),
            "9999-12-31T23:59:59Z"
        );
    }
}
