//! Quarantine: where payloads that could not be parsed go, with their topic, bytes and reason.
//!
//! The legacy emulator dropped invalid data into a debug log; fieldlab keeps rejected messages so that
//! they can be inspected, fixed and replayed, within a size budget:
//!
//! - Entries are JSON lines, fsynced before the message is acknowledged, in numbered segment
//!   files `<data_dir>/quarantine/NNNNNNNN.jsonl`. A segment is closed at an eighth of
//!   `storage.quarantine_max_bytes` (default 64 MiB); when all segments together exceed the
//!   budget the oldest are deleted. Ids are consecutive, so what was dropped is counted
//!   exactly (`dropped` in the listing; `fieldlab_quarantine_dropped_total`).
//! - The payload is kept in the file, base64, up to a quarter of the budget and at most
//!   1 MiB (`payload_truncated` and `payload_size` say when it was cut); the reason is cut
//!   at [`REASON_MAX_CHARS`] characters, since a parse error may quote the whole bad field.
//! - Listing is newest first and reads segments backwards from their end, line by line, up
//!   to the page asked for: memory is one read buffer plus the entries returned, never a
//!   whole file, and the append lock is held only to copy the segment list.
//! - The log line for a quarantined payload is rate-limited (a few per second, then one line
//!   with the number suppressed).
//! - `quarantine.jsonl` of earlier versions becomes segment 0 on open (a rename).

use base64::Engine;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest reason kept, in characters (longer ones end with `…`).
pub const REASON_MAX_CHARS: usize = 200;
/// Default of `storage.quarantine_max_bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Longest payload kept (when the budget allows: at most a quarter of it).
pub const PAYLOAD_MAX_BYTES: usize = 1 << 20;
/// A listing stops adding entries beyond this many bytes of stored lines (at least one entry
/// is always returned); `next_offset` then says where to go on.
const LIST_BYTES_MAX: usize = 32 << 20;
/// A stored line longer than this (only possible in files of earlier versions) is listed as
/// a stub naming where it is, not read.
const LINE_READ_MAX: u64 = 16 << 20;
/// Chunk of the backward scan.
const SCAN_CHUNK: u64 = 64 << 10;
/// Log lines per second for quarantined payloads; the rest are counted and summarised.
const LOG_PER_SECOND: u32 = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuarantineEntry {
    pub id: u64,
    /// Time of receipt, RFC 3339.
    pub received_at: String,
    pub topic: String,
    /// Why it was refused, at most [`REASON_MAX_CHARS`] characters.
    pub reason: String,
    /// The bytes received, base64 (the first of them only if `payload_truncated`).
    pub payload_base64: String,
    /// The payload as text, when it is UTF-8 (cut at 4 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
    /// Size of the payload as received, in bytes (absent in entries of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    /// Only the first bytes of the payload were kept (see the module doc).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
}

/// One page of the quarantine, newest first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QuarantinePage {
    pub items: Vec<QuarantineEntry>,
    /// Entries held now.
    pub total: u64,
    /// Entries deleted so far to keep the quarantine within `storage.quarantine_max_bytes`.
    pub dropped: u64,
    /// The `offset` of the next page, if there are more entries.
    pub next_offset: Option<u64>,
}

/// Quarantine metrics, registered under `fieldlab_quarantine_*`.
#[derive(Clone, Default)]
pub struct QuarantineMetrics {
    pub dropped: Counter,
    pub bytes: Gauge,
}

/// A segment file: its number, the id of its first entry (none while empty), its size.
#[derive(Debug, Clone, Copy)]
struct Segment {
    seq: u64,
    first_id: Option<u64>,
    bytes: u64,
}

struct State {
    /// The newest segment, open for appending (`None` until the first append after open).
    file: Option<File>,
    /// Oldest first; the last one is the one appended to.
    segments: VecDeque<Segment>,
    next_id: u64,
    /// Ids below this were dropped by the budget.
    first_id: u64,
    total_bytes: u64,
    /// The newest segment has junk after its last entry (a failed append could not be cut
    /// back): the next append starts a new segment.
    roll: bool,
    log: LogLimit,
}

