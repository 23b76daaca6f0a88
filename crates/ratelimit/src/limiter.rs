//! The rate-limit service: rules + backend + metrics, behind one cloneable handle.
//!
//! Why one handle: the HTTP service API (`/api/ratelimit/check`), the layer that guards
//! fieldlab's own API, the ingest guard and `fieldlab ratelimit serve` all do the same thing —
//! pick a policy, ask the backend, apply shadow mode and the fail mode, count the result. Only
//! here is the clock read and the backend chosen.
//!
//! Where the rules live depends on the backend:
//! - **memory**: config changes made through the admin API are kept in
//!   `<data_dir>/ratelimit/rules.json` (written to a temp file, fsynced and renamed) and layered
//!   over `fieldlab.yaml`: an override wins; a key defined in the file cannot be deleted through
//!   the API (edit the file).
//! - **redis** and **hybrid**: the whole rule set lives in Redis, versioned, shared by every
//!   replica ([`crate::shared`]); `fieldlab.yaml` (and an existing `rules.json`) give only the
//!   initial set, written when Redis has none. Any rule, also one first defined in the file, can
//!   be changed or deleted through the API of any replica.
//!
//! Every change increments the rules' version (shown in the config listing and as its `ETag`);
//! a change may name the version it was made on (`If-Match`) and is refused if it is no longer
//! current. With the memory backend the version counts the changes since start.

use crate::client::TrustedProxies;
use crate::hybrid::HybridBackend;
use crate::memory::MemoryBackend;
use crate::metrics::{BackendLabels, DecisionLabels, RatelimitMetrics};
use crate::policy::{PolicyStats, Rules};
use crate::redis::RedisBackend;
use crate::shared::{self, SyncStatus};
use crate::{BackendError, Decision, Decisions, FailMode, Policy, NEVER};
use crate::{RatelimitBackend, RatelimitConfig, RatelimitPolicySpec};
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
    /// The Redis backend, also of the hybrid backend.
    pub fn redis(&self) -> Option<&RedisBackend> {
        match self {
            Backend::Memory(_) => None,
            Backend::Redis(r) => Some(r),
            Backend::Hybrid(h) => Some(&h.redis),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
            Backend::Hybrid(_) => "hybrid",
        }
    }
}

/// What the admin API changed, persisted in the data dir (memory backend); with the Redis and
/// hybrid backends, the whole shared rule set (then `default` is always set).
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
    /// Directory for `rules.json` (admin API changes, memory backend; with the others an
    /// existing file is read once, into the initial rule set in Redis). None: no file.
    pub state_dir: Option<PathBuf>,
}

