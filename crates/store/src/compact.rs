//! Compaction: merge runs of adjacent blocks into larger ones, in size tiers.
//!
//! Why it exists: the head is cut into a block every `block_max_age` (10 minutes by default)
//! or every `head_max_points`, so a quiet lab writes many small blocks and a busy one many
//! full ones (one every 5 s at 200k points/s). Each block costs an index entry per series,
//! a chunk header per series and a file to open, so their number must grow with the log of
//! the data, not with time. The maintenance thread merges them off the write path:
//!
//! 1. pick a run of adjacent blocks (in sequence order, so "a later block wins" is kept),
//!    lowest tier first: tier 0 is blocks below `compact_below_points`, together at most
//!    `head_max_points` (two or more); tier k >= 1, with base `head_max_points * 4^(k-1)`,
//!    is blocks of at most twice the base, four or more, together at most eight times the base and
//!    never above `compact_max_points`. Each tier's output is the next tier's input, like the
//!    levels of Prometheus' TSDB (there by time range, here by size), so the number of blocks
//!    grows with the log of the data up to `compact_max_points` per block;
//! 2. merge them series by series (a later block wins on equal timestamps, as in queries),
//!    decoding one series at a time, and encode the merged block into a temporary file — no
//!    lock held, ingest goes on;
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

use crate::block::{block_path, Block, BlockBuilder};
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
    let blocks = sh.blocks.read();
    let points: Vec<u64> = blocks.iter().map(|b| b.index.points).collect();
    let head = sh.opts.head_max_points.max(2) as u64;
    let cap = (sh.opts.compact_max_points as u64).max(head);
    // Tier 0: small blocks (cut by age), two or more, up to one full head.
    let mut tiers = vec![(sh.opts.compact_below_points as u64, head, 2)];
    // Tier k >= 1: blocks of at most twice its base (the previous tier's largest output), four
    // or more, up to eight times the base.
    let mut base = head;
    while base.saturating_mul(4) <= cap {
        tiers.push((
            base.saturating_mul(2) + 1,
            base.saturating_mul(8).min(cap),
            4,
        ));
        base = base.saturating_mul(4);
    }
    for (below, max_total, min_len) in tiers {
        let r = longest_run(&points, below, max_total);
        if r.len() >= min_len {
            return r.map(|i| blocks[i].clone()).collect();
        }
    }
    Vec::new()
}

/// The longest run of adjacent blocks each with fewer than `below` points, together at most
/// `max_total` (the first such run when several are as long).
fn longest_run(points: &[u64], below: u64, max_total: u64) -> std::ops::Range<usize> {
    let mut best = 0..0;
    let mut start = 0;
    let mut total = 0u64;
    for (i, &p) in points.iter().enumerate() {
        if p >= below {
            start = i + 1;
            total = 0;
            continue;
        }
        total += p;
        while total > max_total && start <= i {
            total -= points[start];
            start += 1;
        }
        if i + 1 - start > best.len() {
            best = start..i + 1;
        }
    }
    best
}

type Points = Vec<(i64, FieldValue)>;

fn merge_run(sh: &Shared, run: &[Arc<Block>]) -> std::io::Result<usize> {
    // Per series, from the indexes only: the tags of the latest block that has it.
    let mut series: BTreeMap<&SeriesKey, &Tags> = BTreeMap::new();
    for b in run {
        for c in &b.index.chunks {
            series.insert(&c.key, &c.tags);
        }
    }
    let last = run.last().expect("run of at least two");
    let seq = last.index.seq;
    let wal_upto = run.iter().map(|b| b.index.wal_upto).max().unwrap_or(0);
    let created = run.iter().map(|b| b.index.created_ms).max().unwrap_or(0);
    let mut out = BlockBuilder::new(seq, wal_upto, created);
    for (key, tags) in series {
        let mut parts: Vec<Points> = Vec::with_capacity(run.len());
        for b in run {
            parts.push(b.read_all(key)?);
        }
        out.push(key, tags, &crate::merge(parts));
    }
    let (buf, _) = out.finish()?;
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
    // Queries holding the run's blocks keep reading the files their indexes describe, even
    // once the path is renamed over or deleted.
    for b in run {
        if let Err(e) = b.pin() {
            let _ = fs.remove_file(&tmp);
            return Err(e);
        }
    }
    if let Err(e) = fs.rename(&tmp, &path) {
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    // From here the merged block is the run's last block on disk (or, if the directory's fsync
    // fails and power is cut, the old one still is: both hold the run's last points). The older
    // blocks of the run are deleted only once the merged block's name is durable.
    fs.sync_dir(&sh.block_dir)?;
    let merged_block = Arc::new(Block::open_in(&path, &sh.files)?);
    {
        let mut blocks = sh.blocks.write();
        blocks.retain(|b| !run[..run.len() - 1].iter().any(|r| Arc::ptr_eq(b, r)));
        if let Some(slot) = blocks.iter_mut().find(|b| Arc::ptr_eq(b, last)) {
            *slot = merged_block;
        }
        sh.metrics.blocks.set(blocks.len() as i64);
        sh.metrics.open_block_files.set(sh.files.open_now() as i64);
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
