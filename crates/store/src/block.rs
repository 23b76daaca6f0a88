//! Immutable, compressed blocks: where points live once they leave the in-memory head.
//!
//! A block holds every series of one head cut. File layout:
//!
//! ```text
//! "FLBLOCK1"                        8-byte magic
//! chunk 0 .. chunk n                one per series, see codec.rs
//! index                             postcard(BlockIndex): per chunk key, tags, count,
//!                                   time range, offset, length, crc32
//! index_offset u64 LE | index_len u32 LE | index_crc u32 LE | "FLBLKEND"
//! ```
//!
//! Blocks are written to a temporary name, fsynced and renamed, so a block file either exists
//! completely or not at all. Readers keep only the index in memory and read chunks with
//! positioned reads. Retention deletes whole blocks; compaction (merging small blocks) rewrites
//! them — both rely on blocks never being modified in place.

use crate::codec::{decode_chunk, encode_chunk};
use crate::fs::{RealFs, StoreFs};
use fieldlab_core::{FieldValue, SeriesKey, Tags};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"FLBLOCK1";
const END: &[u8; 8] = b"FLBLKEND";
const FOOTER: usize = 8 + 4 + 4 + 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkMeta {
    pub key: SeriesKey,
    pub tags: Tags,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockIndex {
    pub format: u32,
    /// Block sequence number (also in the file name).
    pub seq: u64,
    /// The last WAL segment whose data this block contains.
    pub wal_upto: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub points: u64,
    /// When the block's data arrived (epoch ms; for a merged block, the newest arrival).
    /// Retention counts from here, not from the data's timestamps, so replayed historical
    /// data (a 2014 benchmark series) is kept as long as fresh data.
    pub created_ms: i64,
    pub chunks: Vec<ChunkMeta>,
}

pub fn block_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.block"))
}

/// Write a block from series (each sorted by time, no duplicate timestamps).
pub fn write_block<'a>(
    dir: &Path,
    seq: u64,
    wal_upto: u64,
    series: impl Iterator<Item = (&'a SeriesKey, &'a Tags, &'a [(i64, FieldValue)])>,
) -> io::Result<(PathBuf, BlockIndex)> {
    write_block_with(&RealFs, dir, seq, wal_upto, series)
}

