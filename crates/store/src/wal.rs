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
//! Recovery reads segments in order and stops a segment at the first record that is short or
//! fails its checksum: that is a torn write from a crash, so the segment is truncated there
//! with a warning. Fieldlab never refuses to start because of a torn WAL tail.

use fieldlab_core::{Batch, Point};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 8;
/// Set in a record's `len` when its payload is a columnar [`Batch`].
const COLUMNAR: u32 = 1 << 31;
/// Largest record we accept on replay; anything bigger is corruption.
const MAX_RECORD: usize = 256 * 1024 * 1024;

pub struct Wal {
    dir: PathBuf,
    seg_no: u64,
    file: File,
    bytes: u64,
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
    let mut rep = Replay::default();
    if !dir.is_dir() {
        return Ok(rep);
    }
    for no in list_segments(dir)? {
        if no <= after {
            continue;
        }
        let path = segment_path(dir, no);
        let mut f = match OpenOptions::new().read(true).write(truncate).open(&path) {
            Ok(f) => f,
            // Deleted by a running writer after its block became durable.
            Err(e) if !truncate && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        rep.segments.push(no);
        let len = f.metadata()?.len();
        let mut r = BufReader::new(&mut f);
        let mut good = 0u64;
        loop {
            let mut hdr = [0u8; HEADER];
            match r.read_exact(&mut hdr) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let len_field = u32::from_le_bytes(hdr[..4].try_into().unwrap());
            let columnar = len_field & COLUMNAR != 0;
            let n = (len_field & !COLUMNAR) as usize;
            let crc = u32::from_le_bytes(hdr[4..].try_into().unwrap());
            if n > MAX_RECORD {
                break;
            }
            let mut payload = vec![0u8; n];
            if r.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
                break;
            }
            let batch = if columnar {
                match postcard::from_bytes::<Batch>(&payload) {
                    Ok(b) if b.is_consistent() => b,
                    _ => break,
                }
            } else {
                match postcard::from_bytes::<Vec<Point>>(&payload) {
                    Ok(points) => Batch::from_points(points),
                    Err(_) => break,
                }
            };
            rep.batches.push(batch);
            good += (HEADER + n) as u64;
        }
        drop(r);
        if good < len && truncate {
            tracing::warn!(
                segment = %path.display(),
                kept_bytes = good,
                dropped_bytes = len - good,
                "WAL segment has a torn or corrupt tail (crash during a write?); truncating it. \
                 Batches in the dropped part were never acknowledged."
            );
            f.set_len(good)?;
            f.sync_all()?;
            rep.truncated.push((no, len - good));
        }
    }
    Ok(rep)
}

impl Wal {
    /// Start a new segment numbered `seg_no`.
    pub fn create(dir: &Path, seg_no: u64) -> io::Result<Wal> {
        fs::create_dir_all(dir)?;
        let path = segment_path(dir, seg_no);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            seg_no,
            file,
            bytes: 0,
            buf: Vec::new(),
        })
    }

    pub fn segment(&self) -> u64 {
        self.seg_no
    }

    /// Append records (one per batch) with one `write` call; not yet durable.
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
        let res = self.file.write_all(&buf);
        let n = buf.len() as u64;
        // Keep the buffer for the next append unless one huge batch inflated it.
        if buf.capacity() <= 64 << 20 {
            self.buf = buf;
        }
        res?;
        self.bytes += n;
        Ok(n)
    }

    /// Force appended records to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Close this segment (synced) and start the next one. Returns the closed segment number.
    pub fn rotate(&mut self) -> io::Result<u64> {
        self.sync()?;
        let old = self.seg_no;
        let buf = std::mem::take(&mut self.buf);
        *self = Wal::create(&self.dir, old + 1)?;
        self.buf = buf;
        Ok(old)
    }

    /// Delete segments numbered `<= upto` (their data is in durable blocks).
    pub fn delete_upto(dir: &Path, upto: u64) -> io::Result<()> {
        for no in list_segments(dir)? {
            if no <= upto {
                fs::remove_file(segment_path(dir, no))?;
            }
        }
        Ok(())
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }
}

/// fsync a directory so that a created, renamed or deleted entry is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlab_core::{FieldValue, SeriesKey, Tags};

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
