//! Behaviour of the store as a whole: durability across reopen, block cuts, merging.

use super::*;
use fieldlab_core::{FieldValue, Point, SeriesKey, Tags};

fn pts(device: &str, from: i64, n: i64) -> Vec<Point> {
    (from..from + n)
        .map(|i| Point {
            key: SeriesKey::new(device, "temperature"),
            tags: Tags {
                device_type: "TemperatureSensor".into(),
                ..Default::default()
            },
            ts_ms: T0 + i * 1000,
            value: FieldValue::F64(20.0 + i as f64 * 0.25),
        })
        .collect()
}

/// 2026-01-01T00:00:00Z: data timestamps in the past, arriving now.
const T0: i64 = 1_767_225_600_000;

fn key(d: &str) -> SeriesKey {
    SeriesKey::new(d, "temperature")
}

#[tokio::test]
async fn acknowledged_points_survive_reopen_without_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
        s.write(pts("a", 0, 100)).await.unwrap();
        s.write(pts("b", 0, 10)).await.unwrap();
        // Dropped without close: as after a crash, only the WAL has the data.
        s.release_lock_for_crash_test();
        std::mem::forget(s);
    }
    let (s, rec) = Store::open(StoreOptions::new(dir.path())).unwrap();
    assert_eq!(rec.wal_points, 110);
    assert_eq!(s.range(&key("a"), i64::MIN, i64::MAX).unwrap().len(), 100);
    assert_eq!(s.series(None).len(), 2);
    assert_eq!(s.series(Some("b")).len(), 1);
}

#[tokio::test]
async fn close_writes_a_block_and_reopen_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
    s.write(pts("a", 0, 500)).await.unwrap();
    s.close().await.unwrap();
    let refused = s.write(pts("a", 0, 3)).await.unwrap_err();
    assert!(matches!(refused.error, StoreError::Closed));
    assert_eq!(
        refused.batch.len(),
        3,
        "a refused batch is handed back for a retry"
    );
    let (s, rec) = Store::open(StoreOptions::new(dir.path())).unwrap();
    assert_eq!(rec.blocks, 1);
    assert_eq!(rec.block_points, 500);
    assert_eq!(
        rec.wal_points, 0,
        "the WAL segments covered by the block were deleted"
    );
    let got = s.range(&key("a"), i64::MIN, i64::MAX).unwrap();
    assert_eq!(
        got,
        pts("a", 0, 500)
            .into_iter()
            .map(|p| (p.ts_ms, p.value))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn queries_merge_blocks_and_head_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
    s.write(pts("a", 0, 50)).await.unwrap();
    s.flush().await.unwrap();
    // Overlap: 40..49 again with new values, then 50..59.
    let mut again = pts("a", 40, 20);
    for p in &mut again {
        p.value = FieldValue::F64(-1.0);
    }
    s.write(again).await.unwrap();
    let got = s.range(&key("a"), i64::MIN, i64::MAX).unwrap();
    assert_eq!(got.len(), 60);
    assert_eq!(got[39].1, FieldValue::F64(20.0 + 39.0 * 0.25));
    assert_eq!(got[40].1, FieldValue::F64(-1.0), "the newer write wins");
    let t0 = 1_767_225_600_000;
    assert_eq!(
        s.range(&key("a"), t0 + 45_000, t0 + 54_000).unwrap().len(),
        10
    );
    s.close().await.unwrap();
}

#[tokio::test]
async fn head_is_cut_into_blocks_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = StoreOptions::new(dir.path());
    o.head_max_points = 1000;
    let (s, _) = Store::open(o.clone()).unwrap();
    for i in 0..10 {
        s.write(pts("a", i * 300, 300)).await.unwrap();
    }
    // Let the writer's housekeeping run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        s.metrics().blocks.get() >= 2,
        "blocks: {}",
        s.metrics().blocks.get()
    );
    assert_eq!(s.range(&key("a"), i64::MIN, i64::MAX).unwrap().len(), 3000);
    s.close().await.unwrap();
    let (s, _) = Store::open(o).unwrap();
    assert_eq!(s.range(&key("a"), i64::MIN, i64::MAX).unwrap().len(), 3000);
    let bytes: u64 = s.shared.blocks.read().iter().map(|b| b.bytes).sum();
    assert!(bytes < 3000 * 4, "{bytes} bytes for 3000 regular points");
}