/// [`write_block`] through `fs`. On error no block file is left behind (best effort: a
/// failure to remove it is harmless, its points are also in the WAL and a later block).
pub fn write_block_with<'a>(
    fs: &dyn StoreFs,
    dir: &Path,
    seq: u64,
    wal_upto: u64,
    series: impl Iterator<Item = (&'a SeriesKey, &'a Tags, &'a [(i64, FieldValue)])>,
) -> io::Result<(PathBuf, BlockIndex)> {
    fs.create_dir_all(dir)?;
    let (buf, index) = encode_block(seq, wal_upto, fieldlab_core::time::now_ms(), series)?;
    let path = block_path(dir, seq);
    let tmp = path.with_extension("block.tmp");
    crate::fs::write_synced(fs, &tmp, &buf)?;
    if let Err(e) = fs.rename(&tmp, &path) {
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs.sync_dir(dir) {
        // The block is complete, but whether its name survives a power cut is unknown: take
        // it back (its points are still in the WAL); the caller retries under a new number.
        let _ = fs.remove_file(&path);
        return Err(e);
    }
    Ok((path, index))
}

/// Write `buf` to `tmp`, fsync, rename to `path`, fsync the directory: the file at `path`
/// then exists completely (old or new content), never half.
pub fn write_file_atomically(path: &Path, tmp: &Path, buf: &[u8]) -> io::Result<()> {
    crate::fs::write_file_atomically(&RealFs, path, tmp, buf)
}

/// Encode a block file in memory. `created_ms` is when its data arrived (retention).
pub fn encode_block<'a>(
    seq: u64,
    wal_upto: u64,
    created_ms: i64,
    series: impl Iterator<Item = (&'a SeriesKey, &'a Tags, &'a [(i64, FieldValue)])>,
) -> io::Result<(Vec<u8>, BlockIndex)> {
    let mut buf = Vec::with_capacity(1 << 16);
    buf.extend_from_slice(MAGIC);
    let mut index = BlockIndex {
        format: 1,
        seq,
        wal_upto,
        min_ts: i64::MAX,
        max_ts: i64::MIN,
        points: 0,
        created_ms,
        chunks: Vec::new(),
    };
    let mut series: Vec<_> = series.filter(|(_, _, p)| !p.is_empty()).collect();
    series.sort_by(|a, b| a.0.cmp(b.0));
    for (key, tags, points) in series {
        let chunk = encode_chunk(points);
        let meta = ChunkMeta {
            key: key.clone(),
            tags: tags.clone(),
            count: points.len() as u32,
            min_ts: points[0].0,
            max_ts: points[points.len() - 1].0,
            offset: buf.len() as u64,
            len: chunk.len() as u32,
            crc: crc32fast::hash(&chunk),
        };
        index.min_ts = index.min_ts.min(meta.min_ts);
        index.max_ts = index.max_ts.max(meta.max_ts);
        index.points += points.len() as u64;
        index.chunks.push(meta);
        buf.extend_from_slice(&chunk);
    }
    let idx = postcard::to_stdvec(&index).map_err(io::Error::other)?;
    let idx_off = buf.len() as u64;
    buf.extend_from_slice(&idx);
    buf.extend_from_slice(&idx_off.to_le_bytes());
    buf.extend_from_slice(&(idx.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&idx).to_le_bytes());
    buf.extend_from_slice(END);
    Ok((buf, index))
}

/// An open block: its index in memory, its chunks on disk.
#[derive(Debug)]
pub struct Block {
    pub path: PathBuf,
    pub index: BlockIndex,
    pub bytes: u64,
    file: File,
}

impl Block {
    pub fn open(path: &Path) -> io::Result<Block> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {what}", path.display()),
            )
        };
        if len < (MAGIC.len() + FOOTER) as u64 {
            return Err(bad("too short to be a block"));
        }
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, 0)?;
        let mut footer = [0u8; FOOTER];
        file.read_exact_at(&mut footer, len - FOOTER as u64)?;
        if &magic != MAGIC || &footer[16..] != END {
            return Err(bad("not a fieldlab block (bad magic)"));
        }
        let off = u64::from_le_bytes(footer[..8].try_into().unwrap());
        let n = u32::from_le_bytes(footer[8..12].try_into().unwrap()) as u64;
        let crc = u32::from_le_bytes(footer[12..16].try_into().unwrap());
        if off.checked_add(n) != Some(len - FOOTER as u64) {
            return Err(bad("index offset out of range"));
        }
        let mut idx = vec![0u8; n as usize];
        file.read_exact_at(&mut idx, off)?;
        if crc32fast::hash(&idx) != crc {
            return Err(bad("index checksum mismatch"));
        }
        let index: BlockIndex =
            postcard::from_bytes(&idx).map_err(|e| bad(&format!("index: {e}")))?;
        Ok(Block {
            path: path.to_path_buf(),
            index,
            bytes: len,
            file,
        })
    }

    pub fn chunk_meta(&self, key: &SeriesKey) -> Option<&ChunkMeta> {
        self.index
            .chunks
            .binary_search_by(|c| c.key.cmp(key))
            .ok()
            .map(|i| &self.index.chunks[i])
    }

    /// Every point of one series in this block.
    pub fn read_all(&self, key: &SeriesKey) -> io::Result<Vec<(i64, FieldValue)>> {
        self.read_range(key, i64::MIN, i64::MAX)
    }

    /// Points of one series within `[from, to]`.
    pub fn read_range(
        &self,
        key: &SeriesKey,
        from: i64,
        to: i64,
    ) -> io::Result<Vec<(i64, FieldValue)>> {
        let Some(meta) = self.chunk_meta(key) else {
            return Ok(Vec::new());
        };
        if meta.max_ts < from || meta.min_ts > to {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; meta.len as usize];
        self.file.read_exact_at(&mut buf, meta.offset)?;
        let corrupt = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: chunk of {} is corrupt", self.path.display(), key),
            )
        };
        if crc32fast::hash(&buf) != meta.crc {
            return Err(corrupt());
        }
        let pts = decode_chunk(&buf, meta.count as usize).ok_or_else(corrupt)?;
        if from <= meta.min_ts && meta.max_ts <= to {
            return Ok(pts);
        }
        Ok(pts
            .into_iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .collect())
    }
}

