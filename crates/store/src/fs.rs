//! The file layer under the store: every write, fsync, truncation, rename and removal that the
//! WAL, the block writer, compaction, recovery and the append-only logs (annotations) make goes
//! through [`StoreFs`].
//!
//! Why it exists: a store is only as good as what it does when a write fails. Disks fill up,
//! fsync reports EIO, a write lands half. [`RealFs`] is `std::fs`; [`FaultyFs`] is the same with
//! faults on demand (ENOSPC, EIO or a short write at the Nth operation, or every operation of a
//! kind until healed) and a power-cut model (what was not fsynced is cut at a random point), so
//! the tests can fail every step of an append, a block cut, a block write and a compaction,
//! crash, reopen and check that every acknowledged point is back exactly once.
//!
//! Reads go to `std::fs` directly: a failed read loses nothing, and the store reports it.
//!
//! Also here, on top of the trait: [`write_file_atomically`] (temporary file, fsync, rename,
//! fsync of the directory; the temporary file is removed on failure) and [`AppendLog`] (an
//! append-only file whose appends are all or nothing: a failed write or fsync is cut back before
//! anything else is written).

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file operations the store makes (reads excepted).
pub trait StoreFs: Send + Sync + fmt::Debug {
    /// Open for appending, creating the file if it does not exist.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Open an existing file for writing, without truncating it.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Create (or truncate) a file for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// fsync a directory, so that entries created, renamed or removed in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file of a [`StoreFs`].
pub trait FsFile: Send + fmt::Debug {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&mut self) -> io::Result<()>;
    /// fsync.
    fn sync_all(&mut self) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// The store's files on a file system (`std::fs`).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

/// The real file system, as the store's options hold it.
pub fn real() -> Arc<dyn StoreFs> {
    Arc::new(RealFs)
}

#[derive(Debug)]
struct RealFile(File);

impl FsFile for RealFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl StoreFs for RealFs {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(RealFile(
            OpenOptions::new().write(true).open(path)?,
        )))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(RealFile(File::create(path)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Write `buf` to a new file `tmp` and fsync it; on failure `tmp` is removed (best effort).
pub fn write_synced(fs: &dyn StoreFs, tmp: &Path, buf: &[u8]) -> io::Result<()> {
    let res = fs.create(tmp).and_then(|mut f| {
        f.write_all(buf)?;
        f.sync_all()
    });
    if res.is_err() {
        let _ = fs.remove_file(tmp);
    }
    res
}

/// Write `buf` to `tmp`, fsync, rename to `path`, fsync the directory: the file at `path` then
/// exists completely (old or new content), never half. On failure the temporary file is removed
/// (best effort); a failure after the rename (the directory's fsync) leaves the complete file at
/// `path`, whose rename may or may not survive a power cut.
pub fn write_file_atomically(
    fs: &dyn StoreFs,
    path: &Path,
    tmp: &Path,
    buf: &[u8],
) -> io::Result<()> {
    write_synced(fs, tmp, buf)?;
    if let Err(e) = fs.rename(tmp, path) {
        let _ = fs.remove_file(tmp);
        return Err(e);
    }
    fs.sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// An append-only file (JSON lines: annotations, quarantine, events) whose appends are all or
/// nothing. A write or fsync that fails is cut back to the end of the last good append before
/// the error is returned; if even that fails, the next append cuts first and refuses to write
/// while it cannot — a record is never written behind a partial one, where a reader would lose
/// both. A torn last line found at open (a crash during an append, never acknowledged) is cut
/// the same way.
#[derive(Debug)]
pub struct AppendLog {
    fs: Arc<dyn StoreFs>,
    path: PathBuf,
    file: Box<dyn FsFile>,
    /// End of the last complete, fsynced append.
    len: u64,
    /// The file may hold bytes after `len` (a failed append that could not be cut back).
    dirty_tail: bool,
}

impl AppendLog {
    /// Open (or create) `path`; a last line without its newline is cut off.
    pub fn open(fs: Arc<dyn StoreFs>, path: &Path) -> io::Result<AppendLog> {
        let file = fs.open_append(path)?;
        let size = std::fs::metadata(path)?.len();
        let len = end_of_last_line(path, size)?;
        let mut log = AppendLog {
            fs,
            path: path.to_path_buf(),
            file,
            len,
            dirty_tail: len < size,
        };
        if log.dirty_tail {
            tracing::warn!(
                file = %path.display(),
                dropped_bytes = size - len,
                "the last line is incomplete (a crash during an append; never acknowledged); cutting it"
            );
            if let Err(e) = log.cut_back() {
                tracing::warn!(file = %path.display(), error = %e, "could not cut the incomplete line yet; the next append retries");
            }
        }
        Ok(log)
    }

    /// Append `buf` (whole lines) and fsync it. On error nothing of `buf` stays in the file (or,
    /// if cutting it back failed too, the next append cuts it before writing).
    pub fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.append_with(buf, true)
    }

    /// [`AppendLog::append`] without the fsync, for records nobody was promised are durable
    /// (the watch's event logs): a failed write is still cut back, so later lines stay readable.
    pub fn append_unsynced(&mut self, buf: &[u8]) -> io::Result<()> {
        self.append_with(buf, false)
    }

    fn append_with(&mut self, buf: &[u8], sync: bool) -> io::Result<()> {
        if self.dirty_tail {
            self.cut_back()?;
        }
        let res =
            self.file.write_all(buf).and_then(
                |()| {
                    if sync {
                        self.file.sync_data()
                    } else {
                        Ok(())
                    }
                },
            );
        match res {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.dirty_tail = true;
                if let Err(e2) = self.cut_back() {
                    tracing::error!(file = %self.path.display(), error = %e2, "could not cut a failed append back; the next append retries first");
                }
                Err(e)
            }
        }
    }

    /// Bytes of complete appends.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Truncate to `len` and fsync; on failure reopen the file, so the next attempt starts from
    /// a fresh handle.
    fn cut_back(&mut self) -> io::Result<()> {
        let len = self.len;
        let res = self.file.set_len(len).and_then(|()| self.file.sync_data());
        if res.is_ok() {
            self.dirty_tail = false;
            return Ok(());
        }
        if let Ok(f) = self.fs.open_append(&self.path) {
            self.file = f;
        }
        res
    }
}

/// The length of `path` up to and including its last newline (`size` if it ends with one or is
/// empty).
fn end_of_last_line(path: &Path, size: u64) -> io::Result<u64> {
    if size == 0 {
        return Ok(0);
    }
    let mut f = File::open(path)?;
    let mut end = size;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Fault injection.

/// A kind of file operation, as [`FaultyFs`] counts and fails them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// Opening or creating a file for writing.
    Open,
    Write,
    /// fsync / fdatasync of a file.
    Sync,
    /// Truncation (`set_len`).
    SetLen,
    Rename,
    Remove,
    /// `create_dir_all`.
    MkDir,
    /// fsync of a directory.
    SyncDir,
}

impl OpKind {
    /// The faults that can happen to this kind of operation.
    pub fn faults(self) -> &'static [Fault] {
        match self {
            OpKind::Write => &[Fault::NoSpace, Fault::Io, Fault::ShortWrite],
            OpKind::Sync | OpKind::Open | OpKind::Rename | OpKind::MkDir => {
                &[Fault::NoSpace, Fault::Io]
            }
            OpKind::SetLen | OpKind::Remove | OpKind::SyncDir => &[Fault::Io],
        }
    }
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// ENOSPC: no space left on device.
    NoSpace,
    /// EIO: input/output error.
    Io,
    /// Half of the buffer is written, then ENOSPC (a disk filling up mid-write). On other
    /// operations: ENOSPC.
    ShortWrite,
}

impl Fault {
    fn error(self) -> io::Error {
        match self {
            Fault::NoSpace | Fault::ShortWrite => io::Error::from_raw_os_error(libc::ENOSPC),
            Fault::Io => io::Error::from_raw_os_error(libc::EIO),
        }
    }
}

/// One operation [`FaultyFs`] saw, and the fault it injected (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub kind: OpKind,
    pub path: PathBuf,
    pub fault: Option<Fault>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Every operation so far, in order.
    trace: Vec<Op>,
    /// Faults planned by operation number (0-based, all kinds counted).
    at: BTreeMap<usize, Fault>,
    /// Faults planned by kind and number within the kind.
    nth: HashMap<(OpKind, usize), Fault>,
    /// Operations counted per kind.
    per_kind: HashMap<OpKind, usize>,
    /// Kinds that fail every time until [`FaultyFs::heal`] (a full disk).
    always: HashMap<OpKind, Fault>,
    /// Kinds that fail for a span of operation numbers (a disk full for a while).
    windows: Vec<(std::ops::Range<usize>, Vec<OpKind>, Fault)>,
    /// Bytes of each file known to be on disk (fsynced), for [`FaultyFs::power_cut`].
    synced: HashMap<PathBuf, u64>,
    /// Files written since they were last fsynced.
    unsynced: HashSet<PathBuf>,
    /// A failed fsync zeroes what it did not write (see [`FaultyFs::drop_pages_on_failed_sync`]).
    drop_pages: bool,
}

