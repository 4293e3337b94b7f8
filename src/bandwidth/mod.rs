//! The bandwidth budget: `bandwidth_limit` and `bandwidth_schedule` for
//! uploads, `restore_bandwidth_limit` for restores and fetches.
//!
//! One [`Throttle`] per direction for the whole process ([`uploads`],
//! [`downloads`]): every stream's uploads share the upload one, and a
//! reload changes its limit in place ([`Throttle::set_limit`]), so the
//! running streams slow down or speed up at once, without a restart.
//!
//! Bytes are paced where they are written, in small chunks (a tenth of a
//! second of the rate, 1 to 64 KiB): the S3 request bodies
//! (`target::s3::body`), the file target's writes, and, for downloads,
//! [`PacedWriter`] around what a GET writes. A part is thus spread over
//! time rather than sent in a burst and then waited for.
//!
//! A `0` window of the schedule stops new batches from starting: a stream
//! asks [`Throttle::held`] before each batch and waits, quietly, saying why
//! in its status. An upload already in flight when such a window begins
//! finishes at the rate of the window it started in.
//!
//! A stop interrupts the waits ([`Throttle::interrupt`]): the transfer in
//! flight fails (and is cleaned up like any failed upload) rather than
//! trickling out at a low rate for minutes.
//!
//! The rules are pure ([`bucket`], [`schedule`]); this module adds the
//! clocks (monotonic for the bucket, local time for the schedule) and the
//! sleeping.

pub mod bucket;
pub mod schedule;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::calendar::LocalTime;
use bucket::TokenBucket;
use schedule::{Rate, Schedule};

/// The largest chunk paced at once.
const MAX_CHUNK: usize = 64 * 1024;
/// The smallest chunk paced at once.
const MIN_CHUNK: usize = 1024;
/// How often a paced wait looks whether the process is stopping.
const INTERRUPT_CHECK: Duration = Duration::from_millis(100);

/// What limits one direction's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Limit {
    #[default]
    Unlimited,
    /// Bytes per second, always.
    Fixed(u64),
    /// By local time of day, each window held to at most `cap` bytes per
    /// second when `bandwidth_limit` is set too.
    Scheduled { schedule: Schedule, cap: Option<u64> },
}

impl Limit {
    /// The limit a `bandwidth_limit` (or `restore_bandwidth_limit`) and a
    /// `bandwidth_schedule` setting describe: with both, the limit caps
    /// every window of the schedule.
    pub fn from_settings(limit: Option<u64>, schedule: Option<&Schedule>) -> Limit {
        match (schedule, limit) {
            (Some(schedule), cap) => Limit::Scheduled { schedule: schedule.clone(), cap },
            (None, Some(rate)) => Limit::Fixed(rate),
            (None, None) => Limit::Unlimited,
        }
    }

    /// The rate for bytes of an upload in flight at `now`.
    fn pacing_rate(&self, now: impl FnOnce() -> LocalTime) -> Rate {
        match self {
            Limit::Unlimited => Rate::Unlimited,
            Limit::Fixed(rate) => Rate::PerSecond(*rate),
            Limit::Scheduled { schedule, cap } => schedule.in_flight_rate(now().minute_of_day).capped(*cap),
        }
    }
}

/// Paces one direction's bytes for the whole process.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<ThrottleState>,
    /// Set while the process stops: a paced transfer fails instead of
    /// waiting, so a stop never waits for a slow upload to trickle out.
    interrupted: AtomicBool,
}

#[derive(Debug)]
struct ThrottleState {
    limit: Limit,
    bucket: TokenBucket,
}

static UPLOADS: Throttle = Throttle::new();
static DOWNLOADS: Throttle = Throttle::new();

/// The process's upload throttle (`bandwidth_limit`, `bandwidth_schedule`).
pub fn uploads() -> &'static Throttle {
    &UPLOADS
}

/// The process's throttle for restores and fetches (`restore_bandwidth_limit`).
pub fn downloads() -> &'static Throttle {
    &DOWNLOADS
}

/// Time since a fixed point of this process, for the bucket.
fn monotonic_now() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new()
    }
}

