//! In-process backend: per-key state in sharded LRU maps.
//!
//! Why sharded: a check holds one shard's mutex for a few hundred nanoseconds, so threads
//! checking different keys rarely meet (the `governor` crate, our benchmark peer, uses a
//! sharded map the same way). Why LRU: memory is bounded by `max_keys`; the least recently used
//! key is forgotten first — forgetting a key is the same as it never having been seen, so keep
//! `max_keys` above the number of keys active within one window. Evictions are counted.

use crate::algo::{check_all, State};
use crate::{Decision, Policy};
use lru::LruCache;
use parking_lot::Mutex;
use std::hash::{BuildHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};

type Slot = (u64, Vec<State>);
type Shard = Mutex<LruCache<Box<str>, Slot>>;

pub struct MemoryBackend {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    evictions: AtomicU64,
}

impl MemoryBackend {
    /// At most `max_keys` keys in total (per policy and key), in `shards` shards (rounded up to
    /// a power of two).
    pub fn new(max_keys: usize, shards: usize) -> MemoryBackend {
        let n = shards.max(1).next_power_of_two();
        let per = NonZeroUsize::new(max_keys.div_ceil(n).max(1)).unwrap();
        MemoryBackend {
            shards: (0..n).map(|_| Mutex::new(LruCache::new(per))).collect(),
            hasher: Default::default(),
            evictions: AtomicU64::new(0),
        }
    }

    /// Shards for this machine: 4 per core, so contention stays low.
    pub fn with_capacity(max_keys: usize) -> MemoryBackend {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        MemoryBackend::new(max_keys, cores * 4)
    }

    fn shard(&self, id: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(id) as usize) & (self.shards.len() - 1)]
    }

    /// The state id of a key under a policy: the policy's name and a fingerprint of its limits,
    /// so changing a policy starts its keys afresh.
    pub fn state_id(policy: &Policy, key: &str) -> String {
        format!("{}\u{0}{}", policy.name, key)
    }

    fn fingerprint(policy: &Policy) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        policy.limits.hash(&mut h);
        h.finish()
    }

    /// Decide `n` units for `key` under `policy` at `now_ms`.
    pub fn check(
        &self,
        policy: &Policy,
        key: &str,
        n: u64,
        now_ms: i64,
        lease: u64,
    ) -> Vec<Decision> {
        let id = Self::state_id(policy, key);
        let fp = Self::fingerprint(policy);
        let mut shard = self.shard(&id).lock();
        if let Some((f, states)) = shard.get_mut(id.as_str()) {
            if *f == fp {
                return check_all(&policy.limits, states, now_ms, n, lease);
            }
        }
        let mut states: Vec<State> = policy.limits.iter().map(|l| l.state(now_ms)).collect();
        let d = check_all(&policy.limits, &mut states, now_ms, n, lease);
        if shard
            .push(id.into_boxed_str(), (fp, states))
            .is_some_and(|(k, _)| {
                // `push` returns the replaced entry for an existing key too; only a different key
                // is an eviction.
                k.as_ref() != Self::state_id(policy, key)
            })
        {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        d
    }

    /// Release a concurrency lease. True if the lease was held.
    pub fn release(&self, policy: &Policy, key: &str, lease: u64) -> bool {
        let id = Self::state_id(policy, key);
        let mut shard = self.shard(&id).lock();
        shard
            .get_mut(id.as_str())
            .is_some_and(|(_, states)| states.iter_mut().fold(false, |a, s| s.release(lease) | a))
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, Limit};

    #[test]
    fn keys_are_independent_and_memory_is_bounded() {
        let m = MemoryBackend::new(64, 4);
        let p = Policy::single("p", Limit::new(Algorithm::FixedWindow, 2, 1000));
        for k in 0..1000 {
            let key = format!("k{k}");
            assert!(m.check(&p, &key, 1, 0, 0)[0].allowed);
            assert!(m.check(&p, &key, 1, 0, 0)[0].allowed);
            assert!(!m.check(&p, &key, 1, 0, 0)[0].allowed);
        }
        assert!(m.len() <= 64, "{} keys held", m.len());
        assert!(m.evictions() >= 1000 - 64);
    }

    #[test]
    fn a_changed_policy_starts_afresh() {
        let m = MemoryBackend::new(64, 1);
        let p = Policy::single("p", Limit::new(Algorithm::FixedWindow, 1, 1000));
        assert!(m.check(&p, "k", 1, 0, 0)[0].allowed);
        assert!(!m.check(&p, "k", 1, 0, 0)[0].allowed);
        let p2 = Policy::single("p", Limit::new(Algorithm::FixedWindow, 5, 1000));
        assert!(m.check(&p2, "k", 1, 0, 0)[0].allowed);
        assert_eq!(m.evictions(), 0);
    }
}
