//! Rate-limit metrics, registered in fieldlab's one Prometheus registry.
//!
//! Why these: operators need to see who is limited (decisions by policy and result), whether the
//! backend is healthy and fast (latency histogram, Redis errors), and how often Redis being down
//! let traffic through unchecked (fail-open count). The legacy limiter emitted no metric at all.
//! With rules shared through Redis ([`crate::shared`]): the version of the rules in use and
//! whether they may be stale (Redis unreachable, so a change made elsewhere may be missing).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub policy: String,
    /// allowed | rejected | shadow_rejected (would have been rejected; shadow mode) |
    /// fail_open | fail_closed (backend unreachable)
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: &'static str,
}

#[derive(Clone)]
pub struct RatelimitMetrics {
    pub decisions: Family<DecisionLabels, Counter>,
    pub backend_latency: Family<BackendLabels, Histogram>,
    pub redis_errors: Counter,
    pub fail_open: Counter,
    /// The version of the rules this instance decides with.
    pub rules_version: Gauge,
    /// 1 while the rules could not be read from Redis (this instance decides with its last
    /// known rules), else 0. Always 0 with the memory backend.
    pub rules_stale: Gauge,
}

impl Default for RatelimitMetrics {
    fn default() -> Self {
        RatelimitMetrics {
            decisions: Family::default(),
            backend_latency: Family::new_with_constructor(|| {
                // 10 µs .. ~160 ms
                Histogram::new(exponential_buckets(0.000_01, 2.0, 15))
            }),
            redis_errors: Counter::default(),
            fail_open: Counter::default(),
            rules_version: Gauge::default(),
            rules_stale: Gauge::default(),
        }
    }
}

impl RatelimitMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fieldlab_ratelimit_decisions",
            "Rate-limit decisions by policy and result",
            self.decisions.clone(),
        );
        r.register(
            "fieldlab_ratelimit_backend_latency_seconds",
            "Time of one rate-limit check in its backend",
            self.backend_latency.clone(),
        );
        r.register(
            "fieldlab_ratelimit_redis_errors",
            "Redis checks that failed (unreachable, timeout, script error)",
            self.redis_errors.clone(),
        );
        r.register(
            "fieldlab_ratelimit_fail_open",
            "Requests allowed unchecked because the backend was unreachable (fail: open)",
            self.fail_open.clone(),
        );
        r.register(
            "fieldlab_ratelimit_rules_version",
            "Version of the rate-limit rules this instance decides with",
            self.rules_version.clone(),
        );
        r.register(
            "fieldlab_ratelimit_rules_stale",
            "1 while the shared rules cannot be read from Redis (the last known rules are in use)",
            self.rules_stale.clone(),
        );
    }
}