impl Throttle {
    /// A throttle without a limit.
    pub const fn new() -> Throttle {
        Throttle {
            state: Mutex::new(ThrottleState { limit: Limit::Unlimited, bucket: TokenBucket::new() }),
            interrupted: AtomicBool::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ThrottleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `limit` from now on, to the bytes in flight too. The same
    /// limit again changes nothing (the bucket keeps its count).
    pub fn set_limit(&self, limit: Limit) {
        let mut state = self.state();
        if state.limit != limit {
            state.limit = limit;
            state.bucket.reset();
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> Limit {
        self.state().limit.clone()
    }

    /// Why no new upload may start at `now`, for the stream's status:
    /// `None` when one may.
    pub fn held(&self, now: LocalTime) -> Option<String> {
        let Limit::Scheduled { schedule, .. } = &self.state().limit else { return None };
        let minute = now.minute_of_day;
        if schedule.window_at(minute).rate != Rate::Paused {
            return None;
        }
        Some(match schedule.next_open(minute) {
            Some(window) => format!("waiting for the {} window (bandwidth_schedule)", window.start_text()),
            None => "waiting: every window of bandwidth_schedule is 0".to_string(),
        })
    }

    /// The rate in force at `now`, for the status: `None` without a limit.
    pub fn describe(&self, now: LocalTime) -> Option<String> {
        match &self.state().limit {
            Limit::Unlimited => None,
            Limit::Fixed(rate) => Some(format!("{} (bandwidth_limit)", Rate::PerSecond(*rate))),
            Limit::Scheduled { schedule, cap } => {
                let minute = now.minute_of_day;
                let (current, next) = (schedule.window_at(minute), schedule.following(minute));
                let rate = current.rate.capped(*cap);
                let rate = match rate != current.rate {
                    true => format!("{rate} (bandwidth_limit)"),
                    false => rate.to_string(),
                };
                Some(if current == next { rate } else { format!("{rate} until {}", next.start_text()) })
            }
        }
    }

    /// How many bytes to pace at once, at most `max`: a tenth of a second
    /// of the rate (1 to 64 KiB), or `max` without a limit.
    pub fn chunk_len(&self, max: usize) -> usize {
        match self.state().limit.pacing_rate(LocalTime::now) {
            Rate::PerSecond(rate) => ((rate / 10) as usize).clamp(MIN_CHUNK, MAX_CHUNK).min(max).max(1),
            Rate::Unlimited | Rate::Paused => max.max(1),
        }
    }

    /// Make every transfer that would have to wait fail at once, until
    /// [`resume`](Self::resume): the process is stopping.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
    }

    /// Undo [`interrupt`](Self::interrupt) (an archiver starts).
    pub fn resume(&self) {
        self.interrupted.store(false, Ordering::SeqCst);
    }

    /// Wait until `bytes` may be sent (at once without a limit). Fails,
    /// instead of waiting, once [`interrupt`](Self::interrupt)ed.
    pub fn pace(&self, bytes: usize) -> io::Result<()> {
        let wait = {
            let mut state = self.state();
            let state = &mut *state;
            match state.limit.pacing_rate(LocalTime::now) {
                Rate::PerSecond(rate) => state.bucket.take(monotonic_now(), rate, bytes as u64),
                Rate::Unlimited | Rate::Paused => {
                    state.bucket.reset();
                    Duration::ZERO
                }
            }
        };
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if self.interrupted.load(Ordering::SeqCst) {
                // Not `Interrupted`: readers and writers retry that one.
                return Err(io::Error::other("walship is stopping"));
            }
            std::thread::sleep(left.min(INTERRUPT_CHECK));
        }
    }
}

/// Pace `bytes` of an upload about to be written, and count them toward
/// the data budget first (so a crash never leaves them uncounted). Called
/// by the one place each target writes an upload's bytes; an error (the
/// budget's record cannot be written) fails that write.
pub fn pace_upload(bytes: usize) -> io::Result<()> {
    crate::budget::count(bytes as u64)?;
    uploads().pace(bytes)
}

/// A writer that paces what passes through it with [`downloads`]: what a
/// restore or a fetch writes as it downloads.
pub struct PacedWriter<W> {
    pub inner: W,
}

impl<W: Write> Write for PacedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let throttle = downloads();
        let n = throttle.chunk_len(buf.len());
        throttle.pace(n)?;
        self.inner.write(&buf[..n])
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Date;

    fn local(minute_of_day: u16) -> LocalTime {
        LocalTime { date: Date { year: 2026, month: 11, day: 30 }, minute_of_day }
    }

    #[test]
    fn held_and_described_by_the_schedule() {
        let throttle = Throttle::new();
        assert_eq!(throttle.held(local(0)), None);
        assert_eq!(throttle.describe(local(0)), None);
        let schedule = Schedule::parse("08:00=256KiB/s 19:00=0 23:00=off").expect("valid");
        throttle.set_limit(Limit::Scheduled { schedule, cap: None });
        assert_eq!(throttle.held(local(9 * 60)), None);
        assert_eq!(throttle.describe(local(9 * 60)).as_deref(), Some("256.0 KiB/s until 19:00"));
        let held = throttle.held(local(20 * 60)).expect("paused");
        assert!(held.contains("waiting for the 23:00 window"), "{held}");
        assert_eq!(throttle.describe(local(23 * 60)).as_deref(), Some("unlimited until 08:00"));
        throttle.set_limit(Limit::Fixed(2 << 20));
        assert_eq!(throttle.describe(local(20 * 60)).as_deref(), Some("2.0 MiB/s (bandwidth_limit)"));
        assert_eq!(throttle.held(local(20 * 60)), None);
    }

    /// With both settings, `bandwidth_limit` caps every window: `off`
    /// becomes the limit, a faster window is slowed to it, a slower one and
    /// `0` keep their rate.
    #[test]
    fn the_limit_caps_every_window_of_the_schedule() {
        let schedule = Schedule::parse("02:00=0 05:00=off 07:00=256KiB/s 19:00=4MiB/s").expect("valid");
        let limit = Limit::from_settings(Some(1 << 20), Some(&schedule));
        let rate_at = |hour: u16| limit.pacing_rate(|| local(hour * 60));
        assert_eq!(rate_at(6), Rate::PerSecond(1 << 20), "off: the limit");
        assert_eq!(rate_at(8), Rate::PerSecond(256 * 1024), "slower than the limit");
        assert_eq!(rate_at(20), Rate::PerSecond(1 << 20), "faster than the limit");
        assert_eq!(rate_at(3), Rate::PerSecond(1 << 20), "in flight from the 19:00 window, capped");
        let throttle = Throttle::new();
        throttle.set_limit(limit);
        assert_eq!(
            throttle.describe(local(6 * 60)).as_deref(),
            Some("1.0 MiB/s (bandwidth_limit) until 07:00")
        );
        assert_eq!(throttle.describe(local(8 * 60)).as_deref(), Some("256.0 KiB/s until 19:00"));
        assert!(throttle.held(local(3 * 60)).is_some(), "a 0 window still holds uploads");
    }

    #[test]
    fn chunks_are_a_tenth_of_a_second() {
        let throttle = Throttle::new();
        assert_eq!(throttle.chunk_len(1 << 20), 1 << 20);
        throttle.set_limit(Limit::Fixed(256 * 1024));
        assert_eq!(throttle.chunk_len(1 << 20), 26_214);
        assert_eq!(throttle.chunk_len(100), 100);
        throttle.set_limit(Limit::Fixed(100 << 20));
        assert_eq!(throttle.chunk_len(1 << 20), MAX_CHUNK);
        throttle.set_limit(Limit::Fixed(1024));
        assert_eq!(throttle.chunk_len(1 << 20), MIN_CHUNK);
    }

    /// The throttle itself (not only its bucket) holds bytes to the rate:
    /// 64 KiB beyond the burst at 256 KiB/s cannot take less than 0.25 s.
    #[test]
    fn pacing_sleeps_for_the_debt() {
        let throttle = Throttle::new();
        throttle.set_limit(Limit::Fixed(256 * 1024));
        let started = Instant::now();
        let chunk = throttle.chunk_len(1 << 20);
        let mut sent = 0;
        while sent < 64 * 1024 + 26_214 {
            throttle.pace(chunk).expect("paced");
            sent += chunk;
        }
        assert!(started.elapsed() >= Duration::from_millis(240), "{:?}", started.elapsed());
    }

    /// A stop does not wait for a slow transfer: a wait fails at once.
    #[test]
    fn an_interrupt_ends_the_wait() {
        let throttle = Throttle::new();
        throttle.set_limit(Limit::Fixed(1024));
        throttle.pace(1024).expect("the burst and no more");
        throttle.interrupt();
        let started = Instant::now();
        let error = throttle.pace(60 * 1024).expect_err("interrupted");
        assert_eq!(error.to_string(), "walship is stopping");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        throttle.resume();
        throttle.set_limit(Limit::Unlimited);
        throttle.pace(1 << 30).expect("unlimited");
    }
}
