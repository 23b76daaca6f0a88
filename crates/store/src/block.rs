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
    let mut series: Vec<_> = series.collect();
    series.sort_by(|a, b| a.0.cmp(b.0));
    let mut b = BlockBuilder::new(seq, wal_upto, created_ms);
    for (key, tags, points) in series {
        b.push(key, tags, points);
    }
    b.finish()
}

/// A block encoded one series at a time, in key order: compaction merges blocks series by
/// series, so only one series' points are decoded at once, never the whole run.
pub struct BlockBuilder {
    buf: Vec<u8>,
    index: BlockIndex,
}

impl BlockBuilder {
    pub fn new(seq: u64, wal_upto: u64, created_ms: i64) -> BlockBuilder {
        let mut buf = Vec::with_capacity(1 << 16);
        buf.extend_from_slice(MAGIC);
        BlockBuilder {
            buf,
            index: BlockIndex {
                format: 1,
                seq,
                wal_upto,
                min_ts: i64::MAX,
                max_ts: i64::MIN,
                points: 0,
                created_ms,
                chunks: Vec::new(),
            },
        }
    }

    /// Add one series (sorted by time, no duplicate timestamps; keys in ascending order).
    pub fn push(&mut self, key: &SeriesKey, tags: &Tags, points: &[(i64, FieldValue)]) {
        if points.is_empty() {
            return;
        }
        debug_assert!(self.index.chunks.last().is_none_or(|c| c.key < *key));
        let chunk = encode_chunk(points);
        let meta = ChunkMeta {
            key: key.clone(),
            tags: tags.clone(),
            count: points.len() as u32,
            min_ts: points[0].0,
            max_ts: points[points.len() - 1].0,
            offset: self.buf.len() as u64,
            len: chunk.len() as u32,
            crc: crc32fast::hash(&chunk),
        };
        let index = &mut self.index;
        index.min_ts = index.min_ts.min(meta.min_ts);
        index.max_ts = index.max_ts.max(meta.max_ts);
        index.points += points.len() as u64;
        index.chunks.push(meta);
        self.buf.extend_from_slice(&chunk);
    }

    /// The file's bytes and its index.
    pub fn finish(self) -> io::Result<(Vec<u8>, BlockIndex)> {
        let BlockBuilder { mut buf, index } = self;
        let idx = postcard::to_stdvec(&index).map_err(io::Error::other)?;
        let idx_off = buf.len() as u64;
        buf.extend_from_slice(&idx);
        buf.extend_from_slice(&idx_off.to_le_bytes());
        buf.extend_from_slice(&(idx.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&idx).to_le_bytes());
        buf.extend_from_slice(END);
        Ok((buf, index))
    }
}

/// Open block files, bounded: how many file descriptors blocks keep open at once.
///
/// Why it exists: a store keeps every block for the retention period, and a busy lab cuts a
/// block every few seconds, so one descriptor per block runs into the process' limit
/// (`ulimit -n`) within a day (the 30-minute soak at 20k msgs/s grew 12 descriptors a
/// minute). Blocks therefore open their file when read and the least recently opened ones are
/// closed beyond `max_open` (`storage.max_open_blocks`); reads in flight keep theirs until
/// they finish.
///
/// Files are never modified in place, but compaction renames a merged block over the path of
/// a block readers may still hold, and retention and compaction delete blocks. Before either
/// touches a block's path it calls [`Block::pin`]: the block opens its file (the old inode)
/// and keeps it until the last reader drops the block. A reader opens by path only under the
/// block's own lock, which `pin` also takes, so it sees either the pinned file or a path that
/// has not changed yet; the inode is checked on every open as a second guard.
#[derive(Debug)]
pub struct BlockFiles {
    max_open: usize,
    /// Blocks in the order they opened their file, with the generation of that open.
    opened: parking_lot::Mutex<std::collections::VecDeque<(std::sync::Weak<FileSlot>, u64)>>,
    open_now: std::sync::atomic::AtomicUsize,
}

