//! Value parsers shared by the sections: sizes and durations with units,
//! whole numbers in a range, absolute paths, choices, socket addresses and
//! log levels. Each takes the value as written and returns the typed value
//! or a message saying what is expected; none does I/O.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::ini::quote;

/// The longest duration any key accepts: longer ones are surely typos, and
/// would overflow clock arithmetic elsewhere.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Parse a duration for a key: more than 0, at most `MAX_DURATION`.
pub fn positive_duration(value: &str) -> Result<Duration, String> {
    let duration = parse_duration(value)?;
    if duration.is_zero() {
        return Err(format!("expected a duration > 0, got {}", quote(value)));
    }
    if duration > MAX_DURATION {
        return Err(format!("expected at most 365d, got {}", quote(value)));
    }
    Ok(duration)
}

/// Parse a whole number within `min..=max`.
pub fn number_in(value: &str, min: u64, max: u64) -> Result<u64, String> {
    match parse_whole(value) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}, got {}", quote(value))),
    }
}

/// A run of ASCII digits as a u64; `None` for anything else or overflow.
pub fn parse_whole(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

pub fn absolute_path(value: &str) -> Result<PathBuf, String> {
    if !value.starts_with('/') {
        return Err(format!("expected an absolute path (starting with '/'), got {}", quote(value)));
    }
    Ok(PathBuf::from(value))
}

/// A shell command line (run through `/bin/sh -c`): any non-blank text.
pub fn command_line(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("expected a command line (run through /bin/sh -c), got nothing".into());
    }
    Ok(value.to_string())
}

/// One of `choices` (name, value), exactly as written.
pub fn one_of<T: Copy>(value: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices.iter().find(|(name, _)| *name == value).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        format!("expected {}, got {}", names.join(" | "), quote(value))
    })
}

/// `IP:PORT`, checked to parse as a socket address.
pub fn parse_listen(value: &str) -> Result<String, String> {
    value
        .parse::<SocketAddr>()
        .map(|_| value.to_string())
        .map_err(|_| format!("expected IP:PORT such as 127.0.0.1:9187 or [::1]:9187, got {}", quote(value)))
}

pub fn parse_log_level(value: &str) -> Result<log::LevelFilter, String> {
    use log::LevelFilter as L;
    one_of(
        value,
        &[
            ("off", L::Off),
            ("error", L::Error),
            ("warn", L::Warn),
            ("info", L::Info),
            ("debug", L::Debug),
            ("trace", L::Trace),
        ],
    )
}

/// Size units and their multipliers.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

/// Duration units and their length in milliseconds.
const DURATION_UNITS: &[(&str, u64)] =
    &[("ms", 1), ("s", 1_000), ("m", 60_000), ("min", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

/// Parse a size in bytes: a whole number, optionally followed (with or
/// without a space) by `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024) or
/// `KB`, `MB`, `GB`, `TB` (powers of 1000). `8MiB`, `8 MiB`, `65536`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text, "a size such as 8MiB")?;
    let multiplier = if unit.is_empty() {
        1
    } else {
        unit_value(unit, text, SIZE_UNITS, "B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB")?
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("{} is too large", quote(text)))
}

/// Parse a duration: a whole number followed (with or without a space) by
/// `ms`, `s`, `m` or `min`, `h` or `d`. `500ms`, `30s`, `5 min`. A number
/// without a unit is refused, since it could mean seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: &str = "ms, s, m or min, h, d";
    let (number, unit) = split_number(text, "a duration such as 30s")?;
    if unit.is_empty() {
        return Err(format!(
            "{} has no unit; write e.g. {number}s or {number}ms (units: {UNITS})",
            quote(text)
        ));
    }
    let millis_per_unit = unit_value(unit, text, DURATION_UNITS, UNITS)?;
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{} is too large", quote(text)))
}

/// Split `text` (trimmed) into its leading whole number and the unit after it.
fn split_number<'t>(text: &'t str, expected: &str) -> Result<(u64, &'t str), String> {
    let text_trimmed = text.trim();
    let digits_end = text_trimmed.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(text_trimmed.len());
    let (digits, rest) = text_trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("expected {expected}, got {}", quote(text)));
    }
    let number = digits.parse::<u64>().map_err(|_| format!("{} is too large", quote(text)))?;
    let unit = rest.trim_start();
    if unit.starts_with(['.', ',']) {
        return Err(format!(
            "expected a whole number, got {}; use a smaller unit instead of a fraction",
            quote(text)
        ));
    }
    Ok((number, unit))
}

/// The value of `unit` in `units`; a near miss in letter case is suggested.
fn unit_value(unit: &str, text: &str, units: &[(&str, u64)], listing: &str) -> Result<u64, String> {
    if let Some((_, value)) = units.iter().find(|(name, _)| *name == unit) {
        return Ok(*value);
    }
    let hint = match units.iter().find(|(name, _)| name.eq_ignore_ascii_case(unit)) {
        Some((name, _)) => format!("did you mean {name}? "),
        None => String::new(),
    };
    Err(format!("unknown unit {} in {}; {hint}units are {listing}", quote(unit), quote(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        #[rustfmt::skip]
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("65536", 65_536),
            (" 7 ", 7),
            ("10B", 10),
            ("10 B", 10),
            ("1KiB", 1024),
            ("8MiB", 8 << 20),
            ("8 MiB", 8 << 20),
            ("2GiB", 2 << 30),
            ("1TiB", 1 << 40),
            ("1KB", 1_000),
            ("1kB", 1_000),
            ("5MB", 5_000_000),
            ("3GB", 3_000_000_000),
            ("2TB", 2_000_000_000_000),
            ("16777215TiB", 16_777_215 << 40),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(*bytes), "{text:?}");
        }
        #[rustfmt::skip]
        let errors = [
            ("", "expected a size such as 8MiB"),
            ("MiB", "expected a size"),
            ("-1", "expected a size"),
            ("8 mib", "did you mean MiB?"),
            ("8M", "units are B, KiB"),
            ("8 MiB extra", "unknown unit"),
            ("1.5GiB", "use a smaller unit"),
            ("16777216TiB", "too large"),
            ("18446744073709551616", "too large"),
            ("99999999999999999999999999999999999999", "too large"),
            ("8🦀", "unknown unit"),
        ];
        for (text, part) in errors {
            let message = parse_size(text).expect_err(text);
            assert!(message.contains(part), "{text:?}: {message}");
        }
    }

    #[test]
    fn durations() {
        #[rustfmt::skip]
        let cases: &[(&str, Duration)] = &[
            ("0s", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("30 s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("5min", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7_200)),
            ("1d", Duration::from_secs(86_400)),
        ];
        for (text, duration) in cases {
            assert_eq!(parse_duration(text), Ok(*duration), "{text:?}");
        }
        #[rustfmt::skip]
        let errors = [
            ("30", "has no unit; write e.g. 30s or 30ms"),
            ("30S", "did you mean s?"),
            ("30sec", "unknown unit"),
            ("1.5s", "use a smaller unit"),
            ("s", "expected a duration"),
            ("", "expected a duration"),
            ("-5s", "expected a duration"),
            ("1h30m", "unknown unit"),
            ("18446744073709551615d", "too large"),
            ("213503982334602d", "too large"),
            ("99999999999999999999999ms", "too large"),
        ];
        for (text, part) in errors {
            let message = parse_duration(text).expect_err(text);
            assert!(message.contains(part), "{text:?}: {message}");
        }
    }
}