#[tokio::test]
async fn retention_counts_from_arrival_not_from_data_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = StoreOptions::new(dir.path());
    o.retention = Duration::from_secs(86_400);
    let (s, _) = Store::open(o.clone()).unwrap();
    s.write(pts("old", 0, 10)).await.unwrap(); // data from 2026-01-01, arriving now
    s.close().await.unwrap();
    let (s, rec) = Store::open(o.clone()).unwrap();
    assert_eq!(rec.blocks, 1);
    assert_eq!(
        s.range(&key("old"), i64::MIN, i64::MAX).unwrap().len(),
        10,
        "kept: arrived today"
    );
    s.close().await.unwrap();
    // Pretend the block arrived two days ago by rewriting its index.
    let path = block::block_path(&dir.path().join("blocks"), 1);
    let blk = Block::open(&path).unwrap();
    let pts_back = blk.read_range(&key("old"), i64::MIN, i64::MAX).unwrap();
    std::fs::remove_file(&path).unwrap();
    let tags = blk.index.chunks[0].tags.clone();
    let k = key("old");
    block::write_block(
        &dir.path().join("blocks"),
        1,
        blk.index.wal_upto,
        std::iter::once((&k, &tags, &pts_back[..])),
    )
    .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mut idx = Block::open(&path).unwrap().index;
    idx.created_ms -= 2 * 86_400_000;
    let enc = postcard::to_stdvec(&idx).unwrap();
    let off = u64::from_le_bytes(
        bytes[bytes.len() - 24..bytes.len() - 16]
            .try_into()
            .unwrap(),
    ) as usize;
    bytes.truncate(off);
    bytes.extend_from_slice(&enc);
    bytes.extend_from_slice(&(off as u64).to_le_bytes());
    bytes.extend_from_slice(&(enc.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&enc).to_le_bytes());
    bytes.extend_from_slice(b"FLBLKEND");
    std::fs::write(&path, bytes).unwrap();
    let (s, rec) = Store::open(o).unwrap();
    assert_eq!(rec.blocks, 1);
    assert!(s.range(&key("old"), i64::MIN, i64::MAX).unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("blocks"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn merge_prefers_later_sources() {
    let a = vec![(1, FieldValue::I64(1)), (2, FieldValue::I64(2))];
    let b = vec![(2, FieldValue::I64(20)), (3, FieldValue::I64(30))];
    assert_eq!(
        merge(vec![a, b]),
        vec![
            (1, FieldValue::I64(1)),
            (2, FieldValue::I64(20)),
            (3, FieldValue::I64(30))
        ]
    );
}

fn tagged(device: &str, ty: &str, site: &str, field: &str, n: i64) -> Vec<Point> {
    (0..n)
        .map(|i| Point {
            key: SeriesKey::new(device, field),
            tags: Tags {
                device_type: ty.into(),
                extra: [("site".to_string(), site.to_string())].into(),
            },
            ts_ms: T0 + i * 1000,
            value: FieldValue::F64(i as f64),
        })
        .collect()
}

#[tokio::test]
async fn queries_select_by_tags_and_aggregate_several_series() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
    s.write(tagged(
        "t1",
        "TemperatureSensor",
        "berlin",
        "temperature",
        120,
    ))
    .await
    .unwrap();
    s.flush().await.unwrap(); // one series from a block, the others from the head
    s.write(tagged(
        "t2",
        "TemperatureSensor",
        "lyon",
        "temperature",
        120,
    ))
    .await
    .unwrap();
    s.write(tagged("p1", "PvInverter", "berlin", "ac_power", 120))
        .await
        .unwrap();
    let mut q = QuerySpec::default();
    q.selector.add("device_type", "TemperatureSensor");
    q.step = Some(60_000);
    q.aggs = Agg::parse_list("min,max,mean,count").unwrap();
    let res = s.query(&q).unwrap();
    assert_eq!(res.len(), 2);
    for r in &res {
        assert_eq!(r.rows.len(), 2);
        assert_eq!(
            r.rows[1].1,
            vec![
                Some(FieldValue::F64(60.0)),
                Some(FieldValue::F64(119.0)),
                Some(FieldValue::F64(89.5)),
                Some(FieldValue::I64(60))
            ]
        );
    }
    let mut q = QuerySpec::default();
    q.selector.add("site", "berlin");
    q.desc = true;
    q.limit = Some(5);
    q.from = T0 + 10_000;
    q.to = T0 + 20_000;
    let res = s.query(&q).unwrap();
    let ids: Vec<&str> = res.iter().map(|r| r.info.device_id.as_str()).collect();
    assert_eq!(ids, vec!["p1", "t1"]);
    assert!(res.iter().all(|r| r.truncated && r.rows.len() == 5));
    assert_eq!(
        res[1].rows[0],
        (T0 + 20_000, vec![Some(FieldValue::F64(20.0))])
    );
    s.close().await.unwrap();
}

#[tokio::test]
async fn compaction_merges_small_blocks_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = StoreOptions::new(dir.path());
    o.head_max_points = 10_000;
    o.compact_below_points = 1_000;
    o.maintenance_interval = Duration::from_secs(3600); // compaction is called by hand here
    let (s, _) = Store::open(o.clone()).unwrap();
    for i in 0..10 {
        s.write(pts("a", i * 100, 100)).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(s.metrics().blocks.get(), 10);
    // A writer that keeps going while compaction runs; every write must be acknowledged.
    let w = s.clone();
    let writer = tokio::spawn(async move {
        for i in 0..200 {
            w.write(pts("live", i * 10, 10)).await.unwrap();
        }
    });
    let c = s.clone();
    let merged = tokio::task::spawn_blocking(move || c.compact())
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(merged, 9);
    assert_eq!(s.metrics().blocks.get(), 1);
    assert_eq!(s.metrics().compactions.get(), 1);
    let a = s.range(&key("a"), i64::MIN, i64::MAX).unwrap();
    assert_eq!(a, s_points(&pts("a", 0, 1000)));
    assert_eq!(
        s.range(&key("live"), i64::MIN, i64::MAX).unwrap().len(),
        2000
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("blocks"))
            .unwrap()
            .count(),
        1
    );
    s.close().await.unwrap();
    let (s, rec) = Store::open(o).unwrap();
    assert_eq!(rec.blocks, 2, "the merged block and the one close wrote");
    assert_eq!(s.range(&key("a"), i64::MIN, i64::MAX).unwrap().len(), 1000);
    assert_eq!(
        s.range(&key("live"), i64::MIN, i64::MAX).unwrap().len(),
        2000
    );
    s.close().await.unwrap();
}