/// `std::fs` with faults on demand, for tests. Every operation is counted and recorded (see
/// [`FaultyFs::trace`]); a fault is planned by operation number ([`FaultyFs::fail_at`]), by
/// kind and number ([`FaultyFs::fail_nth`]), or for every operation of some kinds until
/// [`FaultyFs::heal`] ([`FaultyFs::fail_all`]). A failed operation changes nothing, except a
/// [`Fault::ShortWrite`], which writes half of the buffer first.
#[derive(Debug, Clone, Default)]
pub struct FaultyFs {
    state: Arc<Mutex<FaultState>>,
}

impl FaultyFs {
    pub fn new() -> FaultyFs {
        FaultyFs::default()
    }

    /// This file system as the store's options take it.
    pub fn handle(&self) -> Arc<dyn StoreFs> {
        Arc::new(self.clone())
    }

    /// Fail operation number `n` (0-based, counting every kind).
    pub fn fail_at(&self, n: usize, fault: Fault) {
        self.state.lock().at.insert(n, fault);
    }

    /// Fail the `n`-th (0-based) operation of `kind` from now on.
    pub fn fail_nth(&self, kind: OpKind, n: usize, fault: Fault) {
        let mut st = self.state.lock();
        let base = st.per_kind.get(&kind).copied().unwrap_or(0);
        st.nth.insert((kind, base + n), fault);
    }

