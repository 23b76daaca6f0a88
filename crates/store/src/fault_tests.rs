//! Storage faults, end to end: a workload of writes, block cuts and compactions runs on a
//! [`FaultyFs`] that fails file operations (ENOSPC, EIO, short writes; also the cut-back after
//! one, and a disk that is full for a while); then the store crashes (the writer stops where it
//! is; optionally a power cut drops what was not fsynced), is reopened on the real file system,
//! and every point acknowledged before the crash must be read back exactly once, with its
//! value, and nothing that was never written.
//!
//! Three drivers:
//! - [`every_operation_failing_in_turn`]: one fault at every operation of a fixed workload, with
//!   every fault its kind of operation can have, each once as a process crash and once as a
//!   power cut; then the same with the cut-back failing as well (two faults in a row);
//! - [`random_fault_schedules`] (proptest): random workloads, faults, full-disk windows and
//!   fsync policies;
//! - unit-sized tests of health, readiness, the metric and recovery after the disk has room.

use super::*;
use crate::fs::{Fault, FaultyFs, OpKind};
use fieldlab_core::{FieldValue, Point, SeriesKey, Tags};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const DEVICES: [&str; 3] = ["pump", "valve", "meter"];

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Write batch number `n` (its points are unique to it).
    Write(u32),
    /// Cut the head into a block and wait for it.
    Flush,
    /// Merge small blocks.
    Compact,
}

type Key = (String, i64);

/// The points of write number `n`: 4 per device, at timestamps no other write uses. Values
/// depend on `n` and the point, so a point read back with another value is caught.
fn batch_points(n: u32) -> Vec<Point> {
    let mut out = Vec::new();
    for (d, dev) in DEVICES.iter().enumerate() {
        for j in 0..4 {
            let ts = T0 + i64::from(n) * 10_000 + j * 1000;
            out.push(Point {
                key: SeriesKey::new(*dev, "v"),
                tags: Tags {
                    device_type: "FaultTest".into(),
                    ..Default::default()
                },
                ts_ms: ts,
                value: FieldValue::F64(f64::from(n) * 100.0 + (d * 10) as f64 + j as f64),
            });
        }
    }
    out
}

fn options(dir: &Path, fs: &FaultyFs, fsync: FsyncPolicy) -> StoreOptions {
    let mut o = StoreOptions::new(dir);
    o.fs = fs.handle();
    o.fsync = fsync;
    o.fsync_interval = Duration::from_millis(5);
    // Cuts and compactions happen only when the workload asks: the operations of a run are in
    // a fixed order, so "the Nth operation" names the same step in every run.
    o.head_max_points = 1_000_000;
    o.block_max_age = Duration::from_secs(3600);
    o.maintenance_interval = Duration::from_secs(3600);
    o.compact_below_points = 1_000_000;
    o
}

/// What a run wrote: every point attempted, and those the store acknowledged.
#[derive(Default)]
struct Outcome {
    attempted: BTreeMap<Key, FieldValue>,
    acked: BTreeMap<Key, FieldValue>,
    refused: usize,
}

/// Run `steps` on a store over `fs`, retrying a refused write up to `retries` times (as ingest
/// does), then crash.
async fn run(
    dir: &Path,
    fs: &FaultyFs,
    fsync: FsyncPolicy,
    steps: &[Step],
    retries: usize,
) -> Outcome {
    let mut out = Outcome::default();
    let Ok((s, _)) = Store::open(options(dir, fs, fsync)) else {
        return out; // the data dir could not even be created: nothing acknowledged
    };
    for step in steps {
        match *step {
            Step::Write(n) => {
                let pts = batch_points(n);
                for p in &pts {
                    out.attempted
                        .insert((p.key.device_id.to_string(), p.ts_ms), p.value.clone());
                }
                let mut batch = Batch::from_points(pts.clone());
                for _ in 0..=retries {
                    match s.write_batch(batch).await {
                        Ok(()) => {
                            for p in &pts {
                                out.acked.insert(
                                    (p.key.device_id.to_string(), p.ts_ms),
                                    p.value.clone(),
                                );
                            }
                            break;
                        }
                        Err(e) => {
                            out.refused += 1;
                            assert!(
                                s.health().is_err() || e.error.to_string().contains("head is full")
                            );
                            assert_eq!(
                                e.batch.len(),
                                pts.len(),
                                "a refused batch comes back whole"
                            );
                            batch = e.batch;
                        }
                    }
                }
            }
            Step::Flush => {
                let _ = s.flush().await;
            }
            Step::Compact => {
                let c = s.clone();
                tokio::task::spawn_blocking(move || c.compact())
                    .await
                    .unwrap();
            }
        }
    }
    s.crash().await;
    out
}

