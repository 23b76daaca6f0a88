//! The seven algorithms, each with written semantics, in integer arithmetic.
//!
//! Why integers: the same algorithms run as a Lua script inside Redis (see `redis.rs`), where
//! numbers are doubles and are stored as text with 14 significant digits. With integer state
//! (milliseconds, microseconds, scaled tokens) both implementations compute bit-for-bit the same
//! decision, which the Redis tests check. Every quantity stays below 2^53 (checked by
//! [`Limit::validate`]).
//!
//! A [`Limit`] is the flat, serialisable description (algorithm + numbers); a [`State`] is what
//! one key holds for it. `State::check` decides and, when allowed, consumes; a rejected request
//! never changes rate state (only time-driven housekeeping such as dropping expired entries).

use crate::{Decision, Decisions};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Largest scaled quantity allowed, so Lua's doubles stay exact.
pub const MAX_EXACT: u64 = 1 << 52;

/// A `retry_after_ms` meaning "never": the request asks for more than the limit can ever grant.
pub const NEVER: u64 = u64::MAX;

/// The algorithms, by the names config, the API and the OpenAPI document use: strum keeps the
/// one table (`<Algorithm as VariantNames>::VARIANTS`), serde reads and writes through it
/// (case-sensitive; an unknown name's error lists them all).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumCount,
    strum::VariantNames,
    utoipa::ToSchema,
)]
#[schema(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Algorithm {
    TokenBucket,
    Gcra,
    FixedWindow,
    SlidingLog,
    SlidingCounter,
    LeakyBucket,
    Concurrency,
}
fieldlab_core::config_words!(Algorithm);

impl Algorithm {
    pub const ALL: [Algorithm; <Algorithm as strum::EnumCount>::COUNT] = [
        Algorithm::TokenBucket,
        Algorithm::Gcra,
        Algorithm::FixedWindow,
        Algorithm::SlidingLog,
        Algorithm::SlidingCounter,
        Algorithm::LeakyBucket,
        Algorithm::Concurrency,
    ];

    pub fn parse(s: &str) -> Option<Algorithm> {
        s.parse().ok()
    }

    /// Every algorithm's name, in [`Algorithm::ALL`] order (strum's table).
    pub fn names() -> Vec<&'static str> {
        <Algorithm as strum::VariantNames>::VARIANTS.to_vec()
    }

    /// Small integer used as the algorithm's code in the Lua script.
    pub fn code(self) -> u8 {
        self as u8 + 1
    }
}

/// One limit, flat so that YAML, JSON and the Lua script's arguments all carry the same fields.
///
/// | algorithm | `limit` | `period_ms` | `burst` | `max_delay_ms` |
/// |---|---|---|---|---|
/// | token_bucket | tokens refilled per period | refill period | capacity | – |
/// | gcra | requests per period | period | burst (≥ 1) | – |
/// | fixed_window | requests per window | window (aligned to the epoch) | – | – |
/// | sliding_log | requests per window | window | – | – |
/// | sliding_counter | requests per window | window | – | – |
/// | leaky_bucket | requests leaked per period | period | – | longest wait in the queue |
/// | concurrency | leases held at once | lease expiry | – | – |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limit {
    pub algorithm: Algorithm,
    pub limit: u64,
    pub period_ms: u64,
    pub burst: u64,
    pub max_delay_ms: u64,
}

impl Limit {
    pub fn new(algorithm: Algorithm, limit: u64, period_ms: u64) -> Limit {
        Limit {
            algorithm,
            limit,
            period_ms,
            burst: limit,
            max_delay_ms: 0,
        }
    }

    pub fn with_burst(mut self, burst: u64) -> Limit {
        self.burst = burst;
        self
    }

    pub fn with_max_delay(mut self, ms: u64) -> Limit {
        self.max_delay_ms = ms;
        self
    }

