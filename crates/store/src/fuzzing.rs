//! Fuzzing entry points of the store's decoders (see `fieldlab_core::fuzzing`).
//!
//! Why it exists: the store reads bytes it did not necessarily write — a WAL segment torn or
//! corrupted on disk, a block file from a bad disk or a foreign backup, a backup archive from
//! anywhere, query parameters from any HTTP client. The cargo-fuzz targets `wal_replay`,
//! `block_decode`, `chunk_decode`, `backup_restore` and `query_params` call these functions, and
//! so does the stable corpus replay below. Not part of fieldlab's API.
//!
//! The on-disk formats carry CRC-32s, which random mutation almost never gets right; where a
//! checksum would stop the fuzzer at the door, an input mode lets the entry point compute it,
//! so the decoders behind the checksum are fuzzed too.

use crate::block::{Block, BlockIndex};
use crate::codec::decode_chunk;
use crate::head::Head;
use crate::query::QuerySpec;
use fieldlab_core::FieldValue;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "fieldlab-fuzz-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a scratch dir under the temp dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `wal_replay`: byte 0 even: the rest is one WAL segment as it is on disk. Odd: the rest is
/// records `[len: u16 LE][payload]`, written with a valid header and checksum (bit 1 of byte 0:
/// the columnar flag), so the fuzzer reaches the batch decoding. The replayed batches then go
/// into a head, as on start-up, and replay must be idempotent: replaying the truncated segment
/// again finds the same batches and truncates nothing.
pub fn fuzz_wal_replay(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let seg = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let columnar = if mode & 2 != 0 { 1u32 << 31 } else { 0 };
        let mut out = Vec::new();
        let mut p = 0;
        while p + 2 <= rest.len() {
            let n = u16::from_le_bytes([rest[p], rest[p + 1]]) as usize;
            let payload = &rest[p + 2..(p + 2 + n).min(rest.len())];
            p += 2 + payload.len();
            out.extend_from_slice(&(payload.len() as u32 | columnar).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            out.extend_from_slice(payload);
        }
        out
    };
    let dir = Scratch::new();
    std::fs::write(crate::wal::segment_path(&dir.0, 1), &seg).expect("write a segment");
    let first = crate::wal::replay(&dir.0, 0).expect("replay of a readable segment");
    let again = crate::wal::replay(&dir.0, 0).expect("second replay");
    // Compared encoded: a NaN value is not equal to itself.
    let enc = |b: &Vec<fieldlab_core::Batch>| postcard::to_stdvec(b).expect("encode batches");
    assert_eq!(
        enc(&first.batches),
        enc(&again.batches),
        "replay is not idempotent"
    );
    assert!(
        again.truncated.is_empty(),
        "a truncated segment was truncated again"
    );
    let mut head = Head::default();
    for mut batch in first.batches {
        assert!(batch.is_consistent());
        let mut spans = Vec::new();
        head.insert_batch(&mut batch, 0, &mut spans);
    }
}

/// `block_decode`: byte 0 even: the rest is a block file as it is on disk. Odd: the rest is
/// `[index_len: u16 LE][postcard BlockIndex][chunk bytes]`; the entry point lays the file out
/// (magic, chunks, index, footer) and fixes every checksum, so the fuzzer reaches the chunks.
/// Every chunk of an opened block is then read.
pub fn fuzz_block_decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        if rest.len() < 2 {
            return;
        }
        let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let (idx, chunks) = rest[2..].split_at(n);
        let mut file = b"FLBLOCK1".to_vec();
        file.extend_from_slice(chunks);
        let idx = match postcard::from_bytes::<BlockIndex>(idx) {
            Ok(mut index) => {
                for c in &mut index.chunks {
                    let (o, l) = (c.offset as usize, c.len as usize);
                    if let Some(b) = o.checked_add(l).and_then(|e| file.get(o..e)) {
                        c.crc = crc32fast::hash(b);
                    }
                }
                postcard::to_stdvec(&index).expect("re-encode an index")
            }
            Err(_) => idx.to_vec(),
        };
        let off = file.len() as u64;
        file.extend_from_slice(&idx);
        file.extend_from_slice(&off.to_le_bytes());
        file.extend_from_slice(&(idx.len() as u32).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(&idx).to_le_bytes());
        file.extend_from_slice(b"FLBLKEND");
        file
    };
    let dir = Scratch::new();
    let path = crate::block::block_path(&dir.0, 1);
    std::fs::write(&path, &file).expect("write a block");
    let Ok(block) = Block::open(&path) else {
        return;
    };
    for c in &block.index.chunks {
        if let Ok(points) = block.read_all(&c.key) {
            assert!(
                points.len() <= c.count as usize,
                "more points than the index says"
            );
        }
    }
}

