//! fieldlab-store: the embedded time-series store.
//!
//! Why it exists: `fieldlab up` must keep telemetry durably on a laptop with no database
//! installed, and answer range and downsampling queries fast. The design follows Prometheus'
//! TSDB and Facebook's Gorilla:
//!
//! ```text
//!  write(batch) ──► WAL append (+ fsync per policy) ──► head (memory) ──► ack
//!                                                         │ cut (size / age)
//!                                                         ▼
//!                                        frozen head ──► block file (compressed, immutable)
//! ```
//!
//! - A batch is acknowledged only after it is in the WAL (fsynced under `wal_fsync: always`,
//!   with concurrent batches sharing one fsync: group commit) and in the head.
//! - One writer thread owns the WAL; a cut freezes the head and a background thread writes it
//!   as a block, so ingest does not wait for block writes.
//! - On open, blocks are indexed and the WAL segments not covered by blocks are replayed; a
//!   torn WAL tail is truncated with a warning, corruption in the middle of a segment is kept
//!   in a copy, skipped and reported (`wal.rs`).
//! - Every file operation goes through [`fs::StoreFs`] (the real file system, or faults on
//!   demand in tests). A failed WAL write or fsync is cut back to the last good record before
//!   anything else is acknowledged; the store then reports itself failed ([`Store::health`],
//!   `/ready`) and counts it in `fieldlab_store_write_errors_total`, refuses the batches whose
//!   write failed (they are handed back, never acknowledged), and is healthy again as soon as a
//!   write succeeds. A failed block write keeps the points in the WAL and in memory, and is
//!   retried with back-off.
//! - Queries merge blocks, frozen head and head; the same timestamp in a later source replaces
//!   an earlier one, so replays never duplicate points.
//! - A maintenance thread applies retention and compacts runs of small adjacent blocks into
//!   one (`compact.rs`), off the write path.
//! - `snapshot` takes a consistent online cut for backups (`backup.rs`).
//! - One process writes a data dir at a time (`LOCK`, flock); readers (`open_read_only`, used
//!   by `fieldlab query` and `fieldlab export`) take no lock and change nothing.
//!
//! Architecture invariant: this crate knows nothing of MQTT, HTTP or payload formats.

pub mod annotations;
pub mod backup;
mod bits;
pub mod block;
pub mod codec;
mod compact;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod head;
pub mod quarantine;
pub mod query;
pub mod wal;

mod config;

use block::Block;
pub use config::{FsyncPolicy, StorageConfig};
use fieldlab_core::backoff::Backoff;
use fieldlab_core::{Batch, FieldValue, Point, SeriesKey, Tags};
use head::Head;
use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use wal::Wal;

pub use quarantine::{Quarantine, QuarantineEntry};
pub use query::{
    aggregate, downsample, join_verdicts, Agg, QuerySpec, Row, Selector, SeriesResult, Verdict,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store is closed")]
    Closed,
    #[error("{0} is in use by another fieldlab process; stop it, or read it with a read-only command (query, export) or back it up online (backup --url)")]
    Locked(PathBuf),
    #[error("the store was opened read-only")]
    ReadOnly,
}

/// How the store behaves; built from `storage:` in fieldlab.yaml.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
    pub head_max_points: usize,
    pub block_max_age: Duration,
    pub retention: Duration,
    /// How often the maintenance thread applies retention and looks for blocks to compact.
    pub maintenance_interval: Duration,
    /// Blocks with fewer points than this are "small" and merged with their small neighbours
    /// (up to `head_max_points` per merged block).
    pub compact_below_points: usize,
    /// Compaction never makes a block larger than this (tiers: see compact.rs). The merge
    /// holds the merged block's encoded bytes in memory (a few bytes per point).
    pub compact_max_points: usize,
    /// At most this many block files are kept open at once (`storage.max_open_blocks`); the
    /// others are opened when read ([`block::BlockFiles`]).
    pub max_open_blocks: usize,
    /// What the store's files are written through: the real file system, or faults on demand
    /// in tests ([`fs::FaultyFs`]).
    pub fs: Arc<dyn fs::StoreFs>,
}

impl StoreOptions {
    pub fn from_config(c: &StorageConfig) -> Self {
        let at_least_1ms =
            |d: fieldlab_core::config::HumanDuration| d.get().max(Duration::from_millis(1));
        StoreOptions {
            data_dir: c.data_dir.clone(),
            fsync: c.wal_fsync,
            fsync_interval: at_least_1ms(c.wal_fsync_interval),
            head_max_points: c.head_max_points,
            block_max_age: at_least_1ms(c.block_max_age),
            retention: Duration::from_secs(c.data_retention_days as u64 * 86_400),
            maintenance_interval: Duration::from_secs(30),
            compact_below_points: (c.head_max_points / 4).max(1),
            compact_max_points: c.head_max_points.saturating_mul(32),
            max_open_blocks: c.max_open_blocks,
            fs: fs::real(),
        }
    }

    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let mut o = Self::from_config(&StorageConfig::default());
        o.data_dir = data_dir.into();
        o
    }
}

/// What the store knows about one series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesInfo {
    pub device_id: String,
    pub field: String,
    pub tags: Tags,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
}

/// Store metrics, registered under `fieldlab_store_*`.
#[derive(Clone, Default)]
pub struct StoreMetrics {
    pub points: Counter,
    pub batches: Counter,
    pub wal_bytes: Counter,
    pub wal_fsyncs: Counter,
    pub wal_truncations: Counter,
    pub blocks: Gauge,
    /// Block files kept open (bounded by `storage.max_open_blocks`).
    pub open_block_files: Gauge,
    /// Bytes of WAL segments on disk now (measured at each maintenance pass).
    pub wal_size_bytes: Gauge,
    pub head_points: Gauge,
    pub series: Gauge,
    pub compactions: Counter,
    pub retention_deleted_blocks: Counter,
    /// Failed writes, fsyncs, truncations and renames, by the part of the store they hit.
    pub write_errors: Family<WriteErrorLabels, Counter>,
    /// Damaged stretches in the middle of WAL segments skipped during recovery.
    pub wal_skipped_ranges: Counter,
}