    /// Check the numbers; the error says which field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.limit == 0 {
            return Err(("limit", "must be at least 1".into()));
        }
        if self.period_ms == 0 {
            return Err(("period", "must be at least 1ms".into()));
        }
        let big = |a: u64, b: u64| a.checked_mul(b).is_none_or(|p| p > MAX_EXACT);
        match self.algorithm {
            Algorithm::TokenBucket => {
                if self.burst == 0 {
                    return Err(("burst", "the bucket capacity must be at least 1".into()));
                }
                if big(self.burst, self.period_ms) || big(self.limit, self.period_ms) {
                    return Err(("period", "burst x period is too large (max 2^52)".into()));
                }
            }
            Algorithm::Gcra => {
                if self.burst == 0 {
                    return Err(("burst", "must be at least 1".into()));
                }
                if big(self.burst, self.period_ms.saturating_mul(1000)) {
                    return Err(("period", "burst x period is too large".into()));
                }
            }
            Algorithm::SlidingCounter | Algorithm::FixedWindow | Algorithm::SlidingLog => {
                if big(self.limit, self.period_ms) {
                    return Err(("period", "limit x window is too large (max 2^52)".into()));
                }
            }
            Algorithm::LeakyBucket => {
                if big(self.max_delay_ms, 1000) || big(self.period_ms, 1000) {
                    return Err(("max_delay", "too large".into()));
                }
            }
            Algorithm::Concurrency => {}
        }
        Ok(())
    }

    /// The quota and window for the `RateLimit-Policy` header (`q`, `w` in seconds).
    pub fn quota(&self) -> (u64, Option<u64>) {
        let secs = |ms: u64| ms.div_ceil(1000).max(1);
        match self.algorithm {
            Algorithm::TokenBucket => (
                self.burst,
                Some(secs(
                    (self.burst * self.period_ms).div_ceil(self.limit.max(1)),
                )),
            ),
            Algorithm::Gcra => (self.burst, Some(secs(self.period_ms))),
            Algorithm::Concurrency => (self.limit, None),
            _ => (self.limit, Some(secs(self.period_ms))),
        }
    }

    /// A fresh state for this limit at `now_ms`.
    pub fn state(&self, now_ms: i64) -> State {
        match self.algorithm {
            Algorithm::TokenBucket => State::TokenBucket(TokenBucket {
                tokens: self.burst * self.period_ms,
                last_ms: now_ms,
            }),
            Algorithm::Gcra => State::Gcra(Gcra { tat_us: i64::MIN }),
            Algorithm::FixedWindow => State::FixedWindow(FixedWindow::default()),
            Algorithm::SlidingLog => State::SlidingLog(Box::default()),
            Algorithm::SlidingCounter => State::SlidingCounter(SlidingCounter::default()),
            Algorithm::LeakyBucket => State::LeakyBucket(LeakyBucket {
                next_free_us: i64::MIN,
            }),
            Algorithm::Concurrency => State::Concurrency(Box::default()),
        }
    }

    /// For a token bucket or GCRA limit whose time per unit is a whole number of milliseconds:
    /// `(t, b)`, that time and the longest the limit can be ahead of now (`burst * t`), in ms.
    /// Such a limit's whole state is one instant in ms (when the bucket is full again, the
    /// GCRA tat), which the Redis backend keeps as its key's expiry: no clock read, no
    /// value to parse (`redis.rs`). `None` for other limits.
    pub fn expiry_state(&self) -> Option<(u64, u64)> {
        self.validate().ok()?;
        let t = match self.algorithm {
            Algorithm::TokenBucket if self.period_ms.is_multiple_of(self.limit) => {
                self.period_ms / self.limit
            }
            Algorithm::Gcra if (self.interval_us() as u64).is_multiple_of(1000) => {
                self.interval_us() as u64 / 1000
            }
            _ => return None,
        };
        // Below 10^13 ms (317 years): the scripts pass these to Redis as Lua numbers, which
        // Redis writes with 14 significant digits.
        Some((t, self.burst.checked_mul(t)?)).filter(|&(_, b)| b < 10_000_000_000_000)
    }

    /// Microseconds between two requests for GCRA and the leaky bucket, rounded up (so the
    /// rounding can only make the limit stricter, by less than 1 µs per request).
    #[inline]
    pub fn interval_us(&self) -> i64 {
        (self.period_ms * 1000).div_ceil(self.limit) as i64
    }
}

/// What one key holds for one [`Limit`].
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    TokenBucket(TokenBucket),
    Gcra(Gcra),
    FixedWindow(FixedWindow),
    /// Boxed (like `Concurrency`): the fixed-size states stay small, so a key's slot in the
    /// in-process map is about one cache line.
    SlidingLog(Box<SlidingLog>),
    SlidingCounter(SlidingCounter),
    LeakyBucket(LeakyBucket),
    Concurrency(Box<Concurrency>),
}

