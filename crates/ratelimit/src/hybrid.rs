//! Hybrid backend: Redis, plus a local cache of keys known to be over their limit.
//!
//! Why: under attack most checks are for keys that are already rejected. After Redis rejects
//! `n` units for a key with `retry_after = R`, no instance can make that request pass before
//! `R` elapses (only time refills a rate limit), so this instance answers requests of at least
//! `n` units for that key locally until then — no round trip, same answer. Policies with a
//! concurrency limit are not cached (a release can free capacity early), and a change of the
//! rules empties the cache (a policy may have been given a higher limit). The cache is an LRU
//! bounded by `max_keys`.

use crate::redis::RedisBackend;
use crate::{BackendError, Decisions, Policy, NEVER};
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};

type Cached = (i64, u64, Decisions, i64);

pub struct HybridBackend {
    pub redis: RedisBackend,
    /// (policy, key) -> (reject until ms, units rejected, the decisions then, when)
    over: Mutex<LruCache<(String, String), Cached>>,
    local_hits: AtomicU64,
}

impl HybridBackend {
    pub fn new(redis: RedisBackend, max_keys: usize) -> HybridBackend {
        HybridBackend {
            redis,
            over: Mutex::new(LruCache::new(NonZeroUsize::new(max_keys.max(1)).unwrap())),
            local_hits: AtomicU64::new(0),
        }
    }

    /// Forget every remembered rejection (the rules changed).
    pub fn forget(&self) {
        self.over.lock().clear();
    }

    /// Checks answered from the local cache.
    pub fn local_hits(&self) -> u64 {
        self.local_hits.load(Ordering::Relaxed)
    }

    /// `now_ms` is this instance's clock, used only for the cache's expiry.
    pub async fn check(
        &self,
        policy: &Policy,
        key: &str,
        n: u64,
        lease: u64,
        now_ms: i64,
    ) -> Result<Decisions, BackendError> {
        let id = (policy.name.clone(), key.to_string());
        if let Some((until, units, ds, at)) = self.over.lock().get(&id).cloned() {
            if now_ms < until && n >= units {
                self.local_hits.fetch_add(1, Ordering::Relaxed);
                let left = (until - now_ms) as u64;
                return Ok(ds
                    .into_iter()
                    .map(|mut d| {
                        if !d.allowed && d.retry_after_ms != NEVER {
                            d.retry_after_ms = left;
                        }
                        d.reset_ms = d.reset_ms.saturating_sub((now_ms - at).max(0) as u64);
                        d
                    })
                    .collect());
            }
        }
        let ds = self.redis.check(policy, key, n, lease, None).await?;
        if !policy.has_concurrency() && ds.iter().any(|d| !d.allowed) {
            // The earliest a request of `n` could pass is the largest retry-after among the
            // limits that rejected it.
            let wait = ds
                .iter()
                .filter(|d| !d.allowed)
                .map(|d| d.retry_after_ms)
                .max()
                .unwrap_or(0);
            if wait > 0 && wait != NEVER {
                self.over
                    .lock()
                    .put(id, (now_ms + wait as i64, n, ds.clone(), now_ms));
            }
        }
        Ok(ds)
    }
}
