//! In-process backend: per-key state in sharded hash tables with bounded size.
//!
//! Why sharded, and why read locks: a check of a known key takes its shard's lock for reading
//! only, so any number of threads look up keys at once (the `governor` crate, our benchmark
//! peer, shards its map the same way). The key's state then changes without a lock where it
//! can: a policy of one GCRA limit (the common case) keeps its theoretical arrival time in one
//! atomic word, decided with compare-and-swap, so two threads checking the same key never
//! wait for each other. Every other policy keeps its states behind the entry's own small lock,
//! so only checks of the same key meet. The shard's write lock is taken only to insert a key,
//! to reset one whose policy changed, and to evict.
//!
//! Memory is bounded by `max_keys`: when a shard is full, the least recently used half of its
//! keys is forgotten in one sweep (amortised O(1) per new key, and no linked list to relink on
//! every hit, which is what a strict LRU costs) — forgetting a key is the same as it never
//! having been seen, so keep `max_keys` above the number of keys active within one window.
//! Recency is the millisecond of the last check, written only when it changes. Evictions are
//! counted.
//!
//! The hot path allocates nothing and follows no pointer for a known key: the state id (policy
//! name + key) is hashed in place, and an entry holds its id inline when it is at most
//! [`INLINE`] bytes, next to the key's state (one limit inline; composites spill to the heap),
//! so a lookup touches the table's control bytes and the entry, nothing else.

use crate::algo::{check_all, Algorithm, Gcra, Limit, State};
use crate::{Decisions, Policy};
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

/// Bytes of a state id (policy name + key) kept inline in its entry; longer ids go to the heap.
pub const INLINE: usize = 22;

/// A state id: the policy's name, then the key (`split` = the name's length, so
/// ("ab", "c") and ("a", "bc") are different ids).
enum Id {
    /// Three words: byte 0 the total length, byte 1 the name's, then the name and the key,
    /// zero-padded. Compared as three integers.
    Inline([u64; 3]),
    Heap {
        split: usize,
        bytes: Box<[u8]>,
    },
}

impl Id {
    fn new(name: &[u8], key: &[u8]) -> Id {
        match Id::inline(name, key) {
            Some(w) => Id::Inline(w),
            None => Id::Heap {
                split: name.len(),
                bytes: [name, key].concat().into_boxed_slice(),
            },
        }
    }

    /// The inline words of the id when it fits inline (no allocation), else None.
    #[inline]
    fn inline(name: &[u8], key: &[u8]) -> Option<[u64; 3]> {
        let len = name.len() + key.len();
        if len > INLINE {
            return None;
        }
        let mut b = [0u8; 24];
        b[0] = len as u8;
        b[1] = name.len() as u8;
        b[2..2 + name.len()].copy_from_slice(name);
        b[2 + name.len()..2 + len].copy_from_slice(key);
        Some(std::array::from_fn(|i| {
            u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        }))
    }

    /// Same id as an inline probe: three integer compares.
    #[inline]
    fn same_inline(&self, probe: &[u64; 3]) -> bool {
        matches!(self, Id::Inline(w) if w == probe)
    }

    /// Call `f` with the name and the key.
    fn with_parts<R>(&self, f: impl FnOnce(&[u8], &[u8]) -> R) -> R {
        match self {
            Id::Inline(w) => {
                let mut b = [0u8; 24];
                for (chunk, word) in b.chunks_exact_mut(8).zip(w) {
                    chunk.copy_from_slice(&word.to_le_bytes());
                }
                let (len, split) = (b[0] as usize, b[1] as usize);
                let (n, k) = b[2..2 + len].split_at(split);
                f(n, k)
            }
            Id::Heap { split, bytes } => {
                let (n, k) = bytes.split_at(*split);
                f(n, k)
            }
        }
    }

    #[inline]
    fn is(&self, name: &[u8], key: &[u8]) -> bool {
        self.with_parts(|n, k| n == name && k == key)
    }
}

/// One key: one cache line (aligned), the state inline for a GCRA policy.
#[repr(align(64))]
struct Entry {
    /// Fingerprint of the policy's limits: a changed policy starts its keys afresh.
    fp: u32,
    /// The second (since the epoch) of the last check, for eviction.
    used: AtomicU32,
    id: Id,
    slot: Slot,
}