/// Reopen on the real file system and check: every acknowledged point is there with its value,
/// each series is read in strictly increasing time (no point twice), nothing is read that was
/// never written, no WAL corruption had to be skipped (faults only ever leave torn tails), and
/// the store is healthy and writable.
async fn check(dir: &Path, out: &Outcome, what: &str) {
    let (s, rec) = Store::open(StoreOptions::new(dir))
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    assert!(
        rec.wal_skipped.is_empty(),
        "{what}: a write fault left damage in the middle of a segment: {:?}",
        rec.wal_skipped
    );
    assert!(
        rec.corrupt_blocks.is_empty(),
        "{what}: {:?}",
        rec.corrupt_blocks
    );
    let mut read = BTreeMap::new();
    for dev in DEVICES {
        let pts = s
            .range(&SeriesKey::new(dev, "v"), i64::MIN, i64::MAX)
            .unwrap();
        assert!(
            pts.windows(2).all(|w| w[0].0 < w[1].0),
            "{what}: {dev} has a point twice or out of order"
        );
        for (ts, v) in pts {
            read.insert((dev.to_string(), ts), v);
        }
    }
    for (k, v) in &out.acked {
        assert_eq!(
            read.get(k),
            Some(v),
            "{what}: acknowledged point {k:?} lost or changed ({} acked, {} read)",
            out.acked.len(),
            read.len()
        );
    }
    for (k, v) in &read {
        assert_eq!(
            out.attempted.get(k),
            Some(v),
            "{what}: {k:?} was never written"
        );
    }
    assert_eq!(s.health(), Ok(()), "{what}");
    s.write(batch_points(999)).await.unwrap();
    s.close().await.unwrap();
}

/// The fixed workload: writes, cuts and compactions interleaved (two compactions, each
/// merging what the cuts before it wrote).
fn workload() -> Vec<Step> {
    use Step::*;
    vec![
        Write(0),
        Write(1),
        Flush,
        Write(2),
        Write(3),
        Flush,
        Write(4),
        Compact,
        Write(5),
        Write(6),
        Flush,
        Compact,
        Write(7),
        Flush,
        Write(8),
    ]
}

