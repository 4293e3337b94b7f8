//! A progress line for long commands (`restore`, `verify`): objects and
//! bytes done of their totals, the rate, and the time left, on one line of
//! stderr redrawn in place, at most [`REDRAW`] apart. Shown only when
//! stderr is a terminal: logs, pipes and files get nothing.
//!
//! What the line says and the estimate of the time left are pure
//! functions ([`line()`], [`eta`]); [`Progress`] only counts and decides
//! when to draw.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::human::{duration, human_bytes};

/// The shortest time between two redraws.
pub const REDRAW: Duration = Duration::from_millis(250);

/// No estimate before this much time has passed: the rate is noise.
const SETTLE: Duration = Duration::from_millis(500);

/// How far a long command is: objects and bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    pub objects: u64,
    pub bytes: u64,
}

/// The time left to reach `total` from `done` at the rate so far; `None`
/// until there is a rate to go by (nothing done, or too early).
pub fn eta(done: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    if done == 0 || elapsed < SETTLE {
        return None;
    }
    let left = total.saturating_sub(done) as f64;
    Some(Duration::from_secs_f64(left * elapsed.as_secs_f64() / done as f64))
}

/// The line: `restored 3/21 objects, 12.0 MiB/80.0 MiB, 4.0 MiB/s, 17s
/// left`. Bytes (and a byte rate) only when `total.bytes` is known (not
/// 0); otherwise the rate and the time left go by objects.
pub fn line(verb: &str, done: Amount, total: Amount, elapsed: Duration) -> String {
    let mut text = format!("{verb} {}/{} objects", done.objects, total.objects);
    let seconds = elapsed.as_secs_f64();
    let left = if total.bytes > 0 {
        text.push_str(&format!(", {}/{}", human_bytes(done.bytes), human_bytes(total.bytes)));
        if elapsed >= SETTLE {
            text.push_str(&format!(", {}/s", human_bytes((done.bytes as f64 / seconds) as u64)));
        }
        eta(done.bytes, total.bytes, elapsed)
    } else {
        if elapsed >= SETTLE {
            text.push_str(&format!(", {:.1} objects/s", done.objects as f64 / seconds));
        }
        eta(done.objects, total.objects, elapsed)
    };
    if let Some(left) = left {
        text.push_str(&format!(", {} left", duration(Duration::from_secs(left.as_secs()))));
    }
    text
}

/// Counts what a command has done and draws [`line()`] on a terminal.
pub struct Progress {
    verb: &'static str,
    total: Amount,
    done: Amount,
    started: Instant,
    last_drawn: Option<Instant>,
    visible: bool,
}

impl Progress {
    /// Progress toward `total`, drawn only when stderr is a terminal.
    pub fn new(verb: &'static str, total: Amount) -> Progress {
        let visible = io::stderr().is_terminal();
        Progress { verb, total, done: Amount::default(), started: Instant::now(), last_drawn: None, visible }
    }

    /// `objects` more objects and `bytes` more bytes done.
    pub fn add(&mut self, objects: u64, bytes: u64) {
        self.done.objects += objects;
        self.done.bytes += bytes;
        let due = self.last_drawn.is_none_or(|at| at.elapsed() >= REDRAW);
        if self.visible && due {
            self.draw("");
        }
    }

    /// Take the line off the screen (before other output); the next
    /// [`Progress::add`] draws it again.
    pub fn clear(&mut self) {
        if self.visible && self.last_drawn.take().is_some() {
            let _ = write!(io::stderr(), "\r\x1b[K");
        }
    }

    /// Draw the final line and end it, if anything was drawn.
    pub fn finish(&mut self) {
        if self.visible && self.last_drawn.is_some() {
            self.draw("\n");
            self.last_drawn = None;
        }
    }

    fn draw(&mut self, end: &str) {
        let text = line(self.verb, self.done, self.total, self.started.elapsed());
        let _ = write!(io::stderr(), "\r{text}\x1b[K{end}");
        self.last_drawn = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn eta_goes_by_the_rate_so_far() {
        assert_eq!(eta(0, 100, Duration::from_secs(10)), None, "nothing done yet");
        assert_eq!(eta(10, 100, Duration::from_millis(100)), None, "too early");
        assert_eq!(eta(25, 100, Duration::from_secs(10)), Some(Duration::from_secs(30)));
        assert_eq!(eta(100, 100, Duration::from_secs(10)), Some(Duration::ZERO));
        assert_eq!(eta(120, 100, Duration::from_secs(10)), Some(Duration::ZERO), "more than expected");
    }

    #[test]
    fn line_shows_objects_bytes_rate_and_time_left() {
        let total = Amount { objects: 21, bytes: 80 * MIB };
        let done = Amount { objects: 3, bytes: 16 * MIB };
        assert_eq!(
            line("restored", done, total, Duration::from_secs(4)),
            "restored 3/21 objects, 16.0 MiB/80.0 MiB, 4.0 MiB/s, 16s left"
        );
        assert_eq!(
            line("restored", done, total, Duration::from_millis(100)),
            "restored 3/21 objects, 16.0 MiB/80.0 MiB",
            "no rate or estimate in the first moments"
        );
        let objects_only = Amount { objects: 40, bytes: 0 };
        assert_eq!(
            line("verified", Amount { objects: 10, bytes: 0 }, objects_only, Duration::from_secs(5)),
            "verified 10/40 objects, 2.0 objects/s, 15s left"
        );
    }
}