impl State {
    /// Decide a request for `n` units at `now_ms`; consume only if allowed. `lease` names the
    /// lease a concurrency limit grants (ignored by the others).
    #[inline]
    pub fn check(&mut self, l: &Limit, now_ms: i64, n: u64, lease: u64) -> Decision {
        match self {
            State::TokenBucket(s) => s.check(l, now_ms, n),
            State::Gcra(s) => s.check(l, now_ms, n),
            State::FixedWindow(s) => s.check(l, now_ms, n),
            State::SlidingLog(s) => s.check(l, now_ms, n),
            State::SlidingCounter(s) => s.check(l, now_ms, n),
            State::LeakyBucket(s) => s.check(l, now_ms, n),
            State::Concurrency(s) => s.acquire(l, now_ms, n, lease),
        }
    }

    /// Give a concurrency lease back; a no-op for the rate algorithms.
    pub fn release(&mut self, lease: u64) -> bool {
        match self {
            State::Concurrency(s) => s.release(lease),
            _ => false,
        }
    }

    /// True when forgetting this state changes nothing (a full bucket, an empty window): such
    /// keys are evicted first.
    pub fn is_idle(&self, l: &Limit, now_ms: i64) -> bool {
        let mut probe = self.clone();
        probe.check(l, now_ms, 0, 0).reset_ms == 0
    }
}

fn ceil_us_to_ms(us: i64) -> u64 {
    if us <= 0 {
        0
    } else {
        (us as u64).div_ceil(1000)
    }
}

/// Token bucket: holds at most `burst` tokens, refilled continuously with `limit` tokens per
/// `period_ms`.
///
/// Exact semantics: tokens are counted in units of `1/period_ms` token, so refill per
/// millisecond is exactly `limit` units. At `t` the bucket holds
/// `clamp(tokens + (t - last) * rate, 0, burst)`: what it held at `last`, refilled for the time
/// since, never more than full and never less than empty. A request for `n` at `t` is allowed
/// iff that is `>= n`; if allowed `n` tokens are taken and the state becomes (what is left, `t`);
/// a rejected request takes nothing and changes nothing (the refill it saw is recomputed next
/// time, the same figure while time goes forward). A clock that steps back takes back the
/// refill of the time it steps over (down to empty), as the Redis backend does where the state is
/// the instant the bucket is full again (the key's expiry, see `redis.rs`); and a full bucket has
/// no clock: it is the same as no state at all, which is what Redis keeps for it, so the two
/// backends agree even when clocks step back. Over any interval of length `T` at most
/// `burst + limit * T / period` tokens are granted — never more, however long the bucket was
/// idle (the legacy limiter granted `capacity + 1`).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    /// Scaled tokens: one token = `period_ms` units.
    pub tokens: u64,
    pub last_ms: i64,
}

impl TokenBucket {
    pub fn check(&mut self, l: &Limit, now_ms: i64, n: u64) -> Decision {
        let cap = l.burst * l.period_ms;
        let mut tokens = if self.tokens >= cap {
            // A full bucket has no clock (Redis holds no state for it).
            cap
        } else {
            // Past `full_after` ms either way the bucket is full (or empty), and the product
            // stays exact in Lua.
            let full_after = cap.div_ceil(l.limit) as i64;
            let elapsed = (now_ms - self.last_ms).clamp(-full_after, full_after);
            (self.tokens as i64 + elapsed * l.limit as i64).clamp(0, cap as i64) as u64
        };
        let need = n.saturating_mul(l.period_ms);
        let allowed = n <= l.burst && need <= tokens;
        if allowed {
            tokens -= need;
            self.tokens = tokens;
            self.last_ms = now_ms;
        }
        Self::decision(l, n, allowed, tokens)
    }

    /// The decision for `n` units from whether they were granted and the tokens (scaled) the
    /// bucket holds after the check: all of it follows from these two. The Redis script for a
    /// single token bucket replies with just them (`redis.rs`), and this turns them into the
    /// same decision.
    #[inline]
    pub fn decision(l: &Limit, n: u64, allowed: bool, tokens: u64) -> Decision {
        let cap = l.burst * l.period_ms;
        Decision {
            allowed,
            limit: l.burst,
            remaining: tokens / l.period_ms,
            retry_after_ms: if allowed {
                0
            } else if n > l.burst {
                NEVER
            } else {
                (n * l.period_ms - tokens).div_ceil(l.limit)
            },
            reset_ms: (cap.saturating_sub(tokens)).div_ceil(l.limit),
            delay_ms: 0,
        }
    }
}