pub struct Quarantine {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    payload_max: usize,
    state: Mutex<State>,
    metrics: QuarantineMetrics,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:08}.jsonl"))
}

/// `s` cut to at most `max` characters, the last of which is then `…`.
pub fn cap_chars(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some(_) => {
            let end = s
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(0, |c| c.0);
            format!("{}…", &s[..end]).into()
        }
    }
}

/// The id at the start of a stored line (`{"id":N,...`; serde writes fields in order).
fn id_prefix(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"id\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Visit the lines of `file[..len]` from the last to the first as `(start, end)` byte ranges
/// (without the newline); `f` returns false to stop. Reads `SCAN_CHUNK` bytes at a time.
fn lines_backwards(
    file: &File,
    len: u64,
    mut f: impl FnMut(u64, u64) -> io::Result<bool>,
) -> io::Result<()> {
    let mut line_end = len;
    if len > 0 {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)?;
        if last[0] == b'\n' {
            line_end = len - 1;
        }
    }
    let mut buf = vec![0u8; SCAN_CHUNK as usize];
    let mut pos = line_end;
    while pos > 0 {
        let start = pos.saturating_sub(SCAN_CHUNK);
        let chunk = &mut buf[..(pos - start) as usize];
        file.read_exact_at(chunk, start)?;
        for (i, &b) in chunk.iter().enumerate().rev() {
            if b == b'\n' {
                let nl = start + i as u64;
                if nl + 1 < line_end && !f(nl + 1, line_end)? {
                    return Ok(());
                }
                line_end = nl;
            }
        }
        pos = start;
    }
    if line_end > 0 {
        f(0, line_end)?;
    }
    Ok(())
}

/// The id of the first entry of a segment.
fn first_id(file: &File) -> io::Result<Option<u64>> {
    let mut head = [0u8; 32];
    let n = file.read_at(&mut head, 0)?;
    Ok(id_prefix(&head[..n]))
}

/// The id of the last readable entry of a segment.
fn last_id(file: &File, len: u64) -> io::Result<Option<u64>> {
    let mut found = None;
    lines_backwards(file, len, |s, e| {
        let mut head = [0u8; 32];
        let n = (e - s).min(32) as usize;
        file.read_exact_at(&mut head[..n], s)?;
        found = id_prefix(&head[..n]);
        Ok(found.is_none())
    })?;
    Ok(found)
}

/// Cut a segment back to its last complete line: a torn append was never acknowledged.
fn repair_tail(path: &Path) -> io::Result<u64> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    let mut keep = 0;
    let mut buf = vec![0u8; SCAN_CHUNK as usize];
    let mut pos = len;
    'scan: while pos > 0 {
        let start = pos.saturating_sub(SCAN_CHUNK);
        let chunk = &mut buf[..(pos - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            keep = start + i as u64 + 1;
            break 'scan;
        }
        pos = start;
    }
    tracing::warn!(
        segment = %path.display(),
        torn_bytes = len - keep,
        "quarantine segment has a torn tail (an append interrupted by a crash, never acknowledged); truncated"
    );
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(keep)
}

