//! The write-ahead log: the only thing that makes an acknowledged batch survive a crash.
//!
//! The WAL is a directory of numbered segment files. Each record is
//! `[len: u32 LE][crc32: u32 LE][payload]`, the payload being one batch of points (postcard).
//! Two payload versions, told apart by the top bit of `len`: set, a columnar [`Batch`] (each
//! series named once, then rows: what is written now); clear, a `Vec<Point>` (segments written
//! before the columnar batch, still replayed).
//! A new segment starts at every start-up and at every block cut; a segment is deleted once a
//! block that covers it is durable (the block records `wal_upto`, the last segment it covers).
//!
//! **Write errors.** A record is acknowledged only once it is completely in the segment (and
//! fsynced, under `wal_fsync: always`). When a write or an fsync fails, the segment is cut back
//! to the end of the last good record (`set_len` + fsync) before the error is returned, so the
//! next record follows a good one. If the cut fails too, the segment is *poisoned*: it is left
//! as it is (its tail is torn, which replay handles) and the next append starts a new segment.
//! So a record is never written behind a partial one — where replay, stopping at the partial
//! record, would drop it although it was acknowledged.
//!
//! **Replay** reads segments in order and tells two kinds of damage apart:
//! - a *torn tail*: a record that is short or fails its checksum, with no valid record after it
//!   (a crash during a write, never acknowledged). The segment is truncated there, with a
//!   warning;
//! - *corruption in the middle*: a bad stretch followed by valid records (the disk changed
//!   bytes). The segment is copied to `<segment>.wal.corrupt` for inspection (kept; nothing
//!   deletes it), replay resumes at the next record whose header, checksum and payload are valid,
//!   and the skipped byte ranges are reported (`Replay::skipped`, and the store's `Recovery`).
//!
//! Fieldlab never refuses to start because of a damaged WAL.

use crate::fs::{real, write_file_atomically, FsFile, StoreFs};
use fieldlab_core::{Batch, Point};
use serde::Serialize;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const HEADER: usize = 8;
/// Set in a record's `len` when its payload is a columnar [`Batch`].
const COLUMNAR: u32 = 1 << 31;
/// Largest record we accept on replay; anything bigger is corruption.
const MAX_RECORD: usize = 256 * 1024 * 1024;

pub struct Wal {
    fs: Arc<dyn StoreFs>,
    dir: PathBuf,
    /// The segment the next record goes to.
    seg_no: u64,
    /// Segment `seg_no`, once it is created (lazily: after a rotation or a poisoning the next
    /// append creates it).
    file: Option<Box<dyn FsFile>>,
    /// End of the last complete record of `seg_no`.
    len: u64,
    /// How much of `len` is known to be on disk (fsynced).
    synced: u64,
    /// Scratch buffer reused by `append`.
    buf: Vec<u8>,
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Replay {
    pub batches: Vec<Batch>,
    pub segments: Vec<u64>,
    /// Segments whose tail was torn and has been truncated: (segment, bytes dropped).
    pub truncated: Vec<(u64, u64)>,
    /// Damaged stretches in the middle of segments, skipped to the next valid record.
    pub skipped: Vec<Skipped>,
    /// Segments whose torn tail could not be truncated (a write error; read again next time).
    pub untruncated: Vec<u64>,
}

/// A damaged stretch of a WAL segment that replay skipped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub segment: u64,
    /// Byte range `[from, to)` of the segment.
    pub from: u64,
    pub to: u64,
    /// Where the segment as found was copied (None in read-only replays, or if the copy failed).
    pub copy: Option<PathBuf>,
}

pub fn segment_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}.wal"))
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".wal")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Read every segment after `after` (segments up to `after` are covered by blocks), truncating
/// torn tails in place.
pub fn replay(dir: &Path, after: u64) -> io::Result<Replay> {
    replay_mode(dir, after, true)
}

/// `replay`, optionally without changing anything (`truncate: false`, for read-only opens
/// while a writer may still be appending: a short last record is then just not read yet).
pub fn replay_mode(dir: &Path, after: u64, truncate: bool) -> io::Result<Replay> {
    replay_with(&*real(), dir, after, truncate)
}

