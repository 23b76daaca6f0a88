//! fieldlab-ratelimit: limits that hold exactly, on one instance or across many.
//!
//! Why it exists: fieldlab guards its own API and ingest, and offers a rate-limit service to
//! other APIs. Upstream's token bucket allowed `capacity + 1` after idle and its Redis code was
//! never on the request path. Here every algorithm has written semantics and a reference model
//! in its tests; the rate-limiting issue adds GCRA, windows, leaky bucket, concurrency limits,
//! composites, and the Redis / hybrid backends (one Lua script per check, Redis server clock).
//!
//! This crate starts with the [`Decision`] every algorithm returns and an exact in-process
//! [`TokenBucket`].
//!
//! Architecture invariant: algorithms take time as an argument (milliseconds), never read a
//! clock, so the same code runs in-process and mirrored in Redis Lua.

/// The outcome of one check, with what the IETF RateLimit headers need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Whole tokens left after this decision.
    pub remaining: u64,
    /// Milliseconds until the requested tokens would be available (0 when allowed).
    pub retry_after_ms: u64,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: u64,
}

/// Token bucket: holds at most `capacity` tokens, refilled continuously at `rate_per_s`.
///
/// Exact semantics: a request for `n` tokens at time `t` is allowed iff
/// `min(capacity, tokens + (t - last) * rate) >= n`; if allowed, `n` tokens are taken. A
/// rejected request takes nothing. Time going backwards is treated as no time passing. Over any
/// interval of length `T` at most `capacity + rate * T` tokens are granted — never more, however
/// long the bucket was idle.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    rate_per_ms: f64,
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn new(capacity: u64, rate_per_s: f64, now_ms: i64) -> Self {
        assert!(capacity > 0 && rate_per_s > 0.0 && rate_per_s.is_finite());
        TokenBucket {
            capacity: capacity as f64,
            rate_per_ms: rate_per_s / 1000.0,
            tokens: capacity as f64,
            last_ms: now_ms,
        }
    }

    pub fn check(&mut self, now_ms: i64, n: u64) -> Decision {
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.rate_per_ms).min(self.capacity);
        self.last_ms = self.last_ms.max(now_ms);
        let need = n as f64;
        let allowed = need <= self.tokens;
        if allowed {
            self.tokens -= need;
        }
        let missing = if allowed { 0.0 } else { need - self.tokens };
        Decision {
            allowed,
            remaining: self.tokens.floor() as u64,
            retry_after_ms: if need > self.capacity {
                u64::MAX
            } else {
                (missing / self.rate_per_ms).ceil() as u64
            },
            reset_ms: ((self.capacity - self.tokens) / self.rate_per_ms).ceil() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn idle_bucket_grants_exactly_capacity_not_one_more() {
        let mut b = TokenBucket::new(10, 1.0, 0);
        let granted = (0..20).filter(|_| b.check(3_600_000, 1).allowed).count();
        assert_eq!(granted, 10);
        let d = b.check(3_600_000, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 1000);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn steady_traffic_at_the_rate_is_never_starved() {
        let mut b = TokenBucket::new(1, 10.0, 0);
        // One request every 100 ms at 10/s: every one passes.
        assert!((0..1000).all(|i| b.check(i * 100, 1).allowed));
    }

    #[test]
    fn oversized_requests_are_refused_forever() {
        let mut b = TokenBucket::new(5, 1.0, 0);
        let d = b.check(0, 6);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, u64::MAX);
        assert_eq!(
            b.check(0, 5).remaining,
            0,
            "the refused request took nothing"
        );
    }

    proptest! {
        /// Against the bound of the reference model: in any run, tokens granted up to time t
        /// never exceed capacity + rate * t.
        #[test]
        fn never_grants_more_than_capacity_plus_rate_times_time(
            cap in 1u64..50,
            rate in 0.1f64..100.0,
            reqs in proptest::collection::vec((0i64..2_000, 1u64..5), 1..300),
        ) {
            let mut b = TokenBucket::new(cap, rate, 0);
            let mut t = 0i64;
            let mut granted = 0u64;
            for (dt, n) in reqs {
                t += dt;
                if b.check(t, n).allowed {
                    granted += n;
                }
                let bound = cap as f64 + rate * t as f64 / 1000.0;
                prop_assert!(granted as f64 <= bound + 1e-6, "granted {granted} > {bound} at {t}");
            }
        }
    }
}