    /// Fail every operation of these kinds until [`FaultyFs::heal`].
    pub fn fail_all(&self, kinds: &[OpKind], fault: Fault) {
        let mut st = self.state.lock();
        for k in kinds {
            st.always.insert(*k, fault);
        }
    }

    /// Fail every operation of these kinds whose number is in `ops` (a disk that is full for
    /// a while, then has room again).
    pub fn fail_window(&self, ops: std::ops::Range<usize>, kinds: &[OpKind], fault: Fault) {
        self.state.lock().windows.push((ops, kinds.to_vec(), fault));
    }

    /// End every planned and standing fault.
    pub fn heal(&self) {
        let mut st = self.state.lock();
        st.always.clear();
        st.at.clear();
        st.nth.clear();
        st.windows.clear();
    }

    /// Model Linux after a failed fsync: the dirty pages it could not write are dropped, so the
    /// bytes written since the last good fsync read back as zeros (whatever a later fsync says).
    /// A store that acknowledges only after a good fsync, and writes nothing behind what a
    /// failed one left, loses nothing acknowledged under this model.
    pub fn drop_pages_on_failed_sync(&self) {
        self.state.lock().drop_pages = true;
    }

    /// Operations so far.
    pub fn ops(&self) -> usize {
        self.state.lock().trace.len()
    }