/// The label of `fieldlab_store_write_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteErrorLabels {
    pub part: &'static str,
}

impl StoreMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fieldlab_store_points",
            "Points acknowledged as durable",
            self.points.clone(),
        );
        r.register(
            "fieldlab_store_batches",
            "Write batches acknowledged",
            self.batches.clone(),
        );
        r.register(
            "fieldlab_store_wal_bytes",
            "Bytes appended to the write-ahead log",
            self.wal_bytes.clone(),
        );
        r.register(
            "fieldlab_store_wal_fsyncs",
            "fsync calls on the write-ahead log",
            self.wal_fsyncs.clone(),
        );
        r.register(
            "fieldlab_store_wal_truncations",
            "Torn WAL tails truncated during recovery",
            self.wal_truncations.clone(),
        );
        r.register(
            "fieldlab_store_blocks",
            "Immutable blocks on disk",
            self.blocks.clone(),
        );
        r.register(
            "fieldlab_store_wal_size_bytes",
            "Bytes of write-ahead log segments on disk (measured every maintenance pass); grows when blocks cannot be written",
            self.wal_size_bytes.clone(),
        );
        r.register(
            "fieldlab_store_open_block_files",
            "Block files kept open now (at most storage.max_open_blocks; the rest are opened when read)",
            self.open_block_files.clone(),
        );
        r.register(
            "fieldlab_store_head_points",
            "Points in the in-memory head",
            self.head_points.clone(),
        );
        r.register(
            "fieldlab_store_series",
            "Series known to the store",
            self.series.clone(),
        );
        r.register(
            "fieldlab_store_compactions",
            "Runs of small blocks merged into one",
            self.compactions.clone(),
        );
        r.register(
            "fieldlab_store_retention_deleted_blocks",
            "Blocks deleted by retention",
            self.retention_deleted_blocks.clone(),
        );
        for p in Part::ALL {
            let _ = self
                .write_errors
                .get_or_create(&WriteErrorLabels { part: p.name() });
        }
        r.register(
            "fieldlab_store_write_errors",
            "Failed writes, fsyncs, truncations or renames of the store's files, by part (wal, block, compaction, recovery)",
            self.write_errors.clone(),
        );
        r.register(
            "fieldlab_store_wal_skipped_ranges",
            "Corrupt stretches in the middle of WAL segments skipped during recovery",
            self.wal_skipped_ranges.clone(),
        );
    }

    /// Write errors of every part.
    pub fn write_errors_total(&self) -> u64 {
        Part::ALL
            .iter()
            .map(|p| {
                self.write_errors
                    .get_or_create(&WriteErrorLabels { part: p.name() })
                    .get()
            })
            .sum()
    }
}

/// A part of the store whose file writes can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Part {
    /// WAL append, fsync, cut-back, new segment. Makes the store unhealthy.
    Wal,
    /// Writing a frozen head as a block. Makes the store unhealthy (the points wait in memory).
    Block,
    /// Merging small blocks. Counted only: no acknowledged point depends on it.
    Compaction,
    /// Truncating or copying damaged WAL segments, setting aside damaged blocks at open.
    Recovery,
}

impl Part {
    const ALL: [Part; 4] = [Part::Wal, Part::Block, Part::Compaction, Part::Recovery];

    fn name(self) -> &'static str {
        match self {
            Part::Wal => "wal",
            Part::Block => "block",
            Part::Compaction => "compaction",
            Part::Recovery => "recovery",
        }
    }
}

/// Where the writer thread reports the outcome of a command.
type Ack = oneshot::Sender<Result<(), String>>;
/// A write's outcome; a refused batch comes back with the reason.
type WriteAck = oneshot::Sender<Result<(), (String, Batch)>>;

/// A batch the store did not accept, handed back so the caller can retry it without copying.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct WriteError {
    pub error: StoreError,
    /// The refused batch (empty if the writer thread died holding it).
    pub batch: Batch,
}

enum Cmd {
    Write(Batch, WriteAck),
    Flush(Ack),
    Close(Ack),
    Snapshot(PathBuf, oneshot::Sender<Result<backup::Cut, String>>),
    /// Stop the writer as a crash would: nothing flushed, nothing closed.
    #[cfg(test)]
    Crash(Ack),
}

struct Shared {
    opts: StoreOptions,
    wal_dir: PathBuf,
    block_dir: PathBuf,
    /// Held while the set of block files changes (compaction swap, retention) and while a
    /// snapshot links them, so a snapshot never sees half a swap. Never taken on the write path.
    maintenance: Mutex<()>,
    // Lock order: maintenance -> blocks -> frozen -> head.
    blocks: RwLock<Vec<Arc<Block>>>,
    frozen: RwLock<Option<Arc<Head>>>,
    head: RwLock<Head>,
    catalog: RwLock<BTreeMap<SeriesKey, SeriesInfo>>,
    next_block: AtomicU64,
    /// The bound on open block files.
    files: Arc<block::BlockFiles>,
    metrics: StoreMetrics,
    /// Why the store cannot take writes durably now, by part (empty: healthy).
    faults: Mutex<BTreeMap<Part, String>>,
}

impl Shared {
    /// Count a failed file operation.
    fn write_error(&self, part: Part) {
        self.metrics
            .write_errors
            .get_or_create(&WriteErrorLabels { part: part.name() })
            .inc();
    }

    /// Mark `part` failed, with the reason `/ready` shows.
    fn fault(&self, part: Part, reason: String) {
        let mut f = self.faults.lock();
        if !f.contains_key(&part) {
            tracing::error!(part = part.name(), %reason, "the store is failing: it reports itself unready until writes work again");
        }
        f.insert(part, reason);
    }