/// [`replay_mode`] with truncations and copies made through `fs`. A truncation or copy that
/// fails is logged and replay goes on: the segment is not written again (a new one starts), so
/// an untruncated torn tail is only read again at the next start.
pub fn replay_with(fs: &dyn StoreFs, dir: &Path, after: u64, truncate: bool) -> io::Result<Replay> {
    let mut rep = Replay::default();
    if !dir.is_dir() {
        return Ok(rep);
    }
    for no in list_segments(dir)? {
        if no <= after {
            continue;
        }
        let path = segment_path(dir, no);
        let data = match fs::read(&path) {
            Ok(d) => d,
            // Deleted by a running writer after its block became durable.
            Err(e) if !truncate && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        rep.segments.push(no);
        let mut at = 0usize;
        let mut good_end = 0usize;
        let mut skipped = Vec::new();
        while at < data.len() {
            if let Some((batch, size)) = record_at(&data, at) {
                rep.batches.push(batch);
                at += size;
                good_end = at;
                continue;
            }
            match next_record(&data, at + 1) {
                Some(next) => {
                    skipped.push((at as u64, next as u64));
                    at = next;
                }
                None => break, // a torn tail from `at` on
            }
        }
        let copy = if !skipped.is_empty() && truncate {
            keep_copy(fs, &path, &data)
        } else {
            None
        };
        for (from, to) in skipped {
            tracing::error!(
                segment = %path.display(),
                from,
                to,
                copy = ?copy,
                "WAL segment is corrupt in the middle (the disk changed bytes); skipped to the next valid record. \
                 Batches in the skipped range are lost."
            );
            rep.skipped.push(Skipped {
                segment: no,
                from,
                to,
                copy: copy.clone(),
            });
        }
        let len = data.len() as u64;
        let good = good_end as u64;
        if good < len && truncate {
            tracing::warn!(
                segment = %path.display(),
                kept_bytes = good,
                dropped_bytes = len - good,
                "WAL segment has a torn or corrupt tail (crash during a write?); truncating it. \
                 Batches in the dropped part were never acknowledged."
            );
            let cut = fs.open_write(&path).and_then(|mut f| {
                f.set_len(good)?;
                f.sync_all()
            });
            match cut {
                Ok(()) => rep.truncated.push((no, len - good)),
                Err(e) => {
                    rep.untruncated.push(no);
                    tracing::warn!(segment = %path.display(), error = %e, "could not truncate the torn tail; it is read (and skipped) again at the next start")
                }
            }
        }
    }
    Ok(rep)
}

/// The record starting at `at`, if it is complete and valid: its batch and its size.
fn record_at(data: &[u8], at: usize) -> Option<(Batch, usize)> {
    let hdr = data.get(at..at + HEADER)?;
    let len_field = u32::from_le_bytes(hdr[..4].try_into().unwrap());
    let crc = u32::from_le_bytes(hdr[4..].try_into().unwrap());
    let n = (len_field & !COLUMNAR) as usize;
    if n > MAX_RECORD {
        return None;
    }
    let payload = data.get(at + HEADER..at + HEADER + n)?;
    // Decoding first: on garbage (while looking for the next record after a damaged one) it
    // fails within a few bytes, where the checksum would read all `n`.
    let batch = if len_field & COLUMNAR != 0 {
        match postcard::take_from_bytes::<Batch>(payload) {
            Ok((b, rest)) if rest.is_empty() && b.is_consistent() => b,
            _ => return None,
        }
    } else {
        match postcard::take_from_bytes::<Vec<Point>>(payload) {
            Ok((points, [])) => Batch::from_points(points),
            _ => return None,
        }
    };
    (crc32fast::hash(payload) == crc).then_some((batch, HEADER + n))
}

/// The first offset at or after `from` where a valid record starts.
fn next_record(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(HEADER - 1)).find(|&at| record_at(data, at).is_some())
}

