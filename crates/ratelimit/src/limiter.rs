//! The rate-limit service: rules + backend + metrics, behind one cloneable handle.
//!
//! Why one handle: the HTTP service API (`/api/ratelimit/check`), the layer that guards
//! fieldlab's own API, the ingest guard and `fieldlab ratelimit serve` all do the same thing —
//! pick a policy, ask the backend, apply shadow mode and the fail mode, count the result. Only
//! here is the clock read and the backend chosen.
//!
//! Config changes made through the admin API are kept in `<data_dir>/ratelimit/rules.json`
//! (written to a temp file, fsynced and renamed) and layered over `fieldlab.yaml`: an override
//! wins; a key defined in the file cannot be deleted through the API (edit the file).

use crate::client::TrustedProxies;
use crate::hybrid::HybridBackend;
use crate::memory::MemoryBackend;
use crate::metrics::{BackendLabels, DecisionLabels, RatelimitMetrics};
use crate::policy::{PolicyStats, Rules};
use crate::redis::RedisBackend;
use crate::{BackendError, Decision, FailMode, Policy, NEVER};
use fieldlab_core::config::{RatelimitBackend, RatelimitConfig, RatelimitPolicySpec};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where state lives.
pub enum Backend {
    Memory(MemoryBackend),
    Redis(RedisBackend),
    Hybrid(HybridBackend),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
            Backend::Hybrid(_) => "hybrid",
        }
    }
}

/// What the admin API changed, persisted in the data dir.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Overrides {
    pub default: Option<RatelimitPolicySpec>,
    pub keys: BTreeMap<String, RatelimitPolicySpec>,
    pub patterns: BTreeMap<String, RatelimitPolicySpec>,
}

/// How to build a [`Limiter`].
pub struct LimiterSettings {
    pub config: RatelimitConfig,
    /// Directory for `rules.json` (admin API changes). None: changes live in memory only.
    pub state_dir: Option<PathBuf>,
}

/// The result of one check of one policy.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What the caller should do (true in shadow mode and when failing open).
    pub allowed: bool,
    pub policy: Arc<Policy>,
    /// One decision per limit of the policy.
    pub decisions: Vec<Decision>,
    /// Shadow mode: the policy would have rejected this.
    pub would_reject: bool,
    /// The backend failed; the policy's fail mode decided.
    pub backend_error: Option<String>,
    /// The concurrency lease granted (release it when done).
    pub lease: u64,
}

impl Outcome {
    /// Fewest units left among the limits.
    pub fn remaining(&self) -> u64 {
        self.decisions
            .iter()
            .map(|d| d.remaining)
            .min()
            .unwrap_or(0)
    }

    /// Milliseconds until a retry could pass: the largest retry-after of the limits that
    /// rejected. None when allowed, or when the request can never pass.
    pub fn retry_after_ms(&self) -> Option<u64> {
        let r = self
            .decisions
            .iter()
            .filter(|d| !d.allowed)
            .map(|d| d.retry_after_ms)
            .max()?;
        (r != NEVER).then_some(r)
    }

    /// Milliseconds until every limit is back to unused.
    pub fn reset_ms(&self) -> u64 {
        self.decisions.iter().map(|d| d.reset_ms).max().unwrap_or(0)
    }

    /// Leaky bucket: how long to wait before acting.
    pub fn delay_ms(&self) -> u64 {
        self.decisions.iter().map(|d| d.delay_ms).max().unwrap_or(0)
    }

