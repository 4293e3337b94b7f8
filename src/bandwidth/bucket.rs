//! The token bucket (pure): how long to wait before sending some bytes so
//! that, over any stretch of time, what is sent stays within `rate` bytes a
//! second plus a small burst. Time is passed in, as the time since any
//! fixed origin, so tests drive it with a table.
//!
//! Bytes are taken before they are sent, and the bucket may go into debt:
//! the caller sends its chunk once the debt is paid. Several senders share
//! one bucket and queue up behind each other's debt, so their sum keeps the
//! rate. The rate may change between calls (a new schedule window, a
//! reload): what has accrued since the last call accrues at the new rate.

use std::time::Duration;

/// The burst a full bucket allows, in seconds of the rate: small, so that
/// over a minute the bytes sent stay well within 1 % of the rate.
pub const BURST_SECONDS: f64 = 0.1;

/// A token bucket; starts full.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    /// Bytes that may go now; negative while in debt.
    tokens: f64,
    /// When tokens were last counted; `None` before the first take (or
    /// after a stretch without a limit): the bucket is then full.
    last: Option<Duration>,
}

impl Default for TokenBucket {
    fn default() -> TokenBucket {
        TokenBucket::new()
    }
}

impl TokenBucket {
    /// A full bucket.
    pub const fn new() -> TokenBucket {
        TokenBucket { tokens: 0.0, last: None }
    }

    /// Take `bytes` at `rate` (bytes per second, more than 0) at `now`;
    /// returns how long to wait before sending them.
    pub fn take(&mut self, now: Duration, rate: u64, bytes: u64) -> Duration {
        let rate = rate.max(1) as f64;
        let burst = rate * BURST_SECONDS;
        self.tokens = match self.last {
            None => burst,
            Some(last) => (self.tokens + now.saturating_sub(last).as_secs_f64() * rate).min(burst),
        };
        self.last = Some(now.max(self.last.unwrap_or_default()));
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / rate) }
    }

    /// Forget the debt and history: no limit applies for now, and the
    /// next limited take starts from a full bucket.
    pub fn reset(&mut self) {
        *self = TokenBucket::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// (time in ms, rate, bytes taken, expected wait in ms)
    #[test]
    fn waits_table() {
        let mut bucket = TokenBucket::default();
        #[rustfmt::skip]
        let steps = [
            (0,    1000, 100,  0),    // a full bucket: 100 bytes of burst
            (0,    1000, 100,  100),  // in debt by 100: wait 100 ms
            (100,  1000, 100,  100),  // debt paid at 100 ms, then 100 more
            (1000, 1000, 50,   0),    // a long pause refills only up to the burst
            (1000, 1000, 1000, 950),  // one large take: wait for all of it
            (1950, 2000, 400,  100),  // the rate changed: paid off at 2000/s, full (200), 200 more
        ];
        for (index, (now, rate, bytes, wait)) in steps.into_iter().enumerate() {
            let got = bucket.take(ms(now), rate, bytes);
            assert_eq!(got.as_millis(), wait, "step {index}: {bucket:?}");
        }
    }

    /// Senders that send each chunk when told, at the rate: N bytes take at
    /// least (N - burst) / rate, whatever the chunking or the senders.
    fn send_all(rates: impl Fn(Duration) -> u64, chunks: &[u64]) -> Duration {
        let mut bucket = TokenBucket::default();
        let mut now = Duration::ZERO;
        for chunk in chunks {
            let rate = rates(now);
            now += bucket.take(now, rate, *chunk);
        }
        now
    }

    #[test]
    fn a_minute_of_sending_stays_at_the_rate() {
        let rate = 256 * 1024;
        let chunks = vec![16 * 1024; 60 * 16]; // 60 s worth at 256 KiB/s
        let elapsed = send_all(|_| rate, &chunks).as_secs_f64();
        let sent: u64 = chunks.iter().sum();
        let expected = (sent as f64 - rate as f64 * BURST_SECONDS) / rate as f64;
        assert!((elapsed - expected).abs() < 0.1, "{elapsed} s, expected {expected} s");
    }

    /// A window boundary inside an upload: the bytes before it go at the
    /// old rate, those after at the new one.
    #[test]
    fn a_window_boundary_inside_an_upload() {
        let (slow, fast) = (100 * 1024, 400 * 1024);
        let boundary = Duration::from_secs(10);
        let rates = |now: Duration| if now < boundary { slow } else { fast };
        // 10 s at the slow rate (1000 KiB) then 4000 KiB at the fast one: about 20 s.
        let chunks = vec![16 * 1024; (1000 + 4000) / 16];
        let elapsed = send_all(rates, &chunks).as_secs_f64();
        assert!((19.5..20.5).contains(&elapsed), "{elapsed}");
    }

    #[test]
    fn reset_starts_full_again() {
        let mut bucket = TokenBucket::default();
        assert!(bucket.take(ms(0), 1000, 10_000) > Duration::ZERO);
        bucket.reset();
        assert_eq!(bucket.take(ms(1), 1000, 100), Duration::ZERO);
    }
}
