//! fieldlab-cluster: several replicas, one fleet.
//!
//! Why this crate exists: per-device state (quality rules, detectors) needs each device's
//! whole stream, in order, in one place, and a reader needs the whole fleet from any replica.
//! An MQTT shared subscription hands messages round-robin, so it gives neither. Here an
//! existing engine does the partitioning (ThingsBoard's and Kafka's design, on NATS):
//!
//! - Devices publish MQTT to nats-server. Its subject mapping `partition(N,2)` puts each
//!   device's messages on `fieldlab.part.<k>.devices.<type>.<id>.telemetry`, `k` a hash of the
//!   device id, and a JetStream stream over `fieldlab.part.>` keeps them on disk, in order.
//! - Each replica holds leases on whole partitions in a JetStream key-value bucket
//!   (`node.rs`; desired owners from [`assign`]). A lease lapses `cluster.lease` after its
//!   holder stops renewing (killed, cut off); a replica that joins gets its share handed over
//!   once it has caught up.
//! - A replica reads each partition it owns (or is about to own) with an ordered consumer from
//!   its own offset ([`offsets`]) into the ordinary ingest writer
//!   ([`fieldlab_ingest::start_log`]): the same rules, limits, detectors and store. The stream
//!   is the durable log: a replica taking over a partition rebuilds its share by reading the
//!   log from where it left off (from the start, if it never had it), so nothing acknowledged
//!   is lost when a replica dies.
//! - Reads: [`Cluster::view`] tells the HTTP server which devices this replica answers for and who the
//!   other replicas are; the server merges their shares (`fieldlab_server`'s fan-out).
//!
//! Architecture invariant: this crate talks to NATS and nothing else over the network; it
//! knows nothing of HTTP or the store (ingest writes, the server reads).

pub mod assign;
pub mod config;
mod node;
pub mod offsets;

pub use config::ClusterConfig;
pub use node::{start, Cluster, Handle, MemberStatus, PartitionStatus, Started, Status};

/// Subjects of the partitioned device stream: `fieldlab.part.<k>.devices.<type>.<id>.telemetry`.
pub const SUBJECT_PREFIX: &str = "fieldlab.part";
/// The key-value bucket of members and partition leases.
pub const BUCKET: &str = "fieldlab_cluster";

/// Errors of joining a cluster; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach NATS at {url}: {error}; start nats-server (with JetStream) or fix cluster.nats_url / NATS_URL")]
    Connect { url: String, error: String },
    #[error("NATS JetStream refused {what}: {error}; is JetStream enabled (`jetstream {{ store_dir: ... }}` in nats.conf)?")]
    JetStream { what: String, error: String },
}

/// The device id as it appears as a NATS subject token: MQTT topic levels map to tokens, and
/// nats-server writes a `.` inside a level as `//`.
pub fn nats_token(device_id: &str) -> String {
    device_id.replace('.', "//")
}

/// The MQTT topic of a partitioned subject (`fieldlab.part.<k>.devices.T.ID.telemetry` ->
/// `devices/T/ID/telemetry`), and its partition.
pub fn topic_of(subject: &str) -> Option<(u32, String)> {
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?.strip_prefix('.')?;
    let (k, rest) = rest.split_once('.')?;
    let k = k.parse().ok()?;
    let topic = rest
        .split('.')
        .map(|t| t.replace("//", "."))
        .collect::<Vec<_>>()
        .join("/");
    Some((k, topic))
}

/// The partition of a device, as the NATS mapping computes it.
pub fn partition(device_id: &str, partitions: u32) -> u32 {
    fieldlab_core::cluster::partition_of(&nats_token(device_id), partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_map_back_to_topics() {
        assert_eq!(
            topic_of("fieldlab.part.3.devices.Probe.dev7.telemetry"),
            Some((3, "devices/Probe/dev7/telemetry".into()))
        );
        assert_eq!(
            topic_of("fieldlab.part.11.devices.Probe.dev//7.telemetry"),
            Some((11, "devices/Probe/dev.7/telemetry".into()))
        );
        assert_eq!(topic_of("other.3.x"), None);
        assert_eq!(nats_token("a.b"), "a//b");
    }
}
