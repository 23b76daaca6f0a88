//! fieldlab-ingest: the MQTT source of the pipeline.
//!
//! Why it exists: telemetry reaches fieldlab through an MQTT broker — the embedded one or any
//! external broker. This crate subscribes to the telemetry topics, turns each message into
//! [`Reading`](fieldlab_core::Reading)s ([`payload`]), writes their points to the store in
//! batches and acknowledges the messages to the broker only after the store has made them
//! durable ([`source`]). A message that cannot be parsed is quarantined with its reason, and so
//! is a message of a device over its rate limit (reason "rate limited"), and so is one that
//! names another device than its topic or passes the device or series limits ([`identity`]);
//! none is dropped.
//!
//! Architecture invariant: parsing ([`payload`]) is pure — no I/O — so every payload format can
//! be tested, fuzzed and benchmarked without a broker.

mod config;
pub mod dedup;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod payload;
pub mod source;

pub use config::{check_device_id, GatewayConfig, IngestConfig, MqttVersion};
pub use identity::{Gateway, Limits};
pub use payload::parse;
pub use source::{
    default_client_id, start, start_log, Admit, Committed, Ingest, IngestMetrics, IngestSettings,
    LogMsg, Observers, RejectLabels,
};