impl BlockFiles {
    pub fn new(max_open: usize) -> std::sync::Arc<BlockFiles> {
        std::sync::Arc::new(BlockFiles {
            max_open: max_open.max(1),
            opened: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            open_now: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Block files kept open right now and subject to the bound (reads in flight may hold a
    /// few more, and blocks pinned for deletion hold theirs until their last reader is done).
    pub fn open_now(&self) -> usize {
        self.open_now.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Note that `slot` opened its file (generation `gen`), and close the oldest unpinned
    /// ones beyond the bound.
    fn opened(&self, slot: &std::sync::Arc<FileSlot>, gen: u64) {
        let mut q = self.opened.lock();
        q.push_back((std::sync::Arc::downgrade(slot), gen));
        while self.open_now() > self.max_open {
            let Some((w, g)) = q.pop_front() else { break };
            if let Some(s) = w.upgrade() {
                s.close_if(g);
            }
        }
        // Entries of dropped, pinned or reopened slots are not closed above; drop them when
        // the queue runs long so it stays bounded by the open files, not by the opens.
        if q.len() > 2 * self.max_open + 64 {
            q.retain(|(w, g)| w.upgrade().is_some_and(|s| s.is_open_gen(*g)));
        }
    }
}

/// The default [`BlockFiles`] of blocks opened without a store (tools, tests).
fn default_files() -> std::sync::Arc<BlockFiles> {
    static FILES: std::sync::OnceLock<std::sync::Arc<BlockFiles>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| BlockFiles::new(256)).clone()
}

#[derive(Debug)]
struct FileState {
    file: Option<std::sync::Arc<File>>,
    /// Bumped at each open, so a stale queue entry cannot close a later open.
    gen: u64,
    /// Kept open until the block is dropped: its path is about to be replaced or deleted.
    pinned: bool,
}

/// One block's file descriptor, opened on demand (see [`BlockFiles`]).
#[derive(Debug)]
struct FileSlot {
    path: PathBuf,
    /// (device, inode) of the block file this index was read from.
    id: (u64, u64),
    state: parking_lot::Mutex<FileState>,
    files: std::sync::Arc<BlockFiles>,
}

impl FileSlot {
    fn close_if(&self, gen: u64) {
        let mut st = self.state.lock();
        if st.gen == gen && !st.pinned && st.file.take().is_some() {
            self.files
                .open_now
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn is_open_gen(&self, gen: u64) -> bool {
        let st = self.state.lock();
        st.gen == gen && st.file.is_some() && !st.pinned
    }

    /// The open file, opening it by path if it was closed.
    fn get(self: &std::sync::Arc<Self>) -> io::Result<std::sync::Arc<File>> {
        let mut st = self.state.lock();
        if let Some(f) = &st.file {
            return Ok(f.clone());
        }
        // A pinned block's file is never closed, so this one is not pinned.
        let f = std::sync::Arc::new(open_checked(&self.path, self.id)?);
        st.file = Some(f.clone());
        st.gen += 1;
        let gen = st.gen;
        drop(st);
        self.files
            .open_now
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.files.opened(self, gen);
        Ok(f)
    }
}

impl Drop for FileSlot {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if st.file.is_some() && !st.pinned {
            self.files
                .open_now
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn file_id(f: &File) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// Open `path` and check it is still the file `id` names.
fn open_checked(path: &Path, id: (u64, u64)) -> io::Result<File> {
    let f = File::open(path)?;
    if file_id(&f)? != id {
        return Err(io::Error::other(format!(
            "{}: the block file was replaced while it was being read; run the query again",
            path.display()
        )));
    }
    Ok(f)
}

/// An open block: its index in memory, its chunks on disk.
#[derive(Debug)]
pub struct Block {
    pub path: PathBuf,
    pub index: BlockIndex,
    pub bytes: u64,
    file: std::sync::Arc<FileSlot>,
}

impl Block {
    /// Open a block, its file descriptor counted in the process-wide default [`BlockFiles`].
    pub fn open(path: &Path) -> io::Result<Block> {
        Block::open_in(path, &default_files())
    }

    /// Open a block whose file descriptor `files` bounds.
    pub fn open_in(path: &Path, files: &std::sync::Arc<BlockFiles>) -> io::Result<Block> {
        let file = File::open(path)?;
        let id = file_id(&file)?;
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
        // Lookups binary-search the chunks by key, and reads trust their extents: an index that
        // breaks either (only a crafted file can, its CRC being right) is refused here rather
        // than answering for the wrong series (found by the `block_decode` fuzz target).
        let mut points = 0u64;
        for (i, c) in index.chunks.iter().enumerate() {
            if i > 0 && index.chunks[i - 1].key >= c.key {
                return Err(bad("index: chunk keys are not strictly ascending"));
            }
            let end = c.offset.checked_add(c.len as u64);
            if c.offset < MAGIC.len() as u64 || end.is_none_or(|e| e > off) {
                return Err(bad("index: a chunk lies outside the chunk area"));
            }
            if c.min_ts > c.max_ts {
                return Err(bad("index: a chunk's time range is reversed"));
            }
            points += c.count as u64;
        }
        if points != index.points {
            return Err(bad(
                "index: chunk counts do not add up to the block's points",
            ));
        }
        // The descriptor used to read the index is kept as the first open.
        let slot = std::sync::Arc::new(FileSlot {
            path: path.to_path_buf(),
            id,
            state: parking_lot::Mutex::new(FileState {
                file: Some(std::sync::Arc::new(file)),
                gen: 1,
                pinned: false,
            }),
            files: files.clone(),
        });
        files
            .open_now
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        files.opened(&slot, 1);
        Ok(Block {
            path: path.to_path_buf(),
            index,
            bytes: len,
            file: slot,
        })
    }

    /// Keep this block's file open until the block is dropped, because its path is about to
    /// be replaced (compaction) or deleted (retention, compaction): readers holding the block
    /// go on reading the file its index describes.
    pub fn pin(&self) -> io::Result<()> {
        let mut st = self.file.state.lock();
        if st.pinned {
            return Ok(());
        }
        match st.file {
            // It leaves the bounded set: no longer closed when others open.
            Some(_) => {
                self.file
                    .files
                    .open_now
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            None => st.file = Some(std::sync::Arc::new(open_checked(&self.path, self.file.id)?)),
        }
        st.pinned = true;
        Ok(())
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
        self.file.get()?.read_exact_at(&mut buf, meta.offset)?;
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