/// GCRA (generic cell rate algorithm, virtual scheduling): the theoretical arrival time `tat`
/// of the next request moves forward by the emission interval `T = period / limit` (in µs,
/// rounded up) per unit granted. A request for `n` at `t` is allowed iff
/// `max(tat, t) + n*T - t <= burst * T`. Equivalent to a token bucket of capacity `burst`
/// refilled every `T`, with one integer of state.
#[derive(Debug, Clone, PartialEq)]
pub struct Gcra {
    pub tat_us: i64,
}

impl Gcra {
    #[inline]
    pub fn check(&mut self, l: &Limit, now_ms: i64, n: u64) -> Decision {
        self.check_with_interval(l, l.interval_us(), now_ms, n)
    }

    /// [`Gcra::check`] with `l.interval_us()` computed once by the caller (the in-process
    /// backend keeps it next to the state: one division less per check).
    #[inline]
    pub fn check_with_interval(&mut self, l: &Limit, t: i64, now_ms: i64, n: u64) -> Decision {
        debug_assert_eq!(t, l.interval_us());
        let now = now_ms * 1000;
        let tol = l.burst as i64 * t;
        let tat = self.tat_us.max(now);
        let new_tat = tat + n as i64 * t;
        let allowed = n <= l.burst && new_tat - now <= tol;
        if allowed {
            self.tat_us = Self::held_or_none(new_tat, now);
        }
        Self::decision(l, t, n, allowed, self.tat_us.max(now) - now)
    }

    /// A `tat` that is not ahead of now holds nothing: the same as no state (`i64::MIN`), which
    /// is what Redis keeps for it, so a clock that steps back sees a fresh state on both
    /// backends. Going forward the two are the same (`max(tat, now)`).
    #[inline]
    pub fn held_or_none(tat_us: i64, now_us: i64) -> i64 {
        if tat_us > now_us {
            tat_us
        } else {
            i64::MIN
        }
    }

    /// The decision for `n` units from whether they were granted and how far the `tat` is
    /// ahead of now after the check (`held`, µs, >= 0): all of it follows from these two. The
    /// Redis script for a single GCRA limit replies with just them (`redis.rs`).
    #[inline]
    pub fn decision(l: &Limit, t: i64, n: u64, allowed: bool, held: i64) -> Decision {
        let tol = l.burst as i64 * t;
        Decision {
            allowed,
            limit: l.burst,
            remaining: ((tol - held) / t).max(0) as u64,
            retry_after_ms: if allowed {
                0
            } else if n > l.burst {
                NEVER
            } else {
                // Rejected: the tat did not move, so the request would have taken it to
                // `held + n*t` ahead of now.
                ceil_us_to_ms(held + n as i64 * t - tol)
            },
            reset_ms: ceil_us_to_ms(held),
            delay_ms: 0,
        }
    }
}

/// Fixed window aligned to clock boundaries: windows are `[k*W, (k+1)*W)` in epoch
/// milliseconds, so every instance (and Redis) agrees on where a window starts. At most `limit`
/// units per window. A request stamped in an older window than the current one counts in the
/// current one (time does not go back).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FixedWindow {
    pub start_ms: i64,
    pub count: u64,
}

impl FixedWindow {
    pub fn check(&mut self, l: &Limit, now_ms: i64, n: u64) -> Decision {
        let w = l.period_ms as i64;
        let start = now_ms.div_euclid(w) * w;
        if start > self.start_ms {
            self.start_ms = start;
            self.count = 0;
        }
        let allowed = self.count + n <= l.limit;
        if allowed {
            self.count += n;
        }
        let to_end = (self.start_ms + w - now_ms).max(0) as u64;
        Decision {
            allowed,
            limit: l.limit,
            remaining: l.limit - self.count,
            retry_after_ms: match (allowed, n > l.limit) {
                (true, _) => 0,
                (false, true) => NEVER,
                (false, false) => to_end,
            },
            reset_ms: if self.count == 0 { 0 } else { to_end },
            delay_ms: 0,
        }
    }
}