    /// `part` works again.
    fn clear(&self, part: Part) {
        if let Some(was) = self.faults.lock().remove(&part) {
            tracing::info!(part = part.name(), was = %was, "store writes work again");
        }
    }
}

/// The maintenance thread and the channel that stops it.
type Maintenance = (flume::Sender<()>, JoinHandle<()>);

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    tx: flume::Sender<Cmd>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
    maintenance: Arc<Mutex<Option<Maintenance>>>,
    read_only: bool,
    /// The flock on `LOCK`, held until `close` (or the process ends).
    lock: Arc<Mutex<Option<std::fs::File>>>,
}

/// Take an exclusive, non-blocking flock on `<dir>/LOCK` (released when the file is closed,
/// also when the process dies, so a crash never leaves a stale lock).
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Err(StoreError::Locked(dir.to_path_buf()));
        }
        return Err(e.into());
    }
    Ok(f)
}

/// What recovery found at open.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    pub blocks: usize,
    pub block_points: u64,
    pub wal_segments: usize,
    pub wal_points: u64,
    pub wal_truncated_bytes: u64,
    /// Corrupt stretches in the middle of WAL segments, skipped (a copy of each such segment
    /// is kept as `<segment>.wal.corrupt`).
    pub wal_skipped: Vec<wal::Skipped>,
    pub corrupt_blocks: Vec<String>,
}

impl Store {
    /// Open (or create) the store under `opts.data_dir`, recovering blocks and the WAL.
    pub fn open(opts: StoreOptions) -> Result<(Store, Recovery), StoreError> {
        Self::open_mode(opts, false)
    }