/// The result of one check of one policy.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What the caller should do (true in shadow mode and when failing open).
    pub allowed: bool,
    pub policy: Arc<Policy>,
    /// One decision per limit of the policy.
    pub decisions: Decisions,
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

    /// All limits folded into one decision: allowed iff all allowed (or shadow / fail-open),
    /// the fewest remaining, the longest retry-after, reset and delay.
    pub fn decision(&self) -> Decision {
        Decision {
            allowed: self.allowed,
            limit: self.decisions.iter().map(|d| d.limit).min().unwrap_or(0),
            remaining: self.remaining(),
            retry_after_ms: if self.allowed {
                0
            } else {
                self.retry_after_ms().unwrap_or(NEVER)
            },
            reset_ms: self.reset_ms(),
            delay_ms: self.delay_ms(),
        }
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
    /// member per limit, plus `Retry-After` (seconds) when rejected. Both fields are RFC 9651
    /// Lists written by `sfv`: each member is the policy name as an sf-string with parameters —
    /// `"api";q=100;w=60` (`qu="concurrent-requests"` for a concurrency limit, which has no
    /// window) and `"api";r=42;t=30`. `t` is the seconds until more quota is available: the
    /// retry-after of a limit that rejected (so `Retry-After` is never earlier than any `t`),
    /// else the time until the limit is back to unused (an upper bound).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        use sfv::{Integer, KeyRef, ListSerializer, StringRef};
        let int = |v: u64| Integer::try_from(v).unwrap_or(Integer::MAX);
        let mut policy = ListSerializer::new();
        let mut state = ListSerializer::new();
        for (i, (l, d)) in self.policy.limits.iter().zip(&self.decisions).enumerate() {
            let name = sf_string(&self.item_name(i));
            let name = StringRef::from_str(&name).expect("sf_string leaves printable ASCII");
            let (quota, window) = l.quota();
            let mut p = policy
                .bare_item(name)
                .parameter(KeyRef::constant("q"), int(quota));
            if l.algorithm == crate::Algorithm::Concurrency {
                p = p.parameter(
                    KeyRef::constant("qu"),
                    StringRef::constant("concurrent-requests"),
                );
            }
            if let Some(w) = window {
                _ = p.parameter(KeyRef::constant("w"), int(w));
            }
            let t_ms = if !d.allowed && d.retry_after_ms != NEVER {
                d.retry_after_ms
            } else {
                d.reset_ms
            };
            _ = state
                .bare_item(name)
                .parameter(KeyRef::constant("r"), int(d.remaining))
                .parameter(KeyRef::constant("t"), int(Decision::secs(t_ms)));
        }
        let mut h = Vec::with_capacity(3);
        if let (Some(p), Some(s)) = (policy.finish(), state.finish()) {
            h.push(("ratelimit-policy", p));
            h.push(("ratelimit", s));
        }
        if !self.allowed {
            if let Some(r) = self.retry_after_ms() {
                h.push(("retry-after", Decision::secs(r).max(1).to_string()));
            }
        }
        h
    }

    /// The body of `/api/ratelimit/check`'s answer.
    pub fn answer(&self, key: &str, tokens: u64) -> CheckAnswer {
        let limits = self
            .policy
            .limits
            .iter()
            .zip(&self.decisions)
            .map(|(l, d)| LimitAnswer {
                algorithm: l.algorithm,
                allowed: d.allowed,
                limit: d.limit,
                remaining: d.remaining,
                reset_ms: d.reset_ms,
                retry_after_ms: (!d.allowed && d.retry_after_ms != NEVER)
                    .then_some(d.retry_after_ms),
                delay_ms: d.delay_ms,
            })
            .collect();
        let retry_after_ms = if self.allowed {
            None
        } else {
            self.retry_after_ms()
        };
        CheckAnswer {
            key: key.to_string(),
            tokens,
            tokens_requested: tokens,
            allowed: self.allowed,
            policy: self.policy.name.clone(),
            remaining: self.remaining(),
            reset: Decision::secs(self.reset_ms()),
            reset_ms: self.reset_ms(),
            retry_after: retry_after_ms.map(|r| Decision::secs(r).max(1)),
            retry_after_ms,
            delay_ms: self.delay_ms(),
            shadow: self.policy.shadow,
            would_reject: self.would_reject,
            degraded: self.backend_error.clone(),
            lease: (self.policy.has_concurrency() && self.allowed).then(|| self.lease.to_string()),
            limits,
        }
    }
}

/// The answer of `/api/ratelimit/check`: the decision over all of the policy's limits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckAnswer {
    pub key: String,
    pub tokens: u64,
    /// The legacy name of `tokens`.
    #[serde(rename = "tokensRequested")]
    pub tokens_requested: u64,
    pub allowed: bool,
    /// The policy that decided.
    pub policy: String,
    /// Fewest units left among the limits.
    pub remaining: u64,
    /// Seconds until the limits are whole again.
    pub reset: u64,
    pub reset_ms: u64,
    /// Seconds until a retry could pass (rejected only).
    pub retry_after: Option<u64>,
    pub retry_after_ms: Option<u64>,
    pub delay_ms: u64,
    /// Shadow policy: decisions are recorded, nothing is rejected.
    pub shadow: bool,
    /// Shadow mode: the policy would have rejected this.
    pub would_reject: bool,
    /// The backend error when the policy's fail mode decided.
    pub degraded: Option<String>,
    /// The concurrency lease to give back with `/release`.
    pub lease: Option<String>,
    pub limits: Vec<LimitAnswer>,
}

/// One limit's decision in a [`CheckAnswer`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LimitAnswer {
    pub algorithm: crate::Algorithm,
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
    pub retry_after_ms: Option<u64>,
    pub delay_ms: u64,
}

struct Inner {
    backend: Backend,
    base: RatelimitConfig,
    /// Memory backend: the API's changes over `base`. Redis and hybrid: the shared rule set.
    overrides: Mutex<Overrides>,
    /// The version of `overrides` (and `rules`); changed under the `overrides` lock.
    version: AtomicU64,
    /// Redis and hybrid: whether the rules are those in Redis ([`crate::shared`]).
    shared: Option<SyncStatus>,
    rules: RwLock<Arc<Rules>>,
    api: Option<Arc<Policy>>,
    ingest: Option<Arc<Policy>>,
    stats: Mutex<HashMap<String, Arc<PolicyStats>>>,
    metrics: RatelimitMetrics,
    trusted: TrustedProxies,
    state_file: Option<PathBuf>,
    lease_seq: AtomicU64,
}

