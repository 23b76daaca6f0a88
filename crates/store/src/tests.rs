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
        refused.points.len(),
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
    write_block(
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