    /// Every operation so far.
    pub fn trace(&self) -> Vec<Op> {
        self.state.lock().trace.clone()
    }

    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        self.state
            .lock()
            .trace
            .iter()
            .filter(|o| o.fault.is_some())
            .count()
    }

    /// A power cut: each file written through this file system since its last fsync loses a
    /// random part (`seed` decides) of what was written after that fsync — nothing, some bytes,
    /// or all of it. Renames and removals are taken as durable. Call it after the store is gone
    /// and before reopening.
    pub fn power_cut(&self, seed: u64) {
        let mut st = self.state.lock();
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut files: Vec<PathBuf> = st.unsynced.drain().collect();
        files.sort();
        for path in files {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let synced = st.synced.get(&path).copied().unwrap_or(0).min(meta.len());
            let extra = meta.len() - synced;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let keep = synced + rng % (extra + 1);
            if keep < meta.len() {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .expect("open for the power cut");
                f.set_len(keep).expect("power cut");
            }
        }
    }

    /// Count one operation; the fault to inject, if any.
    fn op(&self, kind: OpKind, path: &Path) -> Option<Fault> {
        let mut st = self.state.lock();
        let n = st.trace.len();
        let k = st.per_kind.entry(kind).or_insert(0);
        let nk = *k;
        *k += 1;
        let fault = st
            .at
            .remove(&n)
            .or_else(|| st.nth.remove(&(kind, nk)))
            .or_else(|| st.always.get(&kind).copied())
            .or_else(|| {
                st.windows
                    .iter()
                    .find(|(r, kinds, _)| r.contains(&n) && kinds.contains(&kind))
                    .map(|w| w.2)
            });
        st.trace.push(Op {
            kind,
            path: path.to_path_buf(),
            fault,
        });
        fault
    }

    fn check(&self, kind: OpKind, path: &Path) -> io::Result<()> {
        match self.op(kind, path) {
            Some(f) => Err(f.error()),
            None => Ok(()),
        }
    }

    fn wrap(&self, path: &Path, f: File) -> Box<dyn FsFile> {
        Box::new(FaultyFile {
            fs: self.clone(),
            path: path.to_path_buf(),
            file: f,
        })
    }

    fn written(&self, path: &Path) {
        self.state.lock().unsynced.insert(path.to_path_buf());
    }

    fn synced(&self, path: &Path, len: u64) {
        let mut st = self.state.lock();
        st.synced.insert(path.to_path_buf(), len);
        st.unsynced.remove(path);
    }
}

impl StoreFs for FaultyFs {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.check(OpKind::Open, path)?;
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(self.wrap(path, f))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.check(OpKind::Open, path)?;
        let f = OpenOptions::new().write(true).open(path)?;
        Ok(self.wrap(path, f))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.check(OpKind::Open, path)?;
        let f = File::create(path)?;
        self.synced(path, 0);
        self.written(path);
        Ok(self.wrap(path, f))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(OpKind::Rename, to)?;
        std::fs::rename(from, to)?;
        let mut st = self.state.lock();
        let synced = st.synced.remove(from);
        st.synced.remove(to);
        if let Some(s) = synced {
            st.synced.insert(to.to_path_buf(), s);
        }
        st.unsynced.remove(to);
        if st.unsynced.remove(from) {
            st.unsynced.insert(to.to_path_buf());
        }
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check(OpKind::Remove, path)?;
        std::fs::remove_file(path)?;
        let mut st = self.state.lock();
        st.synced.remove(path);
        st.unsynced.remove(path);
        Ok(())
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.check(OpKind::MkDir, dir)?;
        std::fs::create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(OpKind::SyncDir, dir)?;
        File::open(dir)?.sync_all()
    }
}

#[derive(Debug)]
struct FaultyFile {
    fs: FaultyFs,
    path: PathBuf,
    file: File,
}