/// At most [`LOG_PER_SECOND`] log lines per second; the others are counted and reported by
/// the next line that is written.
struct LogLimit {
    window: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    fn new() -> Self {
        LogLimit {
            window: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }

    /// May a line be logged now? `Some(k)`: yes, and `k` lines were suppressed before it.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.logged = 0;
        }
        if self.logged < LOG_PER_SECOND {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl Quarantine {
    /// Open (or create) the quarantine under `data_dir` with the default budget.
    pub fn open(data_dir: &Path) -> io::Result<Quarantine> {
        Self::open_with(data_dir, DEFAULT_MAX_BYTES)
    }

    /// Open (or create) the quarantine under `data_dir`, keeping at most about `max_bytes`
    /// on disk (`storage.quarantine_max_bytes`).
    pub fn open_with(data_dir: &Path, max_bytes: u64) -> io::Result<Quarantine> {
        let dir = data_dir.join("quarantine");
        fs::create_dir_all(&dir)?;
        let max_bytes = max_bytes.max(4096);
        let mut seqs = list_segments(&dir)?;
        let legacy = dir.join("quarantine.jsonl");
        if legacy.exists() {
            if seqs.first().is_some_and(|s| *s == 0) {
                tracing::warn!(file = %legacy.display(), "quarantine file of an earlier version left as it is: segment 0 exists already");
            } else {
                fs::rename(&legacy, segment_path(&dir, 0))?;
                File::open(&dir)?.sync_all()?;
                seqs.insert(0, 0);
            }
        }
        let mut segments = VecDeque::new();
        for (i, &seq) in seqs.iter().enumerate() {
            let path = segment_path(&dir, seq);
            let bytes = if i + 1 == seqs.len() {
                repair_tail(&path)?
            } else {
                fs::metadata(&path)?.len()
            };
            let first_id = first_id(&File::open(&path)?)?;
            segments.push_back(Segment {
                seq,
                first_id,
                bytes,
            });
        }
        let mut next_id = 1;
        for s in segments.iter().rev() {
            let path = segment_path(&dir, s.seq);
            if let Some(id) = last_id(&File::open(&path)?, s.bytes)? {
                next_id = id + 1;
                break;
            }
        }
        let first_id = segments.iter().find_map(|s| s.first_id).unwrap_or(next_id);
        let q = Quarantine {
            segment_max: (max_bytes / 8).max(4096),
            payload_max: ((max_bytes / 4) as usize).clamp(1024, PAYLOAD_MAX_BYTES),
            max_bytes,
            state: Mutex::new(State {
                file: None,
                total_bytes: segments.iter().map(|s| s.bytes).sum(),
                segments,
                next_id,
                first_id,
                roll: false,
                log: LogLimit::new(),
            }),
            metrics: QuarantineMetrics::default(),
            dir,
        };
        q.enforce_budget(&mut q.state.lock());
        Ok(q)
    }

    pub fn metrics(&self) -> &QuarantineMetrics {
        &self.metrics
    }

    pub fn register_metrics(&self, r: &mut Registry) {
        r.register(
            "fieldlab_quarantine_dropped",
            "Quarantined payloads deleted to keep the quarantine within storage.quarantine_max_bytes",
            self.metrics.dropped.clone(),
        );
        r.register(
            "fieldlab_quarantine_bytes",
            "Bytes of the quarantine's files",
            self.metrics.bytes.clone(),
        );
    }

    /// Append entries `(topic, payload, reason)` and fsync. Returns their ids. On error
    /// nothing of the call is kept (the segment is cut back), so the caller can retry.
    pub fn append(
        &self,
        items: &[(String, Vec<u8>, String)],
        received_at: &str,
    ) -> io::Result<Vec<u64>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut st = self.state.lock();
        let mut buf = Vec::new();
        let mut ids = Vec::with_capacity(items.len());
        for (topic, payload, reason) in items {
            let id = st.next_id + ids.len() as u64;
            ids.push(id);
            let kept = &payload[..payload.len().min(self.payload_max)];
            let text = std::str::from_utf8(payload).ok().map(|s| {
                let mut end = s.len().min(4096);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s[..end].to_string()
            });
            let e = QuarantineEntry {
                id,
                received_at: received_at.to_string(),
                topic: topic.clone(),
                reason: cap_chars(reason, REASON_MAX_CHARS).into_owned(),
                payload_base64: base64::engine::general_purpose::STANDARD.encode(kept),
                payload_text: text,
                payload_size: Some(payload.len() as u64),
                payload_truncated: kept.len() < payload.len(),
            };
            serde_json::to_writer(&mut buf, &e).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        self.write(&mut st, &buf, ids[0])?;
        st.next_id += ids.len() as u64;
        self.enforce_budget(&mut st);
        let now = Instant::now();
        for ((topic, _, reason), id) in items.iter().zip(&ids) {
            if let Some(suppressed) = st.log.admit(now) {
                tracing::warn!(
                    id,
                    topic = %cap_chars(topic, REASON_MAX_CHARS),
                    reason = %cap_chars(reason, REASON_MAX_CHARS),
                    suppressed,
                    "payload quarantined (at most {LOG_PER_SECOND} lines a second; `suppressed`: lines left out before this one)"
                );
            }
        }
        Ok(ids)
    }

    /// Write `buf` (entries from `first` on) to the newest segment, starting a new one when
    /// that one is full.
    fn write(&self, st: &mut State, buf: &[u8], first: u64) -> io::Result<()> {
        let full = match st.segments.back() {
            None => true,
            Some(s) => st.roll || (s.bytes > 0 && s.bytes + buf.len() as u64 > self.segment_max),
        };
        if full {
            st.roll = false;
            let seq = st.segments.back().map_or(1, |s| s.seq + 1);
            let f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(segment_path(&self.dir, seq))?;
            File::open(&self.dir)?.sync_all()?;
            st.file = Some(f);
            st.segments.push_back(Segment {
                seq,
                first_id: None,
                bytes: 0,
            });
        }
        let seg = *st.segments.back().expect("a segment");
        if st.file.is_none() {
            st.file = Some(
                OpenOptions::new()
                    .append(true)
                    .open(segment_path(&self.dir, seg.seq))?,
            );
        }
        let file = st.file.as_mut().expect("open above");
        let res = file.write_all(buf).and_then(|()| file.sync_data());
        if let Err(e) = res {
            // Cut back to the last whole entry so that the ids stay consecutive and a retry
            // does not follow a half line.
            if let Err(e2) = file.set_len(seg.bytes).and_then(|()| file.sync_data()) {
                tracing::error!(error = %e2, "quarantine: could not cut back a failed append; a new segment is started");
                st.file = None;
                st.roll = true;
            }
            return Err(e);
        }
        let back = st.segments.back_mut().expect("a segment");
        back.bytes += buf.len() as u64;
        back.first_id.get_or_insert(first);
        st.total_bytes += buf.len() as u64;
        Ok(())
    }

    /// Delete the oldest segments while the total is over budget (never the newest).
    fn enforce_budget(&self, st: &mut State) {
        while st.total_bytes > self.max_bytes && st.segments.len() > 1 {
            let old = st.segments[0];
            let path = segment_path(&self.dir, old.seq);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::error!(error = %e, segment = %path.display(), "quarantine: could not delete the oldest segment; the quarantine is over its budget");
                    break;
                }
            }
            st.segments.pop_front();
            st.total_bytes -= old.bytes;
            let first = st
                .segments
                .iter()
                .find_map(|s| s.first_id)
                .unwrap_or(st.next_id);
            let dropped = first.saturating_sub(st.first_id);
            st.first_id = first;
            self.metrics.dropped.inc_by(dropped);
            tracing::info!(
                segment = %path.display(),
                entries = dropped,
                "quarantine over storage.quarantine_max_bytes: oldest segment deleted"
            );
        }
        self.metrics.bytes.set(st.total_bytes as i64);
    }

