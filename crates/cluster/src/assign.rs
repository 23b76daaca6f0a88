//! Which replica should own which partition: a pure function of the live replicas.
//!
//! Why it exists: every replica computes the same answer from the same member list, so no
//! coordinator is needed — the leases in NATS key-value (`node.rs`) make it safe while
//! replicas' views differ for a moment. Rendezvous (highest-random-weight) hashing moves only
//! the partitions of a replica that joins or leaves; a cap of ceil(partitions / replicas) per
//! replica keeps the load even (bounded-load rendezvous).

/// For each partition `0..n`, the index into `members` of its desired owner (`None`: no
/// members). `members` must be sorted and distinct.
pub fn assign(n: u32, members: &[String]) -> Vec<Option<usize>> {
    if members.is_empty() {
        return vec![None; n as usize];
    }
    let cap = (n as usize).div_ceil(members.len());
    let mut load = vec![0usize; members.len()];
    (0..n)
        .map(|p| {
            let mut ranked: Vec<(u64, usize)> = members
                .iter()
                .enumerate()
                .map(|(i, id)| (weight(id, p), i))
                .collect();
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            let (_, i) = *ranked
                .iter()
                .find(|(_, i)| load[*i] < cap)
                .expect("the cap leaves room for every partition");
            load[i] += 1;
            Some(i)
        })
        .collect()
}

/// A well-mixed 64-bit weight of (replica, partition): FNV-1a then a SplitMix64 finaliser.
/// Stable across processes and versions (every replica must agree), which std's hasher is not
/// promised to be.
fn weight(id: &str, p: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes().iter().chain(&p.to_le_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::assign;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("replica-{i}")).collect()
    }

    #[test]
    fn every_partition_has_one_owner_and_the_load_is_even() {
        for m in 1..=5 {
            let a = assign(12, &ids(m));
            let mut load = vec![0; m];
            for o in &a {
                load[o.unwrap()] += 1;
            }
            let cap = 12usize.div_ceil(m);
            assert!(load.iter().all(|l| *l <= cap), "{m} members: {load:?}");
        }
        assert!(assign(4, &[]).iter().all(Option::is_none));
    }

    #[test]
    fn a_replica_leaving_moves_few_partitions_besides_its_own() {
        let three = ids(3);
        let before = assign(12, &three);
        let two: Vec<String> = three
            .iter()
            .filter(|i| *i != "replica-2")
            .cloned()
            .collect();
        let after = assign(12, &two);
        let name = |v: &[String], o: Option<usize>| v[o.unwrap()].clone();
        let moved_others = (0..12)
            .filter(|&p| {
                let b = name(&three, before[p]);
                b != "replica-2" && b != name(&two, after[p])
            })
            .count();
        assert!(
            moved_others <= 2,
            "{moved_others} partitions of survivors moved"
        );
    }

    #[test]
    fn every_replica_computes_the_same_answer() {
        assert_eq!(assign(12, &ids(3)), assign(12, &ids(3)));
    }
}