/// Block sequence numbers in `dir`, ascending, touching nothing (for read-only opens).
pub fn list_blocks_readonly(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        if let Some(n) = name
            .to_string_lossy()
            .strip_suffix(".block")
            .and_then(|s| s.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Block sequence numbers in `dir`, ascending. Leftover `.tmp` files (a crash during a block
/// write or a compaction) are removed: their data is still in the WAL or the blocks they merge.
pub fn list_blocks(dir: &Path) -> io::Result<Vec<u64>> {
    list_blocks_with(&RealFs, dir)
}

/// [`list_blocks`], removing through `fs`; a leftover that cannot be removed is only logged.
pub fn list_blocks_with(fs: &dyn StoreFs, dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            tracing::warn!(file = %e.path().display(), "removing unfinished block (its data is in the WAL or in the blocks it merges)");
            if let Err(err) = fs.remove_file(&e.path()) {
                tracing::warn!(file = %e.path().display(), error = %err, "could not remove the unfinished block; it is ignored");
            }
        } else if let Some(n) = name.strip_suffix(".block").and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_open_read() {
        let dir = tempfile::tempdir().unwrap();
        let a = SeriesKey::new("d1", "temp");
        let b = SeriesKey::new("d2", "on");
        let tags = Tags {
            device_type: "T".into(),
            ..Default::default()
        };
        let pa: Vec<_> = (0..100)
            .map(|i| (i * 1000, FieldValue::F64(i as f64 * 0.1)))
            .collect();
        let pb: Vec<_> = (0..10)
            .map(|i| (i * 1000, FieldValue::Bool(i % 2 == 0)))
            .collect();
        let (path, idx) = write_block(
            dir.path(),
            3,
            9,
            vec![(&b, &tags, &pb[..]), (&a, &tags, &pa[..])].into_iter(),
        )
        .unwrap();
        assert_eq!(idx.points, 110);
        let blk = Block::open(&path).unwrap();
        assert_eq!(blk.index.wal_upto, 9);
        assert_eq!(blk.read_range(&a, 5000, 7000).unwrap().len(), 3);
        assert_eq!(blk.read_range(&b, i64::MIN, i64::MAX).unwrap(), pb);
        assert!(blk
            .read_range(&SeriesKey::new("x", "y"), 0, 10)
            .unwrap()
            .is_empty());
        assert_eq!(list_blocks(dir.path()).unwrap(), vec![3]);
    }

    #[test]
    fn damaged_blocks_are_refused_with_reason() {
        let dir = tempfile::tempdir().unwrap();
        let a = SeriesKey::new("d1", "temp");
        let tags = Tags::default();
        let pa: Vec<_> = (0..50).map(|i| (i, FieldValue::I64(i))).collect();
        let (path, _) =
            write_block(dir.path(), 1, 1, std::iter::once((&a, &tags, &pa[..]))).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 0x55; // inside the chunk
        fs::write(&path, &bytes).unwrap();
        let blk = Block::open(&path).unwrap();
        let e = blk.read_range(&a, 0, 100).unwrap_err();
        assert!(e.to_string().contains("corrupt"));
        let n = bytes.len();
        bytes[n - 12] ^= 0x55; // index crc
        fs::write(&path, &bytes).unwrap();
        assert!(Block::open(&path).is_err());
    }
}