impl FaultyFile {
    fn sync(&mut self, all: bool) -> io::Result<()> {
        if let Some(f) = self.fs.op(OpKind::Sync, &self.path) {
            let mut st = self.fs.state.lock();
            if st.drop_pages {
                let from = st.synced.get(&self.path).copied().unwrap_or(0);
                let len = self.file.metadata()?.len();
                if len > from {
                    use std::os::unix::fs::FileExt;
                    let zeros = vec![0u8; (len - from) as usize];
                    OpenOptions::new()
                        .write(true)
                        .open(&self.path)?
                        .write_all_at(&zeros, from)?;
                }
                // What the failed fsync dropped is "on disk" as zeros; a power cut keeps them.
                st.synced.insert(self.path.clone(), len);
            }
            return Err(f.error());
        }
        if all {
            self.file.sync_all()?;
        } else {
            self.file.sync_data()?;
        }
        let len = self.file.metadata()?.len();
        self.fs.synced(&self.path, len);
        Ok(())
    }
}

impl FsFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let fault = self.fs.op(OpKind::Write, &self.path);
        if !buf.is_empty() {
            self.fs.written(&self.path);
        }
        match fault {
            None => self.file.write_all(buf),
            Some(Fault::ShortWrite) => {
                self.file.write_all(&buf[..buf.len() / 2])?;
                Err(Fault::ShortWrite.error())
            }
            Some(f) => Err(f.error()),
        }
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.sync(false)
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.sync(true)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.fs.check(OpKind::SetLen, &self.path)?;
        self.file.set_len(len)?;
        self.fs.written(&self.path);
        let mut st = self.fs.state.lock();
        if let Some(s) = st.synced.get_mut(&self.path) {
            *s = (*s).min(len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_log_cuts_failed_appends_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        std::fs::write(&p, b"one\ntw").unwrap();
        let fs = FaultyFs::new();
        let mut log = AppendLog::open(fs.handle(), &p).unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"one\n",
            "torn line cut at open"
        );
        // A short write: half lands, the append is cut back.
        fs.fail_nth(OpKind::Write, 0, Fault::ShortWrite);
        assert!(log.append(b"three\n").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one\n");
        // A failed fsync whose cut-back fails too: the next append cuts first.
        fs.fail_nth(OpKind::Sync, 0, Fault::Io);
        fs.fail_nth(OpKind::SetLen, 0, Fault::Io);
        assert!(log.append(b"four\n").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one\nfour\n");
        log.append(b"five\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one\nfive\n");
        // While the cut-back keeps failing, nothing is written behind the partial line.
        fs.fail_nth(OpKind::Write, 0, Fault::ShortWrite);
        fs.fail_all(&[OpKind::SetLen], Fault::Io);
        assert!(log.append(b"six\n").is_err());
        assert!(log.append(b"seven\n").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one\nfive\nsi");
        fs.heal();
        log.append(b"eight\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one\nfive\neight\n");
        assert_eq!(log.len(), 15);
    }

    #[test]
    fn faulty_fs_counts_fails_and_cuts_power() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let p = dir.path().join("f");
        let mut f = fs.create(&p).unwrap();
        f.write_all(b"abcd").unwrap();
        f.sync_data().unwrap();
        f.write_all(b"efgh").unwrap();
        fs.fail_at(fs.ops(), Fault::Io);
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
        fs.fail_all(&[OpKind::Rename], Fault::NoSpace);
        let e = fs.rename(&p, &dir.path().join("g")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs.injected(), 2);
        drop(f);
        fs.power_cut(7);
        let len = std::fs::metadata(&p).unwrap().len();
        assert!((4..=8).contains(&len), "{len}");
        assert_eq!(&std::fs::read(&p).unwrap()[..4], b"abcd");
        let kinds: Vec<OpKind> = fs.trace().iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            [
                OpKind::Open,
                OpKind::Write,
                OpKind::Sync,
                OpKind::Write,
                OpKind::Sync,
                OpKind::Rename
            ]
        );
    }
}