    /// Entries newest first: `limit` of them after skipping `offset`. Reads segments
    /// backwards from their end and stops at the page (see the module doc); appends go on
    /// meanwhile.
    pub fn list(&self, limit: usize, offset: usize) -> io::Result<QuarantinePage> {
        let (segments, next_id, first_id) = {
            let st = self.state.lock();
            (st.segments.clone(), st.next_id, st.first_id)
        };
        let total = next_id.saturating_sub(first_id);
        let mut items = Vec::new();
        let mut skip = offset as u64;
        let mut budget = LIST_BYTES_MAX;
        // Lines passed after the skip, entries or not (a line that is no entry still takes its
        // place in the order, so the next page starts after it).
        let mut consumed = 0u64;
        // Entries of each segment, from the first id of the segment after it.
        let mut upper = next_id;
        'segments: for seg in segments.iter().rev() {
            if items.len() >= limit {
                break;
            }
            let n = seg.first_id.map_or(0, |f| upper.saturating_sub(f));
            if let Some(f) = seg.first_id {
                upper = f;
            }
            if skip >= n && n > 0 {
                skip -= n;
                continue;
            }
            let path = segment_path(&self.dir, seg.seq);
            let file = match File::open(&path) {
                Ok(f) => f,
                // Deleted by the budget since the list was copied.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut stop = false;
            lines_backwards(&file, seg.bytes, |s, e| {
                if skip > 0 {
                    skip -= 1;
                    return Ok(true);
                }
                let len = e - s;
                if !items.is_empty() && len as usize > budget {
                    stop = true;
                    return Ok(false);
                }
                consumed += 1;
                if let Some(entry) = read_entry(&file, &path, s, len)? {
                    budget = budget.saturating_sub(len as usize);
                    items.push(entry);
                }
                Ok(items.len() < limit)
            })?;
            if stop {
                break 'segments;
            }
        }
        let shown = offset as u64 + consumed;
        Ok(QuarantinePage {
            items,
            total,
            dropped: first_id.saturating_sub(1),
            next_offset: (shown < total).then_some(shown),
        })
    }
}

