//! Online backup and restore of a whole data dir as one tar archive.
//!
//! Why it exists: a lab's state (telemetry, quarantine, annotations, config, keys) must be
//! copyable while fieldlab runs, without stopping ingest and without a torn copy.
//!
//! The cut (`Store::snapshot`, run on the writer thread between two group commits):
//! wait for any in-flight block write, fsync the WAL, then — under the maintenance lock, so no
//! compaction or retention swaps blocks meanwhile — hard-link every live block file and WAL
//! segment into a snapshot directory inside the data dir and note the active segment's length.
//! That takes microseconds per file and copies no data. Blocks are immutable and WAL segments
//! are append-only, so the links hold exactly the state at the cut even if the store later
//! deletes, compacts or appends: the archive includes only the noted prefix of the active
//! segment. Everything acknowledged before the cut is in the archive, nothing after it.
//!
//! Other files under the data dir (quarantine, annotations, config, keys written by other
//! parts) are archived as they are when the archive is written, each file read up to its size
//! at that moment; they are append-only or replaced by rename, so each is self-consistent.
//!
//! Restore unpacks into an empty directory; the store's normal recovery then replays the WAL
//! prefix, so a restored data dir opens like one after a clean crash.

use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The first entry of every archive.
pub const MANIFEST: &str = "BACKUP.json";

/// What a snapshot directory holds (paths relative to the data dir) and the byte length of
/// each WAL segment at the cut.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cut {
    pub blocks: Vec<String>,
    pub wal: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub created: String,
    pub fieldlab_version: String,
    pub blocks: usize,
    pub wal_segments: usize,
    /// Other files (quarantine, annotations, config...).
    pub files: Vec<String>,
    pub bytes: u64,
}

fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    fs::hard_link(from, to).or_else(|_| fs::copy(from, to).map(|_| ()))
}

/// Hard-link the cut into `dir` (created; must be on the data dir's file system for links,
/// copies otherwise). Called by the writer thread with the store quiescent.
pub(crate) fn link_cut(
    dir: &Path,
    blocks: &[PathBuf],
    segments: &[PathBuf],
    active: &Path,
    active_len: u64,
) -> io::Result<Cut> {
    fs::create_dir_all(dir.join("blocks"))?;
    fs::create_dir_all(dir.join("wal"))?;
    let mut cut = Cut::default();
    for b in blocks {
        let name = b.file_name().expect("block file name");
        link_or_copy(b, &dir.join("blocks").join(name))?;
        cut.blocks
            .push(format!("blocks/{}", name.to_string_lossy()));
    }
    for s in segments {
        let name = s.file_name().expect("segment file name");
        let len = if s == active {
            active_len
        } else {
            fs::metadata(s)?.len()
        };
        link_or_copy(s, &dir.join("wal").join(name))?;
        cut.wal
            .push((format!("wal/{}", name.to_string_lossy()), len));
    }
    Ok(cut)
}

/// Append `len` bytes of `path` under `name`.
fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    path: &Path,
    len: u64,
) -> io::Result<()> {
    let f = File::open(path)?;
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(0o600);
    h.set_mtime(
        f.metadata()?
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
    );
    h.set_cksum();
    let mut r = f.take(len);
    tar.append_data(&mut h, name, &mut r)
}

/// Other files of the data dir, relative paths, skipping the store's own directories, the
/// lock, temporaries and snapshot directories.
fn other_files(data_dir: &Path) -> io::Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(root).expect("under root");
            let rel_s = rel.to_string_lossy().to_string();
            let top = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().to_string());
            if matches!(top.as_deref(), Some("wal" | "blocks" | "LOCK"))
                || top.as_deref().is_some_and(|t| t.starts_with(".snapshot"))
                || rel_s.ends_with(".tmp")
            {
                continue;
            }
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(root, &p, out)?;
            } else if ft.is_file() {
                out.push(rel_s);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(data_dir, data_dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Write the archive of a cut (its links in `snap_dir`) plus the data dir's other files.
pub fn write_archive<W: Write>(
    data_dir: &Path,
    snap_dir: &Path,
    cut: &Cut,
    out: W,
) -> io::Result<(W, Manifest)> {
    // Every entry with the length it is archived with, fixed before writing anything.
    let mut entries: Vec<(String, PathBuf, u64)> = Vec::new();
    for b in &cut.blocks {
        let p = snap_dir.join(b);
        let len = fs::metadata(&p)?.len();
        entries.push((b.clone(), p, len));
    }
    for (s, len) in &cut.wal {
        entries.push((s.clone(), snap_dir.join(s), *len));
    }
    let mut files = Vec::new();
    for f in other_files(data_dir)? {
        let p = data_dir.join(&f);
        match fs::metadata(&p) {
            Ok(md) => {
                entries.push((f.clone(), p, md.len()));
                files.push(f);
            }
            // Removed meanwhile (a rotated file): not part of the state any more.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let manifest = Manifest {
        format: 1,
        created: fieldlab_core::time::format_ms(fieldlab_core::time::now_ms()),
        fieldlab_version: env!("CARGO_PKG_VERSION").to_string(),
        blocks: cut.blocks.len(),
        wal_segments: cut.wal.len(),
        files,
        bytes: entries.iter().map(|e| e.2).sum(),
    };
    let mut tar = tar::Builder::new(out);
    let m = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
    let mut h = tar::Header::new_gnu();
    h.set_size(m.len() as u64);
    h.set_mode(0o600);
    h.set_cksum();
    tar.append_data(&mut h, MANIFEST, &m[..])?;
    for (name, path, len) in &entries {
        append_file(&mut tar, name, path, *len)?;
    }
    let out = tar.into_inner()?;
    Ok((out, manifest))
}

/// Unpack an archive into `data_dir`, which must be empty or not exist.
pub fn restore<R: Read>(archive: R, data_dir: &Path) -> io::Result<Manifest> {
    if data_dir.exists() && fs::read_dir(data_dir)?.next().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is not empty; restore into a new or empty directory",
                data_dir.display()
            ),
        ));
    }
    fs::create_dir_all(data_dir)?;
    let mut ar = tar::Archive::new(archive);
    let mut manifest: Option<Manifest> = None;
    for entry in ar.entries()? {
        let mut e = entry?;
        let path = e.path()?.to_path_buf();
        if manifest.is_none() {
            if path != Path::new(MANIFEST) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a fieldlab backup (the archive does not start with BACKUP.json)",
                ));
            }
            let mut buf = Vec::new();
            e.read_to_end(&mut buf)?;
            manifest = Some(serde_json::from_slice(&buf).map_err(|err| {
                io::Error::new(io::ErrorKind::InvalidData, format!("BACKUP.json: {err}"))
            })?);
            continue;
        }
        // `unpack_in` refuses paths that would leave `data_dir` (`..`, absolute).
        if !e.unpack_in(data_dir)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "refusing archive entry outside the data dir: {}",
                    path.display()
                ),
            ));
        }
    }
    manifest.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "empty archive"))
}