/// Copy a damaged segment to `<segment>.corrupt` (once: an existing copy of the same size is
/// kept). The copy's path, or None if it could not be written.
fn keep_copy(fs: &dyn StoreFs, path: &Path, data: &[u8]) -> Option<PathBuf> {
    let copy = path.with_extension("wal.corrupt");
    if fs::metadata(&copy).is_ok_and(|m| m.len() == data.len() as u64) {
        return Some(copy);
    }
    match write_file_atomically(fs, &copy, &path.with_extension("wal.corrupt.tmp"), data) {
        Ok(()) => Some(copy),
        Err(e) => {
            tracing::error!(segment = %path.display(), error = %e, "could not keep a copy of the corrupt WAL segment");
            None
        }
    }
}

impl Wal {
    /// Start a new segment numbered `seg_no`.
    pub fn create(dir: &Path, seg_no: u64) -> io::Result<Wal> {
        let mut w = Wal::lazy(real(), dir, seg_no);
        fs::create_dir_all(dir)?;
        w.open_segment()?;
        Ok(w)
    }

    /// A WAL whose next record goes to segment `seg_no`, created by the first append (or
    /// [`Wal::open_segment`]).
    pub fn lazy(fs: Arc<dyn StoreFs>, dir: &Path, seg_no: u64) -> Wal {
        Wal {
            fs,
            dir: dir.to_path_buf(),
            seg_no,
            file: None,
            len: 0,
            synced: 0,
            buf: Vec::new(),
        }
    }

    /// Create the current segment if it is not open yet (file, then an fsync of the directory).
    pub fn open_segment(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let path = segment_path(&self.dir, self.seg_no);
        let file = self.fs.open_append(&path)?;
        self.fs.sync_dir(&self.dir)?;
        // Empty unless an earlier attempt created it and failed at the directory's fsync.
        let len = fs::metadata(&path)?.len();
        self.file = Some(file);
        self.len = len;
        self.synced = len;
        Ok(())
    }

    /// The segment the next record goes to.
    pub fn segment(&self) -> u64 {
        self.seg_no
    }

    /// Append records (one per batch) with one `write` call; not yet durable. On error the
    /// segment is as before the call (or poisoned: see the module docs).
    pub fn append(&mut self, batches: &[&Batch]) -> io::Result<u64> {
        // One reused buffer: each record is serialised in place behind an 8-byte header
        // (length, crc) filled in afterwards, so no per-record Vec and no copy.
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for b in batches {
            let at = buf.len();
            buf.extend_from_slice(&[0u8; 8]);
            buf = postcard::to_extend(b, buf).map_err(io::Error::other)?;
            let len = (buf.len() - at - 8) as u32;
            if len as usize > MAX_RECORD {
                return Err(io::Error::other(format!(
                    "a batch of {len} bytes is over the WAL's record limit of {MAX_RECORD}; write smaller batches"
                )));
            }
            let crc = crc32fast::hash(&buf[at + 8..]);
            buf[at..at + 4].copy_from_slice(&(len | COLUMNAR).to_le_bytes());
            buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        }
        let res = self.write(&buf);
        let n = buf.len() as u64;
        // Keep the buffer for the next append unless one huge batch inflated it.
        if buf.capacity() <= 64 << 20 {
            self.buf = buf;
        }
        res?;
        self.len += n;
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.open_segment()?;
        let file = self.file.as_mut().expect("opened");
        if let Err(e) = file.write_all(buf) {
            // Part of the records may be in the file: cut them off before anything else.
            self.cut_back(self.len);
            return Err(e);
        }
        Ok(())
    }