/// One stored line as an entry (its reason capped); `None` if it is not an entry.
fn read_entry(
    file: &File,
    path: &Path,
    start: u64,
    len: u64,
) -> io::Result<Option<QuarantineEntry>> {
    if len > LINE_READ_MAX {
        let mut head = [0u8; 32];
        file.read_exact_at(&mut head, start)?;
        return Ok(id_prefix(&head).map(|id| QuarantineEntry {
            id,
            received_at: String::new(),
            topic: String::new(),
            reason: format!(
                "entry of {len} bytes, too large to list; it is line at byte {start} of {}",
                path.display()
            ),
            payload_base64: String::new(),
            payload_text: None,
            payload_size: None,
            payload_truncated: true,
        }));
    }
    let mut line = vec![0u8; len as usize];
    file.read_exact_at(&mut line, start)?;
    Ok(serde_json::from_slice::<QuarantineEntry>(&line)
        .ok()
        .map(|mut e| {
            if let std::borrow::Cow::Owned(r) = cap_chars(&e.reason, REASON_MAX_CHARS) {
                e.reason = r;
            }
            e
        }))
}

/// Segment numbers in `dir`, ascending.
fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else {
            continue;
        };
        if !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = stem.parse() {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir.join("quarantine"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    /// Bytes this thread has read through read(2)-like calls so far.
    fn thread_rchar() -> u64 {
        let io = fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn keeps_bytes_and_reason_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::open(dir.path()).unwrap();
        let ids = q
            .append(
                &[
                    (
                        "devices/a/b/telemetry".into(),
                        b"not json".to_vec(),
                        "invalid JSON".into(),
                    ),
                    ("x".into(), vec![0xff, 0xfe], "not UTF-8".into()),
                ],
                "2026-01-01T00:00:00Z",
            )
            .unwrap();
        assert_eq!(ids, vec![1, 2]);
        drop(q);
        let q = Quarantine::open(dir.path()).unwrap();
        let page = q.list(10, 0).unwrap();
        assert_eq!((page.total, page.dropped, page.next_offset), (2, 0, None));
        let list = page.items;
        assert_eq!(list[0].id, 2);
        assert_eq!(list[0].payload_text, None);
        assert_eq!(list[0].payload_base64, "//4=");
        assert_eq!(list[0].payload_size, Some(2));
        assert_eq!(list[1].payload_text.as_deref(), Some("not json"));
        assert_eq!(
            q.append(&[("t".into(), vec![], "empty".into())], "now")
                .unwrap(),
            vec![3]
        );
        assert_eq!(q.list(1, 1).unwrap().items[0].id, 2);
        assert_eq!(q.list(1, 1).unwrap().next_offset, Some(2));
    }

    #[test]
    fn reasons_are_capped_at_200_characters_on_char_boundaries() {
        assert_eq!(cap_chars("short", 200), "short");
        let exact = "é".repeat(200);
        assert_eq!(cap_chars(&exact, 200), exact);
        let long = format!("bad field `x`: {}", "é😀".repeat(10_000));
        let capped = cap_chars(&long, 200);
        assert_eq!(capped.chars().count(), 200);
        assert!(capped.ends_with('…'));
        assert!(long.starts_with(capped.trim_end_matches('…')));

        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::open(dir.path()).unwrap();
        q.append(&[("t".into(), b"{}".to_vec(), long.clone())], "now")
            .unwrap();
        let e = &q.list(1, 0).unwrap().items[0];
        assert_eq!(e.reason, capped);
        // The file holds the capped reason, not the whole field.
        assert!(
            dir_bytes(dir.path()) < 1500,
            "{} bytes",
            dir_bytes(dir.path())
        );
    }

    #[test]
    fn the_log_is_limited_per_second_and_counts_what_it_left_out() {
        let mut l = LogLimit::new();
        let t0 = Instant::now();
        let admitted = (0..100).filter(|_| l.admit(t0).is_some()).count();
        assert_eq!(admitted, LOG_PER_SECOND as usize);
        assert_eq!(l.admit(t0 + Duration::from_millis(1001)), Some(95));
        assert_eq!(l.admit(t0 + Duration::from_millis(1002)), Some(0));
    }

    /// The issue's case: 1000 payloads of 250 KB of junk. With a 4 MiB budget the files stay
    /// within it, everything beyond is counted as dropped, and listing one entry reads a few
    /// hundred KB, not the quarantine.
    #[test]
    fn junk_flood_stays_within_the_budget_and_lists_cheaply() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 4 << 20;
        let q = Quarantine::open_with(dir.path(), cap).unwrap();
        let junk: Vec<u8> = (0..250_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut biggest = 0;
        for chunk in 0..100 {
            let items: Vec<_> = (0..10)
                .map(|i| {
                    let mut p = junk.clone();
                    p[0] = (chunk * 10 + i) as u8;
                    ("devices/x/y/telemetry".to_string(), p, "x".repeat(300_000))
                })
                .collect();
            q.append(&items, "now").unwrap();
            biggest = biggest.max(dir_bytes(dir.path()));
        }
        // Budget, plus at most the newest segment's overshoot of one append.
        assert!(
            biggest <= cap + q.segment_max + 10 * 340_000,
            "{biggest} bytes"
        );
        let before = thread_rchar();
        let page = q.list(1, 0).unwrap();
        let read = thread_rchar() - before;
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].id, 1000);
        assert_eq!(page.items[0].payload_size, Some(250_000));
        assert!(!page.items[0].payload_truncated);
        assert!(page.items[0].reason.chars().count() <= REASON_MAX_CHARS);
        assert_eq!(page.total + page.dropped, 1000);
        assert!(page.dropped > 900, "dropped {}", page.dropped);
        assert_eq!(q.metrics().dropped.get(), page.dropped);
        assert!(read < 1 << 20, "listing one entry read {read} bytes");
        // Paging through what is held gives every id once, newest first.
        let mut ids = Vec::new();
        let mut offset = Some(0);
        while let Some(o) = offset {
            let p = q.list(3, o as usize).unwrap();
            ids.extend(p.items.iter().map(|e| e.id));
            offset = p.next_offset;
        }
        let want: Vec<u64> = (page.dropped + 1..=1000).rev().collect();
        assert_eq!(ids, want);
        // Reopen: the same view, and ids go on.
        drop(q);
        let q = Quarantine::open_with(dir.path(), cap).unwrap();
        let again = q.list(1, 0).unwrap();
        assert_eq!((again.total, again.dropped), (page.total, page.dropped));
        assert_eq!(
            q.append(&[("t".into(), vec![1], "r".into())], "now")
                .unwrap(),
            vec![1001]
        );
    }

    #[test]
    fn an_oversized_payload_is_kept_up_to_a_quarter_of_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::open_with(dir.path(), 1 << 20).unwrap();
        q.append(
            &[("t".into(), vec![b'a'; 3 << 20], "too big".into())],
            "now",
        )
        .unwrap();
        let e = &q.list(1, 0).unwrap().items[0];
        assert!(e.payload_truncated);
        assert_eq!(e.payload_size, Some(3 << 20));
        let kept = base64::engine::general_purpose::STANDARD
            .decode(&e.payload_base64)
            .unwrap();
        assert_eq!(kept.len(), 256 << 10);
        assert_eq!(e.payload_text.as_ref().map(String::len), Some(4096));
    }

    #[test]
    fn a_file_of_an_earlier_version_is_taken_over_and_its_torn_tail_cut() {
        let dir = tempfile::tempdir().unwrap();
        let qdir = dir.path().join("quarantine");
        fs::create_dir_all(&qdir).unwrap();
        let mut text = String::new();
        for id in 1..=5 {
            text.push_str(&format!(
                "{{\"id\":{id},\"received_at\":\"2025-01-01T00:00:00Z\",\"topic\":\"t\",\"reason\":\"{}\",\"payload_base64\":\"eA==\",\"payload_text\":\"x\"}}\n",
                "r".repeat(1000)
            ));
        }
        text.push_str("{\"id\":6,\"received_at\":\"2025-01-0"); // crash mid-append
        fs::write(qdir.join("quarantine.jsonl"), &text).unwrap();
        let q = Quarantine::open(dir.path()).unwrap();
        assert!(!qdir.join("quarantine.jsonl").exists());
        let page = q.list(10, 0).unwrap();
        assert_eq!(page.total, 5);
        let ids: Vec<u64> = page.items.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![5, 4, 3, 2, 1]);
        assert_eq!(page.items[0].reason.chars().count(), REASON_MAX_CHARS);
        assert_eq!(page.items[0].payload_size, None);
        assert_eq!(
            q.append(&[("t".into(), b"y".to_vec(), "new".into())], "now")
                .unwrap(),
            vec![6]
        );
        let page = q.list(2, 0).unwrap();
        assert_eq!(page.items[0].id, 6);
        assert_eq!(page.items[1].id, 5);
        assert_eq!(page.total, 6);
    }

    #[test]
    fn listing_while_appending_sees_consecutive_entries() {
        let dir = tempfile::tempdir().unwrap();
        let q = std::sync::Arc::new(Quarantine::open_with(dir.path(), 64 << 10).unwrap());
        let w = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    q.append(&[("t".into(), vec![b'z'; 500], format!("r{i}"))], "now")
                        .unwrap();
                }
            })
        };
        while !w.is_finished() {
            let p = q.list(50, 0).unwrap();
            let ids: Vec<u64> = p.items.iter().map(|e| e.id).collect();
            assert!(ids.windows(2).all(|w| w[0] == w[1] + 1), "{ids:?}");
        }
        w.join().unwrap();
        let p = q.list(1, 0).unwrap();
        assert_eq!(p.items[0].id, 300);
        assert!(p.dropped > 0);
        assert_eq!(p.total + p.dropped, 300);
    }
}