/// `chunk_decode`: `[count: u16 LE][chunk]`. Whatever decodes must encode and decode again to
/// the same points (values compared bit for bit).
pub fn fuzz_chunk_decode(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let count = u16::from_le_bytes([data[0], data[1]]) as usize;
    let Some(points) = decode_chunk(&data[2..], count) else {
        return;
    };
    assert_eq!(points.len(), count, "decoded a different number of points");
    let again = decode_chunk(&crate::codec::encode_chunk(&points), count)
        .expect("a re-encoded chunk decodes");
    let bits = |v: &FieldValue| match v {
        FieldValue::F64(x) => FieldValue::I64(x.to_bits() as i64),
        other => other.clone(),
    };
    for ((t1, v1), (t2, v2)) in points.iter().zip(&again) {
        assert_eq!(t1, t2, "timestamp changed in a re-encode");
        assert_eq!(bits(v1), bits(v2), "value changed in a re-encode");
    }
}

/// `backup_restore`: restore any bytes as a backup archive into an empty directory. Whatever
/// the archive says, nothing may be written outside that directory.
pub fn fuzz_backup_restore(data: &[u8]) {
    let root = Scratch::new();
    let target = root.0.join("data");
    let _ = crate::backup::restore(data, &target);
    let outside: Vec<_> = std::fs::read_dir(&root.0)
        .expect("list the scratch dir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "data")
        .collect();
    assert!(
        outside.is_empty(),
        "restore wrote outside the data dir: {outside:?}"
    );
    check_inside(&target, &target);
}

/// No symbolic link under `dir` leads outside `root`.
fn check_inside(root: &Path, dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&p).expect("read a link");
            let resolved = p.parent().unwrap_or(root).join(&target);
            let inside = target.is_relative()
                && lexically_normal(&resolved).is_some_and(|r| r.starts_with(root));
            assert!(
                inside,
                "restore created a link leading outside the data dir: {} -> {}",
                p.display(),
                target.display()
            );
        } else if meta.is_dir() {
            check_inside(root, &p);
        }
    }
}

fn lexically_normal(p: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// `query_params`: the bytes as a query string (`k=v&k=v`, as the HTTP API receives it after
/// percent-decoding), built into a query as `/api/v1/query` does, then run on a few points
/// at the edges of time.
pub fn fuzz_query_params(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let params: Vec<(&str, &str)> = text
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect();
    let now = 1_767_225_600_000;
    let Ok(q) = QuerySpec::from_params(params.iter().copied(), now, &["format"]) else {
        return;
    };
    assert!(q.from <= q.to);
    let mut ts = vec![
        i64::MIN,
        i64::MIN + 1,
        -1,
        0,
        1,
        now,
        i64::MAX - 1,
        i64::MAX,
        q.from,
        q.to,
    ];
    ts.retain(|t| (q.from..=q.to).contains(t));
    ts.sort_unstable();
    ts.dedup();
    let points: Vec<_> = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let v = match i % 4 {
                0 => FieldValue::F64(i as f64),
                1 => FieldValue::I64(i as i64),
                2 => FieldValue::Bool(true),
                _ => FieldValue::Str("s".into()),
            };
            (t, v)
        })
        .collect();
    let n = points.len();
    let (rows, _) = q.rows(points);
    assert!(rows.len() <= n, "more rows than points");
    let _ = q.columns();
}

#[cfg(test)]
mod tests {
    use fieldlab_core::fuzzing::replay;

    const DIR: &str = env!("CARGO_MANIFEST_DIR");

    #[test]
    fn wal_replay_corpus_replays() {
        assert!(replay(DIR, "wal_replay", super::fuzz_wal_replay) >= 3);
    }

    #[test]
    fn block_decode_corpus_replays() {
        assert!(replay(DIR, "block_decode", super::fuzz_block_decode) >= 3);
    }

    #[test]
    fn chunk_decode_corpus_replays() {
        assert!(replay(DIR, "chunk_decode", super::fuzz_chunk_decode) >= 3);
    }

    #[test]
    fn backup_restore_corpus_replays() {
        assert!(replay(DIR, "backup_restore", super::fuzz_backup_restore) >= 3);
    }

    #[test]
    fn query_params_corpus_replays() {
        assert!(replay(DIR, "query_params", super::fuzz_query_params) >= 3);
    }

