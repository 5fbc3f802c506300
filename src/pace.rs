//! Time for the run loop: the [`Clock`] that the retry and pacing decisions are carried
//! out with, and the proactive, adaptive client-side [`RateLimiter`].
//!
//! The limiter is sans-I/O like `retry`: it says how long to wait; the caller sleeps
//! through the clock.

use std::time::{Duration, Instant};

/// Monotonic time and sleeping, injected so the run loop's waits are explicit.
pub(crate) trait Clock {
    /// Time since an arbitrary fixed start.
    fn now(&self) -> Duration;
    fn sleep(&self, duration: Duration);
}

/// The real clock.
pub(crate) struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub(crate) fn new() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
    /// Sleeps in short slices so that Ctrl-C ends a long wait (a recovery step can
    /// be ten minutes) within a tenth of a second.
    fn sleep(&self, duration: Duration) {
        let end = Instant::now() + duration;
        while !crate::signal::interrupted() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// Successes in a row after which a slowed-down limiter speeds up again by 25 %.
const SPEED_UP_AFTER: u32 = 10;
/// The rate a limiter that was off starts from when a 429 arrives.
const RATE_AFTER_FIRST_429: f64 = 10.0;
/// The slowest the limiter goes.
const MIN_RATE: f64 = 0.5;

/// Spaces requests at most `rate` per second; halves the rate on each 429 and climbs
/// back to the configured rate after successes.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Requests per second asked for; infinite when the limiter is off.
    configured: f64,
    current: f64,
    next_at: Duration,
    successes: u32,
}

impl RateLimiter {
    /// `rate` requests per second; 0 turns proactive pacing off (429s still slow it).
    pub(crate) fn new(rate: f64) -> Self {
        let configured = if rate > 0.0 { rate } else { f64::INFINITY };
        RateLimiter {
            configured,
            current: configured,
            next_at: Duration::ZERO,
            successes: 0,
        }
    }

    /// How long to wait at `now` before sending the next request (and books it).
    pub(crate) fn delay(&mut self, now: Duration) -> Duration {
        if self.current.is_infinite() {
            return Duration::ZERO;
        }
        let start = self.next_at.max(now);
        self.next_at = start + Duration::from_secs_f64(1.0 / self.current);
        start - now
    }

    /// A 429 arrived: halve the rate.
    pub(crate) fn on_rate_limited(&mut self) {
        self.current = if self.current.is_infinite() {
            RATE_AFTER_FIRST_429
        } else {
            (self.current / 2.0).max(MIN_RATE)
        };
        self.successes = 0;
    }

    /// A request succeeded: after a run of successes, speed back up.
    pub(crate) fn on_success(&mut self) {
        if self.current >= self.configured {
            return;
        }
        self.successes += 1;
        if self.successes >= SPEED_UP_AFTER {
            self.successes = 0;
            let faster = self.current * 1.25;
            self.current = if faster >= self.configured || faster > 1000.0 {
                self.configured
            } else {
                faster
            };
        }
    }

    /// The current rate in requests per second (infinite when off).
    pub(crate) fn current_rate(&self) -> f64 {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn spaces_requests_at_the_configured_rate() {
        let mut l = RateLimiter::new(10.0);
        assert_eq!(l.delay(Duration::ZERO), Duration::ZERO);
        assert_eq!(l.delay(Duration::ZERO), MS * 100);
        assert_eq!(l.delay(MS * 150), MS * 50);
        // After an idle spell there is no catching up in bursts.
        assert_eq!(l.delay(MS * 5000), Duration::ZERO);
        assert_eq!(l.delay(MS * 5000), MS * 100);
    }

    #[test]
    fn off_means_no_waiting_until_a_429() {
        let mut l = RateLimiter::new(0.0);
        for _ in 0..100 {
            assert_eq!(l.delay(Duration::ZERO), Duration::ZERO);
        }
        l.on_rate_limited();
        assert_eq!(l.current_rate(), RATE_AFTER_FIRST_429);
    }

    #[test]
    fn halves_on_429_and_recovers_after_successes() {
        let mut l = RateLimiter::new(8.0);
        l.on_rate_limited();
        l.on_rate_limited();
        assert_eq!(l.current_rate(), 2.0);
        for _ in 0..SPEED_UP_AFTER {
            l.on_success();
        }
        assert_eq!(l.current_rate(), 2.5);
        for _ in 0..SPEED_UP_AFTER * 20 {
            l.on_success();
        }
        assert_eq!(l.current_rate(), 8.0, "never above the configured rate");
        for _ in 0..20 {
            l.on_rate_limited();
        }
        assert_eq!(l.current_rate(), MIN_RATE);
    }

    #[test]
    fn off_limiter_returns_to_off_after_successes() {
        let mut l = RateLimiter::new(0.0);
        l.on_rate_limited();
        for _ in 0..SPEED_UP_AFTER * 40 {
            l.on_success();
        }
        assert!(l.current_rate().is_infinite());
    }
}