    /// Open a data dir for reading only, also while another process writes it: no lock, no
    /// WAL truncation, no threads; writes fail with `ReadOnly`. Sees what was acknowledged up
    /// to the moment of opening.
    pub fn open_read_only(data_dir: &Path) -> Result<(Store, Recovery), StoreError> {
        if !data_dir.join("wal").is_dir() && !data_dir.join("blocks").is_dir() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} holds no fieldlab store (no wal/ or blocks/); pass the data dir of `fieldlab up`",
                    data_dir.display()
                ),
            )));
        }
        // A writer may cut a block and delete the WAL segments it covers while we read; if
        // the block list changed under us, read again.
        let mut last = None;
        for _ in 0..5 {
            let before = block::list_blocks_readonly(&data_dir.join("blocks"))?;
            let r = Self::open_mode(StoreOptions::new(data_dir), true);
            let after = block::list_blocks_readonly(&data_dir.join("blocks"))?;
            if before == after {
                return r;
            }
            last = Some(r);
        }
        last.expect("at least one attempt")
    }

    fn open_mode(opts: StoreOptions, read_only: bool) -> Result<(Store, Recovery), StoreError> {
        let wal_dir = opts.data_dir.join("wal");
        let block_dir = opts.data_dir.join("blocks");
        let fs = opts.fs.clone();
        let lock = if read_only {
            None
        } else {
            fs.create_dir_all(&wal_dir)?;
            fs.create_dir_all(&block_dir)?;
            Some(lock_data_dir(&opts.data_dir)?)
        };
        let metrics = StoreMetrics::default();
        let recovery_error = || {
            metrics
                .write_errors
                .get_or_create(&WriteErrorLabels {
                    part: Part::Recovery.name(),
                })
                .inc()
        };
        let mut rec = Recovery::default();

        let mut blocks = Vec::new();
        let mut catalog = BTreeMap::new();
        let mut wal_upto = 0;
        let files = block::BlockFiles::new(opts.max_open_blocks);
        let mut max_seq = 0;
        let seqs = if read_only {
            block::list_blocks_readonly(&block_dir)?
        } else {
            block::list_blocks_with(&*fs, &block_dir)?
        };
        for seq in seqs {
            max_seq = max_seq.max(seq);
            let path = block::block_path(&block_dir, seq);
            match Block::open_in(&path, &files) {
                Ok(b) => {
                    wal_upto = wal_upto.max(b.index.wal_upto);
                    rec.block_points += b.index.points;
                    for c in &b.index.chunks {
                        note_series(&mut catalog, &c.key, &c.tags, c.min_ts, c.max_ts);
                    }
                    blocks.push(Arc::new(b));
                }
                Err(e) if read_only => {
                    tracing::warn!(error = %e, "block cannot be read; skipped");
                    rec.corrupt_blocks.push(path.display().to_string());
                }
                Err(e) => {
                    // A block is written by rename, so damage means the disk changed it. Keep
                    // the file for inspection and go on with the rest.
                    let bad = path.with_extension("block.corrupt");
                    tracing::error!(error = %e, moved_to = %bad.display(), "block cannot be read; set aside");
                    if let Err(e) = fs.rename(&path, &bad) {
                        recovery_error();
                        tracing::error!(error = %e, block = %path.display(), "could not set the damaged block aside; it is skipped");
                    }
                    rec.corrupt_blocks.push(path.display().to_string());
                }
            }
        }
        rec.blocks = blocks.len();

        let replay = wal::replay_with(&*fs, &wal_dir, wal_upto, !read_only)?;
        rec.wal_segments = replay.segments.len();
        rec.wal_truncated_bytes = replay.truncated.iter().map(|t| t.1).sum();
        metrics
            .wal_truncations
            .inc_by(replay.truncated.len() as u64);
        metrics
            .wal_skipped_ranges
            .inc_by(replay.skipped.len() as u64);
        if !read_only {
            let failed = replay.untruncated.len()
                + replay.skipped.iter().filter(|s| s.copy.is_none()).count();
            for _ in 0..failed {
                recovery_error();
            }
        }
        rec.wal_skipped = replay.skipped;
        let mut head = Head::default();
        let now = fieldlab_core::time::now_ms();
        for mut batch in replay.batches {
            rec.wal_points += batch.len() as u64;
            let mut spans = Vec::new();
            head.insert_batch(&mut batch, now, &mut spans);
            for (key, lo, hi, tags) in spans {
                note_series(&mut catalog, key, tags, lo, hi);
            }
        }
        let next_seg = replay
            .segments
            .last()
            .copied()
            .unwrap_or(wal_upto)
            .max(wal_upto)
            + 1;
        metrics.blocks.set(blocks.len() as i64);
        metrics.open_block_files.set(files.open_now() as i64);
        metrics.head_points.set(head.points as i64);
        metrics.series.set(catalog.len() as i64);
        let shared = Arc::new(Shared {
            opts: opts.clone(),
            wal_dir,
            block_dir,
            maintenance: Mutex::new(()),
            blocks: RwLock::new(blocks),
            frozen: RwLock::new(None),
            head: RwLock::new(head),
            catalog: RwLock::new(catalog),
            next_block: AtomicU64::new(max_seq + 1),
            files,
            metrics,
            faults: Mutex::new(BTreeMap::new()),
        });
        let (tx, rx) = flume::bounded(1024);
        if read_only {
            drop(rx);
            let store = Store {
                shared,
                tx,
                writer: Arc::new(Mutex::new(None)),
                maintenance: Arc::new(Mutex::new(None)),
                read_only: true,
                lock: Arc::new(Mutex::new(None)),
            };
            return Ok((store, rec));
        }
        // A WAL segment that cannot be created (a full disk) does not stop the store from
        // opening: it starts failed (unready, writes refused) and the next write tries again.
        let mut wal = Wal::lazy(fs.clone(), &shared.wal_dir, next_seg);
        if let Err(e) = wal.open_segment() {
            shared.write_error(Part::Wal);
            shared.fault(Part::Wal, format!("cannot create a WAL segment: {e}"));
        }
        let sh = shared.clone();
        let writer = std::thread::Builder::new()
            .name("fieldlab-store-writer".into())
            .spawn(move || Writer::new(sh, wal).run(rx))?;
        apply_retention(&shared);
        shared
            .metrics
            .wal_size_bytes
            .set(dir_bytes(&shared.wal_dir) as i64);
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        let sh = shared.clone();
        let maint = std::thread::Builder::new()
            .name("fieldlab-store-maintenance".into())
            .spawn(move || {
                while let Err(flume::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(sh.opts.maintenance_interval)
                {
                    apply_retention(&sh);
                    // Several merges a pass, so a busy lab's blocks do not pile up faster
                    // than one merge per interval takes them away.
                    for _ in 0..16 {
                        if compact::compact_once(&sh) == 0 || !stop_rx.is_empty() {
                            break;
                        }
                    }
                    sh.metrics.open_block_files.set(sh.files.open_now() as i64);
                }
            })?;
        let store = Store {
            shared,
            tx,
            writer: Arc::new(Mutex::new(Some(writer))),
            maintenance: Arc::new(Mutex::new(Some((stop_tx, maint)))),
            read_only: false,
            lock: Arc::new(Mutex::new(lock)),
        };
        Ok((store, rec))
    }

    /// Is this a read-only view (`open_read_only`)?
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Merge runs of small adjacent blocks now (the maintenance thread does this periodically).
    /// Returns how many blocks were merged away.
    pub fn compact(&self) -> usize {
        if self.read_only {
            return 0;
        }
        compact::compact_once(&self.shared)
    }

    /// Series matching a selector, in key order.
    pub fn select(&self, sel: &Selector) -> Vec<SeriesInfo> {
        self.shared
            .catalog
            .read()
            .values()
            .filter(|i| sel.matches(i))
            .cloned()
            .collect()
    }

    /// Run a query: every matching series, its rows shaped by `q`.
    pub fn query(&self, q: &QuerySpec) -> Result<Vec<SeriesResult>, StoreError> {
        let mut out = Vec::new();
        for info in self.select(&q.selector) {
            if info.last_ts_ms < q.from || info.first_ts_ms > q.to {
                continue;
            }
            let key = SeriesKey::new(&info.device_id, &info.field);
            let pts = self.range(&key, q.from, q.to)?;
            let verdicts = self.verdicts(&key, &q.with, q.from, q.to)?;
            let (rows, truncated) = q.rows_with(pts, verdicts);
            out.push(SeriesResult {
                info,
                rows,
                truncated,
            });
        }
        Ok(out)
    }

    /// The verdict points of series `key` in `from..=to`, one list per entry of `with`
    /// (see [`fieldlab_core::reading::verdict`]); empty lists for a verdict never stored.
    pub fn verdicts(
        &self,
        key: &SeriesKey,
        with: &[Verdict],
        from: i64,
        to: i64,
    ) -> Result<Vec<Vec<(i64, FieldValue)>>, StoreError> {
        with.iter()
            .map(|w| {
                let k = SeriesKey {
                    device_id: key.device_id.clone(),
                    field: w.series_field(&key.field).into(),
                };
                self.range(&k, from, to)
            })
            .collect()
    }

    /// Time windows that split one series into pieces of bounded size for streaming (export):
    /// each window overlaps few block chunks, so reading window by window keeps memory near
    /// one chunk whatever the series' length.
    pub fn windows(&self, key: &SeriesKey, from: i64, to: i64) -> Vec<(i64, i64)> {
        let mut bounds: Vec<i64> = self
            .shared
            .blocks
            .read()
            .iter()
            .filter_map(|b| b.chunk_meta(key))
            .map(|c| c.max_ts)
            .filter(|t| *t >= from && *t < to)
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let mut out = Vec::with_capacity(bounds.len() + 1);
        let mut lo = from;
        for b in bounds {
            out.push((lo, b));
            lo = b + 1;
        }
        out.push((lo, to));
        out
    }

    /// Write a consistent online backup of the whole data dir as a tar archive to `out`
    /// (see `backup.rs`). Ingest goes on meanwhile; the archive holds exactly what was
    /// acknowledged at the cut.
    pub async fn backup<W: std::io::Write + Send + 'static>(
        &self,
        out: W,
    ) -> Result<(W, backup::Manifest), StoreError> {
        self.backup_with(backup::Options::default(), out).await
    }

    /// [`Store::backup`] with choices (secrets included or not).
    pub async fn backup_with<W: std::io::Write + Send + 'static>(
        &self,
        opts: backup::Options,
        out: W,
    ) -> Result<(W, backup::Manifest), StoreError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let data_dir = self.shared.opts.data_dir.clone();
        let snap = data_dir.join(format!(
            ".snapshot-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let cut = self.snapshot(&snap).await;
        let res = match cut {
            Ok(cut) => {
                let s = snap.clone();
                tokio::task::spawn_blocking(move || {
                    backup::write_archive(&data_dir, &s, &cut, opts, out)
                })
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
                .map_err(StoreError::Io)
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&snap);
        res
    }

    /// Take a consistent cut of the store into `dir` (hard links of blocks and WAL segments,
    /// see `backup.rs`). Runs on the writer thread between two group commits.
    pub async fn snapshot(&self, dir: &Path) -> Result<backup::Cut, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send_async(Cmd::Snapshot(dir.to_path_buf(), tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        match rx.await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(StoreError::Io(std::io::Error::other(e))),
            Err(_) => Err(StoreError::Closed),
        }
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.shared.metrics
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.opts.data_dir
    }

    /// Write points; returns once they are durable (per the fsync policy) and queryable.
    /// A refused batch is handed back in the error. (Ingest builds [`Batch`]es directly and
    /// calls [`Store::write_batch`].)
    pub async fn write(&self, points: Vec<Point>) -> Result<(), WriteError> {
        self.write_batch(Batch::from_points(points)).await
    }

    /// Write a batch; returns once it is durable (per the fsync policy) and queryable.
    /// A refused batch is handed back in the error.
    pub async fn write_batch(&self, batch: Batch) -> Result<(), WriteError> {
        if batch.is_empty() {
            return Ok(());
        }
        if !batch.is_consistent() {
            return Err(WriteError {
                error: StoreError::Io(std::io::Error::other(
                    "a batch row names a series the batch does not have",
                )),
                batch,
            });
        }
        if self.read_only {
            return Err(WriteError {
                error: StoreError::ReadOnly,
                batch,
            });
        }
        let (tx, rx) = oneshot::channel();
        if let Err(flume::SendError(cmd)) = self.tx.send_async(Cmd::Write(batch, tx)).await {
            let batch = match cmd {
                Cmd::Write(b, _) => b,
                _ => Batch::default(),
            };
            return Err(WriteError {
                error: StoreError::Closed,
                batch,
            });
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((reason, batch))) => Err(WriteError {
                error: StoreError::Io(std::io::Error::other(reason)),
                batch,
            }),
            Err(_) => Err(WriteError {
                error: StoreError::Closed,
                batch: Batch::default(),
            }),
        }
    }

    /// Cut the head into a block now and wait until the block is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send_async(Cmd::Flush(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        Self::answer(rx.await)
    }

    /// Flush everything to blocks and stop the writer. Writes after this fail with `Closed`.
    pub async fn close(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send_async(Cmd::Close(tx)).await.is_err() {
            return Ok(()); // already closed
        }
        let r = Self::answer(rx.await);
        self.join_threads().await;
        r
    }

    /// Wait for the writer and maintenance threads to end, then drop the data dir's lock.
    async fn join_threads(&self) {
        let writer = self.writer.lock().take();
        let maint = self.maintenance.lock().take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(h) = writer {
                let _ = h.join();
            }
            if let Some((stop, h)) = maint {
                let _ = stop.send(());
                let _ = h.join();
            }
        })
        .await;
        self.lock.lock().take();
    }

    /// Tests simulate a crash by leaking a store; a real crash also drops the flock.
    #[cfg(test)]
    pub(crate) fn release_lock_for_crash_test(&self) {
        self.lock.lock().take();
    }

    /// A crash, for tests: the writer stops where it is (no fsync, no block, no cut-back),
    /// the maintenance thread stops, the lock is released. Files stay as the crash left them.
    #[cfg(test)]
    pub(crate) async fn crash(self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send_async(Cmd::Crash(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.join_threads().await;
    }

    /// Whether the store can take writes durably now: `Err(reason)` while a WAL write or
    /// fsync, or a block write, fails (until a write succeeds again). `/ready` answers 503
    /// with the reason.
    pub fn health(&self) -> Result<(), String> {
        let f = self.shared.faults.lock();
        if f.is_empty() {
            return Ok(());
        }
        Err(f.values().cloned().collect::<Vec<_>>().join("; "))
    }

    fn answer(r: Result<Result<(), String>, oneshot::error::RecvError>) -> Result<(), StoreError> {
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io(std::io::Error::other(e))),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Points of one series within `[from, to]` (inclusive), oldest first.
    pub fn range(
        &self,
        key: &SeriesKey,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, FieldValue)>, StoreError> {
        let blocks = self.shared.blocks.read();
        let frozen = self.shared.frozen.read();
        let head = self.shared.head.read();
        let mut parts: Vec<Vec<(i64, FieldValue)>> = Vec::new();
        let candidates: Vec<Arc<Block>> = blocks
            .iter()
            .filter(|b| b.index.max_ts >= from && b.index.min_ts <= to)
            .cloned()
            .collect();
        if let Some(f) = frozen.as_ref() {
            parts.push(f.range(key, from, to));
        }
        parts.push(head.range(key, from, to));
        drop((head, frozen, blocks));
        let mut block_parts = Vec::with_capacity(candidates.len());
        for b in &candidates {
            block_parts.push(b.read_range(key, from, to)?);
        }
        block_parts.extend(parts);
        Ok(merge(block_parts))
    }

    /// Every known series, optionally only those of one device. Verdict series
    /// ([`fieldlab_core::reading::verdict`]) are not listed: they belong to their field.
    pub fn series(&self, device_id: Option<&str>) -> Vec<SeriesInfo> {
        let cat = self.shared.catalog.read();
        let data = |v: &&SeriesInfo| !fieldlab_core::reading::verdict::is_verdict(&v.field);
        match device_id {
            Some(d) => cat
                .range(SeriesKey::new(d, "")..)
                .take_while(|(k, _)| *k.device_id == *d)
                .map(|(_, v)| v)
                .filter(data)
                .cloned()
                .collect(),
            None => cat.values().filter(data).cloned().collect(),
        }
    }

    /// Total points acknowledged by this process.
    pub fn points_written(&self) -> u64 {
        self.shared.metrics.points.get()
    }

    /// Delete blocks whose data arrived longer ago than the retention period.
    pub fn apply_retention(&self) {
        apply_retention(&self.shared);
    }
}

fn note_series(
    cat: &mut BTreeMap<SeriesKey, SeriesInfo>,
    key: &SeriesKey,
    tags: &Tags,
    min: i64,
    max: i64,
) {
    match cat.get_mut(key) {
        Some(s) => {
            s.first_ts_ms = s.first_ts_ms.min(min);
            s.last_ts_ms = s.last_ts_ms.max(max);
            if max >= s.last_ts_ms && &s.tags != tags {
                s.tags = tags.clone();
            }
        }
        None => {
            cat.insert(
                key.clone(),
                SeriesInfo {
                    device_id: key.device_id.to_string(),
                    field: key.field.to_string(),
                    tags: tags.clone(),
                    first_ts_ms: min,
                    last_ts_ms: max,
                },
            );
        }
    }
}

/// Merge sorted runs; for equal timestamps the run listed later wins.
pub(crate) fn merge(mut parts: Vec<Vec<(i64, FieldValue)>>) -> Vec<(i64, FieldValue)> {
    parts.retain(|p| !p.is_empty());
    match parts.len() {
        0 => return Vec::new(),
        1 => return parts.pop().unwrap(),
        _ => {}
    }
    // The common case: runs that do not overlap in time (consecutive blocks, then the head).
    // Concatenating them in time order is then the whole merge.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| parts[i][0].0);
    let disjoint = order
        .windows(2)
        .all(|w| parts[w[0]].last().unwrap().0 < parts[w[1]][0].0);
    if disjoint {
        let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for i in order {
            out.append(&mut parts[i]);
        }
        return out;
    }
    let mut all: Vec<(i64, usize, FieldValue)> = parts
        .into_iter()
        .enumerate()
        .flat_map(|(src, p)| p.into_iter().map(move |(t, v)| (t, src, v)))
        .collect();
    all.sort_by_key(|a| (a.0, a.1));
    let mut out: Vec<(i64, FieldValue)> = Vec::with_capacity(all.len());
    for (t, _, v) in all {
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = v,
            _ => out.push((t, v)),
        }
    }
    out
}