/// Where a key's state lives.
enum Slot {
    /// A policy of exactly one GCRA limit: the theoretical arrival time (µs), changed by
    /// compare-and-swap, and the limit's emission interval (µs, fixed by the fingerprint).
    Gcra { tat: AtomicI64, interval_us: i64 },
    /// Any other policy: its states, behind this key's own lock (boxed, so that an entry
    /// stays one cache line).
    Locked(Box<Mutex<SmallVec<[State; 1]>>>),
}

impl Slot {
    fn new(limits: &[Limit], now_ms: i64) -> Slot {
        match limits {
            [l] if l.algorithm == Algorithm::Gcra => match l.state(now_ms) {
                State::Gcra(g) => Slot::Gcra {
                    tat: AtomicI64::new(g.tat_us),
                    interval_us: l.interval_us(),
                },
                _ => unreachable!("a GCRA limit starts a GCRA state"),
            },
            _ => Slot::Locked(Box::new(Mutex::new(
                limits.iter().map(|l| l.state(now_ms)).collect(),
            ))),
        }
    }

    #[inline]
    fn check(&self, limits: &[Limit], now_ms: i64, n: u64, lease: u64) -> Decisions {
        match self {
            Slot::Gcra { tat, interval_us } => {
                // The same arithmetic as the locked path (`Gcra::check`), on a copy; written
                // back only if no other thread changed the state meanwhile, else decided again.
                let mut cur = tat.load(Ordering::Acquire);
                loop {
                    let mut g = Gcra { tat_us: cur };
                    let d = g.check_with_interval(&limits[0], *interval_us, now_ms, n);
                    if g.tat_us == cur {
                        return smallvec::smallvec![d];
                    }
                    match tat.compare_exchange_weak(
                        cur,
                        g.tat_us,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return smallvec::smallvec![d],
                        Err(now_there) => cur = now_there,
                    }
                }
            }
            Slot::Locked(states) => check_all(limits, &mut states.lock(), now_ms, n, lease),
        }
    }

    fn release(&self, lease: u64) -> bool {
        match self {
            Slot::Gcra { .. } => false,
            Slot::Locked(states) => states
                .lock()
                .iter_mut()
                .fold(false, |a, s| s.release(lease) | a),
        }
    }
}

impl Entry {
    #[inline]
    fn touch(&self, now_ms: i64) {
        // Written only when the second changes: a hot key's line is not written for recency.
        let s = secs(now_ms);
        if self.used.load(Ordering::Relaxed) != s {
            self.used.store(s, Ordering::Relaxed);
        }
    }
}

/// Seconds since the epoch, as recency (u32: until 2106; before 1970 counts as 0).
#[inline]
fn secs(now_ms: i64) -> u32 {
    now_ms.div_euclid(1000).clamp(0, u32::MAX as i64) as u32
}

struct ShardMap {
    table: HashTable<Entry>,
    cap: usize,
}

impl ShardMap {
    /// Make room for one more key: forget the least recently used half. Returns how many.
    fn make_room(&mut self) -> u64 {
        if self.table.len() < self.cap {
            return 0;
        }
        let mut ages: Vec<u32> = self
            .table
            .iter()
            .map(|e| e.used.load(Ordering::Relaxed))
            .collect();
        let mid = ages.len() / 2;
        let (_, cut, _) = ages.select_nth_unstable(mid);
        let cut = *cut;
        // Everything older than the median goes, and as many as needed of those used in the
        // median's second (recency has ties) to forget mid + 1 keys.
        let mut tied = mid + 1 - ages.iter().filter(|a| **a < cut).count();
        let before = self.table.len();
        self.table.retain(|e| {
            let used = e.used.load(Ordering::Relaxed);
            if used < cut {
                return false;
            }
            if used == cut && tied > 0 {
                tied -= 1;
                return false;
            }
            true
        });
        (before - self.table.len()) as u64
    }
}

/// One shard, alone on its cache lines (128 bytes: adjacent-line prefetch pairs lines).
#[repr(align(128))]
struct Shard(RwLock<ShardMap>);

pub struct MemoryBackend {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::RandomState,
    evictions: AtomicU64,
}