/// Sliding-window log: every granted request is remembered with its time; a request for `n` at
/// `t` is allowed iff the units granted in `(t - W, t]` plus `n` are at most `limit`. Exact, and
/// memory grows with the limit (at most `limit` entries per key).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlidingLog {
    pub entries: VecDeque<(i64, u64)>,
    pub sum: u64,
}

impl SlidingLog {
    pub fn check(&mut self, l: &Limit, now_ms: i64, n: u64) -> Decision {
        let w = l.period_ms as i64;
        // Entries are kept in time order; a stamp older than the newest counts as the newest.
        let now = self.entries.back().map_or(now_ms, |e| e.0.max(now_ms));
        while let Some(&(t, k)) = self.entries.front() {
            if t > now - w {
                break;
            }
            self.entries.pop_front();
            self.sum -= k;
        }
        let allowed = self.sum + n <= l.limit;
        if allowed && n > 0 {
            self.entries.push_back((now, n));
            self.sum += n;
        }
        let retry_after_ms = if allowed {
            0
        } else if n > l.limit {
            NEVER
        } else {
            // The oldest entries must expire until `sum + n <= limit`.
            let mut freed = 0;
            let mut at = now;
            for &(t, k) in &self.entries {
                freed += k;
                at = t + w;
                if self.sum - freed + n <= l.limit {
                    break;
                }
            }
            (at - now_ms).max(0) as u64
        };
        Decision {
            allowed,
            limit: l.limit,
            remaining: l.limit - self.sum,
            retry_after_ms,
            reset_ms: self
                .entries
                .back()
                .map_or(0, |e| (e.0 + w - now_ms).max(0) as u64),
            delay_ms: 0,
        }
    }
}

/// Sliding-window counter (the approximation Cloudflare describes): counts per aligned window;
/// at `t` in window `[s, s+W)` the estimate is `prev * (W - (t - s)) / W + curr`. A request for
/// `n` is allowed iff `prev * (W - e) + (curr + n) * W <= limit * W` (integers, no rounding).
/// It never allows more than `limit` in an aligned window, and smooths the edge between two.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlidingCounter {
    pub start_ms: i64,
    pub prev: u64,
    pub curr: u64,
}

impl SlidingCounter {
    pub fn check(&mut self, l: &Limit, now_ms: i64, n: u64) -> Decision {
        let w = l.period_ms as i64;
        let start = now_ms.div_euclid(w) * w;
        if start > self.start_ms {
            self.prev = if start - self.start_ms == w {
                self.curr
            } else {
                0
            };
            self.curr = 0;
            self.start_ms = start;
        }
        let (wu, lim) = (w as u64, l.limit);
        let e = (now_ms - self.start_ms).clamp(0, w) as u64;
        let weighted_prev = self.prev * (wu - e);
        let allowed = weighted_prev + (self.curr + n) * wu <= lim * wu;
        if allowed {
            self.curr += n;
        }
        let used = weighted_prev + self.curr * wu;
        let remaining = (lim * wu).saturating_sub(used) / wu;
        let to_end = (self.start_ms + w - now_ms).max(0) as u64;
        let retry_after_ms = if allowed {
            0
        } else if n > lim {
            NEVER
        } else if self.curr + n <= lim {
            // Later in this window, once enough of `prev` has slid out:
            // prev * (W - e') <= (lim - curr - n) * W.
            let room = (lim - self.curr - n) * wu;
            // prev > 0 here, or the request would have been allowed.
            (wu - room / self.prev).saturating_sub(e)
        } else {
            // In the next window `curr` becomes `prev`: curr * (W - e') <= (lim - n) * W.
            let room = (lim - n) * wu;
            let e_needed = room
                .checked_div(self.curr)
                .map_or(0, |r| wu.saturating_sub(r));
            to_end + e_needed
        };
        Decision {
            allowed,
            limit: lim,
            remaining,
            retry_after_ms,
            reset_ms: if self.curr > 0 {
                to_end + wu
            } else if self.prev > 0 {
                to_end
            } else {
                0
            },
            delay_ms: 0,
        }
    }
}

