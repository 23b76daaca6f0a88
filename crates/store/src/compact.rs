//! Compaction: merge runs of small adjacent blocks into one.
//!
//! Why it exists: the head is cut into a block every `block_max_age` (10 minutes by default),
//! so a quiet lab writes many small blocks. Each costs an index entry per series, a file, and
//! a chunk header per series, and makes queries open more files; short chunks also compress
//! worse. The maintenance thread merges them off the write path:
//!
//! 1. pick a run of adjacent blocks (in sequence order), each below `compact_below_points`,
//!    together at most `head_max_points`;
//! 2. read and merge them per series (a later block wins on equal timestamps, as in queries)
//!    and encode the merged block into a temporary file — no lock held, ingest goes on;
//! 3. under the maintenance lock: check the run is still live (retention may have deleted part
//!    of it), rename the temporary file over the run's *last* block (same sequence number, so
//!    the merged block keeps its place in the "later wins" order), swap it into the block
//!    list, delete the other blocks of the run.
//!
//! A crash after the rename and before the deletions leaves the older blocks next to the
//! merged one: their points are also in the merged block, which is later, so queries still
//! show each point once; the next compaction merges them away.
//!
//! Write errors (all file operations go through the store's [`crate::fs::StoreFs`]): a failure
//! before the rename removes the temporary file and leaves the run as it was; a failure of the
//! rename likewise; after the rename the older blocks are deleted only once the directory is
//! fsynced. Each failure counts in `fieldlab_store_write_errors_total{part="compaction"}`, and
//! the next maintenance pass tries again. A failed compaction never makes the store unready:
//! no acknowledged point depends on it.

use crate::block::{block_path, encode_block, Block};
use crate::Shared;
use fieldlab_core::{FieldValue, SeriesKey, Tags};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One compaction pass; returns how many blocks were merged away (0: nothing to do).
pub(crate) fn compact_once(sh: &Shared) -> usize {
    let run = pick_run(sh);
    if run.len() < 2 {
        return 0;
    }
    match merge_run(sh, &run) {
        Ok(n) => n,
        Err(e) => {
            sh.write_error(crate::Part::Compaction);
            tracing::warn!(error = %e, "compaction failed; the blocks stay as they are, it is tried again later");
            0
        }
    }
}

fn pick_run(sh: &Shared) -> Vec<Arc<Block>> {
    let small = sh.opts.compact_below_points as u64;
    let max = sh.opts.head_max_points.max(2) as u64;
    let blocks = sh.blocks.read();
    let mut best: Vec<Arc<Block>> = Vec::new();
    let mut cur: Vec<Arc<Block>> = Vec::new();
    let mut cur_points = 0u64;
    for b in blocks.iter() {
        let p = b.index.points;
        if p >= small || cur_points + p > max {
            if cur.len() > best.len() {
                best = std::mem::take(&mut cur);
            }
            cur.clear();
            cur_points = 0;
            if p >= small {
                continue;
            }
        }
        cur.push(b.clone());
        cur_points += p;
    }
    if cur.len() > best.len() {
        best = cur;
    }
    best
}

type Points = Vec<(i64, FieldValue)>;

fn merge_run(sh: &Shared, run: &[Arc<Block>]) -> std::io::Result<usize> {
    // Per series: (tags of the latest block, points of each block in order).
    let mut series: BTreeMap<SeriesKey, (Tags, Vec<Points>)> = BTreeMap::new();
    for b in run {
        for c in &b.index.chunks {
            let pts = b.read_all(&c.key)?;
            let e = series
                .entry(c.key.clone())
                .or_insert_with(|| (c.tags.clone(), Vec::new()));
            e.0 = c.tags.clone();
            e.1.push(pts);
        }
    }
    let merged: Vec<(SeriesKey, Tags, Points)> = series
        .into_iter()
        .map(|(k, (t, parts))| (k, t, crate::merge(parts)))
        .collect();
    let last = run.last().expect("run of at least two");
    let seq = last.index.seq;
    let wal_upto = run.iter().map(|b| b.index.wal_upto).max().unwrap_or(0);
    let created = run.iter().map(|b| b.index.created_ms).max().unwrap_or(0);
    let (buf, _) = encode_block(
        seq,
        wal_upto,
        created,
        merged.iter().map(|(k, t, p)| (k, t, p.as_slice())),
    )?;
    let path = block_path(&sh.block_dir, seq);
    let tmp = path.with_extension("compact.tmp");
    let fs = &*sh.opts.fs;
    // Write the bytes outside the lock (the slow part), rename under it.
    crate::fs::write_synced(fs, &tmp, &buf)?;
    let _m = sh.maintenance.lock();
    let live = {
        let blocks = sh.blocks.read();
        run.iter().all(|r| blocks.iter().any(|b| Arc::ptr_eq(b, r)))
    };
    if !live {
        fs.remove_file(&tmp)?;
        return Ok(0);
    }
    if let Err(e) = fs.rename(&tmp, &path) {
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    // From here the merged block is the run's last block on disk (or, if the directory's fsync
    // fails and power is cut, the old one still is: both hold the run's last points). The older
    // blocks of the run are deleted only once the merged block's name is durable.
    fs.sync_dir(&sh.block_dir)?;
    let merged_block = Arc::new(Block::open(&path)?);
    {
        let mut blocks = sh.blocks.write();
        blocks.retain(|b| !run[..run.len() - 1].iter().any(|r| Arc::ptr_eq(b, r)));
        if let Some(slot) = blocks.iter_mut().find(|b| Arc::ptr_eq(b, last)) {
            *slot = merged_block;
        }
        sh.metrics.blocks.set(blocks.len() as i64);
    }
    // A block that cannot be deleted stays on disk beside the merged one: its points are also
    // in the merged block, which is later, so queries show them once; the next start merges it
    // away.
    let mut undeleted = 0;
    for b in &run[..run.len() - 1] {
        if let Err(e) = fs.remove_file(&b.path) {
            tracing::warn!(block = %b.path.display(), error = %e, "compaction could not delete a merged block; it is ignored until the next start");
            undeleted += 1;
        }
    }
    if undeleted > 0 {
        sh.write_error(crate::Part::Compaction);
    }
    let _ = fs.sync_dir(&sh.block_dir);
    sh.metrics.compactions.inc();
    tracing::debug!(blocks = run.len(), into = %path.display(), "compacted small blocks");
    Ok(run.len() - 1)
}
