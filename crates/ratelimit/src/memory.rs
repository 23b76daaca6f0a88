//! In-process backend: per-key state in sharded hash tables with bounded size.
//!
//! Why sharded: a check holds one shard's mutex for a few tens of nanoseconds, so threads
//! checking different keys rarely meet (the `governor` crate, our benchmark peer, shards its
//! map the same way). Each shard sits on its own cache lines, so two threads on two shards never
//! bounce a line. Memory is bounded by `max_keys`: when a shard is full, the least recently used
//! half of its keys is forgotten in one sweep (amortised O(1) per new key, and no linked list
//! to relink on every hit, which is what a strict LRU costs) — forgetting a key is the same as
//! it never having been seen, so keep `max_keys` above the number of keys active within one
//! window. Evictions are counted.
//!
//! The hot path allocates nothing and follows no pointer for a known key: the state id (policy
//! name + key) is hashed in place, and an entry holds its id inline when it is at most
//! [`INLINE`] bytes, next to the key's states (one limit inline; composites spill to the heap),
//! so a lookup touches the table's control bytes and the entry, nothing else.

use crate::algo::{check_all, Limit, State};
use crate::{Decisions, Policy};
use hashbrown::HashTable;
use parking_lot::Mutex;
use smallvec::SmallVec;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of a state id (policy name + key) kept inline in its entry; longer ids go to the heap.
pub const INLINE: usize = 29;

/// A state id: the policy's name, then the key (`split` = the name's length, so
/// ("ab", "c") and ("a", "bc") are different ids).
enum Id {
    Inline {
        len: u8,
        split: u8,
        bytes: [u8; INLINE],
    },
    Heap {
        split: usize,
        bytes: Box<[u8]>,
    },
}

impl Id {
    fn new(name: &[u8], key: &[u8]) -> Id {
        let len = name.len() + key.len();
        if len <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..name.len()].copy_from_slice(name);
            bytes[name.len()..len].copy_from_slice(key);
            Id::Inline {
                len: len as u8,
                split: name.len() as u8,
                bytes,
            }
        } else {
            Id::Heap {
                split: name.len(),
                bytes: [name, key].concat().into_boxed_slice(),
            }
        }
    }

    /// The id when it fits inline (no allocation), else None.
    #[inline]
    fn inline(name: &[u8], key: &[u8]) -> Option<Id> {
        (name.len() + key.len() <= INLINE).then(|| Id::new(name, key))
    }

    /// Same id as an inline probe: one fixed-size compare of the zero-padded bytes (the
    /// compiler inlines it; two slice compares were two `memcmp` calls, 7% of a check).
    #[inline]
    fn same_inline(&self, probe: &Id) -> bool {
        match (self, probe) {
            (
                Id::Inline { len, split, bytes },
                Id::Inline {
                    len: l2,
                    split: s2,
                    bytes: b2,
                },
            ) => len == l2 && split == s2 && bytes == b2,
            _ => false,
        }
    }

    #[inline]
    fn parts(&self) -> (&[u8], &[u8]) {
        match self {
            Id::Inline { len, split, bytes } => bytes[..*len as usize].split_at(*split as usize),
            Id::Heap { split, bytes } => bytes.split_at(*split),
        }
    }

    #[inline]
    fn is(&self, name: &[u8], key: &[u8]) -> bool {
        let (n, k) = self.parts();
        n == name && k == key
    }
}

struct Entry {
    /// Fingerprint of the policy's limits: a changed policy starts its keys afresh.
    fp: u64,
    /// The shard's clock at the last use (for eviction).
    used: u64,
    id: Id,
    states: SmallVec<[State; 1]>,
}

struct ShardMap {
    table: HashTable<Entry>,
    clock: u64,
    cap: usize,
}

impl ShardMap {
    /// Make room for one more key: forget the least recently used half. Returns how many.
    fn make_room(&mut self) -> u64 {
        if self.table.len() < self.cap {
            return 0;
        }
        let mut ages: Vec<u64> = self.table.iter().map(|e| e.used).collect();
        let mid = ages.len() / 2;
        let (_, cut, _) = ages.select_nth_unstable(mid);
        let cut = *cut;
        let before = self.table.len();
        self.table.retain(|e| e.used > cut);
        (before - self.table.len()) as u64
    }
}

/// One shard, alone on its cache lines (128 bytes: adjacent-line prefetch pairs lines).
#[repr(align(128))]
struct Shard(Mutex<ShardMap>);

pub struct MemoryBackend {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::RandomState,
    evictions: AtomicU64,
}