fn s_points(p: &[Point]) -> Vec<(i64, FieldValue)> {
    p.iter().map(|p| (p.ts_ms, p.value.clone())).collect()
}

#[tokio::test]
async fn background_retention_deletes_expired_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = StoreOptions::new(dir.path());
    o.retention = Duration::from_millis(300);
    o.maintenance_interval = Duration::from_millis(50);
    let (s, _) = Store::open(o).unwrap();
    s.write(pts("old", 0, 100)).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.metrics().blocks.get(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.metrics().blocks.get() > 0 {
        assert!(Instant::now() < deadline, "retention never ran");
        // Ingest keeps working meanwhile.
        s.write(pts("new", 0, 1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.range(&key("old"), i64::MIN, i64::MAX).unwrap().is_empty());
    assert_eq!(s.range(&key("new"), i64::MIN, i64::MAX).unwrap().len(), 1);
    assert_eq!(s.metrics().retention_deleted_blocks.get(), 1);
    s.close().await.unwrap();
}

#[tokio::test]
async fn one_writer_per_data_dir_and_read_only_views() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
    s.write(pts("a", 0, 50)).await.unwrap();
    s.flush().await.unwrap();
    s.write(pts("a", 50, 50)).await.unwrap(); // in the WAL only
    assert!(matches!(
        Store::open(StoreOptions::new(dir.path())),
        Err(StoreError::Locked(_))
    ));
    let (r, _) = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(r.range(&key("a"), i64::MIN, i64::MAX).unwrap().len(), 100);
    let e = r.write(pts("a", 0, 1)).await.unwrap_err();
    assert!(matches!(e.error, StoreError::ReadOnly));
    r.close().await.unwrap();
    s.close().await.unwrap();
    let (s, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
    s.close().await.unwrap();
    let empty = tempfile::tempdir().unwrap();
    assert!(Store::open_read_only(empty.path()).is_err());
}

#[tokio::test]
async fn online_backup_is_a_consistent_cut_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("quarantine")).unwrap();
    std::fs::write(
        dir.path().join("quarantine/quarantine.jsonl"),
        "{\"x\":1}\n",
    )
    .unwrap();
    let (s, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
    s.write(pts("a", 0, 1000)).await.unwrap();
    s.flush().await.unwrap();
    s.write(pts("a", 1000, 500)).await.unwrap(); // WAL + head only
                                                 // One point per write, in time order: whatever the cut, "live" must be a gap-free prefix.
    let w = s.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let writer = tokio::spawn(async move {
        let mut i = 0;
        while !st.load(Ordering::Relaxed) {
            w.write(pts("live", i, 1)).await.unwrap();
            i += 1;
        }
        i
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (archive, manifest) = s.backup(Vec::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert_eq!(manifest.blocks, 1);
    assert_eq!(
        manifest.files,
        vec!["quarantine/quarantine.jsonl".to_string()]
    );
    assert!(
        !dir.path().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".snapshot")),
        "snapshot links are removed"
    );
    s.close().await.unwrap();

    let target = tempfile::tempdir().unwrap();
    let restored = target.path().join("data");
    let m = backup::restore(&archive[..], &restored).unwrap();
    assert_eq!(m, manifest);
    assert!(
        backup::restore(&archive[..], &restored).is_err(),
        "target must be empty"
    );
    assert_eq!(
        std::fs::read_to_string(restored.join("quarantine/quarantine.jsonl")).unwrap(),
        "{\"x\":1}\n"
    );
    let (r, rec) = Store::open(StoreOptions::new(&restored)).unwrap();
    assert_eq!(
        rec.wal_truncated_bytes, 0,
        "the cut ends on a record boundary"
    );
    assert_eq!(
        r.range(&key("a"), i64::MIN, i64::MAX).unwrap(),
        s_points(&pts("a", 0, 1500))
    );
    let live = r.range(&key("live"), i64::MIN, i64::MAX).unwrap();
    assert!(
        !live.is_empty() && (live.len() as i64) < written,
        "{} of {written}",
        live.len()
    );
    assert_eq!(live, s_points(&pts("live", 0, live.len() as i64)));
    r.close().await.unwrap();
    assert!(backup::restore(&b"not a tar"[..], &target.path().join("x")).is_err());
}

/// Block files of this store's data dir open in this process now.
fn open_block_fds(dir: &std::path::Path) -> usize {
    let blocks = dir.join("blocks");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.starts_with(&blocks))
        .count()
}

fn many_blocks_options(dir: &std::path::Path) -> StoreOptions {
    let mut o = StoreOptions::new(dir);
    o.max_open_blocks = 8;
    o.maintenance_interval = Duration::from_secs(3600); // compaction is called by hand here
    o
}

/// One file descriptor per block ran a busy store into the open-file limit within a day:
/// open block files stay within `max_open_blocks` however many blocks there are, and every
/// block still reads back (opened again on demand).
#[tokio::test]
async fn open_block_files_stay_within_max_open_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let o = many_blocks_options(dir.path());
    let (s, _) = Store::open(o.clone()).unwrap();
    for i in 0..40 {
        s.write(pts(&format!("d{i}"), 0, 50)).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(s.metrics().blocks.get(), 40);
    assert!(
        open_block_fds(dir.path()) <= 8,
        "{}",
        open_block_fds(dir.path())
    );
    for round in 0..2 {
        for i in 0..40 {
            let got = s.range(&key(&format!("d{i}")), i64::MIN, i64::MAX).unwrap();
            assert_eq!(
                got,
                s_points(&pts(&format!("d{i}"), 0, 50)),
                "round {round}"
            );
        }
        assert!(
            open_block_fds(dir.path()) <= 8,
            "{}",
            open_block_fds(dir.path())
        );
    }
    assert!(s.metrics().open_block_files.get() <= 8);
    s.close().await.unwrap();
    drop(s);
    assert_eq!(open_block_fds(dir.path()), 0);
    let (s, rec) = Store::open(o).unwrap();
    assert_eq!(rec.blocks, 40);
    assert!(
        open_block_fds(dir.path()) <= 8,
        "{}",
        open_block_fds(dir.path())
    );
    assert_eq!(s.range(&key("d0"), i64::MIN, i64::MAX).unwrap().len(), 50);
    s.close().await.unwrap();
}

/// A query that took the block list before a compaction keeps reading the blocks it took,
/// although compaction renames the merged block over one of their paths and deletes the
/// others, and although their files had been closed to stay within `max_open_blocks`.
#[tokio::test]
async fn readers_of_replaced_blocks_read_what_their_index_describes() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(many_blocks_options(dir.path())).unwrap();
    for i in 0..20 {
        // Each block: device "a" at its own times (so the merged block, renamed over the
        // last block's path, differs from it) and a device of its own.
        let mut p = pts("a", i * 10, 10);
        p.extend(pts(&format!("d{i}"), 0, 5));
        s.write(p).await.unwrap();
        s.flush().await.unwrap();
    }
    let taken: Vec<Arc<Block>> = s.shared.blocks.read().clone();
    assert_eq!(taken.len(), 20);
    let c = s.clone();
    let merged = tokio::task::spawn_blocking(move || c.compact())
        .await
        .unwrap();
    assert_eq!(merged, 19);
    for (i, b) in taken.iter().enumerate() {
        let i = i as i64;
        assert_eq!(
            b.read_all(&key("a")).unwrap(),
            s_points(&pts("a", i * 10, 10)),
            "block {i}"
        );
        assert_eq!(b.read_all(&key(&format!("d{i}"))).unwrap().len(), 5);
    }
    drop(taken);
    assert_eq!(s.range(&key("a"), i64::MIN, i64::MAX).unwrap().len(), 200);
    assert!(open_block_fds(dir.path()) <= 8);
    s.close().await.unwrap();
}