/// A scratch directory, in memory where there is a tmpfs: the fault cases fsync a lot, and the
/// power cut is [`FaultyFs`]'s model, not the disk's.
fn scratch() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => {
            tempfile::tempdir_in(shm).unwrap_or_else(|_| tempfile::tempdir().unwrap())
        }
        _ => tempfile::tempdir().unwrap(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One case: `plan` sets the faults, the workload runs, crash (power cut if `seed`), check.
fn case(
    plan: impl FnOnce(&FaultyFs),
    power_cut: Option<u64>,
    fsync: FsyncPolicy,
    steps: &[Step],
    what: &str,
) -> Outcome {
    let dir = scratch();
    let fs = FaultyFs::new();
    if fsync == FsyncPolicy::Always {
        fs.drop_pages_on_failed_sync();
    }
    plan(&fs);
    let rt = rt();
    let out = rt.block_on(run(dir.path(), &fs, fsync, steps, 2));
    if let Some(seed) = power_cut {
        fs.power_cut(seed);
    }
    rt.block_on(check(dir.path(), &out, what));
    out
}

#[test]
fn every_operation_failing_in_turn() {
    let steps = workload();
    // The operations of a run without faults.
    let clean = {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let out = rt().block_on(run(dir.path(), &fs, FsyncPolicy::Always, &steps, 0));
        assert_eq!(out.acked.len(), 9 * 12);
        fs.trace()
    };
    let kinds: std::collections::BTreeSet<OpKind> = clean.iter().map(|o| o.kind).collect();
    for k in [
        OpKind::Open,
        OpKind::Write,
        OpKind::Sync,
        OpKind::Rename,
        OpKind::Remove,
        OpKind::SyncDir,
    ] {
        assert!(kinds.contains(&k), "the workload never does {k:?}");
    }
    let mut cases = 0;
    let mut refused = 0;
    for (i, op) in clean.iter().enumerate() {
        for &fault in op.kind.faults() {
            for power_cut in [None, Some(i as u64)] {
                let what = format!(
                    "op {i} ({:?} {}) {fault:?}, power cut {power_cut:?}",
                    op.kind,
                    op.path.display()
                );
                let out = case(
                    |fs| fs.fail_at(i, fault),
                    power_cut,
                    FsyncPolicy::Always,
                    &steps,
                    &what,
                );
                refused += out.refused;
                cases += 1;
            }
        }
        // The fault and the cleanup after it both fail (a cut-back, a removal of a temporary
        // file, a retry): the WAL must poison the segment rather than write behind a partial
        // record.
        if matches!(op.kind, OpKind::Write | OpKind::Sync) {
            let what = format!("op {i} ({:?}) and the next two operations fail", op.kind);
            let out = case(
                |fs| {
                    fs.fail_at(i, Fault::ShortWrite);
                    fs.fail_at(i + 1, Fault::Io);
                    fs.fail_at(i + 2, Fault::Io);
                },
                Some(i as u64),
                FsyncPolicy::Always,
                &steps,
                &what,
            );
            refused += out.refused;
            cases += 1;
        }
    }
    eprintln!(
        "every_operation_failing_in_turn: {} operations, {cases} fault cases, {refused} refused writes, all acknowledged points read back once",
        clean.len()
    );
    assert!(cases > 150, "{cases}");
}

fn step() -> impl Strategy<Value = u8> {
    0u8..10
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::NoSpace),
        Just(Fault::Io),
        Just(Fault::ShortWrite)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random workloads, up to four faults at random operations, maybe a full disk for a span
    /// of operations, under each fsync policy; process crash, or a power cut under `always`.
    #[test]
    fn random_fault_schedules(
        kinds in proptest::collection::vec(step(), 5..40),
        faults in proptest::collection::vec((0usize..160, fault()), 0..5),
        full in proptest::option::of((0usize..150, 1usize..40)),
        policy in 0u8..3,
        power_cut in any::<Option<u64>>(),
    ) {
        let mut n = 0;
        let steps: Vec<Step> = kinds
            .iter()
            .map(|k| match k {
                0 => Step::Flush,
                1 => Step::Compact,
                _ => {
                    n += 1;
                    Step::Write(n)
                }
            })
            .collect();
        let fsync = [FsyncPolicy::Always, FsyncPolicy::Interval, FsyncPolicy::Never][policy as usize];
        // Only `always` promises anything across a power cut.
        let power_cut = power_cut.filter(|_| fsync == FsyncPolicy::Always);
        let what = format!("{steps:?} faults {faults:?} full {full:?} {fsync:?} power cut {power_cut:?}");
        case(
            |fs| {
                for (at, f) in &faults {
                    fs.fail_at(*at, *f);
                }
                if let Some((from, len)) = full {
                    fs.fail_window(from..from + len, &[OpKind::Write, OpKind::Open, OpKind::Sync], Fault::NoSpace);
                }
            },
            power_cut,
            fsync,
            &steps,
            &what,
        );
    }
}

/// The store reports a failing WAL (health, metric), refuses without acknowledging, and is
/// healthy again by itself once a write succeeds.
#[tokio::test]
async fn full_disk_fails_the_store_until_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let (s, _) = Store::open(options(dir.path(), &fs, FsyncPolicy::Always)).unwrap();
    s.write(batch_points(0)).await.unwrap();
    assert_eq!(s.health(), Ok(()));
    fs.fail_all(&[OpKind::Write], Fault::ShortWrite);
    for n in 1..4 {
        let e = s.write(batch_points(n)).await.unwrap_err();
        assert_eq!(e.batch.len(), 12);
    }
    let why = s.health().unwrap_err();
    assert!(why.contains("No space left on device"), "{why}");
    assert_eq!(s.metrics().write_errors_total(), 3);
    let mut reg = prometheus_client::registry::Registry::default();
    s.metrics().register(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(
        text.contains("fieldlab_store_write_errors_total{part=\"wal\"} 3"),
        "{text}"
    );
    // Room again: the next write goes through and the store is healthy.
    fs.heal();
    s.write(batch_points(4)).await.unwrap();
    assert_eq!(s.health(), Ok(()));
    s.crash().await;
    let mut out = Outcome::default();
    for n in [0, 4] {
        for p in batch_points(n) {
            out.acked
                .insert((p.key.device_id.to_string(), p.ts_ms), p.value.clone());
        }
    }
    out.attempted = out.acked.clone();
    check(dir.path(), &out, "full disk").await;
}