/// A cheap fingerprint of a policy's limits (two folded multiplies per limit): it only has to
/// tell a changed policy from the one a key's state was made under.
fn fingerprint(limits: &[Limit]) -> u64 {
    #[inline]
    fn mix(a: u64, b: u64) -> u64 {
        let p = (a as u128) * (b as u128);
        (p as u64) ^ ((p >> 64) as u64)
    }
    let mut h = 0x243f_6a88_85a3_08d3 ^ limits.len() as u64;
    for l in limits {
        h = mix(h ^ l.limit, 0x9e37_79b9_7f4a_7c15 ^ l.period_ms);
        h = mix(
            h ^ l.burst ^ ((l.algorithm.code() as u64) << 56),
            0xbf58_476d_1ce4_e5b9 ^ l.max_delay_ms,
        );
    }
    h
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
                    Shard(Mutex::new(ShardMap {
                        table: HashTable::new(),
                        clock: 0,
                        cap: per,
                    }))
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

    #[inline]
    fn hash(hasher: &foldhash::fast::RandomState, name: &[u8], key: &[u8]) -> u64 {
        let mut h = hasher.build_hasher();
        h.write(name);
        h.write_u8(0xff);
        h.write(key);
        h.finish()
    }

    #[inline]
    fn shard(&self, h: u64) -> &Mutex<ShardMap> {
        // Bits 40..: the table inside the shard uses the low bits (bucket) and the top 7 (tag).
        &self.shards[((h >> 40) as usize) & (self.shards.len() - 1)].0
    }

    /// Decide `n` units for `key` under `policy` at `now_ms`.
    pub fn check(&self, policy: &Policy, key: &str, n: u64, now_ms: i64, lease: u64) -> Decisions {
        let fp = fingerprint(&policy.limits);
        let (name, key) = (policy.name.as_bytes(), key.as_bytes());
        let h = Self::hash(&self.hasher, name, key);
        let mut guard = self.shard(h).lock();
        let shard = &mut *guard;
        shard.clock += 1;
        let clock = shard.clock;
        let probe = Id::inline(name, key);
        let found = match &probe {
            Some(p) => shard.table.find_mut(h, |e| e.id.same_inline(p)),
            None => shard.table.find_mut(h, |e| e.id.is(name, key)),
        };
        if let Some(e) = found {
            e.used = clock;
            if e.fp != fp {
                e.fp = fp;
                e.states = policy.limits.iter().map(|l| l.state(now_ms)).collect();
            }
            return check_all(&policy.limits, &mut e.states, now_ms, n, lease);
        }
        let evicted = shard.make_room();
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        let mut states: SmallVec<[State; 1]> =
            policy.limits.iter().map(|l| l.state(now_ms)).collect();
        let d = check_all(&policy.limits, &mut states, now_ms, n, lease);
        let hasher = &self.hasher;
        shard.table.insert_unique(
            h,
            Entry {
                fp,
                used: clock,
                id: probe.unwrap_or_else(|| Id::new(name, key)),
                states,
            },
            |e| {
                let (n, k) = e.id.parts();
                Self::hash(hasher, n, k)
            },
        );
        d
    }

    /// Release a concurrency lease. True if the lease was held.
    pub fn release(&self, policy: &Policy, key: &str, lease: u64) -> bool {
        let (name, key) = (policy.name.as_bytes(), key.as_bytes());
        let h = Self::hash(&self.hasher, name, key);
        self.shard(h)
            .lock()
            .table
            .find_mut(h, |e| e.id.is(name, key))
            .is_some_and(|e| e.states.iter_mut().fold(false, |a, s| s.release(lease) | a))
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().table.len()).sum()
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
    fn an_entry_stays_small() {
        // The variable-size states are boxed; an entry with its id inline is 1.5 lines.
        assert!(std::mem::size_of::<State>() <= 32);
        assert!(std::mem::size_of::<Id>() <= 32);
        assert!(std::mem::size_of::<Entry>() <= 96);
        assert_eq!(std::mem::align_of::<Shard>(), 128);
    }

    #[test]
    fn ids_split_between_name_and_key() {
        let m = MemoryBackend::new(64, 1);
        let ab = Policy::single("ab", Limit::new(Algorithm::FixedWindow, 1, 1000));
        let a = Policy::single("a", Limit::new(Algorithm::FixedWindow, 1, 1000));
        assert!(m.check(&ab, "c", 1, 0, 0)[0].allowed);
        assert!(
            m.check(&a, "bc", 1, 0, 0)[0].allowed,
            "(a, bc) is not (ab, c)"
        );
        assert!(!m.check(&ab, "c", 1, 0, 0)[0].allowed);
        // Long ids live on the heap and behave the same.
        let long = "k".repeat(200);
        assert!(m.check(&a, &long, 1, 0, 0)[0].allowed);
        assert!(!m.check(&a, &long, 1, 0, 0)[0].allowed);
        assert!(m.check(&a, &long[1..], 1, 0, 0)[0].allowed);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn concurrency_leases_are_released_by_key() {
        let m = MemoryBackend::new(64, 2);
        let p = Policy::single("c", Limit::new(Algorithm::Concurrency, 1, 60_000));
        let long = "x".repeat(64);
        for key in ["short", long.as_str()] {
            assert!(m.check(&p, key, 1, 0, 7)[0].allowed);
            assert!(!m.check(&p, key, 1, 0, 8)[0].allowed);
            assert!(m.release(&p, key, 7));
            assert!(!m.release(&p, key, 7));
            assert!(m.check(&p, key, 1, 0, 8)[0].allowed);
        }
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