/// The single thread that owns the WAL.
struct Writer {
    sh: Arc<Shared>,
    wal: Wal,
    dirty: bool,
    last_sync: Instant,
    flusher: Option<JoinHandle<()>>,
    /// The last WAL segment whose points the frozen head holds (its block's `wal_upto`).
    frozen_upto: u64,
    /// When to retry writing a frozen head whose block write failed, and the back-off.
    block_retry: Option<(Instant, Backoff)>,
    /// Cut the head as soon as possible: an fsync failed under `wal_fsync: interval`, so points
    /// acknowledged since the last good fsync are only safe once they are in a block.
    cut_soon: bool,
}

/// First and longest wait before retrying a failed block write.
const BLOCK_RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

impl Writer {
    fn new(sh: Arc<Shared>, wal: Wal) -> Self {
        Writer {
            sh,
            wal,
            dirty: false,
            last_sync: Instant::now(),
            flusher: None,
            frozen_upto: 0,
            block_retry: None,
            cut_soon: false,
        }
    }

    fn run(mut self, rx: flume::Receiver<Cmd>) {
        loop {
            let first = match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(c) => c,
                Err(flume::RecvTimeoutError::Timeout) => {
                    self.housekeeping();
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    let _ = self.close();
                    return;
                }
            };
            let mut cmds = vec![first];
            while cmds.len() < 4096 {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            let mut writes = Vec::new();
            let mut controls = Vec::new();
            for c in cmds {
                match c {
                    Cmd::Write(p, ack) => writes.push((p, ack)),
                    other => controls.push(other),
                }
            }
            if !writes.is_empty() {
                self.commit(writes);
            }
            for c in controls {
                match c {
                    Cmd::Flush(ack) => {
                        let _ = ack.send(self.cut(true).map_err(|e| e.to_string()));
                    }
                    Cmd::Close(ack) => {
                        let _ = ack.send(self.close().map_err(|e| e.to_string()));
                        return;
                    }
                    Cmd::Snapshot(dir, ack) => {
                        let _ = ack.send(self.snapshot(&dir).map_err(|e| e.to_string()));
                    }
                    #[cfg(test)]
                    Cmd::Crash(ack) => {
                        // As if the process died here: no fsync, no cut, nothing more written.
                        if let Some(h) = self.flusher.take() {
                            let _ = h.join();
                        }
                        let _ = ack.send(Ok(()));
                        return;
                    }
                    Cmd::Write(..) => unreachable!(),
                }
            }
            self.housekeeping();
        }
    }