/// A block that cannot be written keeps its points in the WAL and in memory, makes the store
/// unready, is retried with back-off in the background, and `close` fails while it cannot be
/// written.
#[tokio::test]
async fn failed_block_writes_are_retried_and_fail_close() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let mut o = options(dir.path(), &fs, FsyncPolicy::Always);
    o.head_max_points = 24; // two writes fill the head
    let (s, _) = Store::open(o).unwrap();
    fs.fail_all(&[OpKind::Rename], Fault::Io);
    s.write(batch_points(0)).await.unwrap();
    assert!(s.flush().await.is_err());
    let why = s.health().unwrap_err();
    assert!(why.contains("block write failed"), "{why}");
    // The WAL still works: writes are taken until the head is full, then refused.
    s.write(batch_points(1)).await.unwrap();
    s.write(batch_points(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await; // a background retry fails too
    let e = s.write(batch_points(3)).await.unwrap_err();
    assert!(e.error.to_string().contains("head is full"), "{}", e.error);
    assert_eq!(
        s.range(&SeriesKey::new("pump", "v"), i64::MIN, i64::MAX)
            .unwrap()
            .len(),
        12
    );
    assert!(
        s.close().await.is_err(),
        "close must not claim the data is flushed"
    );
    // Reopened on a healthy disk: everything acknowledged is there (from the WAL).
    let mut out = Outcome::default();
    for n in 0..3 {
        for p in batch_points(n) {
            out.acked
                .insert((p.key.device_id.to_string(), p.ts_ms), p.value.clone());
        }
    }
    out.attempted = out.acked.clone();
    check(dir.path(), &out, "failed blocks").await;
}

#[tokio::test]
async fn block_write_retry_clears_the_failure_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let (s, _) = Store::open(options(dir.path(), &fs, FsyncPolicy::Always)).unwrap();
    s.write(batch_points(0)).await.unwrap();
    fs.fail_nth(OpKind::Rename, 0, Fault::NoSpace);
    assert!(s.flush().await.is_err());
    assert!(s.health().is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.health().is_err() {
        assert!(
            Instant::now() < deadline,
            "the block write was never retried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.metrics().blocks.get(), 1);
    s.close().await.unwrap();
}

/// A store whose disk is full at start opens (read queries work), starts failed, and takes
/// writes once there is room.
#[tokio::test]
async fn opens_failed_on_a_full_disk_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
        s.write(batch_points(0)).await.unwrap();
        s.crash().await;
    }
    let fs = FaultyFs::new();
    fs.fail_all(&[OpKind::Open, OpKind::SetLen], Fault::NoSpace);
    let (s, rec) = Store::open(options(dir.path(), &fs, FsyncPolicy::Always)).unwrap();
    assert_eq!(rec.wal_points, 12);
    assert!(s
        .health()
        .unwrap_err()
        .contains("cannot create a WAL segment"));
    assert!(s.write(batch_points(1)).await.is_err());
    fs.heal();
    s.write(batch_points(1)).await.unwrap();
    assert_eq!(s.health(), Ok(()));
    assert_eq!(
        s.range(&SeriesKey::new("meter", "v"), i64::MIN, i64::MAX)
            .unwrap()
            .len(),
        8
    );
    s.close().await.unwrap();
}

/// A frozen head whose block write failed is retried with the WAL segments *it* covers, even
/// when the WAL has moved on to a new segment meanwhile (a poisoned one): the retried block must
/// not claim (and delete) a segment whose points are only in the newer head.
#[tokio::test]
async fn a_retried_block_covers_only_its_own_segments() {
    let dir = scratch();
    let fs = FaultyFs::new();
    let (s, _) = Store::open(options(dir.path(), &fs, FsyncPolicy::Always)).unwrap();
    let mut out = Outcome::default();
    let acked = |n: u32, out: &mut Outcome| {
        for p in batch_points(n) {
            out.acked
                .insert((p.key.device_id.to_string(), p.ts_ms), p.value.clone());
        }
    };
    s.write(batch_points(0)).await.unwrap();
    acked(0, &mut out);
    fs.fail_nth(OpKind::Rename, 0, Fault::Io);
    assert!(s.flush().await.is_err()); // frozen head of segment 1 waits; the WAL is at 2
    s.write(batch_points(1)).await.unwrap(); // segment 2
    acked(1, &mut out);
    fs.fail_nth(OpKind::Write, 0, Fault::ShortWrite);
    fs.fail_nth(OpKind::SetLen, 0, Fault::Io);
    assert!(s.write(batch_points(2)).await.is_err()); // segment 2 poisoned
    s.write(batch_points(3)).await.unwrap(); // segment 3
    acked(3, &mut out);
    // Retry the frozen head's block only, then crash before the head is cut.
    fs.fail_nth(OpKind::Rename, 1, Fault::Io); // the new cut's block fails; the retry's works
    assert!(s.flush().await.is_err());
    s.crash().await;
    out.attempted = out.acked.clone();
    for p in batch_points(2) {
        out.attempted
            .insert((p.key.device_id.to_string(), p.ts_ms), p.value.clone());
    }
    check(dir.path(), &out, "retried block").await;
}