    /// Force appended records to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.synced == self.len {
            return Ok(());
        }
        if let Some(f) = self.file.as_mut() {
            f.sync_data()?;
            self.synced = self.len;
        }
        Ok(())
    }

    /// After a failed [`Wal::sync`]: drop the records appended since the last good fsync (they
    /// are not acknowledged), so the segment ends on a record that is on disk.
    pub fn discard_unsynced(&mut self) {
        self.cut_back(self.synced);
    }

    /// Truncate the segment to `to` and fsync; if that fails, poison it.
    fn cut_back(&mut self, to: u64) {
        let Some(f) = self.file.as_mut() else { return };
        match f.set_len(to).and_then(|()| f.sync_data()) {
            Ok(()) => {
                self.len = to;
                self.synced = to;
            }
            Err(e) => self.poison(&e),
        }
    }

    /// Give up on the current segment (its tail cannot be vouched for): the next append starts
    /// a new one. Replay treats the old one's tail as torn.
    pub fn poison(&mut self, why: &io::Error) {
        if let Some(mut f) = self.file.take() {
            tracing::error!(
                segment = %segment_path(&self.dir, self.seg_no).display(),
                error = %why,
                "WAL segment cannot be cut back to its last good record; closing it, the next write starts a new segment"
            );
            // Best effort for records acknowledged without an fsync (`wal_fsync: interval`).
            let _ = f.sync_data();
            self.seg_no += 1;
            self.len = 0;
            self.synced = 0;
        }
    }

    /// Is the current segment closed after an error (the next append starts a new one)?
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Close this segment (synced) and move on to the next one. Returns the last segment that
    /// holds records, which a block written from everything appended so far covers.
    pub fn rotate(&mut self) -> io::Result<u64> {
        if self.file.is_none() {
            return Ok(self.seg_no.saturating_sub(1));
        }
        self.sync()?;
        let old = self.seg_no;
        self.file = None;
        self.seg_no += 1;
        self.len = 0;
        self.synced = 0;
        if let Err(e) = self.open_segment() {
            tracing::warn!(error = %e, "could not create the next WAL segment yet; the next write retries");
        }
        Ok(old)
    }

    /// Delete segments numbered `<= upto` (their data is in durable blocks).
    pub fn delete_upto(dir: &Path, upto: u64) -> io::Result<()> {
        Self::delete_upto_with(&*real(), dir, upto)
    }

    /// [`Wal::delete_upto`] through `fs`; goes on past a failure and returns the first.
    pub fn delete_upto_with(fs: &dyn StoreFs, dir: &Path, upto: u64) -> io::Result<()> {
        let mut first = Ok(());
        for no in list_segments(dir)? {
            if no <= upto {
                if let Err(e) = fs.remove_file(&segment_path(dir, no)) {
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
            }
        }
        first
    }

    /// Bytes of complete records in the current segment.
    pub fn bytes_written(&self) -> u64 {
        self.len
    }
}

