//! Retrying one S3 request: a few attempts with exponential backoff and jitter.
//!
//! Only errors the caller classifies as transient are retried; after
//! [`RetryPolicy::attempts`] tries the last transient error is returned and
//! the stream layer decides what happens next (it retries further, on a
//! longer scale). Delays follow the crate-wide rule in `crate::retry`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::retry::Backoff;

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

    /// Run `attempt` until it succeeds, fails with an error `is_transient`
    /// rejects, or the attempts are used up; sleeps between attempts.
    /// `describe` names the request in debug logs.
    pub fn run<T, E: std::fmt::Display>(
        &self,
        describe: &dyn Fn() -> String,
        is_transient: impl Fn(&E) -> bool,
        mut attempt: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut backoff = self.backoff();
        let mut retry = 0;
        loop {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(error)
                    if is_transient(&error) && retry + 1 < self.attempts.max(1) && !self.is_stopping() =>
                {
                    log::debug!("{}: {error}; retrying", describe());
                    std::thread::sleep(backoff.failed());
                    retry += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// A fresh backoff for one request's retries: `min_delay`, doubling up
    /// to `max_delay`, with jitter (the crate-wide rule of `crate::retry`).
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.min_delay, self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

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