    /// Group commit: one WAL write and (policy permitting) one fsync for all pending batches.
    /// Nothing is acknowledged unless all of it is in the WAL (and fsynced, under `always`);
    /// on failure the WAL has been cut back to its last good record and every batch of the
    /// group is handed back.
    fn commit(&mut self, mut writes: Vec<(Batch, WriteAck)>) {
        if self.block_retry.is_some() && self.sh.head.read().points >= self.sh.opts.head_max_points
        {
            // Blocks cannot be written and the head is full: taking more would grow memory
            // without bound. Refused until a block write succeeds.
            let why = self.sh.faults.lock().get(&Part::Block).cloned();
            let why = why.unwrap_or_else(|| "block write failed".into());
            for (batch, ack) in writes {
                let _ = ack.send(Err((format!("the head is full and {why}"), batch)));
            }
            return;
        }
        let slices: Vec<&Batch> = writes.iter().map(|w| &w.0).collect();
        let appended = self.wal.append(&slices);
        drop(slices);
        let res = match appended {
            Ok(n) => {
                self.sh.metrics.wal_bytes.inc_by(n);
                self.dirty = true;
                if self.sh.opts.fsync == FsyncPolicy::Always {
                    self.sync()
                } else {
                    Ok(())
                }
            }
            Err(e) => {
                self.wal_failed("WAL write", &e);
                Err(e)
            }
        };
        if let Err(e) = res {
            tracing::error!(error = %e, batches = writes.len(), "WAL write failed; batches are refused (not acknowledged)");
            for (batch, ack) in writes {
                let _ = ack.send(Err((format!("WAL write failed: {e}"), batch)));
            }
            return;
        }
        self.sh.clear(Part::Wal);
        let now = fieldlab_core::time::now_ms();
        let mut n = 0u64;
        // The locks are taken per batch, so a query waits for one batch's insert at most, not
        // for a whole group commit.
        for (batch, _) in writes.iter_mut() {
            n += batch.len() as u64;
            let mut head = self.sh.head.write();
            let mut cat = self.sh.catalog.write();
            // The catalog (a BTreeMap) is updated once per series of a batch, not per point.
            let mut spans = Vec::new();
            head.insert_batch(batch, now, &mut spans);
            for (key, lo, hi, tags) in spans {
                note_series(&mut cat, key, tags, lo, hi);
            }
            self.sh.metrics.head_points.set(head.points as i64);
            self.sh.metrics.series.set(cat.len() as i64);
        }
        self.sh.metrics.points.inc_by(n);
        self.sh.metrics.batches.inc_by(writes.len() as u64);
        for (_, ack) in writes {
            let _ = ack.send(Ok(()));
        }
    }