/// fsync a directory so that a created, renamed or deleted entry is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlab_core::{FieldValue, SeriesKey, Tags};
    use std::fs::OpenOptions;

    fn batch(n: i64) -> Batch {
        Batch::from_points(points(n))
    }

    /// `n` points of 10 fields of one pump, at 1 Hz.
    fn points(n: i64) -> Vec<Point> {
        (0..n)
            .map(|i| Point {
                key: SeriesKey::new("pump-0042", format!("field_{}", i % 10)),
                tags: Tags {
                    device_type: "PressureSensor".into(),
                    ..Default::default()
                },
                ts_ms: 1_767_225_600_000 + (i / 10) * 1000,
                value: FieldValue::F64(i as f64 * 0.5),
            })
            .collect()
    }

    #[test]
    fn replays_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::create(dir.path(), 1).unwrap();
        w.append(&[&batch(3), &batch(2)]).unwrap();
        w.sync().unwrap();
        let rep = replay(dir.path(), 0).unwrap();
        assert_eq!(rep.batches.len(), 2);
        assert_eq!(rep.batches[0].len(), 3);
        assert!(rep.truncated.is_empty());
        // Segments covered by blocks are skipped.
        assert!(replay(dir.path(), 1).unwrap().batches.is_empty());
    }

    /// Segments written before the columnar batch (records of `Vec<Point>`) still replay, and
    /// a columnar record is less than half the size of the old one for the same points.
    #[test]
    fn old_point_records_replay_and_columnar_records_are_smaller() {
        let dir = tempfile::tempdir().unwrap();
        let old = postcard::to_allocvec(&points(100)).unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(old.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&old).to_le_bytes());
        bytes.extend_from_slice(&old);
        fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
        let mut w = Wal::create(dir.path(), 2).unwrap();
        let n = w.append(&[&batch(100)]).unwrap();
        w.sync().unwrap();
        assert!(n * 2 < bytes.len() as u64, "{n} vs {}", bytes.len());
        let rep = replay(dir.path(), 0).unwrap();
        assert_eq!(rep.batches.len(), 2);
        assert_eq!(rep.batches[0], batch(100));
        assert_eq!(rep.batches[1], batch(100));
        assert_eq!(rep.batches[0].points(), points(100));
    }

    #[test]
    fn torn_tail_is_truncated_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::create(dir.path(), 7).unwrap();
        w.append(&[&batch(5)]).unwrap();
        w.append(&[&batch(4)]).unwrap();
        w.sync().unwrap();
        let path = segment_path(dir.path(), 7);
        let full = fs::metadata(&path).unwrap().len();
        // Cut the last record in half, as a crash mid-write would.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 10).unwrap();
        let rep = replay(dir.path(), 0).unwrap();
        assert_eq!(rep.batches.len(), 1);
        assert_eq!(rep.batches[0].len(), 5);
        assert_eq!(rep.truncated.len(), 1);
        // The file is now clean: a second replay finds nothing to truncate.
        let rep2 = replay(dir.path(), 0).unwrap();
        assert_eq!(rep2.batches.len(), 1);
        assert!(rep2.truncated.is_empty());
    }

    #[test]
    fn flipped_byte_stops_replay_at_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::create(dir.path(), 1).unwrap();
        w.append(&[&batch(2)]).unwrap();
        let first = w.bytes_written();
        w.append(&[&batch(2)]).unwrap();
        w.sync().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[first as usize + HEADER + 1] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let rep = replay(dir.path(), 0).unwrap();
        assert_eq!(rep.batches.len(), 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), first);
    }

    /// A damaged record followed by good ones is corruption, not a torn tail: the segment is
    /// copied aside, replay skips to the next good record and reports the range, and the file
    /// is not cut (the good records after the damage stay).
    #[test]
    fn corruption_in_the_middle_is_skipped_copied_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::create(dir.path(), 3).unwrap();
        w.append(&[&batch(2)]).unwrap();
        let first = w.bytes_written();
        w.append(&[&batch(3)]).unwrap();
        let second = w.bytes_written();
        w.append(&[&batch(4)]).unwrap();
        w.sync().unwrap();
        let path = segment_path(dir.path(), 3);
        let mut bytes = fs::read(&path).unwrap();
        let original = bytes.clone();
        bytes[first as usize + HEADER + 3] ^= 0x40; // inside the second record's payload
        fs::write(&path, &bytes).unwrap();
        let rep = replay(dir.path(), 0).unwrap();
        let lens: Vec<usize> = rep.batches.iter().map(Batch::len).collect();
        assert_eq!(lens, vec![2, 4]);
        assert!(rep.truncated.is_empty());
        let copy = path.with_extension("wal.corrupt");
        assert_eq!(
            rep.skipped,
            vec![Skipped {
                segment: 3,
                from: first,
                to: second,
                copy: Some(copy.clone())
            }]
        );
        assert_eq!(
            fs::read(&copy).unwrap(),
            bytes,
            "the segment as found is kept"
        );
        assert_eq!(fs::read(&path).unwrap().len(), original.len());
        assert_eq!(
            list_segments(dir.path()).unwrap(),
            vec![3],
            "the copy is no segment"
        );
        // Read-only replays skip the same way and change nothing.
        let ro = replay_mode(dir.path(), 0, false).unwrap();
        assert_eq!(ro.batches.len(), 2);
        assert_eq!(ro.skipped[0].copy, None);
        // Garbage *and* a torn tail: the range is skipped, the tail cut.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, &original[..first as usize - 5]).unwrap();
        drop(f);
        let rep = replay(dir.path(), 0).unwrap();
        assert_eq!(rep.batches.len(), 2);
        assert_eq!(rep.truncated, vec![(3, first - 5)]);
        assert_eq!(rep.skipped.len(), 1);
    }

    fn faulty_wal(dir: &Path) -> (crate::fs::FaultyFs, Wal) {
        let fs = crate::fs::FaultyFs::new();
        let mut w = Wal::lazy(fs.handle(), dir, 1);
        w.open_segment().unwrap();
        (fs, w)
    }

    /// The failure of issue 29: a failed append must not leave a partial record that later
    /// acknowledged records are written behind.
    #[test]
    fn failed_append_is_cut_back_before_the_next_record() {
        use crate::fs::{Fault, OpKind};
        let dir = tempfile::tempdir().unwrap();
        let (fs, mut w) = faulty_wal(dir.path());
        w.append(&[&batch(2)]).unwrap();
        let good = w.bytes_written();
        fs.fail_nth(OpKind::Write, 0, Fault::ShortWrite);
        assert!(w.append(&[&batch(50)]).is_err());
        assert_eq!(
            fs::metadata(segment_path(dir.path(), 1)).unwrap().len(),
            good
        );
        w.append(&[&batch(3)]).unwrap();
        w.sync().unwrap();
        let rep = replay(dir.path(), 0).unwrap();
        let lens: Vec<usize> = rep.batches.iter().map(Batch::len).collect();
        assert_eq!(lens, vec![2, 3]);
        assert!(rep.truncated.is_empty() && rep.skipped.is_empty());
    }

    /// If the cut-back fails too, the segment is poisoned and the next record goes to a new
    /// segment; replay cuts the old one's torn tail and loses nothing acknowledged.
    #[test]
    fn failed_cut_back_poisons_the_segment() {
        use crate::fs::{Fault, OpKind};
        let dir = tempfile::tempdir().unwrap();
        let (fs, mut w) = faulty_wal(dir.path());
        w.append(&[&batch(2)]).unwrap();
        fs.fail_nth(OpKind::Write, 0, Fault::ShortWrite);
        fs.fail_nth(OpKind::SetLen, 0, Fault::Io);
        assert!(w.append(&[&batch(50)]).is_err());
        assert!(!w.is_open());
        assert_eq!(w.segment(), 2);
        // Creating the next segment fails once: still closed, the append after succeeds.
        fs.fail_nth(OpKind::Open, 0, Fault::NoSpace);
        assert!(w.append(&[&batch(1)]).is_err());
        w.append(&[&batch(3)]).unwrap();
        w.sync().unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2]);
        let rep = replay(dir.path(), 0).unwrap();
        let lens: Vec<usize> = rep.batches.iter().map(Batch::len).collect();
        assert_eq!(lens, vec![2, 3]);
        assert_eq!(rep.truncated.len(), 1);
        assert!(rep.skipped.is_empty());
        // A rotation of a closed segment covers everything before the next one.
        fs::create_dir(dir.path().join("b")).unwrap();
        let (fs2, mut w2) = faulty_wal(&dir.path().join("b"));
        w2.append(&[&batch(1)]).unwrap();
        fs2.fail_nth(OpKind::Write, 0, Fault::Io);
        fs2.fail_nth(OpKind::SetLen, 0, Fault::Io);
        assert!(w2.append(&[&batch(1)]).is_err());
        assert_eq!(w2.rotate().unwrap(), 1);
        assert_eq!(w2.segment(), 2);
    }

    /// After a failed fsync, records appended since the last good fsync are cut off (under
    /// `always` they were never acknowledged).
    #[test]
    fn failed_fsync_discards_unsynced_records() {
        use crate::fs::{Fault, OpKind};
        let dir = tempfile::tempdir().unwrap();
        let (fs, mut w) = faulty_wal(dir.path());
        w.append(&[&batch(2)]).unwrap();
        w.sync().unwrap();
        let good = w.bytes_written();
        w.append(&[&batch(7)]).unwrap();
        fs.fail_nth(OpKind::Sync, 0, Fault::Io);
        assert!(w.sync().is_err());
        w.discard_unsynced();
        assert_eq!(w.bytes_written(), good);
        assert_eq!(
            fs::metadata(segment_path(dir.path(), 1)).unwrap().len(),
            good
        );
        assert_eq!(replay(dir.path(), 0).unwrap().batches.len(), 1);
    }

    #[test]
    fn rotate_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::create(dir.path(), 1).unwrap();
        w.append(&[&batch(1)]).unwrap();
        assert_eq!(w.rotate().unwrap(), 1);
        assert_eq!(w.segment(), 2);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2]);
        Wal::delete_upto(dir.path(), 1).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![2]);
    }
}
