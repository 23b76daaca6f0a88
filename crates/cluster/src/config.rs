//! `cluster:` of fieldlab.yaml: how this replica joins a fleet-wide cluster.
//!
//! Why here: only the cluster crate reads these keys; topology hands the section to
//! [`crate::start`]. Unset `nats_url` (the default) = a single replica, as before.

use fieldlab_core::config::{HumanDuration, Problem, Section};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server with JetStream (`nats://host:4222`; environment: NATS_URL). Set: this
    /// replica reads device telemetry from the partitioned stream instead of an MQTT
    /// subscription, and answers reads for the whole fleet.
    pub nats_url: Option<String>,
    /// This replica's id, unique in the cluster and stable across restarts (it names the
    /// replica's leases; its offsets live in its data dir). Default: the host name.
    pub replica_id: Option<String>,
    /// The URL the other replicas reach this one's HTTP API at. Default: `http://` and the
    /// HTTP listen address (fine on one host; set it when replicas run on several).
    pub advertise_url: Option<String>,
    /// Partitions of the device streams. Must equal the `partition(N,2)` of the NATS subject
    /// mapping (`fieldlab config nats-mapping` prints a matching configuration).
    pub partitions: u32,
    /// The JetStream stream holding the device messages (created if missing).
    pub stream: String,
    /// How long the stream keeps messages: the log from which a replica that takes over a
    /// partition rebuilds its share (and the longest history such a replica can have).
    pub retention: HumanDuration,
    /// A replica whose lease renewals stop (killed, cut off) loses its partitions after this.
    pub lease: HumanDuration,
    /// TLS to NATS: the CA (PEM) its certificate must chain to. Set: TLS is required (also
    /// for a `nats://` URL). Credentials go in the URL (`nats://user:password@host:4222`, from
    /// NATS_URL, not the file).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for a NATS server that requires one; with `tls_key_file`.
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_url: None,
            replica_id: None,
            advertise_url: None,
            partitions: 12,
            stream: "FIELDLAB".into(),
            retention: HumanDuration::from_secs(7 * 24 * 3600),
            lease: HumanDuration::from_secs(5),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Section for ClusterConfig {
    fn validate(&self) -> Result<(), Problem> {
        if !(1..=1024).contains(&self.partitions) {
            return Problem::at("partitions", "must be between 1 and 1024");
        }
        if self.stream.is_empty()
            || !self
                .stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Problem::at(
                "stream",
                "must be a JetStream stream name: letters, digits, `_` and `-`",
            );
        }
        if let Some(id) = &self.replica_id {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Problem::at(
                    "replica_id",
                    "must be letters, digits, `_` and `-` (it is part of NATS key names)",
                );
            }
        }
        if std::time::Duration::from(self.lease) < std::time::Duration::from_secs(2) {
            return Problem::at("lease", "must be at least 2s (renewals run every lease/5)");
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Problem::at(
                "tls_cert_file",
                "tls_cert_file and tls_key_file go together (a client certificate and its key)",
            );
        }
        if let Some(u) = &self.nats_url {
            if !(u.starts_with("nats://") || u.starts_with("tls://")) {
                return Problem::at("nats_url", "must be nats://HOST:PORT or tls://HOST:PORT");
            }
        }
        Ok(())
    }
}

impl ClusterConfig {
    /// Is this replica part of a cluster?
    pub fn enabled(&self) -> bool {
        self.nats_url.is_some()
    }

    /// The NATS server configuration fragment this cluster needs: the subject mapping that
    /// partitions `devices/<type>/<id>/telemetry` by device id. Printed by
    /// `fieldlab config nats-mapping`, used by scripts/cluster.sh and the Helm chart.
    pub fn nats_mapping(&self) -> String {
        format!(
            "mappings = {{\n  \"devices.*.*.telemetry\": \"{prefix}.{{{{partition({n},2)}}}}.devices.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.telemetry\"\n}}\n",
            prefix = crate::SUBJECT_PREFIX,
            n = self.partitions
        )
    }
}