    /// Count a WAL failure and mark the store failed.
    fn wal_failed(&self, what: &str, e: &std::io::Error) {
        self.sh.write_error(Part::Wal);
        self.sh.fault(
            Part::Wal,
            format!("{what} failed: {e}; batches are refused until a write succeeds"),
        );
    }

    /// fsync what was appended since the last fsync. On failure, under `always` the unsynced
    /// records were not acknowledged and are cut off; otherwise they were, so the segment is
    /// closed (the next write starts a new one) and the head is cut into a block soon.
    fn sync(&mut self) -> std::io::Result<()> {
        if self.dirty {
            if let Err(e) = self.wal.sync() {
                self.wal_failed("WAL fsync", &e);
                if self.sh.opts.fsync == FsyncPolicy::Always {
                    self.wal.discard_unsynced();
                } else {
                    self.wal.poison(&e);
                    self.cut_soon = true;
                }
                self.dirty = false;
                return Err(e);
            }
            self.sh.metrics.wal_fsyncs.inc();
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn housekeeping(&mut self) {
        if self.sh.opts.fsync == FsyncPolicy::Interval
            && self.dirty
            && self.last_sync.elapsed() >= self.sh.opts.fsync_interval
        {
            let _ = self.sync(); // a failure is counted, reported and handled in sync()
        }
        // A background block write that ended and left its frozen head behind failed.
        if self.flusher.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = self.flusher.take() {
                let _ = h.join();
            }
            let ok = self.sh.frozen.read().is_none();
            self.note_block_write(ok);
        }
        if let Some((at, _)) = &self.block_retry {
            if Instant::now() < *at {
                return;
            }
        }
        let (points, opened) = {
            let h = self.sh.head.read();
            (h.points, h.opened_ms)
        };
        let age_ms = opened.map_or(0, |o| fieldlab_core::time::now_ms() - o);
        if self.block_retry.is_some() // due: a frozen head waits for its block
            || (self.cut_soon && points > 0)
            || points >= self.sh.opts.head_max_points
            || (points > 0 && age_ms >= self.sh.opts.block_max_age.as_millis() as i64)
        {
            if let Err(e) = self.cut(false) {
                tracing::error!(error = %e, "cutting the head into a block failed; data stays in the WAL");
            }
        }
    }

    /// The consistent cut for backups: every batch acknowledged before this command and none
    /// after. Waits for an in-flight block write (so its WAL segments are either still there
    /// or covered by a listed block), fsyncs the WAL, then hard-links every live block and WAL
    /// segment and notes the current segment's length; later appends to that segment are
    /// beyond the noted length and are left out of the archive.
    fn snapshot(&mut self, dir: &Path) -> std::io::Result<backup::Cut> {
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
        self.sync()?;
        let _m = self.sh.maintenance.lock();
        let blocks: Vec<PathBuf> = self
            .sh
            .blocks
            .read()
            .iter()
            .map(|b| b.path.clone())
            .collect();
        let segments: Vec<PathBuf> = wal::list_segments(&self.sh.wal_dir)?
            .into_iter()
            .map(|n| wal::segment_path(&self.sh.wal_dir, n))
            .collect();
        let active = wal::segment_path(&self.sh.wal_dir, self.wal.segment());
        backup::link_cut(dir, &blocks, &segments, &active, self.wal.bytes_written())
    }

    /// Freeze the head and write it as a block, in the background unless `wait` (then the
    /// block write's outcome is returned).
    fn cut(&mut self, wait: bool) -> std::io::Result<()> {
        // One block write at a time: wait for the previous one.
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
        let leftover = self.sh.frozen.read().clone();
        if let Some(frozen) = leftover {
            // The previous block write failed; try again before freezing more.
            let res = flush_frozen(&self.sh, frozen, self.frozen_upto);
            self.note_block_write(res.is_ok());
            res?;
        }
        if self.sh.head.read().points == 0 {
            return self.sync();
        }
        if let Err(e) = self.sync() {
            // Unless the failure closed the segment (then the block covers it), stop here.
            if self.wal.is_open() {
                return Err(e);
            }
        }
        let upto = self.wal.rotate()?;
        self.cut_soon = false;
        // Late points merged now (this thread is the only writer), so the block is written
        // from sorted runs.
        self.sh.head.write().seal();
        let frozen = {
            let mut fr = self.sh.frozen.write();
            let mut head = self.sh.head.write();
            let h = Arc::new(std::mem::take(&mut *head));
            *fr = Some(h.clone());
            self.sh.metrics.head_points.set(0);
            h
        };
        self.frozen_upto = upto;
        if wait {
            let res = flush_frozen(&self.sh, frozen, upto);
            self.note_block_write(res.is_ok());
            return res;
        }
        // In the background: housekeeping sees the outcome when the thread has ended.
        let sh = self.sh.clone();
        self.flusher = Some(
            std::thread::Builder::new()
                .name("fieldlab-store-flush".into())
                .spawn(move || {
                    let _ = flush_frozen(&sh, frozen, upto);
                })?,
        );
        Ok(())
    }

    /// Keep the retry schedule of failed block writes: back-off doubling up to its maximum,
    /// reset by a success.
    fn note_block_write(&mut self, ok: bool) {
        if ok {
            self.block_retry = None;
            return;
        }
        let (_, mut backoff) = self
            .block_retry
            .take()
            .unwrap_or_else(|| (Instant::now(), Backoff::new(BLOCK_RETRY.0, BLOCK_RETRY.1)));
        let at = Instant::now() + backoff.next_delay();
        self.block_retry = Some((at, backoff));
    }

    /// Flush everything to blocks. Fails unless every acknowledged point is in a block.
    fn close(&mut self) -> std::io::Result<()> {
        // A failed fsync does not stop the cut: the block makes the points durable anyway.
        let _ = self.sync();
        self.cut(true)
    }
}

/// Bytes of the regular files directly in `dir` (0 if it cannot be read).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Delete blocks whose data arrived more than `data_retention_days` ago.
fn apply_retention(sh: &Shared) {
    let cutoff = fieldlab_core::time::now_ms() - sh.opts.retention.as_millis() as i64;
    let _m = sh.maintenance.lock();
    if !sh.blocks.read().iter().any(|b| b.index.created_ms < cutoff) {
        return;
    }
    let mut blocks = sh.blocks.write();
    let (old, keep): (Vec<_>, Vec<_>) = blocks.drain(..).partition(|b| b.index.created_ms < cutoff);
    *blocks = keep;
    sh.metrics.blocks.set(blocks.len() as i64);
    sh.metrics.open_block_files.set(sh.files.open_now() as i64);
    drop(blocks);
    sh.metrics.retention_deleted_blocks.inc_by(old.len() as u64);
    for b in old {
        tracing::info!(block = %b.path.display(), "retention: deleting block older than data_retention_days");
        // Queries that took the block before it left the list read it to the end.
        if let Err(e) = b.pin() {
            tracing::warn!(block = %b.path.display(), error = %e, "retention: could not keep the block open for queries reading it");
        }
        if let Err(e) = sh.opts.fs.remove_file(&b.path) {
            // Loaded again at the next start, and deleted then.
            tracing::warn!(error = %e, "retention: could not delete block");
        }
    }
}

/// Write a frozen head as a block, publish it, and drop the WAL segments it covers. A failure
/// marks the store failed (the points stay in the WAL and the frozen head) until a block write
/// succeeds.
fn flush_frozen(sh: &Arc<Shared>, frozen: Arc<Head>, wal_upto: u64) -> std::io::Result<()> {
    let seq = sh.next_block.fetch_add(1, Ordering::SeqCst);
    let series = frozen.series.iter().map(|(k, s)| (k, &s.tags, s.points()));
    let written = block::write_block_with(&*sh.opts.fs, &sh.block_dir, seq, wal_upto, series)
        .and_then(|(path, _)| Block::open_in(&path, &sh.files));
    let blk = match written {
        Ok(b) => Arc::new(b),
        Err(e) => {
            sh.write_error(Part::Block);
            sh.fault(
                Part::Block,
                format!(
                    "block write failed: {e}; its points stay in the WAL and in memory, retrying"
                ),
            );
            return Err(e);
        }
    };
    {
        let mut blocks = sh.blocks.write();
        let mut fr = sh.frozen.write();
        blocks.push(blk);
        *fr = None;
        sh.metrics.blocks.set(blocks.len() as i64);
        sh.metrics.open_block_files.set(sh.files.open_now() as i64);
    }
    sh.clear(Part::Block);
    // The block is durable: a segment that cannot be deleted now is only disk space (replay
    // skips segments a block covers), deleted with the next block's.
    if let Err(e) = Wal::delete_upto_with(&*sh.opts.fs, &sh.wal_dir, wal_upto) {
        tracing::warn!(error = %e, "could not delete WAL segments covered by a block; retried at the next block");
    }
    Ok(())
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