    /// Writes the binary seeds of `wal_replay`, `block_decode` and `chunk_decode` from the
    /// real encoders: `cargo test -p fieldlab-store --lib write_seed_corpus -- --ignored`.
    #[test]
    #[ignore = "regenerates fuzz/corpus; run by hand after a format change"]
    fn write_seed_corpus() {
        use fieldlab_core::{Batch, FieldValue, Point, SeriesKey, Tags};
        let corpus = fieldlab_core::fuzzing::fuzz_dir(DIR).join("corpus");
        let put = |target: &str, name: &str, bytes: &[u8]| {
            let d = corpus.join(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), bytes).unwrap();
        };
        let tags = |t: &str| Tags {
            device_type: t.into(),
            extra: [("site".to_string(), "lab".to_string())].into(),
        };
        type Series = (SeriesKey, Tags, Vec<(i64, FieldValue)>);
        let series: Vec<Series> = vec![
            (
                SeriesKey::new("t1", "temperature"),
                tags("sensor"),
                (0..20)
                    .map(|i| {
                        (
                            1_767_225_600_000 + i * 1000,
                            FieldValue::F64(21.5 + i as f64 / 10.0),
                        )
                    })
                    .collect(),
            ),
            (
                SeriesKey::new("t1", "noise"),
                tags("sensor"),
                (0..20)
                    .map(|i| {
                        (
                            1_767_225_600_000 + i * 997,
                            FieldValue::F64((i as f64).sin()),
                        )
                    })
                    .collect(),
            ),
            (
                SeriesKey::new("m1", "count"),
                tags("meter"),
                (0..300)
                    .map(|i| (i * 60_000, FieldValue::I64(i * i - 7)))
                    .collect(),
            ),
            (
                SeriesKey::new("m1", "ok"),
                tags("meter"),
                (0..30).map(|i| (i, FieldValue::Bool(i % 7 < 5))).collect(),
            ),
            (
                SeriesKey::new("m1", "state"),
                tags("meter"),
                (0..30)
                    .map(|i| {
                        (
                            i,
                            FieldValue::Str(["idle", "run", "fault"][i as usize % 3].into()),
                        )
                    })
                    .collect(),
            ),
            (
                SeriesKey::new("m1", "label"),
                tags("meter"),
                (0..6)
                    .map(|i| (i, FieldValue::Str(format!("unique-{i}"))))
                    .collect(),
            ),
            (
                SeriesKey::new("x1", "mixed"),
                tags("misc"),
                vec![
                    (-5, FieldValue::F64(f64::NAN)),
                    (0, FieldValue::I64(i64::MIN)),
                    (3, FieldValue::Bool(false)),
                    (i64::MAX, FieldValue::Str("end".into())),
                ],
            ),
        ];
        // chunk_decode: one chunk per series, each a different codec.
        for (k, _, pts) in &series {
            let mut b = (pts.len() as u16).to_le_bytes().to_vec();
            b.extend_from_slice(&crate::codec::encode_chunk(pts));
            put("chunk_decode", &format!("{}-{}", k.device_id, k.field), &b);
        }
        // block_decode: the whole block as on disk, and the same split for the checksum mode.
        let (file, _) = crate::block::encode_block(
            7,
            3,
            1_767_225_600_000,
            series.iter().map(|(k, t, p)| (k, t, p.as_slice())),
        )
        .unwrap();
        put("block_decode", "block", &[&[0u8][..], &file].concat());
        let n = file.len();
        let idx_off = u64::from_le_bytes(file[n - 24..n - 16].try_into().unwrap()) as usize;
        let idx_len = u32::from_le_bytes(file[n - 16..n - 12].try_into().unwrap()) as usize;
        let mut split = vec![1u8];
        split.extend_from_slice(&(idx_len as u16).to_le_bytes());
        split.extend_from_slice(&file[idx_off..idx_off + idx_len]);
        split.extend_from_slice(&file[8..idx_off]);
        put("block_decode", "block-framed", &split);
        let small = crate::block::encode_block(
            1,
            1,
            0,
            series[3..4].iter().map(|(k, t, p)| (k, t, p.as_slice())),
        )
        .unwrap()
        .0;
        put(
            "block_decode",
            "block-small",
            &[&[0u8][..], &small].concat(),
        );
        // wal_replay: a real segment (columnar batches), a torn one, and framed payloads of
        // both record versions.
        let points: Vec<Point> = series
            .iter()
            .flat_map(|(k, t, p)| {
                p.iter().take(3).map(|(ts, v)| Point {
                    key: k.clone(),
                    tags: t.clone(),
                    ts_ms: *ts,
                    value: v.clone(),
                })
            })
            .collect();
        let batch = Batch::from_points(points.clone());
        let dir = super::Scratch::new();
        let mut wal = crate::wal::Wal::create(&dir.0, 1).unwrap();
        wal.append(&[&batch, &Batch::from_points(points[..2].to_vec())])
            .unwrap();
        wal.sync().unwrap();
        let seg = std::fs::read(crate::wal::segment_path(&dir.0, 1)).unwrap();
        put("wal_replay", "segment", &[&[0u8][..], &seg].concat());
        put(
            "wal_replay",
            "segment-torn",
            &[&[0u8][..], &seg[..seg.len() - 5]].concat(),
        );
        let framed = |mode: u8, payloads: &[Vec<u8>]| {
            let mut b = vec![mode];
            for p in payloads {
                b.extend_from_slice(&(p.len() as u16).to_le_bytes());
                b.extend_from_slice(p);
            }
            b
        };
        let col = postcard::to_stdvec(&batch).unwrap();
        let legacy = postcard::to_stdvec(&points[..4].to_vec()).unwrap();
        put(
            "wal_replay",
            "framed-columnar",
            &framed(3, &[col.clone(), col]),
        );
        put("wal_replay", "framed-points", &framed(1, &[legacy]));
    }
}
