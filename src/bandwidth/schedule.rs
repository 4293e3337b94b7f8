//! Upload rates and the daily schedule of them (pure): the values of
//! `bandwidth_limit`, `restore_bandwidth_limit` and `bandwidth_schedule`,
//! and which rate is in force at a minute of the local day.
//!
//! A schedule is a list of windows `HH:MM=RATE`, each in force from its
//! time until the next one's; the last lasts past midnight until the first
//! (so the windows cover the whole day). Only the local minute of the day
//! matters: when a daylight saving change skips an hour, the window that
//! began in the skipped hour is in force at once after it; when an hour
//! repeats, its windows repeat.

use std::fmt;

use crate::config::parse_size;

/// The slowest rate a setting accepts: below it, pacing in small chunks
/// would mean stalls of many seconds per chunk, and surely a typo.
pub const MIN_RATE: u64 = 1024;

/// How fast uploads may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Unlimited,
    /// No new upload starts (a `0` window).
    Paused,
    /// Bytes per second, at least [`MIN_RATE`].
    PerSecond(u64),
}

impl Rate {
    /// This rate held to at most `cap` bytes per second (`bandwidth_limit`
    /// under a `bandwidth_schedule`): `off` becomes the cap, a faster
    /// window is slowed to it, `0` stays `0`.
    pub fn capped(self, cap: Option<u64>) -> Rate {
        match (self, cap) {
            (rate, None) | (rate @ Rate::Paused, _) => rate,
            (Rate::Unlimited, Some(cap)) => Rate::PerSecond(cap),
            (Rate::PerSecond(rate), Some(cap)) => Rate::PerSecond(rate.min(cap)),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Unlimited => write!(f, "unlimited"),
            Rate::Paused => write!(f, "no uploads"),
            Rate::PerSecond(bytes) => write!(f, "{}/s", crate::human::human_bytes(*bytes)),
        }
    }
}

/// One window of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes since local midnight, 0..1440.
    pub start: u16,
    pub rate: Rate,
}

impl Window {
    /// `HH:MM`, as written.
    pub fn start_text(&self) -> String {
        format!("{:02}:{:02}", self.start / 60, self.start % 60)
    }
}

/// A `bandwidth_schedule`: windows in increasing order of start, at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    windows: Vec<Window>,
}

impl Schedule {
    /// Parse `08:00=256KiB/s 19:00=2MiB/s 23:00=off`.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let mut windows: Vec<Window> = Vec::new();
        for item in text.split_whitespace() {
            let Some((time, rate)) = item.split_once('=') else {
                return Err(format!(
                    "expected windows such as `08:00=256KiB/s 19:00=2MiB/s 23:00=off`, got `{item}`"
                ));
            };
            let start = parse_time(time)?;
            let rate = parse_rate(rate, true)?;
            if let Some(previous) = windows.last()
                && previous.start >= start
            {
                return Err(format!(
                    "`{time}` comes after {}: write the windows in order of time, each time once",
                    previous.start_text()
                ));
            }
            windows.push(Window { start, rate });
        }
        if windows.is_empty() {
            return Err("expected at least one window such as `08:00=256KiB/s`".into());
        }
        Ok(Schedule { windows })
    }

    /// The window in force at `minute` of the local day: the last one that
    /// started at or before it, or before the first one, the day's last
    /// (it lasts past midnight).
    pub fn window_at(&self, minute: u16) -> Window {
        let index = self.windows.iter().rposition(|w| w.start <= minute).unwrap_or(self.windows.len() - 1);
        self.windows[index]
    }

    /// The window that follows the one in force at `minute` (itself when
    /// there is only one).
    pub fn following(&self, minute: u16) -> Window {
        let after = self.windows.iter().position(|w| w.start > minute).unwrap_or(0);
        self.windows[after]
    }

    /// The next window after `minute` (wrapping past midnight) whose rate
    /// lets uploads through; `None` when every window pauses them.
    pub fn next_open(&self, minute: u16) -> Option<Window> {
        let after = self.windows.iter().position(|w| w.start > minute).unwrap_or(0);
        let n = self.windows.len();
        (0..n).map(|i| self.windows[(after + i) % n]).find(|w| w.rate != Rate::Paused)
    }

    /// The rate for the bytes of an upload already in flight at `minute`:
    /// the window's own, or in a `0` window the rate of the last window
    /// before it that allowed uploads (the upload started under it), or
    /// unlimited when no window ever does.
    pub fn in_flight_rate(&self, minute: u16) -> Rate {
        let current = self.windows.iter().rposition(|w| w.start <= minute).unwrap_or(self.windows.len() - 1);
        let n = self.windows.len();
        (0..n)
            .map(|back| self.windows[(current + n - back) % n].rate)
            .find(|rate| *rate != Rate::Paused)
            .unwrap_or(Rate::Unlimited)
    }
}