impl Inner {
    /// The keys and patterns of `fieldlab.yaml` that `overrides` is layered over: those of the
    /// memory backend. Shared rules are the whole set (the file's were only its initial part).
    fn file_rules(&self) -> Option<&RatelimitConfig> {
        self.shared.is_none().then_some(&self.base)
    }

    /// Put a rule set in use at version `v`; `o` is the `overrides` lock, held.
    fn put_in_use(&self, o: &mut Overrides, next: Overrides, rules: Rules, v: u64) {
        *o = next;
        *self.rules.write() = Arc::new(rules);
        self.version.store(v, Ordering::Relaxed);
        self.metrics.rules_version.set(v as i64);
        // The hybrid backend's remembered rejections were decided under the old rules.
        if let Backend::Hybrid(h) = &self.backend {
            h.forget();
        }
    }

    fn build_rules(&self, o: &Overrides) -> Result<Rules, (String, String)> {
        let base = &self.base;
        let file = self.file_rules();
        let mk = |name: String, spec: &RatelimitPolicySpec, at: String| {
            let mut p =
                Policy::from_spec(&name, spec).map_err(|(k, m)| (format!("{at}.{k}"), m))?;
            p.stats = self.stats.lock().entry(name).or_default().clone();
            Ok::<Policy, (String, String)>(p)
        };
        let default = mk(
            "default".into(),
            o.default.as_ref().unwrap_or(&base.default),
            "ratelimit.default".into(),
        )?;
        let mut keys = BTreeMap::new();
        for (k, spec) in file.into_iter().flat_map(|b| &b.keys).chain(&o.keys) {
            keys.insert(
                k.clone(),
                mk(format!("key:{k}"), spec, format!("ratelimit.keys.{k}"))?,
            );
        }
        let mut patterns = BTreeMap::new();
        for (k, spec) in file
            .into_iter()
            .flat_map(|b| &b.patterns)
            .chain(&o.patterns)
        {
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
}

impl shared::Target for Inner {
    fn local(&self) -> (u64, String) {
        let o = self.overrides.lock();
        let doc = serde_json::to_string(&*o).expect("rules serialise");
        (self.version.load(Ordering::Relaxed), doc)
    }

    fn install(&self, was: u64, version: u64, doc: &str) -> Result<(), String> {
        let next: Overrides = serde_json::from_str(doc).map_err(|e| e.to_string())?;
        let rules = self
            .build_rules(&next)
            .map_err(|(f, m)| format!("{f}: {m}"))?;
        let mut o = self.overrides.lock();
        if self.version.load(Ordering::Relaxed) != was {
            return Ok(());
        }
        if was != 0 {
            tracing::info!(
                from = was,
                to = version,
                "rate-limit rules changed in redis"
            );
        }
        self.put_in_use(&mut o, next, rules, version);
        Ok(())
    }

    fn status(&self) -> &SyncStatus {
        self.shared.as_ref().expect("watched only when shared")
    }
}

/// The rate-limit service handle. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

/// A config change that cannot be made; the message says why and what to do.
#[derive(Debug)]
pub enum ConfigChangeError {
    Invalid {
        field: String,
        message: String,
    },
    DefinedInFile(String),
    Persist(String),
    /// `If-Match` named another version than the current one.
    Conflict {
        current: u64,
    },
    /// The shared rules cannot be changed now (Redis unreachable).
    Unavailable(String),
}

impl Limiter {
    /// A limiter for `config` alone: no rules file, metrics of its own (tests and tools).
    pub fn of_config(config: RatelimitConfig) -> Result<Limiter, String> {
        Limiter::new(
            LimiterSettings {
                config,
                state_dir: None,
            },
            RatelimitMetrics::default(),
        )
    }

    /// Build from config; loads earlier admin changes from `state_dir`. Errors name the key.
    pub fn new(s: LimiterSettings, metrics: RatelimitMetrics) -> Result<Limiter, String> {
        let cfg = s.config;
        let redis = || {
            RedisBackend::new(
                &cfg.redis_url,
                cfg.redis_password.as_deref(),
                cfg.redis_timeout.get().max(Duration::from_millis(1)),
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
        let file_overrides = match &state_file {
            Some(f) if f.exists() => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
                serde_json::from_str(&text).map_err(|e| {
                    format!("{}: {e}; fix or delete the file (it holds rate-limit rules set through the API)", f.display())
                })?
            }
            _ => Overrides::default(),
        };
        let is_shared = backend.redis().is_some();
        let (overrides, state_file) = if is_shared {
            // The initial set, should Redis have none: the file's rules with the API's earlier
            // changes over them. From now on they live in Redis, not in rules.json.
            let mut seed = Overrides {
                default: Some(
                    file_overrides
                        .default
                        .unwrap_or_else(|| cfg.default.clone()),
                ),
                keys: cfg.keys.clone(),
                patterns: cfg.patterns.clone(),
            };
            seed.keys.extend(file_overrides.keys);
            seed.patterns.extend(file_overrides.patterns);
            (seed, None)
        } else {
            (file_overrides, state_file)
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
            version: AtomicU64::new(0),
            shared: is_shared.then(|| SyncStatus::new(metrics.rules_stale.clone())),
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
            .inner
            .build_rules(&overrides)
            .map_err(|(f, m)| format!("{f}: {m}"))?;
        *l.inner.rules.write() = Arc::new(rules);
        *l.inner.overrides.lock() = overrides;
        l.init_series();
        if is_shared {
            // The watcher has connections of its own, on its own thread; wait a little for its
            // first round so that a replica starts with the rules in Redis when it can.
            let (tx, rx) = std::sync::mpsc::channel();
            let target: std::sync::Weak<dyn shared::Target> =
                Arc::downgrade(&(l.inner.clone() as Arc<dyn shared::Target>));
            shared::spawn(redis()?, target, tx)
                .map_err(|e| format!("cannot start the rate-limit rules watcher: {e}"))?;
            let wait = (cfg.redis_timeout.get().max(Duration::from_millis(100)) * 4)
                .min(Duration::from_secs(5));
            let _ = rx.recv_timeout(wait);
        }
        Ok(l)
    }

    /// Start the series dashboards and alerts query at zero (a Prometheus counter that
    /// appears only with its first increment hides that first increment from `rate()`): the
    /// backend's latency histogram, and allowed/rejected decisions of the default, API and
    /// ingest policies. The Redis error and fail-open counters have no labels and always show.
    fn init_series(&self) {
        let m = &self.inner.metrics;
        drop(m.backend_latency.get_or_create(&BackendLabels {
            backend: self.inner.backend.name(),
        }));
        let default = self.inner.rules.read().default.name.clone();
        let names = [
            Some(default),
            self.inner.api.as_ref().map(|p| p.name.clone()),
        ]
        .into_iter()
        .chain([self.inner.ingest.as_ref().map(|p| p.name.clone())])
        .flatten();
        for policy in names {
            for result in ["allowed", "rejected"] {
                drop(m.decisions.get_or_create(&DecisionLabels {
                    policy: policy.clone(),
                    result,
                }));
            }
        }
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

    /// The hook for ingest, when `ratelimit.ingest` is configured.
    pub fn ingest_guard(&self) -> Option<IngestGuard> {
        self.inner.ingest.is_some().then(|| IngestGuard {
            limiter: self.clone(),
        })
    }

    /// Check `n` units of `key` under `policy`: backend, then fail mode, shadow mode, metrics.
    pub async fn check_policy(&self, policy: &Arc<Policy>, key: &str, n: u64) -> Outcome {
        let lease = self.inner.lease_seq.fetch_add(1, Ordering::Relaxed);
        let now = crate::now_ms();
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
        let d = m.check(policy, key, n, crate::now_ms(), lease);
        Some(self.finish(policy, Ok(d), lease))
    }

    fn finish(
        &self,
        policy: &Arc<Policy>,
        res: Result<Decisions, BackendError>,
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

    /// The version of the rules in use (the config listing's `version` and `ETag`).
    pub fn rules_version(&self) -> u64 {
        self.inner.version.load(Ordering::Relaxed)
    }

    /// Redis and hybrid backends: whether the rules in use are those in Redis at the last
    /// attempt to read them, and if not, why. None with the memory backend.
    pub fn rules_sync(&self) -> Option<(bool, Option<String>)> {
        let s = self.inner.shared.as_ref()?;
        Some((s.in_sync(), s.error()))
    }

    /// Every rule with where it came from, for `GET /api/ratelimit/config`: `file`
    /// (fieldlab.yaml) or `api` with the memory backend, `redis` (the shared set) with the
    /// others; plus the version and where the rules are kept.
    pub fn config_json(&self) -> Value {
        let (o, version) = {
            let o = self.inner.overrides.lock();
            (o.clone(), self.rules_version())
        };
        let base = &self.inner.base;
        let shared = self.inner.shared.is_some();
        let src = |in_api: bool| match (shared, in_api) {
            (true, _) => "redis",
            (false, true) => "api",
            (false, false) => "file",
        };
        let file = self.inner.file_rules();
        let keys: BTreeMap<&String, Value> = file
            .into_iter()
            .flat_map(|b| &b.keys)
            .chain(&o.keys)
            .map(|(k, v)| {
                (
                    k,
                    json!({"policy": v, "source": src(o.keys.contains_key(k))}),
                )
            })
            .collect();
        let patterns: BTreeMap<&String, Value> = file
            .into_iter()
            .flat_map(|b| &b.patterns)
            .chain(&o.patterns)
            .map(|(k, v)| {
                (
                    k,
                    json!({"policy": v, "source": src(o.patterns.contains_key(k))}),
                )
            })
            .collect();
        let store = match (&self.inner.shared, &self.inner.state_file) {
            (Some(s), _) => json!({
                "kind": "redis",
                "key": shared::RULES_KEY,
                "in_sync": s.in_sync(),
                "error": s.error(),
            }),
            (None, Some(f)) => json!({"kind": "file", "path": f}),
            (None, None) => json!({"kind": "memory"}),
        };
        json!({
            "backend": self.inner.backend.name(),
            "version": version,
            "store": store,
            "default": {"policy": o.default.as_ref().unwrap_or(&base.default), "source": src(o.default.is_some())},
            "keys": keys,
            "patterns": patterns,
            "api": base.api,
            "ingest": base.ingest,
            "precedence": "exact key > longest matching pattern > default",
        })
    }

    /// Make a change to the rules: `f` edits a copy (Ok(false): nothing to change). With
    /// `if_match`, only if that is still the current version. The new version, or None when
    /// `f` changed nothing.
    async fn change(
        &self,
        if_match: Option<u64>,
        f: impl Fn(&mut Overrides) -> Result<bool, ConfigChangeError>,
    ) -> Result<Option<u64>, ConfigChangeError> {
        match self.inner.backend.redis() {
            Some(r) => self.change_shared(r, if_match, f).await,
            None => self.change_local(if_match, f),
        }
    }

    fn change_local(
        &self,
        if_match: Option<u64>,
        f: impl Fn(&mut Overrides) -> Result<bool, ConfigChangeError>,
    ) -> Result<Option<u64>, ConfigChangeError> {
        let mut o = self.inner.overrides.lock();
        let current = self.rules_version();
        if if_match.is_some_and(|m| m != current) {
            return Err(ConfigChangeError::Conflict { current });
        }
        let mut next = o.clone();
        if !f(&mut next)? {
            return Ok(None);
        }
        let rules = self.build(&next)?;
        if let Some(file) = &self.inner.state_file {
            persist(file, &next).map_err(ConfigChangeError::Persist)?;
        }
        self.inner.put_in_use(&mut o, next, rules, current + 1);
        Ok(Some(current + 1))
    }

    /// The change made on the set in Redis and written back by compare-and-set (again on the
    /// newer set when another replica changed it meanwhile), then put in use here; the other
    /// replicas' watchers pick it up.
    async fn change_shared(
        &self,
        r: &RedisBackend,
        if_match: Option<u64>,
        f: impl Fn(&mut Overrides) -> Result<bool, ConfigChangeError>,
    ) -> Result<Option<u64>, ConfigChangeError> {
        let down = |e: BackendError| {
            ConfigChangeError::Unavailable(format!(
                "the rules are kept in redis and it does not answer ({e}); try again when it does"
            ))
        };
        let t = r.timeout();
        for _ in 0..16 {
            let mut c = r.connection().await.map_err(down)?;
            let (current, now) = match shared::read(&mut c, t).await.map_err(down)? {
                Some((v, doc)) => {
                    let now: Overrides = serde_json::from_str(&doc).map_err(|e| {
                        ConfigChangeError::Persist(format!(
                            "the rules in redis ({}) at version {v} are not valid: {e}",
                            shared::RULES_KEY
                        ))
                    })?;
                    (v, now)
                }
                // None there (Redis restarted empty): this change goes on the rules known here.
                None => (0, self.inner.overrides.lock().clone()),
            };
            if if_match.is_some_and(|m| m != current) {
                return Err(ConfigChangeError::Conflict { current });
            }
            let mut next = now;
            if !f(&mut next)? {
                return Ok(None);
            }
            let rules = self.build(&next)?;
            let doc = serde_json::to_string(&next).expect("rules serialise");
            let floor = self.rules_version();
            match shared::cas(&mut c, t, current, &doc, floor)
                .await
                .map_err(down)?
            {
                shared::Cas::Done(v) => {
                    let mut o = self.inner.overrides.lock();
                    // Unless the watcher already put a later change in use.
                    if self.rules_version() < v {
                        self.inner.put_in_use(&mut o, next, rules, v);
                    }
                    return Ok(Some(v));
                }
                shared::Cas::Stale => continue,
            }
        }
        Err(ConfigChangeError::Unavailable(
            "the rules kept changing under this change; try again".into(),
        ))
    }

    fn build(&self, o: &Overrides) -> Result<Rules, ConfigChangeError> {
        self.inner
            .build_rules(o)
            .map_err(|(field, message)| ConfigChangeError::Invalid { field, message })
    }

    /// Set the policy of an exact key. The new version.
    pub async fn set_key(
        &self,
        key: &str,
        spec: RatelimitPolicySpec,
        if_match: Option<u64>,
    ) -> Result<u64, ConfigChangeError> {
        validate(&spec)?;
        self.change(if_match, |o| {
            o.keys.insert(key.to_string(), spec.clone());
            Ok(true)
        })
        .await
        .map(|v| v.unwrap_or_default())
    }

    /// Set the policy of a pattern (`*` wildcard). The new version.
    pub async fn set_pattern(
        &self,
        pat: &str,
        spec: RatelimitPolicySpec,
        if_match: Option<u64>,
    ) -> Result<u64, ConfigChangeError> {
        self.change(if_match, |o| {
            o.patterns.insert(pat.to_string(), spec.clone());
            Ok(true)
        })
        .await
        .map(|v| v.unwrap_or_default())
    }

    /// Set the default policy. The new version.
    pub async fn set_default(
        &self,
        spec: RatelimitPolicySpec,
        if_match: Option<u64>,
    ) -> Result<u64, ConfigChangeError> {
        validate(&spec)?;
        self.change(if_match, |o| {
            o.default = Some(spec.clone());
            Ok(true)
        })
        .await
        .map(|v| v.unwrap_or_default())
    }

    /// Remove a key's policy set through the API (memory backend; any key with the shared
    /// rules). Ok(None): no such key; else the new version.
    pub async fn delete_key(
        &self,
        key: &str,
        if_match: Option<u64>,
    ) -> Result<Option<u64>, ConfigChangeError> {
        let in_file = self
            .inner
            .file_rules()
            .is_some_and(|b| b.keys.contains_key(key));
        self.change(if_match, |o| match o.keys.remove(key) {
            Some(_) => Ok(true),
            None if in_file => Err(ConfigChangeError::DefinedInFile(format!(
                "ratelimit.keys.{key}"
            ))),
            None => Ok(false),
        })
        .await
    }

    /// Remove a pattern's policy, as [`Limiter::delete_key`].
    pub async fn delete_pattern(
        &self,
        pat: &str,
        if_match: Option<u64>,
    ) -> Result<Option<u64>, ConfigChangeError> {
        let in_file = self
            .inner
            .file_rules()
            .is_some_and(|b| b.patterns.contains_key(pat));
        self.change(if_match, |o| match o.patterns.remove(pat) {
            Some(_) => Ok(true),
            None if in_file => Err(ConfigChangeError::DefinedInFile(format!(
                "ratelimit.patterns.{pat}"
            ))),
            None => Ok(false),
        })
        .await
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
        let mut rules = json!({"version": self.rules_version()});
        if let Some((in_sync, error)) = self.rules_sync() {
            rules["in_sync"] = json!(in_sync);
            rules["error"] = json!(error);
        }
        json!({"backend": backend, "rules": rules, "policies": policies})
    }
}

/// A policy name as the text of an sf-string, which allows printable ASCII only: other bytes
/// (keys may be any UTF-8) are percent-encoded; the serializer escapes `"` and `\`.
fn sf_string(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if (0x20..=0x7e).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Check a policy given through the API; the field is relative to the body (`limits[0].period`).
fn validate(spec: &RatelimitPolicySpec) -> Result<(), ConfigChangeError> {
    Policy::from_spec("check", spec)
        .map(|_| ())
        .map_err(|(field, message)| ConfigChangeError::Invalid { field, message })
}

/// What ingest calls per message: one unit of the `ratelimit.ingest` policy per device.
///
/// Contract: a message whose device is over its limit is quarantined with the reason
/// [`IngestGuard::REASON`] and counted — never silently dropped.
#[derive(Clone)]
pub struct IngestGuard {
    limiter: Limiter,
}

impl IngestGuard {
    pub const REASON: &'static str = "rate limited";

    /// The decision for one message of `device_id`.
    pub async fn check(&self, device_id: &str) -> Decision {
        match self.limiter.check_ingest(device_id).await {
            Some(o) => o.decision(),
            None => Decision {
                allowed: true,
                limit: 0,
                remaining: 0,
                retry_after_ms: 0,
                reset_ms: 0,
                delay_ms: 0,
            },
        }
    }

    /// Ok: store the message. Err(reason): quarantine it with that reason.
    pub async fn admit(&self, device_id: &str) -> Result<(), &'static str> {
        if self.check(device_id).await.allowed {
            Ok(())
        } else {
            Err(Self::REASON)
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, RatelimitLimitSpec};

    fn spec(alg: &str, limit: u64, period: &str) -> RatelimitPolicySpec {
        RatelimitPolicySpec {
            limits: vec![RatelimitLimitSpec::new(
                Algorithm::parse(alg).unwrap(),
                limit,
                period.parse().unwrap(),
            )],
            ..RatelimitPolicySpec::default()
        }
    }

    fn limiter(cfg: RatelimitConfig, dir: Option<&Path>) -> Limiter {
        Limiter::new(
            LimiterSettings {
                config: cfg,
                state_dir: dir.map(Path::to_path_buf),
            },
            RatelimitMetrics::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn shadow_mode_records_but_never_rejects() {
        let mut cfg = RatelimitConfig {
            default: spec("fixed_window", 2, "1h"),
            ..RatelimitConfig::default()
        };
        cfg.default.shadow = true;
        let l = limiter(cfg, None);
        let outs: Vec<Outcome> = futures_lite(&l, "k", 4).await;
        assert!(outs.iter().all(|o| o.allowed));
        assert_eq!(
            outs.iter().map(|o| o.would_reject).collect::<Vec<_>>(),
            [false, false, true, true]
        );
        let st = l.stats_json();
        assert_eq!(st["policies"]["default"]["shadow_rejected"], 2, "{st}");
        // Headers still tell the truth.
        let h = outs[3].headers();
        assert!(h
            .iter()
            .any(|(k, v)| *k == "ratelimit" && v.starts_with("\"default\";r=0;")));
    }

    /// Both headers parse as RFC 9651 Lists (with `sfv`) in the draft-10 shape: an sf-string
    /// policy name per limit with integer q/w (or qu) and r/t parameters.
    #[tokio::test]
    async fn ietf_headers_parse_as_structured_field_lists() {
        use sfv::{BareItem, List, ListEntry, Parser};
        let key = "user:\"ann\"\\é";
        let mut cfg = RatelimitConfig::default();
        let mut composite = spec("fixed_window", 2, "1m");
        composite
            .limits
            .push(spec("concurrency", 5, "30s").limits.remove(0));
        cfg.keys.insert(key.into(), composite);
        let l = limiter(cfg, None);
        let outs = futures_lite(&l, key, 3).await;
        assert!(outs[1].allowed && !outs[2].allowed);
        let h: BTreeMap<&str, String> = outs[2].headers().into_iter().collect();
        type Members = Vec<(String, BTreeMap<String, BareItem>)>;
        let parse = |name: &str| -> Members {
            let list: List = Parser::new(&h[name]).parse().unwrap_or_else(|e| {
                panic!("{name}: {:?} is not a structured field List: {e}", h[name])
            });
            list.into_iter()
                .map(|m| match m {
                    ListEntry::Item(i) => {
                        let BareItem::String(s) = i.bare_item else {
                            panic!("{name}: the policy name must be an sf-string")
                        };
                        let params = i
                            .params
                            .into_iter()
                            .map(|(k, v)| (k.as_str().to_string(), v))
                            .collect();
                        (s.as_str().to_string(), params)
                    }
                    ListEntry::InnerList(_) => panic!("{name}: inner lists are not allowed"),
                })
                .collect()
        };
        let int = |v: &BareItem| match v {
            BareItem::Integer(i) => i64::from(*i),
            other => panic!("{other:?} is not an sf-integer"),
        };
        let names = [
            "key:user:\"ann\"\\%C3%A9.0".to_string(),
            "key:user:\"ann\"\\%C3%A9.1".to_string(),
        ];
        let policy = parse("ratelimit-policy");
        assert_eq!(
            policy.iter().map(|p| &p.0).collect::<Vec<_>>(),
            [&names[0], &names[1]]
        );
        let (fw, conc) = (&policy[0].1, &policy[1].1);
        assert_eq!((int(&fw["q"]), int(&fw["w"])), (2, 60));
        assert_eq!(fw.len(), 2);
        assert_eq!(int(&conc["q"]), 5);
        assert_eq!(
            conc["qu"],
            BareItem::String(sfv::String::from_string("concurrent-requests".into()).unwrap())
        );
        assert!(!conc.contains_key("w"), "a concurrency limit has no window");

        let state = parse("ratelimit");
        assert_eq!(
            state.iter().map(|p| &p.0).collect::<Vec<_>>(),
            [&names[0], &names[1]]
        );
        let (fw, conc) = (&state[0].1, &state[1].1);
        assert_eq!(int(&fw["r"]), 0);
        assert_eq!(
            int(&conc["r"]),
            3,
            "two leases held of 5, and the third check was refused by the window"
        );
        let retry_after: i64 = h["retry-after"].parse().unwrap();
        let t = int(&fw["t"]);
        assert!((1..=60).contains(&t), "{t}");
        assert!(
            retry_after >= t,
            "Retry-After {retry_after} earlier than t={t}"
        );
        // Allowed responses carry the same shape.
        let ok: BTreeMap<&str, String> = outs[0].headers().into_iter().collect();
        assert!(!ok.contains_key("retry-after"));
        assert_eq!(int(&parse_one(&ok["ratelimit"])["r"]), 1);
    }

    fn parse_one(field: &str) -> BTreeMap<String, sfv::BareItem> {
        let list: sfv::List = sfv::Parser::new(field).parse().unwrap();
        match list.into_iter().next().unwrap() {
            sfv::ListEntry::Item(i) => i
                .params
                .into_iter()
                .map(|(k, v)| (k.as_str().to_string(), v))
                .collect(),
            sfv::ListEntry::InnerList(_) => panic!("inner list"),
        }
    }

    async fn futures_lite(l: &Limiter, key: &str, n: usize) -> Vec<Outcome> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(l.check(key, 1).await);
        }
        v
    }

    #[tokio::test]
    async fn ingest_guard_quarantines_over_limit_devices() {
        let cfg = RatelimitConfig {
            ingest: Some(spec("token_bucket", 3, "1h")),
            ..RatelimitConfig::default()
        };
        let l = limiter(cfg, None);
        let g = l.ingest_guard().expect("configured");
        for _ in 0..3 {
            assert_eq!(g.admit("dev1").await, Ok(()));
        }
        assert_eq!(g.admit("dev1").await, Err("rate limited"));
        assert_eq!(g.admit("dev2").await, Ok(()), "per device");
        let d = g.check("dev1").await;
        assert!(!d.allowed && d.retry_after_ms > 0 && d.retry_after_ms < 3_600_000 / 3 + 1);
        assert!(limiter(RatelimitConfig::default(), None)
            .ingest_guard()
            .is_none());
    }

    #[tokio::test]
    async fn api_changes_persist_and_file_keys_cannot_be_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RatelimitConfig::default();
        cfg.keys.insert("from-file".into(), spec("gcra", 5, "1s"));
        let l = limiter(cfg.clone(), Some(dir.path()));
        assert_eq!(l.rules_version(), 0);
        let v = l
            .set_pattern("dev:*", spec("sliding_log", 2, "1m"), None)
            .await
            .unwrap();
        assert_eq!((v, l.rules_version()), (1, 1));
        assert!(matches!(
            l.delete_key("from-file", None).await,
            Err(ConfigChangeError::DefinedInFile(_))
        ));
        assert!(matches!(l.delete_key("nope", None).await, Ok(None)));
        // If-Match: only on the current version.
        assert!(matches!(
            l.set_key("y", spec("gcra", 1, "1s"), Some(0)).await,
            Err(ConfigChangeError::Conflict { current: 1 })
        ));
        assert_eq!(
            l.set_key("y", spec("gcra", 1, "1s"), Some(1))
                .await
                .unwrap(),
            2
        );
        assert_eq!(l.config_json()["version"], 2);
        let e = l
            .set_key("x", spec("gcra", 0, "1s"), None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConfigChangeError::Invalid { ref field, .. } if field == "limits[0].limit"),
            "{e:?}"
        );
        drop(l);
        let again = limiter(cfg, Some(dir.path()));
        assert_eq!(again.rules().resolve("dev:7").name, "pattern:dev:*");
        assert_eq!(again.rules().resolve("from-file").name, "key:from-file");
        let outs = futures_lite(&again, "dev:7", 3).await;
        assert_eq!(outs.iter().filter(|o| o.allowed).count(), 2);
    }
}