/// Full blocks (a busy lab cuts one per `head_max_points`) are merged too, in tiers, so the
/// number of blocks does not grow with time; no point is lost or doubled on the way.
#[tokio::test]
async fn full_blocks_merge_in_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = many_blocks_options(dir.path());
    o.head_max_points = 1_000;
    o.compact_below_points = 250;
    o.compact_max_points = 32_000;
    let (s, _) = Store::open(o.clone()).unwrap();
    for i in 0..32 {
        s.write(pts("a", i * 1000, 1000)).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(s.metrics().blocks.get(), 32);
    let mut passes = 0;
    while s.compact() > 0 {
        passes += 1;
        assert!(passes < 40);
    }
    let blocks: Vec<u64> = s
        .shared
        .blocks
        .read()
        .iter()
        .map(|b| b.index.points)
        .collect();
    // 32 x 1k -> 4 x 8k (tier 1) -> 1 x 32k (tier 2).
    assert_eq!(blocks, vec![32_000]);
    assert_eq!(
        s.range(&key("a"), i64::MIN, i64::MAX).unwrap(),
        s_points(&pts("a", 0, 32_000))
    );
    s.close().await.unwrap();
    let (s, _) = Store::open(o).unwrap();
    assert_eq!(
        s.range(&key("a"), i64::MIN, i64::MAX).unwrap().len(),
        32_000
    );
    s.close().await.unwrap();
}

