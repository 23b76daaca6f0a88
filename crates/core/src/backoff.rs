//! The one retry schedule: exponential back-off between a first and a largest wait.
//!
//! Why it exists: ingest (broker reconnects, store refusals), the emulator's device
//! connections, the sinks, the Redis backend and the store's block writes all wait longer after
//! each failure and start over after a success. The schedule is backon's exponential builder
//! (factor 2, no limit on attempts); this type only adds what every caller needs around it: a
//! last wait that repeats once the largest is reached, and `reset` after a success.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// Waits `min`, `2 min`, `4 min`, ... up to `max`, then `max` again, until [`Backoff::reset`].
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Doubling from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff::from_builder(
            ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max)
                .with_factor(2.0)
                .without_max_times(),
            max,
        )
    }

    /// The same, each wait lengthened by a random part of itself (up to double), so clients
    /// that lost the same server do not all come back at the same instant.
    pub fn jittered(min: Duration, max: Duration) -> Backoff {
        Backoff::from_builder(
            ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
            max,
        )
    }

    fn from_builder(builder: ExponentialBuilder, max: Duration) -> Backoff {
        Backoff {
            delays: builder.build(),
            builder,
            max,
        }
    }

    /// The wait before the next attempt (each call moves the schedule on).
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// After a success: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_largest_wait_and_starts_over_after_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        // backon computes in floating point: 200.000003 ms is 200 ms.
        let waits: Vec<_> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn jitter_stays_within_twice_the_wait() {
        let ms = Duration::from_millis;
        let mut b = Backoff::jittered(ms(100), ms(400));
        for (i, base) in [100u64, 200, 400, 400, 400].iter().enumerate() {
            let d = b.next_delay();
            assert!(
                d >= ms(*base) && d <= ms(2 * base),
                "wait {i}: {d:?} outside {base}..{} ms",
                2 * base
            );
        }
    }
}
