//! `ratelimit:` of fieldlab.yaml: the service's backend and policies, and the guards of
//! fieldlab's own API and ingest.
//!
//! Why here: the [`crate::Limiter`] is the one reader of these keys, and the policy specs are
//! also the bodies of the admin API (`PUT /api/ratelimit/...`), so file and API share one
//! shape with one set of checks ([`RatelimitLimitSpec::check`]). The algorithm names are
//! [`Algorithm`]'s, the one table the parser, the OpenAPI document and the docs read.

use crate::Algorithm;
use fieldlab_core::config::{HumanDuration, Problem, Section};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where rate-limit state lives.
///
/// - `memory`: in this process (one instance, or limits per instance).
/// - `redis`: in Redis, one atomic script per check: limits hold across all instances.
/// - `hybrid`: Redis, plus a local cache of keys known to be over their limit (a rejected
///   key is refused locally until its retry-after passes, saving the round trip).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum RatelimitBackend {
    Memory,
    Redis,
    Hybrid,
}
fieldlab_core::config_words!(RatelimitBackend);

/// What a Redis-backed policy answers while Redis is unreachable: `open` allows (and counts
/// it in `fieldlab_ratelimit_fail_open_total`), `closed` rejects.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
    utoipa::ToSchema,
)]
#[schema(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum FailMode {
    Open,
    Closed,
}
fieldlab_core::config_words!(FailMode);

/// Rate limiting: the service (`/api/ratelimit/...`) and fieldlab guarding itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RatelimitConfig {
    pub backend: RatelimitBackend,
    /// Redis for the `redis` and `hybrid` backends (env REDIS_URL).
    pub redis_url: String,
    /// Password for Redis, if not in the URL (env REDIS_PASSWORD).
    pub redis_password: Option<String>,
    /// Longest wait for one Redis check before the policy's fail mode applies, e.g. `250ms`.
    pub redis_timeout: HumanDuration,
    /// Keys held in memory (in-process backend, hybrid cache); least recently used go first.
    pub max_keys: usize,
    /// Peers whose `X-Forwarded-For` is believed (IPs or CIDRs, e.g. 10.0.0.0/8). Empty: the
    /// header is ignored and the peer address is the client.
    pub trusted_proxies: Vec<String>,
    /// The policy of keys that match no exact key and no pattern.
    pub default: RatelimitPolicySpec,
    /// Policies of exact keys.
    pub keys: BTreeMap<String, RatelimitPolicySpec>,
    /// Policies of key patterns (`*` matches any run of characters, e.g. `user:*`); the longest
    /// matching pattern wins.
    pub patterns: BTreeMap<String, RatelimitPolicySpec>,
    /// Guard fieldlab's own HTTP API per principal (or client IP). null: no guard.
    pub api: Option<RatelimitPolicySpec>,
    /// Guard ingest per device: over-limit messages are quarantined as "rate limited". null: no guard.
    pub ingest: Option<RatelimitPolicySpec>,
}

impl RatelimitConfig {
    /// A Redis URL given (`REDIS_URL`, `ratelimit.redis_url`, `--redis-url`) means Redis: with
    /// no backend given it selects `redis`; with `backend: memory` given it is an error, since
    /// the limits would silently stay in one process's memory. Keys are relative to
    /// `ratelimit`.
    pub fn redis_url_selects_backend(
        &mut self,
        url_given: bool,
        backend_given: bool,
    ) -> Result<(), Problem> {
        if !url_given || self.backend != RatelimitBackend::Memory {
            return Ok(());
        }
        if backend_given {
            return Problem::at(
                "redis_url",
                "is set, but ratelimit.backend is memory, which never uses it (limits would stay in this process); choose backend redis or hybrid, or remove the URL (and REDIS_URL)",
            );
        }
        self.backend = RatelimitBackend::Redis;
        Ok(())
    }
}

impl Default for RatelimitConfig {
    fn default() -> Self {
        RatelimitConfig {
            backend: RatelimitBackend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_password: None,
            redis_timeout: HumanDuration::from_millis(250),
            max_keys: 100_000,
            trusted_proxies: Vec::new(),
            default: RatelimitPolicySpec::default(),
            keys: BTreeMap::new(),
            patterns: BTreeMap::new(),
            api: None,
            ingest: None,
        }
    }
}

/// The spec's checks that need no backend: every policy has a limit and every limit's numbers
/// make sense. (The limiter builds the policies from the same specs; `fieldlab config check`
/// runs both.)
impl Section for RatelimitConfig {
    fn validate(&self) -> Result<(), Problem> {
        let mut policies: Vec<(String, &RatelimitPolicySpec)> =
            vec![("default".into(), &self.default)];
        policies.extend(self.keys.iter().map(|(k, p)| (format!("keys.{k}"), p)));
        policies.extend(
            self.patterns
                .iter()
                .map(|(k, p)| (format!("patterns.{k}"), p)),
        );
        policies.extend(self.api.iter().map(|p| ("api".to_string(), p)));
        policies.extend(self.ingest.iter().map(|p| ("ingest".to_string(), p)));
        for (at, p) in policies {
            p.validate().map_err(|e| e.within(&at))?;
        }
        Ok(())
    }
}

/// A policy: limits that must all pass. Also the body of `PUT /api/ratelimit/...`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RatelimitPolicySpec {
    #[schema(min_items = 1)]
    pub limits: Vec<RatelimitLimitSpec>,
    /// Dry run: decisions are recorded (metrics, headers) but nothing is ever rejected.
    pub shadow: bool,
    /// Allow (`open`) or reject (`closed`) while Redis is unreachable.
    pub fail: FailMode,
}

impl Default for RatelimitPolicySpec {
    fn default() -> Self {
        RatelimitPolicySpec {
            limits: vec![RatelimitLimitSpec::new(
                Algorithm::TokenBucket,
                100,
                HumanDuration::from_secs(60),
            )],
            shadow: false,
            fail: FailMode::Open,
        }
    }
}

impl Section for RatelimitPolicySpec {
    fn validate(&self) -> Result<(), Problem> {
        if self.limits.is_empty() {
            return Problem::at("limits", "needs at least one limit");
        }
        for (i, l) in self.limits.iter().enumerate() {
            l.check()
                .map_err(|(k, m)| Problem::new(format!("limits[{i}].{k}"), m))?;
        }
        Ok(())
    }
}

/// One limit. `algorithm`: an [`Algorithm`] by name (`token_bucket`, ...; its table is the
/// only list). `limit` units per `period` (for concurrency: leases held at once, `period` =
/// lease expiry); `burst`: bucket capacity (token_bucket, gcra; default `limit`); `max_delay`:
/// longest queue wait (leaky_bucket; default 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatelimitLimitSpec {
    pub algorithm: Algorithm,
    pub limit: u64,
    pub period: HumanDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<HumanDuration>,
}

impl RatelimitLimitSpec {
    /// `limit` per `period`, burst and delay by default.
    pub fn new(algorithm: Algorithm, limit: u64, period: HumanDuration) -> RatelimitLimitSpec {
        RatelimitLimitSpec {
            algorithm,
            limit,
            period,
            burst: None,
            max_delay: None,
        }
    }

    /// Check the numbers types cannot; returns the bad field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.limit == 0 {
            return Err(("limit", "must be at least 1".into()));
        }
        if self.period.is_zero() {
            return Err(("period", "must be positive, e.g. 1s or 1m".into()));
        }
        if self.burst == Some(0) {
            return Err(("burst", "must be at least 1".into()));
        }
        Ok(())
    }
}
