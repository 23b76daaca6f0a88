//! What a replica knows of the cluster it is part of: which devices it answers for, and who
//! answers for the others.
//!
//! Why this lives in core: the cluster crate (`fieldlab-cluster`) decides ownership (leases on
//! partitions of the device streams, kept in NATS JetStream key-value), and the HTTP server
//! uses that decision to answer for the whole fleet (its own devices from its store, the
//! others' by asking their owners). Neither should depend on the other, so they meet here.
//!
//! A device belongs to exactly one partition, `partition_of(device_id, n)`: the same function
//! NATS applies in the subject mapping `{{partition(n,2)}}` (FNV-1a, 32 bit, of the device id
//! token, modulo n), so the replica that owns a partition's stream also owns its devices'
//! stored data for reads.

/// Request header a replica sets when it asks a peer for its share of an answer: the peer
/// answers for the devices it owns only, and does not fan out again.
pub const SCOPE_HEADER: &str = "fieldlab-scope";
/// The value of [`SCOPE_HEADER`] that asks for the peer's own share.
pub const SCOPE_LOCAL: &str = "local";

/// One replica's view of the cluster.
pub trait ClusterView: Send + Sync + std::fmt::Debug {
    /// This replica's id (stable across restarts: it names its offsets and leases).
    fn me(&self) -> String;
    /// Does this replica answer for this device now (it holds the lease on the device's
    /// partition)?
    fn owns(&self, device_id: &str) -> bool;
    /// Base URLs (`http://host:port`) of the other live replicas, to ask for their share.
    fn peers(&self) -> Vec<String>;
}

/// The partition of a device's stream: FNV-1a (32 bit) of the device id, modulo `n`, exactly
/// as nats-server's `partition(n, k)` subject-mapping function computes it for one token.
///
/// Hand-written: eight lines, and it must match nats-server bit for bit (the `fnv` crate
/// offers only the 64-bit variant through `Hasher`).
pub fn partition_of(device_id: &str, n: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in device_id.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::partition_of;

    #[test]
    fn fnv1a_32_matches_the_reference_vectors() {
        // Reference values of FNV-1a 32 (from the FNV test suite).
        assert_eq!(partition_of("", u32::MAX), 0x811c_9dc5);
        assert_eq!(partition_of("a", u32::MAX), 0xe40c_292c);
        assert_eq!(partition_of("foobar", u32::MAX), 0xbf9c_f968);
        assert!(partition_of("dev7", 4) < 4);
    }
}