/// A cheap fingerprint of a policy's limits (two folded multiplies per limit): it only has to
/// tell a changed policy from the one a key's state was made under.
fn fingerprint(limits: &[Limit]) -> u32 {
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
    (h ^ (h >> 32)) as u32
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
                    Shard(RwLock::new(ShardMap {
                        table: HashTable::new(),
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
    fn shard(&self, h: u64) -> &RwLock<ShardMap> {
        // Bits 40..: the table inside the shard uses the low bits (bucket) and the top 7 (tag).
        &self.shards[((h >> 40) as usize) & (self.shards.len() - 1)].0
    }

    /// Decide `n` units for `key` under `policy` at `now_ms`.
    pub fn check(&self, policy: &Policy, key: &str, n: u64, now_ms: i64, lease: u64) -> Decisions {
        let fp = fingerprint(&policy.limits);
        let (name, key) = (policy.name.as_bytes(), key.as_bytes());
        let h = Self::hash(&self.hasher, name, key);
        let shard = self.shard(h);
        let probe = Id::inline(name, key);
        let matches = |e: &Entry| match &probe {
            Some(p) => e.id.same_inline(p),
            None => e.id.is(name, key),
        };
        // A known key under the same policy: the read lock is all it takes.
        {
            let map = shard.read();
            if let Some(e) = map.table.find(h, matches) {
                if e.fp == fp {
                    e.touch(now_ms);
                    return e.slot.check(&policy.limits, now_ms, n, lease);
                }
            }
        }
        // A new key, or one whose policy changed.
        let mut map = shard.write();
        if let Some(e) = map.table.find_mut(h, matches) {
            e.touch(now_ms);
            if e.fp != fp {
                e.fp = fp;
                e.slot = Slot::new(&policy.limits, now_ms);
            }
            return e.slot.check(&policy.limits, now_ms, n, lease);
        }
        let evicted = map.make_room();
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        let slot = Slot::new(&policy.limits, now_ms);
        let d = slot.check(&policy.limits, now_ms, n, lease);
        let hasher = &self.hasher;
        map.table.insert_unique(
            h,
            Entry {
                fp,
                used: AtomicU32::new(secs(now_ms)),
                id: probe.map_or_else(|| Id::new(name, key), Id::Inline),
                slot,
            },
            |e| e.id.with_parts(|n, k| Self::hash(hasher, n, k)),
        );
        d
    }

    /// Release a concurrency lease. True if the lease was held.
    pub fn release(&self, policy: &Policy, key: &str, lease: u64) -> bool {
        let (name, key) = (policy.name.as_bytes(), key.as_bytes());
        let h = Self::hash(&self.hasher, name, key);
        self.shard(h)
            .read()
            .table
            .find(h, |e| e.id.is(name, key))
            .is_some_and(|e| e.slot.release(lease))
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().table.len()).sum()
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
        // The variable-size states are boxed; an entry with its id inline is one line.
        assert!(std::mem::size_of::<State>() <= 32);
        assert!(std::mem::size_of::<Id>() <= 32);
        assert_eq!(std::mem::size_of::<Entry>(), 64);
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

    #[test]
    fn the_lock_free_gcra_decides_like_the_locked_one() {
        let limits = [Limit::new(Algorithm::Gcra, 10, 1000).with_burst(4)];
        let free = Slot::new(&limits, 0);
        assert!(matches!(free, Slot::Gcra { .. }));
        let locked = Slot::Locked(Box::new(Mutex::new(
            limits.iter().map(|l| l.state(0)).collect(),
        )));
        let mut t = 0;
        for i in 0..2000u64 {
            t += (i * 37 % 11) as i64 * 13; // uneven steps, sometimes several per ms
            let n = i % 3;
            assert_eq!(
                free.check(&limits, t, n, 0),
                locked.check(&limits, t, n, 0),
                "check {i} at {t} ms for {n}"
            );
        }
    }

    #[test]
    fn threads_hammering_one_key_never_get_more_than_the_burst() {
        // All at one instant: exactly `burst` units may pass, however the CAS races go.
        let m = std::sync::Arc::new(MemoryBackend::new(64, 1));
        let p = std::sync::Arc::new(Policy::single(
            "p",
            Limit::new(Algorithm::Gcra, 1, 60_000).with_burst(50),
        ));
        let allowed: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let (m, p) = (m.clone(), p.clone());
                    s.spawn(move || {
                        (0..20_000)
                            .map(|_| m.check(&p, "hot", 1, 1_000, 0)[0].allowed as u64)
                            .sum::<u64>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(allowed, 50);
    }

    #[test]
    fn eviction_with_millisecond_ties_forgets_half() {
        let m = MemoryBackend::new(8, 1);
        let p = Policy::single("p", Limit::new(Algorithm::Gcra, 1, 1000));
        for k in 0..9 {
            m.check(&p, &format!("k{k}"), 1, 5, 0);
        }
        // The ninth key found the shard full: 5 of the 8 (all used at 5 ms) were forgotten.
        assert_eq!(m.evictions(), 5);
        assert_eq!(m.len(), 4);
    }
}