    fn item_name(&self, i: usize) -> String {
        if self.policy.limits.len() == 1 {
            self.policy.name.clone()
        } else {
            format!("{}.{i}", self.policy.name)
        }
    }

    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10), one list
    /// member per limit, plus `Retry-After` (seconds) when rejected.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut policy = Vec::new();
        let mut state = Vec::new();
        for (i, (l, d)) in self.policy.limits.iter().zip(&self.decisions).enumerate() {
            let name = q(&self.item_name(i));
            let (quota, window) = l.quota();
            policy.push(match window {
                Some(w) => format!("{name};q={quota};w={w}"),
                None => format!("{name};q={quota}"),
            });
            state.push(format!(
                "{name};r={};t={}",
                d.remaining,
                Decision::secs(d.reset_ms)
            ));
        }
        let mut h = vec![
            ("ratelimit-policy", policy.join(", ")),
            ("ratelimit", state.join(", ")),
        ];
        if !self.allowed {
            if let Some(r) = self.retry_after_ms() {
                h.push(("retry-after", Decision::secs(r).max(1).to_string()));
            }
        }
        h
    }

    /// The JSON body of `/api/ratelimit/check`.
    pub fn to_json(&self, key: &str, tokens: u64) -> Value {
        let limits: Vec<Value> = self
            .policy
            .limits
            .iter()
            .zip(&self.decisions)
            .map(|(l, d)| {
                json!({
                    "algorithm": l.algorithm.as_str(),
                    "allowed": d.allowed,
                    "limit": d.limit,
                    "remaining": d.remaining,
                    "reset_ms": d.reset_ms,
                    "retry_after_ms": (!d.allowed && d.retry_after_ms != NEVER).then_some(d.retry_after_ms),
                    "delay_ms": d.delay_ms,
                })
            })
            .collect();
        json!({
            "key": key,
            "tokens": tokens,
            "allowed": self.allowed,
            "policy": self.policy.name,
            "remaining": self.remaining(),
            "reset": Decision::secs(self.reset_ms()),
            "reset_ms": self.reset_ms(),
            "retry_after": if self.allowed { None } else { self.retry_after_ms().map(|r| Decision::secs(r).max(1)) },
            "retry_after_ms": if self.allowed { None } else { self.retry_after_ms() },
            "delay_ms": self.delay_ms(),
            "shadow": self.policy.shadow,
            "would_reject": self.would_reject,
            "degraded": self.backend_error,
            "lease": (self.policy.has_concurrency() && self.allowed).then(|| self.lease.to_string()),
            "limits": limits,
        })
    }
}

struct Inner {
    backend: Backend,
    base: RatelimitConfig,
    overrides: Mutex<Overrides>,
    rules: RwLock<Arc<Rules>>,
    api: Option<Arc<Policy>>,
    ingest: Option<Arc<Policy>>,
    stats: Mutex<HashMap<String, Arc<PolicyStats>>>,
    metrics: RatelimitMetrics,
    trusted: TrustedProxies,
    state_file: Option<PathBuf>,
    lease_seq: AtomicU64,
}

/// The rate-limit service handle. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

/// A config change that cannot be made; the message says why and what to do.
#[derive(Debug)]
pub enum ConfigChangeError {
    Invalid { field: String, message: String },
    DefinedInFile(String),
    Persist(String),
}