/// Leaky bucket as a queue: requests leave at a steady `limit` per `period` (one unit every
/// `T` µs). A request for `n` at `t` is scheduled at `at = max(t, next_free)`; it is accepted
/// iff its wait `at - t` is at most `max_delay`, and then occupies the queue for `n*T`. The
/// decision's `delay_ms` is how long the caller must wait before acting; with `max_delay = 0`
/// it is a strict shaper that never bursts.
#[derive(Debug, Clone, PartialEq)]
pub struct LeakyBucket {
    pub next_free_us: i64,
}

impl LeakyBucket {
    pub fn check(&mut self, l: &Limit, now_ms: i64, n: u64) -> Decision {
        let t = l.interval_us();
        let now = now_ms * 1000;
        let max_delay = l.max_delay_ms as i64 * 1000;
        let at = self.next_free_us.max(now);
        let delay = at - now;
        let allowed = delay <= max_delay;
        if allowed {
            self.next_free_us = Gcra::held_or_none(at + n as i64 * t, now);
        }
        let backlog = self.next_free_us.max(now) - now;
        Decision {
            allowed,
            limit: max_delay as u64 / t as u64 + 1,
            remaining: if backlog <= max_delay {
                ((max_delay - backlog) / t + 1) as u64
            } else {
                0
            },
            retry_after_ms: if allowed {
                0
            } else {
                ceil_us_to_ms(delay - max_delay)
            },
            reset_ms: ceil_us_to_ms(backlog),
            delay_ms: if allowed { ceil_us_to_ms(delay) } else { 0 },
        }
    }
}

/// Concurrency limit: at most `limit` units held at once. `acquire` grants a lease that expires
/// after `period_ms` unless released first, so a crashed holder cannot leak capacity forever.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Concurrency {
    /// lease id -> (expiry ms, units)
    pub leases: BTreeMap<u64, (i64, u64)>,
}

impl Concurrency {
    pub fn acquire(&mut self, l: &Limit, now_ms: i64, n: u64, lease: u64) -> Decision {
        self.leases.retain(|_, (exp, _)| *exp > now_ms);
        let used: u64 = self.leases.values().map(|v| v.1).sum();
        let allowed = used + n <= l.limit && !self.leases.contains_key(&lease);
        if allowed && n > 0 {
            self.leases.insert(lease, (now_ms + l.period_ms as i64, n));
        }
        let used: u64 = self.leases.values().map(|v| v.1).sum();
        let first = self.leases.values().map(|v| v.0).min();
        let last = self.leases.values().map(|v| v.0).max();
        Decision {
            allowed,
            limit: l.limit,
            remaining: l.limit - used,
            retry_after_ms: match (allowed, n > l.limit) {
                (true, _) => 0,
                (false, true) => NEVER,
                (false, false) => first.map_or(0, |f| (f - now_ms) as u64),
            },
            reset_ms: last.map_or(0, |f| (f - now_ms) as u64),
            delay_ms: 0,
        }
    }

    pub fn release(&mut self, lease: u64) -> bool {
        self.leases.remove(&lease).is_some()
    }
}

/// Check every limit of a composite; all must pass. Nothing is consumed unless every limit
/// allows: the states are decided on copies and written back only when all allowed.
/// Returns one decision per limit.
#[inline]
pub fn check_all(
    limits: &[Limit],
    states: &mut [State],
    now_ms: i64,
    n: u64,
    lease: u64,
) -> Decisions {
    debug_assert_eq!(limits.len(), states.len());
    if limits.len() == 1 {
        return smallvec::smallvec![states[0].check(&limits[0], now_ms, n, lease)];
    }
    let mut trial: Vec<State> = states.to_vec();
    let decisions: Decisions = limits
        .iter()
        .zip(trial.iter_mut())
        .map(|(l, s)| s.check(l, now_ms, n, lease))
        .collect();
    if decisions.iter().all(|d| d.allowed) {
        states.clone_from_slice(&trial);
        return decisions;
    }
    // Nothing consumed. Keep time-driven housekeeping (expired entries) by deciding 0 units,
    // and report what the passing limits really have left.
    let mut decisions = decisions;
    for ((l, s), d) in limits
        .iter()
        .zip(states.iter_mut())
        .zip(decisions.iter_mut())
    {
        let idle = s.check(l, now_ms, 0, u64::MAX);
        if d.allowed {
            d.remaining = idle.remaining;
            d.reset_ms = idle.reset_ms;
            d.delay_ms = 0;
        }
    }
    decisions
}
