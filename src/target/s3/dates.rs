//! The two time formats S3 answers with, read into `SystemTime`: an
//! object's `LastModified` in a listing (ISO 8601, `2026-11-30T02:40:05.000Z`)
//! and a response's `Date` header (IMF-fixdate, `Mon, 30 Nov 2026 02:40:05
//! GMT`). Pure functions; anything else is `None` (the caller says what it
//! cannot read). Fractions of a second are dropped: heartbeats are judged in
//! whole seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC).
pub fn parse_iso8601(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (date, time) = text.split_once('T')?;
    let time = time.strip_suffix('Z')?;
    let time = time.split_once('.').map_or(time, |(whole, fraction)| {
        if fraction.bytes().all(|b| b.is_ascii_digit()) { whole } else { "" }
    });
    let [year, month, day] = numbers(date, '-')?;
    let [hour, minute, second] = numbers(time, ':')?;
    utc(year, month, day, hour, minute, second)
}

/// `Day, DD Mon YYYY HH:MM:SS GMT` (RFC 9110's preferred form).
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let (_weekday, rest) = text.trim().split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let [hour, minute, second] = numbers(time, ':')?;
    utc(digits(year)?, month, digits(day)?, hour, minute, second)
}

fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn numbers(text: &str, separator: char) -> Option<[u64; 3]> {
    let mut parts = text.split(separator);
    let values = [digits(parts.next()?)?, digits(parts.next()?)?, digits(parts.next()?)?];
    parts.next().is_none().then_some(values)
}

/// The instant of a UTC civil time from 1970 on, or `None` when a field is
/// out of range (a leap second, 60, counts as 59).
fn utc(year: u64, month: u64, day: u64, hour: u64, minute: u64, second: u64) -> Option<SystemTime> {
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second.min(59);
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date from 1970 on (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(seconds))
    }

    #[test]
    fn reads_listing_times() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00.000Z"), at(0));
        assert_eq!(parse_iso8601("2024-01-01T00:00:00.000Z"), at(1_704_067_200));
        assert_eq!(parse_iso8601("2000-02-29T12:34:56Z"), at(951_827_696));
        assert_eq!(parse_iso8601("2026-11-30T02:40:05.123456Z"), at(1_796_006_405));
        for bad in ["", "2024-01-01", "2024-01-01T00:00:00", "2024-13-01T00:00:00Z", "2024-01-01T24:00:00Z"] {
            assert_eq!(parse_iso8601(bad), None, "{bad:?}");
        }
        for bad in [
            "1969-12-31T23:59:59Z",
            "2024-01-01T00:00:00.x1Z",
            "2024-01-01T00:00:00:00Z",
            "+024-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_date_headers() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), at(0));
        assert_eq!(parse_http_date("Mon, 30 Nov 2026 02:40:05 GMT"), at(1_796_006_405));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), at(784_111_777));
        for bad in
            ["", "Sun, 06 Nov 1994 08:49:37", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"]
        {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    }
}
