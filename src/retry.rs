//! Backoff: how long a failing stream waits before trying again.
//!
//! `next_delay` is a pure function of the previous delay, the bounds and a
//! random sample, so its behaviour is tested with tables; `Backoff` holds
//! the state and draws the randomness. Delays double on failure (with
//! "equal jitter": half fixed, half random), stay within the bounds, and
//! halve again after each success, so a flapping link does not reset to
//! hammering the server at the minimum.

use std::time::Duration;

/// The delay after one more failure. `previous` is the delay used last
/// (`None` after a clean run); `unit` is a uniform sample in `[0, 1)`.
pub fn next_delay(previous: Option<Duration>, min: Duration, max: Duration, unit: f64) -> Duration {
    let max = max.max(min); // bounds given the wrong way round must not panic
    let base = previous.map_or(min, |p| p.saturating_mul(2)).clamp(min, max);
    let half = base / 2;
    (half + half.mul_f64(unit.clamp(0.0, 1.0))).clamp(min, max)
}

/// The delay to remember after a success: half the previous one, dropping
/// to nothing once it reaches the minimum.
pub fn after_success(previous: Option<Duration>, min: Duration) -> Option<Duration> {
    previous.map(|p| p / 2).filter(|p| *p > min)
}

/// Backoff state for one stream.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Option<Duration>,
    seed: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        Backoff { min, max, current: None, seed }
    }

    /// Record a failure; returns how long to wait.
    pub fn failed(&mut self) -> Duration {
        let delay = next_delay(self.current, self.min, self.max, self.sample());
        self.current = Some(delay);
        delay
    }

    /// Record a success.
    pub fn succeeded(&mut self) {
        self.current = after_success(self.current, self.min);
    }

    /// Whether the last attempt failed and we are still backing off.
    pub fn current(&self) -> Option<Duration> {
        self.current
    }

    /// xorshift64*: jitter needs no more than this.
    fn sample(&mut self) -> f64 {
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        let x = self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_within_bounds_with_jitter() {
        let (min, max) = (10 * MS, 5000 * MS);
        assert_eq!(next_delay(None, min, max, 0.0), 10 * MS);
        assert_eq!(next_delay(None, min, max, 0.999), 10 * MS);
        assert_eq!(next_delay(Some(100 * MS), min, max, 0.0), 100 * MS);
        assert_eq!(next_delay(Some(100 * MS), min, max, 0.5), 150 * MS);
        assert_eq!(next_delay(Some(4000 * MS), min, max, 0.0), 2500 * MS);
        assert_eq!(next_delay(Some(4000 * MS), min, max, 1.0), 5000 * MS);
        assert_eq!(next_delay(Some(Duration::MAX), min, max, 1.0), max);
    }

    #[test]
    fn inverted_bounds_do_not_panic() {
        assert_eq!(next_delay(None, 50 * MS, 10 * MS, 0.5), 50 * MS);
    }

    #[test]
    fn success_halves_then_clears() {
        let min = 10 * MS;
        assert_eq!(after_success(Some(400 * MS), min), Some(200 * MS));
        assert_eq!(after_success(Some(20 * MS), min), None);
        assert_eq!(after_success(None, min), None);
    }

    #[test]
    fn backoff_state_stays_in_bounds() {
        let mut b = Backoff::new(10 * MS, 1000 * MS);
        for _ in 0..50 {
            let d = b.failed();
            assert!((10 * MS..=1000 * MS).contains(&d), "{d:?}");
        }
        assert!(b.current().unwrap() >= 500 * MS);
        b.succeeded();
        assert!(b.current().unwrap() <= 500 * MS);
    }
}
