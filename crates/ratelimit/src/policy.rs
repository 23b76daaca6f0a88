//! Policies and the rules that choose one for a key.
//!
//! Why: a service limits many keys with different quotas. The user writes policies in
//! `fieldlab.yaml` (`ratelimit.default`, `.keys`, `.patterns`) or through the admin API; the
//! precedence is deterministic: an exact key, else the longest matching pattern (ties broken by
//! the pattern text), else the default.

use crate::algo::{Algorithm, Limit};
use crate::FailMode;
use crate::{RatelimitLimitSpec, RatelimitPolicySpec};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Decisions of one policy since start, for `/api/ratelimit/stats`.
#[derive(Debug, Default)]
pub struct PolicyStats {
    pub allowed: AtomicU64,
    pub rejected: AtomicU64,
    pub shadow_rejected: AtomicU64,
    pub fail_open: AtomicU64,
    pub fail_closed: AtomicU64,
}

impl PolicyStats {
    pub fn snapshot(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "allowed": g(&self.allowed),
            "rejected": g(&self.rejected),
            "shadow_rejected": g(&self.shadow_rejected),
            "fail_open": g(&self.fail_open),
            "fail_closed": g(&self.fail_closed),
        })
    }
}

/// Limits that must all pass, with their mode.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Shown in metrics and the `RateLimit-Policy` header (`default`, `key:alice`, `api`, ...).
    pub name: String,
    pub limits: Vec<Limit>,
    /// Dry run: record, never reject.
    pub shadow: bool,
    pub fail: FailMode,
    /// The spec it was built from, for the config API.
    pub spec: RatelimitPolicySpec,
    pub stats: Arc<PolicyStats>,
}

impl Policy {
    /// Build from the user's spec; errors name the field (`limits[0].period`) and the problem.
    pub fn from_spec(name: &str, spec: &RatelimitPolicySpec) -> Result<Policy, (String, String)> {
        if spec.limits.is_empty() {
            return Err(("limits".into(), "needs at least one limit".into()));
        }
        let limits = spec
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| limit_from_spec(l).map_err(|(k, m)| (format!("limits[{i}].{k}"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            name: name.to_string(),
            limits,
            shadow: spec.shadow,
            fail: spec.fail,
            spec: spec.clone(),
            stats: Arc::default(),
        })
    }

    /// A policy of one limit (tests, benchmarks).
    pub fn single(name: &str, limit: Limit) -> Policy {
        Policy {
            name: name.into(),
            limits: vec![limit],
            shadow: false,
            fail: FailMode::Open,
            spec: RatelimitPolicySpec::default(),
            stats: Arc::default(),
        }
    }

    pub fn has_concurrency(&self) -> bool {
        self.limits
            .iter()
            .any(|l| l.algorithm == Algorithm::Concurrency)
    }
}

/// Convert one limit spec into a checked [`Limit`].
pub fn limit_from_spec(s: &RatelimitLimitSpec) -> Result<Limit, (&'static str, String)> {
    s.check()?;
    let mut l = Limit::new(s.algorithm, s.limit, s.period.as_millis());
    if let Some(b) = s.burst {
        l.burst = b;
    }
    if let Some(d) = s.max_delay {
        l.max_delay_ms = d.as_millis();
    }
    l.validate()?;
    Ok(l)
}

/// Does `pattern` (with `*` = any run of characters) match `key`?
pub fn glob_match(pattern: &str, key: &str) -> bool {
    // Iterative wildcard matching with backtracking to the last `*`: linear for typical
    // patterns, no regex compilation per key.
    let (p, k) = (pattern.as_bytes(), key.as_bytes());
    let (mut pi, mut ki) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ki < k.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ki;
            pi += 1;
        } else if pi < p.len() && p[pi] == k[ki] {
            pi += 1;
            ki += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ki = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// The policy of every key: exact keys, patterns, default.
#[derive(Debug, Clone)]
pub struct Rules {
    pub default: Arc<Policy>,
    pub keys: BTreeMap<String, Arc<Policy>>,
    /// Sorted longest first, then by text, so the first match is the winner.
    patterns: Vec<(String, Arc<Policy>)>,
}

impl Rules {
    pub fn new(
        default: Policy,
        keys: BTreeMap<String, Policy>,
        patterns: BTreeMap<String, Policy>,
    ) -> Rules {
        let mut patterns: Vec<(String, Arc<Policy>)> = patterns
            .into_iter()
            .map(|(k, p)| (k, Arc::new(p)))
            .collect();
        patterns.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Rules {
            default: Arc::new(default),
            keys: keys.into_iter().map(|(k, p)| (k, Arc::new(p))).collect(),
            patterns,
        }
    }

    /// Exact key > longest matching pattern > default.
    pub fn resolve(&self, key: &str) -> Arc<Policy> {
        if let Some(p) = self.keys.get(key) {
            return p.clone();
        }
        self.patterns
            .iter()
            .find(|(pat, _)| glob_match(pat, key))
            .map_or_else(|| self.default.clone(), |(_, p)| p.clone())
    }

    pub fn patterns(&self) -> impl Iterator<Item = (&String, &Arc<Policy>)> {
        self.patterns.iter().map(|(k, p)| (k, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol(name: &str) -> Policy {
        Policy::single(name, Limit::new(Algorithm::FixedWindow, 1, 1000))
    }

    #[test]
    fn exact_beats_longest_pattern_beats_default() {
        let keys = BTreeMap::from([("user:alice".to_string(), pol("exact"))]);
        let patterns = BTreeMap::from([
            ("user:*".to_string(), pol("short")),
            ("user:a*".to_string(), pol("long")),
            ("*".to_string(), pol("any")),
        ]);
        let r = Rules::new(pol("default"), keys, patterns);
        assert_eq!(r.resolve("user:alice").name, "exact");
        assert_eq!(r.resolve("user:ann").name, "long");
        assert_eq!(r.resolve("user:bob").name, "short");
        assert_eq!(r.resolve("device:1").name, "any");
        let r = Rules::new(pol("default"), BTreeMap::new(), BTreeMap::new());
        assert_eq!(r.resolve("x").name, "default");
    }

    #[test]
    fn glob() {
        assert!(glob_match("user:*", "user:"));
        assert!(glob_match("*:admin", "user:admin"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn bad_specs_name_the_field() {
        let mut spec = RatelimitPolicySpec::default();
        spec.limits[0].period = fieldlab_core::config::HumanDuration::ZERO;
        let e = Policy::from_spec("p", &spec).unwrap_err();
        assert_eq!(e.0, "limits[0].period");
        let e = serde_json::from_str::<RatelimitPolicySpec>(
            r#"{"limits": [{"algorithm": "magic", "limit": 1, "period": "1s"}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("token_bucket"), "{e}");
    }
}