/// `HH:MM`, 00:00 to 23:59, as minutes since midnight.
fn parse_time(text: &str) -> Result<u16, String> {
    let bad = || format!("expected a time of day HH:MM from 00:00 to 23:59, got `{text}`");
    let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
    let number = |s: &str| {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u16>().ok()).flatten()
    };
    match (number(hours), number(minutes)) {
        (Some(h), Some(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

/// A rate: a size per second (`2MiB/s`), `off` (unlimited) or, where
/// `allow_pause`, `0` (no uploads).
pub fn parse_rate(text: &str, allow_pause: bool) -> Result<Rate, String> {
    let text = text.trim();
    if text == "off" {
        return Ok(Rate::Unlimited);
    }
    if text == "0" {
        return if allow_pause {
            Ok(Rate::Paused)
        } else {
            Err("0 would stop every transfer; remove the key for no limit, or pause uploads \
                 for part of the day with a `0` window in bandwidth_schedule"
                .into())
        };
    }
    let Some(size) = text.strip_suffix("/s") else {
        return Err(format!("expected a rate such as 2MiB/s (a size per second), or off, got `{text}`"));
    };
    let bytes = parse_size(size)?;
    if bytes < MIN_RATE {
        return Err(format!("expected at least 1KiB/s, got `{text}`"));
    }
    Ok(Rate::PerSecond(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    fn at(text: &str) -> u16 {
        parse_time(text).expect("valid time")
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2MiB/s", false), Ok(Rate::PerSecond(2 << 20)));
        assert_eq!(parse_rate("256 KiB/s", false), Ok(Rate::PerSecond(256 * KIB)));
        assert_eq!(parse_rate("off", false), Ok(Rate::Unlimited));
        assert_eq!(parse_rate("0", true), Ok(Rate::Paused));
        for (text, part) in [
            ("0", "0 would stop every transfer"),
            ("2MiB", "a size per second"),
            ("2 mib/s", "did you mean MiB"),
            ("100/s", "at least 1KiB/s"),
            ("fast", "a rate such as 2MiB/s"),
        ] {
            let message = parse_rate(text, false).expect_err(text);
            assert!(message.contains(part), "{text}: {message}");
        }
    }

    #[test]
    fn schedule_errors() {
        for (text, part) in [
            ("", "at least one window"),
            ("08:00", "expected windows such as"),
            ("8:00=1MiB/s", "HH:MM"),
            ("24:00=1MiB/s", "HH:MM"),
            ("08:60=1MiB/s", "HH:MM"),
            ("08:00=1MiB/s 07:00=off", "in order of time"),
            ("08:00=1MiB/s 08:00=off", "each time once"),
            ("08:00=lots", "a rate such as"),
        ] {
            let message = Schedule::parse(text).expect_err(text);
            assert!(message.contains(part), "{text:?}: {message}");
        }
    }

    /// (local time, rate in force, next open window, rate for an upload in flight)
    #[test]
    fn windows_through_the_day() {
        let schedule = Schedule::parse("08:00=256KiB/s 19:00=0 23:00=off").expect("valid");
        let slow = Rate::PerSecond(256 * KIB);
        #[rustfmt::skip]
        let cases = [
            ("00:00", Rate::Unlimited, "08:00", Rate::Unlimited), // midnight wrap: 23:00's window
            ("07:59", Rate::Unlimited, "08:00", Rate::Unlimited),
            ("08:00", slow,            "23:00", slow),
            ("18:59", slow,            "23:00", slow),
            ("19:00", Rate::Paused,    "23:00", slow),            // boundary inside an upload
            ("22:59", Rate::Paused,    "23:00", slow),
            ("23:00", Rate::Unlimited, "08:00", Rate::Unlimited),
            ("23:59", Rate::Unlimited, "08:00", Rate::Unlimited),
        ];
        for (time, rate, next, in_flight) in cases {
            let minute = at(time);
            assert_eq!(schedule.window_at(minute).rate, rate, "{time}");
            assert_eq!(schedule.next_open(minute).map(|w| w.start_text()).as_deref(), Some(next), "{time}");
            assert_eq!(schedule.in_flight_rate(minute), in_flight, "{time}");
        }
    }

    #[test]
    fn a_pause_over_midnight_reopens_in_the_morning() {
        let schedule = Schedule::parse("06:00=1MiB/s 22:00=0").expect("valid");
        assert_eq!(schedule.window_at(at("02:00")).rate, Rate::Paused);
        assert_eq!(schedule.next_open(at("02:00")).map(|w| w.start_text()).as_deref(), Some("06:00"));
        assert_eq!(schedule.next_open(at("23:00")).map(|w| w.start_text()).as_deref(), Some("06:00"));
        assert_eq!(schedule.in_flight_rate(at("02:00")), Rate::PerSecond(1 << 20));
        let never = Schedule::parse("00:00=0").expect("valid");
        assert_eq!(never.next_open(at("12:00")), None);
        assert_eq!(never.in_flight_rate(at("12:00")), Rate::Unlimited);
    }

    /// Only the local minute of the day counts: a skipped hour (spring
    /// forward, 02:00 → 03:00) still brings its window, a repeated hour
    /// (fall back, 03:00 → 02:00) brings its windows again.
    #[test]
    fn daylight_saving_changes() {
        let schedule = Schedule::parse("01:00=1MiB/s 02:30=0 05:00=off").expect("valid");
        // Spring forward: the clock reads 01:59, then 03:00.
        assert_eq!(schedule.window_at(at("01:59")).rate, Rate::PerSecond(1 << 20));
        assert_eq!(schedule.window_at(at("03:00")).rate, Rate::Paused);
        // Fall back: 02:59, then 02:00 again (before the 02:30 window).
        assert_eq!(schedule.window_at(at("02:59")).rate, Rate::Paused);
        assert_eq!(schedule.window_at(at("02:00")).rate, Rate::PerSecond(1 << 20));
    }
}