/// Verdict series (`F#quality`, `F#anomaly`) stay out of listings and selections, and
/// `with=` joins them to their field's raw points by timestamp, from blocks and the head.
#[tokio::test]
async fn verdicts_join_their_fields_points_and_stay_out_of_listings() {
    use fieldlab_core::reading::verdict;
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
    let mut all = pts("a", 0, 10);
    let verdict_pt = |field: &str, i: i64, value: FieldValue| Point {
        key: SeriesKey::new("a", verdict::series_field("temperature", field)),
        tags: all[0].tags.clone(),
        ts_ms: T0 + i * 1000,
        value,
    };
    // Every reading scored; readings 3 and 7 broke rules.
    let mut verdicts: Vec<Point> = (0..10)
        .map(|i| {
            verdict_pt(
                "anomaly",
                i,
                FieldValue::F64(if i == 7 { 0.97 } else { 0.1 }),
            )
        })
        .collect();
    verdicts.push(verdict_pt("quality", 3, FieldValue::Str("rate".into())));
    verdicts.push(verdict_pt(
        "quality",
        7,
        FieldValue::Str("range,rate".into()),
    ));
    all.extend(verdicts);
    let (first, rest): (Vec<Point>, Vec<Point>) =
        all.into_iter().partition(|p| p.ts_ms < T0 + 5000);
    s.write(first).await.unwrap();
    s.flush().await.unwrap(); // the first half from a block, the rest from the head
    s.write(rest).await.unwrap();
    assert_eq!(s.series(None).len(), 1, "verdict series are not listed");
    let mut q = QuerySpec::default();
    q.selector.add("device_id", "a");
    let res = s.query(&q).unwrap();
    assert_eq!(res.len(), 1, "nor selected");
    assert_eq!(res[0].rows[0].1.len(), 1, "no verdict columns unless asked");
    let q =
        QuerySpec::from_params([("device_id", "a"), ("with", "quality,anomaly")], 0, &[]).unwrap();
    assert_eq!(q.columns(), vec!["value", "quality", "anomaly"]);
    let res = s.query(&q).unwrap();
    assert_eq!(res.len(), 1);
    let rows = &res[0].rows;
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[3].1[1], Some(FieldValue::Str("rate".into())));
    assert_eq!(rows[4].1[1], None);
    assert_eq!(rows[7].1[1], Some(FieldValue::Str("range,rate".into())));
    assert_eq!(rows[7].1[2], Some(FieldValue::F64(0.97)));
    assert_eq!(rows[0].1[2], Some(FieldValue::F64(0.1)));
    // A verdict series can still be read by its own name.
    let mut q = QuerySpec::default();
    q.selector
        .add("field", &verdict::series_field("temperature", "quality"));
    assert_eq!(s.query(&q).unwrap()[0].rows.len(), 2);
}
