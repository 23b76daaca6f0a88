//! `storage:` of fieldlab.yaml: where the store keeps its files and how it writes them.
//!
//! Why here: the store is the only reader of these keys ([`crate::StoreOptions::from_config`]),
//! so their defaults, types and checks live beside it; the binary composes this section into
//! the whole file (`fieldlab_topology::Config`).

use fieldlab_core::config::{ByteSize, HumanDuration, Problem, Section};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// When the write-ahead log is forced to disk.
///
/// - `always`: every batch is fsynced before it is acknowledged (group commit: concurrent
///   batches share one fsync). Nothing acknowledged is lost on power failure.
/// - `interval`: batches are acknowledged once written to the OS; fsync runs every
///   `wal_fsync_interval`. A process crash loses nothing, a power failure loses at most
///   that interval.
/// - `never`: the OS decides. For benchmarks and throw-away labs only.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum FsyncPolicy {
    Always,
    Interval,
    Never,
}
fieldlab_core::config_words!(FsyncPolicy);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where all state lives (WAL, blocks, quarantine).
    pub data_dir: PathBuf,
    /// Blocks whose newest point is older than this are deleted.
    pub data_retention_days: u32,
    pub wal_fsync: FsyncPolicy,
    /// fsync period for `wal_fsync: interval`, e.g. `100ms`.
    pub wal_fsync_interval: HumanDuration,
    /// The in-memory head is cut into an immutable block when it holds this many points...
    pub head_max_points: usize,
    /// ...or when its oldest point was written this long ago, e.g. `10m`.
    pub block_max_age: HumanDuration,
    /// Disk budget of the quarantine (`64MiB`, or a number of bytes); its oldest files are
    /// deleted beyond it, and what they held is counted.
    pub quarantine_max_bytes: ByteSize,
    /// At most this many block files are kept open at once; the others are opened when a
    /// query reads them. Keep it well below the process' open-file limit (`ulimit -n`).
    pub max_open_blocks: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            data_retention_days: 30,
            wal_fsync: FsyncPolicy::Always,
            wal_fsync_interval: HumanDuration::from_millis(100),
            head_max_points: 1_000_000,
            block_max_age: HumanDuration::from_secs(600),
            quarantine_max_bytes: ByteSize::mib(64),
            max_open_blocks: 512,
        }
    }
}

impl Section for StorageConfig {
    fn validate(&self) -> Result<(), Problem> {
        if self.data_retention_days == 0 {
            return Problem::at(
                "data_retention_days",
                "must be at least 1 (days of data to keep)",
            );
        }
        if self.head_max_points < 1000 {
            return Problem::at("head_max_points", "must be at least 1000");
        }
        if self.max_open_blocks < 8 {
            return Problem::at("max_open_blocks", "must be at least 8");
        }
        if self.quarantine_max_bytes.get() < 64 << 10 {
            return Problem::at("quarantine_max_bytes", "must be at least 64KiB");
        }
        Ok(())
    }
}
