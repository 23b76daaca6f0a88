//! In-process backend: per-key state in sharded maps with bounded size.
//!
//! Why sharded: a check holds one shard's mutex for a few hundred nanoseconds, so threads
//! checking different keys rarely meet (the `governor` crate, our benchmark peer, uses a
//! sharded map the same way). Memory is bounded by `max_keys`: when a shard is full, the least
//! recently used half of its keys is forgotten in one sweep (amortised O(1) per new key, and no
//! linked list to relink on every hit, which is what a strict LRU costs) — forgetting a key is
//! the same as it never having been seen, so keep `max_keys` above the number of keys active
//! within one window. Evictions are counted.
//!
//! The hot path allocates nothing for a known key: the state id is built in a per-thread
//! buffer, looked up by `&str` in a map whose entries hold the key's states inline (one limit;
//! composites spill to the heap).

use crate::algo::{check_all, State};
use crate::{Decisions, Policy};
use parking_lot::Mutex;
use smallvec::SmallVec;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

struct Slot {
    /// Fingerprint of the policy's limits: a changed policy starts its keys afresh.
    fp: u64,
    /// The shard's clock at the last use (for eviction).
    used: u64,
    states: SmallVec<[State; 1]>,
}

struct ShardMap {
    map: HashMap<Box<str>, Slot, foldhash::fast::RandomState>,
    clock: u64,
    cap: usize,
}

impl ShardMap {
    /// Make room for one more key: forget the least recently used half. Returns how many.
    fn make_room(&mut self) -> u64 {
        if self.map.len() < self.cap {
            return 0;
        }
        let mut ages: Vec<u64> = self.map.values().map(|s| s.used).collect();
        let mid = ages.len() / 2;
        let (_, cut, _) = ages.select_nth_unstable(mid);
        let cut = *cut;
        let before = self.map.len();
        self.map.retain(|_, s| s.used > cut);
        (before - self.map.len()) as u64
    }
}

type Shard = Mutex<ShardMap>;

pub struct MemoryBackend {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::RandomState,
    evictions: AtomicU64,
}

thread_local! {
    /// Where the state id of the key being checked is built (no allocation per check).
    static ID: RefCell<String> = RefCell::new(String::with_capacity(128));
}

impl MemoryBackend {
    /// At most `max_keys` keys in total (per policy and key), in `shards` shards (rounded up to
    /// a power of two).
    pub fn new(max_keys: usize, shards: usize) -> MemoryBackend {
        let n = shards.max(1).next_power_of_two();
        let per = max_keys.div_ceil(n).max(1);
        MemoryBackend {
            shards: (0..n)
                .map(|_| {
                    Mutex::new(ShardMap {
                        map: HashMap::default(),
                        clock: 0,
                        cap: per,
                    })
                })
                .collect(),
            hasher: Default::default(),
            evictions: AtomicU64::new(0),
        }
    }

    /// Shards for this machine: 32 per core and at least 64, so two threads rarely want the
    /// same shard (a thread preempted while holding a shard stalls only that shard's keys).
    pub fn with_capacity(max_keys: usize) -> MemoryBackend {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        MemoryBackend::new(max_keys, (cores * 32).max(64))
    }

    fn shard(&self, id: &str) -> &Shard {
        // High bits: the map inside the shard uses the low bits of its own hash.
        let h = self.hasher.hash_one(id);
        &self.shards[((h >> 40) as usize) & (self.shards.len() - 1)]
    }

    /// The state id of a key under a policy: the policy's name and a fingerprint of its limits,
    /// so changing a policy starts its keys afresh.
    pub fn state_id(policy: &Policy, key: &str) -> String {
        format!("{}\u{0}{}", policy.name, key)
    }

    fn fingerprint(policy: &Policy) -> u64 {
        foldhash::fast::FixedState::with_seed(0x5eed).hash_one(&policy.limits)
    }

    /// Run `f` with the state id of `key` under `policy` (see [`MemoryBackend::state_id`]).
    fn with_id<R>(policy: &Policy, key: &str, f: impl FnOnce(&str) -> R) -> R {
        ID.with(|cell| match cell.try_borrow_mut() {
            Ok(mut id) => {
                id.clear();
                id.push_str(&policy.name);
                id.push('\u{0}');
                id.push_str(key);
                f(&id)
            }
            // Re-entered from `f` (not done today): fall back to a fresh string.
            Err(_) => f(&Self::state_id(policy, key)),
        })
    }

    /// Decide `n` units for `key` under `policy` at `now_ms`.
    pub fn check(&self, policy: &Policy, key: &str, n: u64, now_ms: i64, lease: u64) -> Decisions {
        let fp = Self::fingerprint(policy);
        Self::with_id(policy, key, |id| {
            let mut shard = self.shard(id).lock();
            shard.clock += 1;
            let clock = shard.clock;
            if let Some(slot) = shard.map.get_mut(id) {
                slot.used = clock;
                if slot.fp != fp {
                    slot.fp = fp;
                    slot.states = policy.limits.iter().map(|l| l.state(now_ms)).collect();
                }
                return check_all(&policy.limits, &mut slot.states, now_ms, n, lease);
            }
            let evicted = shard.make_room();
            if evicted > 0 {
                self.evictions.fetch_add(evicted, Ordering::Relaxed);
            }
            let mut states: SmallVec<[State; 1]> =
                policy.limits.iter().map(|l| l.state(now_ms)).collect();
            let d = check_all(&policy.limits, &mut states, now_ms, n, lease);
            shard.map.insert(
                Box::from(id),
                Slot {
                    fp,
                    used: clock,
                    states,
                },
            );
            d
        })
    }

    /// Release a concurrency lease. True if the lease was held.
    pub fn release(&self, policy: &Policy, key: &str, lease: u64) -> bool {
        Self::with_id(policy, key, |id| {
            self.shard(id).lock().map.get_mut(id).is_some_and(|slot| {
                slot.states
                    .iter_mut()
                    .fold(false, |a, s| s.release(lease) | a)
            })
        })
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
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
    fn a_key_slot_stays_small() {
        // The variable-size states are boxed; a slot is about one cache line.
        assert!(std::mem::size_of::<State>() <= 32);
        assert!(std::mem::size_of::<(Box<str>, Slot)>() <= 80);
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