impl Limiter {
    /// Build from config; loads earlier admin changes from `state_dir`. Errors name the key.
    pub fn new(s: LimiterSettings, metrics: RatelimitMetrics) -> Result<Limiter, String> {
        let cfg = s.config;
        let timeout = fieldlab_core::time::parse_duration_ms(&cfg.redis_timeout)
            .map_err(|e| format!("ratelimit.redis_timeout: {e}"))?;
        let redis = || {
            RedisBackend::new(
                &cfg.redis_url,
                cfg.redis_password.as_deref(),
                Duration::from_millis(timeout.max(1) as u64),
            )
            .map_err(|e| format!("ratelimit.redis_url: {e}"))
        };
        let backend = match cfg.backend {
            RatelimitBackend::Memory => Backend::Memory(MemoryBackend::with_capacity(cfg.max_keys)),
            RatelimitBackend::Redis => Backend::Redis(redis()?),
            RatelimitBackend::Hybrid => Backend::Hybrid(HybridBackend::new(redis()?, cfg.max_keys)),
        };
        let trusted = TrustedProxies::parse(&cfg.trusted_proxies)
            .map_err(|e| format!("ratelimit.trusted_proxies: {e}"))?;
        let state_file = s.state_dir.map(|d| d.join("ratelimit").join("rules.json"));
        let overrides = match &state_file {
            Some(f) if f.exists() => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
                serde_json::from_str(&text).map_err(|e| {
                    format!("{}: {e}; fix or delete the file (it holds rate-limit rules set through the API)", f.display())
                })?
            }
            _ => Overrides::default(),
        };
        let stats = Mutex::new(HashMap::new());
        let policy = |name: &str, spec: &RatelimitPolicySpec, at: &str| {
            Policy::from_spec(name, spec)
                .map(Arc::new)
                .map_err(|(k, m)| format!("{at}.{k}: {m}"))
        };
        let api = cfg
            .api
            .as_ref()
            .map(|p| policy("api", p, "ratelimit.api"))
            .transpose()?;
        let ingest = cfg
            .ingest
            .as_ref()
            .map(|p| policy("ingest", p, "ratelimit.ingest"))
            .transpose()?;
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let inner = Inner {
            backend,
            base: cfg.clone(),
            overrides: Mutex::new(Overrides::default()),
            rules: RwLock::new(Arc::new(Rules::new(
                Policy::single(
                    "default",
                    crate::Limit::new(crate::Algorithm::TokenBucket, 1, 1),
                ),
                BTreeMap::new(),
                BTreeMap::new(),
            ))),
            api,
            ingest,
            stats,
            metrics,
            trusted,
            state_file,
            lease_seq: AtomicU64::new(seed >> 1),
        };
        let l = Limiter {
            inner: Arc::new(inner),
        };
        let rules = l
            .build_rules(&overrides)
            .map_err(|(f, m)| format!("{f}: {m}"))?;
        *l.inner.rules.write() = Arc::new(rules);
        *l.inner.overrides.lock() = overrides;
        Ok(l)
    }

    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub fn metrics(&self) -> &RatelimitMetrics {
        &self.inner.metrics
    }

    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.inner.trusted
    }

    /// The policy guarding fieldlab's API, if configured.
    pub fn api_policy(&self) -> Option<&Arc<Policy>> {
        self.inner.api.as_ref()
    }

    pub fn ingest_policy(&self) -> Option<&Arc<Policy>> {
        self.inner.ingest.as_ref()
    }

    fn build_rules(&self, o: &Overrides) -> Result<Rules, (String, String)> {
        let base = &self.inner.base;
        let mk = |name: String, spec: &RatelimitPolicySpec, at: String| {
            let mut p =
                Policy::from_spec(&name, spec).map_err(|(k, m)| (format!("{at}.{k}"), m))?;
            p.stats = self.inner.stats.lock().entry(name).or_default().clone();
            Ok::<Policy, (String, String)>(p)
        };
        let default = mk(
            "default".into(),
            o.default.as_ref().unwrap_or(&base.default),
            "ratelimit.default".into(),
        )?;
        let mut keys = BTreeMap::new();
        for (k, spec) in base.keys.iter().chain(&o.keys) {
            keys.insert(
                k.clone(),
                mk(format!("key:{k}"), spec, format!("ratelimit.keys.{k}"))?,
            );
        }
        let mut patterns = BTreeMap::new();
        for (k, spec) in base.patterns.iter().chain(&o.patterns) {
            patterns.insert(
                k.clone(),
                mk(
                    format!("pattern:{k}"),
                    spec,
                    format!("ratelimit.patterns.{k}"),
                )?,
            );
        }
        Ok(Rules::new(default, keys, patterns))
    }

    pub fn rules(&self) -> Arc<Rules> {
        self.inner.rules.read().clone()
    }

    /// The service check: the key's policy by the rules.
    pub async fn check(&self, key: &str, n: u64) -> Outcome {
        let policy = self.inner.rules.read().resolve(key);
        self.check_policy(&policy, key, n).await
    }

    /// Guard fieldlab's API: `identity` is `sub:<subject>` or `ip:<addr>`. None: no API policy.
    pub async fn check_api(&self, identity: &str) -> Option<Outcome> {
        let p = self.inner.api.clone()?;
        Some(self.check_policy(&p, identity, 1).await)
    }

    /// The ingest hook: one message of `device_id`. None when no ingest policy is configured.
    /// An outcome with `allowed == false` means: quarantine the message with reason
    /// "rate limited" (never drop it silently).
    pub async fn check_ingest(&self, device_id: &str) -> Option<Outcome> {
        let p = self.inner.ingest.clone()?;
        Some(self.check_policy(&p, device_id, 1).await)
    }

    /// Check `n` units of `key` under `policy`: backend, then fail mode, shadow mode, metrics.
    pub async fn check_policy(&self, policy: &Arc<Policy>, key: &str, n: u64) -> Outcome {
        let lease = self.inner.lease_seq.fetch_add(1, Ordering::Relaxed);
        let now = fieldlab_core::time::now_ms();
        let t0 = Instant::now();
        let res = match &self.inner.backend {
            Backend::Memory(m) => Ok(m.check(policy, key, n, now, lease)),
            Backend::Redis(r) => r.check(policy, key, n, lease, None).await,
            Backend::Hybrid(h) => h.check(policy, key, n, lease, now).await,
        };
        self.inner
            .metrics
            .backend_latency
            .get_or_create(&BackendLabels {
                backend: self.inner.backend.name(),
            })
            .observe(t0.elapsed().as_secs_f64());
        self.finish(policy, res, lease)
    }

    /// The synchronous path of the in-process backend (no await, for hot loops and benches).
    /// None when the backend is not in-process.
    pub fn check_local(&self, policy: &Arc<Policy>, key: &str, n: u64) -> Option<Outcome> {
        let Backend::Memory(m) = &self.inner.backend else {
            return None;
        };
        let lease = self.inner.lease_seq.fetch_add(1, Ordering::Relaxed);
        let d = m.check(policy, key, n, fieldlab_core::time::now_ms(), lease);
        Some(self.finish(policy, Ok(d), lease))
    }

    fn finish(
        &self,
        policy: &Arc<Policy>,
        res: Result<Vec<Decision>, BackendError>,
        lease: u64,
    ) -> Outcome {
        let m = &self.inner.metrics;
        let st = &policy.stats;
        let (allowed, decisions, would_reject, err, result) = match res {
            Ok(ds) => {
                let ok = ds.iter().all(|d| d.allowed);
                if ok {
                    st.allowed.fetch_add(1, Ordering::Relaxed);
                    (true, ds, false, None, "allowed")
                } else if policy.shadow {
                    st.shadow_rejected.fetch_add(1, Ordering::Relaxed);
                    (true, ds, true, None, "shadow_rejected")
                } else {
                    st.rejected.fetch_add(1, Ordering::Relaxed);
                    (false, ds, false, None, "rejected")
                }
            }
            Err(e) => {
                m.redis_errors.inc();
                tracing::debug!(error = %e, policy = %policy.name, "rate-limit backend failed");
                let open = policy.fail == FailMode::Open;
                let ds = policy
                    .limits
                    .iter()
                    .map(|l| Decision {
                        allowed: open,
                        limit: l.quota().0,
                        remaining: if open { l.quota().0 } else { 0 },
                        retry_after_ms: if open { 0 } else { 1000 },
                        reset_ms: 0,
                        delay_ms: 0,
                    })
                    .collect();
                if open {
                    m.fail_open.inc();
                    st.fail_open.fetch_add(1, Ordering::Relaxed);
                    (true, ds, false, Some(e.to_string()), "fail_open")
                } else {
                    st.fail_closed.fetch_add(1, Ordering::Relaxed);
                    (false, ds, false, Some(e.to_string()), "fail_closed")
                }
            }
        };
        m.decisions
            .get_or_create(&DecisionLabels {
                policy: policy.name.clone(),
                result,
            })
            .inc();
        Outcome {
            allowed,
            policy: policy.clone(),
            decisions,
            would_reject,
            backend_error: err,
            lease,
        }
    }

    /// Give back a concurrency lease of `key`.
    pub async fn release(&self, key: &str, lease: u64) -> Result<bool, String> {
        let policy = self.inner.rules.read().resolve(key);
        match &self.inner.backend {
            Backend::Memory(m) => Ok(m.release(&policy, key, lease)),
            Backend::Redis(r) => r
                .release(&policy, key, lease)
                .await
                .map_err(|e| e.to_string()),
            Backend::Hybrid(h) => h
                .redis
                .release(&policy, key, lease)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Give back a lease granted by [`Limiter::check_policy`] for `policy`.
    pub async fn release_lease(
        &self,
        policy: &Policy,
        key: &str,
        lease: u64,
    ) -> Result<bool, String> {
        match &self.inner.backend {
            Backend::Memory(m) => Ok(m.release(policy, key, lease)),
            Backend::Redis(r) => r
                .release(policy, key, lease)
                .await
                .map_err(|e| e.to_string()),
            Backend::Hybrid(h) => h
                .redis
                .release(policy, key, lease)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Every rule with where it came from, for `GET /api/ratelimit/config`.
    pub fn config_json(&self) -> Value {
        let o = self.inner.overrides.lock().clone();
        let base = &self.inner.base;
        let src = |in_api: bool| if in_api { "api" } else { "file" };
        let keys: BTreeMap<&String, Value> = base
            .keys
            .iter()
            .chain(&o.keys)
            .map(|(k, v)| {
                (
                    k,
                    json!({"policy": v, "source": src(o.keys.contains_key(k))}),
                )
            })
            .collect();
        let patterns: BTreeMap<&String, Value> = base
            .patterns
            .iter()
            .chain(&o.patterns)
            .map(|(k, v)| {
                (
                    k,
                    json!({"policy": v, "source": src(o.patterns.contains_key(k))}),
                )
            })
            .collect();
        json!({
            "backend": self.inner.backend.name(),
            "default": {"policy": o.default.as_ref().unwrap_or(&base.default), "source": src(o.default.is_some())},
            "keys": keys,
            "patterns": patterns,
            "api": base.api,
            "ingest": base.ingest,
            "precedence": "exact key > longest matching pattern > default",
        })
    }

    fn change(&self, f: impl FnOnce(&mut Overrides)) -> Result<(), ConfigChangeError> {
        let mut o = self.inner.overrides.lock();
        let mut next = o.clone();
        f(&mut next);
        let rules = self
            .build_rules(&next)
            .map_err(|(field, message)| ConfigChangeError::Invalid { field, message })?;
        if let Some(file) = &self.inner.state_file {
            persist(file, &next).map_err(ConfigChangeError::Persist)?;
        }
        *o = next;
        *self.inner.rules.write() = Arc::new(rules);
        Ok(())
    }

    pub fn set_key(&self, key: &str, spec: RatelimitPolicySpec) -> Result<(), ConfigChangeError> {
        self.change(|o| {
            o.keys.insert(key.to_string(), spec);
        })
    }

    pub fn set_pattern(
        &self,
        pat: &str,
        spec: RatelimitPolicySpec,
    ) -> Result<(), ConfigChangeError> {
        self.change(|o| {
            o.patterns.insert(pat.to_string(), spec);
        })
    }

    pub fn set_default(&self, spec: RatelimitPolicySpec) -> Result<(), ConfigChangeError> {
        self.change(|o| o.default = Some(spec))
    }

    /// Remove an API-defined key. Ok(false): no such key.
    pub fn delete_key(&self, key: &str) -> Result<bool, ConfigChangeError> {
        if !self.inner.overrides.lock().keys.contains_key(key) {
            if self.inner.base.keys.contains_key(key) {
                return Err(ConfigChangeError::DefinedInFile(format!(
                    "ratelimit.keys.{key}"
                )));
            }
            return Ok(false);
        }
        self.change(|o| {
            o.keys.remove(key);
        })
        .map(|_| true)
    }

    pub fn delete_pattern(&self, pat: &str) -> Result<bool, ConfigChangeError> {
        if !self.inner.overrides.lock().patterns.contains_key(pat) {
            if self.inner.base.patterns.contains_key(pat) {
                return Err(ConfigChangeError::DefinedInFile(format!(
                    "ratelimit.patterns.{pat}"
                )));
            }
            return Ok(false);
        }
        self.change(|o| {
            o.patterns.remove(pat);
        })
        .map(|_| true)
    }

    /// Decisions per policy since start, plus backend facts.
    pub fn stats_json(&self) -> Value {
        let mut policies: BTreeMap<String, Value> = self
            .inner
            .stats
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.snapshot()))
            .collect();
        for p in self.inner.api.iter().chain(&self.inner.ingest) {
            policies.insert(p.name.clone(), p.stats.snapshot());
        }
        let mut backend = json!({"kind": self.inner.backend.name()});
        match &self.inner.backend {
            Backend::Memory(m) => {
                backend["keys"] = json!(m.len());
                backend["evictions"] = json!(m.evictions());
            }
            Backend::Hybrid(h) => backend["local_hits"] = json!(h.local_hits()),
            Backend::Redis(_) => {}
        }
        backend["redis_errors"] = json!(self.inner.metrics.redis_errors.get());
        backend["fail_open"] = json!(self.inner.metrics.fail_open.get());
        json!({"backend": backend, "policies": policies})
    }
}

fn persist(file: &Path, o: &Overrides) -> Result<(), String> {
    use std::io::Write;
    let dir = file.parent().expect("rules file has a directory");
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = file.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(o).expect("overrides serialise");
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(&body)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, file).map_err(|e| format!("cannot rename to {}: {e}", file.display()))?;
    Ok(())
}
