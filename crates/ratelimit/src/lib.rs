//! fieldlab-ratelimit: limits that hold exactly, on one instance or across many.
//!
//! Why it exists: fieldlab guards its own API and ingest, and offers a rate-limit service to
//! other APIs. The legacy limiter's token bucket allowed `capacity + 1` after idle, its leaky bucket
//! always allowed, and its Redis code was never on the request path (N replicas allowed N times
//! the limit). Here every algorithm has written semantics and a reference model in its tests,
//! and the Redis backend runs the very same integer arithmetic in one atomic Lua script.
//!
//! - [`algo`]: the seven algorithms ([`Limit`] + [`State`]) and composite checks.
//! - [`policy`]: a [`Policy`] (limits that must all pass, shadow mode, fail-open/closed) and the
//!   [`Rules`] that pick one for a key (exact key > longest pattern > default).
//! - [`memory`], [`redis`], [`hybrid`]: where state lives.
//! - [`shared`]: with the Redis and hybrid backends, the rules too live in Redis, versioned,
//!   and every replica decides with the same ones.
//! - [`limiter`]: the [`Limiter`] service the HTTP layer, ingest and `fieldlab ratelimit serve`
//!   call, with its metrics.
//!
//! Architecture invariant: algorithms take time as an argument (milliseconds) and do no I/O;
//! only the backends touch the network, and only [`limiter`] reads the clock ([`clock`]).

pub mod algo;
pub mod client;
pub mod clock;
mod config;
pub mod hybrid;
pub mod limiter;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod redis;
pub mod shared;

pub use algo::{check_all, Algorithm, Limit, State, NEVER};
pub use config::{
    FailMode, RatelimitBackend, RatelimitConfig, RatelimitLimitSpec, RatelimitPolicySpec,
};
pub use limiter::{
    Backend, CheckAnswer, ConfigChangeError, IngestGuard, Limiter, LimiterSettings, Outcome,
};
pub use metrics::RatelimitMetrics;
pub use policy::{Policy, Rules};

use serde::Serialize;

/// One [`Decision`] per limit of a policy, inline for policies of up to two limits (no heap
/// allocation per check on the hot path).
pub type Decisions = smallvec::SmallVec<[Decision; 2]>;

/// The outcome of one limit for one check, with what the IETF RateLimit headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// The quota this limit grants (the `q` of `RateLimit-Policy`).
    pub limit: u64,
    /// Whole units left after this decision.
    pub remaining: u64,
    /// Milliseconds until the same request could pass (0 when allowed; [`NEVER`] when it asks
    /// for more than the limit can ever grant).
    pub retry_after_ms: u64,
    /// Milliseconds until the limit is back to its initial, unused state.
    pub reset_ms: u64,
    /// Leaky bucket: milliseconds the caller must wait before acting on an allowed request.
    pub delay_ms: u64,
}

impl Decision {
    /// Whole seconds for `Retry-After` and the `t` parameter, rounded up (never 0 when > 0 ms).
    pub fn secs(ms: u64) -> u64 {
        ms.div_ceil(1000)
    }
}

/// Wall-clock milliseconds since the Unix epoch, read once per check (see [`clock`]: the CPU's
/// time-stamp counter on a wall-clock anchor, a quarter of the cost of `SystemTime::now`).
pub use clock::now_ms;

/// A backend failed to answer (Redis down, timed out, script error).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis is unreachable (reconnecting with back-off): {0}")]
    Unavailable(String),
}

#[cfg(test)]
mod algo_tests;
