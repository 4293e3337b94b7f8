//! Retrying one S3 request: a few attempts with exponential backoff and jitter.
//!
//! Only errors the caller classifies as transient are retried; after
//! [`RetryPolicy::attempts`] tries the last transient error is returned and
//! the stream layer decides what happens next (it retries further, on a
//! longer scale). The delay is a pure function of the attempt number and a
//! random value, so it is tested without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// Attempts within one request and the bounds of the delay between them.
#[derive(Debug, Clone, Default)]
pub struct RetryPolicy {
    /// Total tries, the first included (at least 1).
    pub attempts: u32,
    /// Delay before the first retry (before jitter).
    pub min_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
    /// Set when the process is stopping: no new attempt is made, so a stop
    /// waits for at most the request in flight.
    pub stopping: Arc<AtomicBool>,
}

impl RetryPolicy {
    /// Whether the process is stopping (see [`RetryPolicy::stopping`]).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Delay before retry number `retry` (0 for the first retry): `min_delay`
    /// doubled per retry, capped at `max_delay`, then jittered to a value in
    /// `[d/2, d]` by `random`.
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        let doubled = self.min_delay.saturating_mul(1u32 << retry.min(20));
        let ceiling = doubled.min(self.max_delay).max(self.min_delay.min(self.max_delay));
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let half = ceiling_nanos / 2;
        let jitter = if half == 0 { 0 } else { random % (half + 1) };
        Duration::from_nanos(ceiling_nanos - half + jitter)
    }

    /// Sleep the jittered delay before retry number `retry`.
    pub fn pause(&self, retry: u32) {
        std::thread::sleep(self.delay(retry, random_u64()));
    }

    /// Run `attempt` until it succeeds, fails with an error `is_transient`
    /// rejects, or the attempts are used up; sleeps between attempts.
    /// `describe` names the request in debug logs.
    pub fn run<T, E: std::fmt::Display>(
        &self,
        describe: &dyn Fn() -> String,
        is_transient: impl Fn(&E) -> bool,
        mut attempt: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut retry = 0;
        loop {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(error)
                    if is_transient(&error) && retry + 1 < self.attempts.max(1) && !self.is_stopping() =>
                {
                    log::debug!("{}: {error}; retrying", describe());
                    self.pause(retry);
                    retry += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// A random value for jitter (0 if the system generator fails: jitter is a
/// nicety, not a requirement).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            ..Default::default()
        }
    }

    #[test]
    fn delays_double_then_cap_and_stay_within_jitter_bounds() {
        let p = policy();
        let ceilings = [10, 20, 40, 80, 100, 100, 100];
        for (retry, ceiling) in ceilings.iter().enumerate() {
            let ceiling = Duration::from_millis(*ceiling);
            for random in [0, 1, 12_345, u64::MAX] {
                let delay = p.delay(retry as u32, random);
                assert!(delay <= ceiling, "retry {retry}: {delay:?} > {ceiling:?}");
                assert!(delay >= ceiling / 2, "retry {retry}: {delay:?} < half of {ceiling:?}");
            }
        }
        assert_eq!(p.delay(1000, 7), p.delay(1000, 7));
        assert!(p.delay(u32::MAX, u64::MAX) <= p.max_delay);
    }

    #[test]
    fn zero_delays_are_fine() {
        let p = RetryPolicy {
            attempts: 3,
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(p.delay(0, 99), Duration::ZERO);
    }

    #[test]
    fn retries_transient_errors_a_bounded_number_of_times() {
        let p = RetryPolicy {
            attempts: 3,
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..Default::default()
        };
        let calls = Cell::new(0);
        let result: Result<(), String> = p.run(
            &|| "op".into(),
            |_| true,
            || {
                calls.set(calls.get() + 1);
                Err("down".to_string())
            },
        );
        assert_eq!(result, Err("down".to_string()));
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn stops_at_the_first_permanent_error_or_success() {
        let p = RetryPolicy {
            attempts: 5,
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..Default::default()
        };
        let calls = Cell::new(0);
        let result: Result<(), String> = p.run(
            &|| "op".into(),
            |e| e == "transient",
            || {
                calls.set(calls.get() + 1);
                Err(if calls.get() < 2 { "transient" } else { "fatal" }.to_string())
            },
        );
        assert_eq!(result, Err("fatal".to_string()));
        assert_eq!(calls.get(), 2);

        calls.set(0);
        let result: Result<u32, String> = p.run(
            &|| "op".into(),
            |_| true,
            || {
                calls.set(calls.get() + 1);
                if calls.get() < 3 { Err("transient".to_string()) } else { Ok(7) }
            },
        );
        assert_eq!(result, Ok(7));
    }
}
