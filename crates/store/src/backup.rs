//! Online backup and restore of a whole data dir as one tar archive.
//!
//! Why it exists: a lab's state (telemetry, quarantine, annotations, config, keys) must be
//! copyable while fieldlab runs, without stopping ingest and without a torn copy, and an
//! archive from anywhere must be safe to restore.
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
//! Other files under the data dir (quarantine, annotations, events, keys written by other
//! parts) are copied into the snapshot directory, each up to its size at that moment; SQLite
//! databases (found by their header, e.g. the proof registry) are copied through SQLite's
//! online backup API instead, so a database in WAL mode is copied whole and consistent, and
//! their `-wal`/`-shm`/`-journal` files are left out. Every entry is then hashed from the
//! snapshot, so the manifest's hashes match the archive's bytes.
//!
//! Secrets ([`secret_reason`]: the JWT signing secret, the users file with its password and
//! API-key hashes, the attestation keyring, private keys) are left out unless
//! [`Options::include_secrets`] is set; the manifest lists what was left out and why.
//!
//! The first entry, `BACKUP.json`, is the [`Manifest`]: every other entry with its type
//! (`file` or `dir`), size and SHA-256. Restore trusts nothing else: it accepts only regular
//! files and directories that the manifest lists, at plain relative paths (no `..`, no
//! absolute paths), with the listed size and hash; never links, devices or FIFOs. It unpacks
//! into a fresh staging directory next to the target, creates directories 0700 and files 0600
//! itself (never through an existing path), and renames the staging directory into place only
//! when every entry checked out, so a refused archive leaves nothing behind. The store's normal
//! recovery then replays the WAL prefix, so a restored data dir opens like one after a clean
//! crash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// The first entry of every archive.
pub const MANIFEST: &str = "BACKUP.json";

/// The manifest format this version writes and restores.
pub const FORMAT: u32 = 2;

/// Largest `BACKUP.json` restore reads (it lists one line per file).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// What a snapshot directory holds (paths relative to the data dir) and the byte length of
/// each WAL segment at the cut.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cut {
    pub blocks: Vec<String>,
    pub wal: Vec<(String, u64)>,
}

/// Choices for one backup.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Archive the secrets too (see [`secret_reason`]); else they are listed as excluded.
    pub include_secrets: bool,
}

/// Kind of an archive entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
}

/// One entry of the archive after the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the data dir, `/`-separated.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Bytes (0 for a directory).
    pub size: u64,
    /// SHA-256 of the content, hex (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A file of the data dir that is not in the archive, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub created: String,
    pub fieldlab_version: String,
    pub blocks: usize,
    pub wal_segments: usize,
    /// Other files (quarantine, annotations, events...).
    pub files: Vec<String>,
    /// Bytes of all files.
    pub bytes: u64,
    /// Whether secrets were archived (`--include-secrets`).
    pub secrets_included: bool,
    /// Files left out: secrets without `--include-secrets`, symbolic links.
    pub excluded: Vec<Excluded>,
    /// Every entry after this manifest, in archive order.
    pub entries: Vec<Entry>,
}

/// Why a file of the data dir (relative path, `/`-separated) is a secret, or `None`.
/// Secrets are what lets someone act as the lab: sign tokens, log in, sign proofs.
pub fn secret_reason(rel: &str) -> Option<&'static str> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if rel == "auth/jwt.secret" {
        Some("JWT signing secret")
    } else if rel == "auth/users.json" {
        Some("users with their password and API-key hashes")
    } else if rel.starts_with("cap/keys/") {
        Some("attestation keyring (signing keys)")
    } else if rel.split('/').any(|c| c == "private") {
        Some("private key directory")
    } else if name.ends_with(".key") || name.ends_with(".secret") || name.ends_with(".p12") {
        Some("private key or secret file")
    } else if name.ends_with(".pem") && name.contains("key") {
        Some("private key file")
    } else {
        None
    }
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

/// What the walk of the data dir found outside the store's own directories.
#[derive(Default)]
struct Others {
    dirs: Vec<String>,
    files: Vec<String>,
    links: Vec<String>,
}

/// Other files and directories of the data dir, relative paths, skipping the store's own
/// directories, the lock, temporaries and snapshot directories. Symbolic links are not
/// followed.
fn other_files(data_dir: &Path) -> io::Result<Others> {
    fn walk(root: &Path, dir: &Path, out: &mut Others) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(root).expect("under root");
            let Some(rel_s) = rel_str(rel) else {
                tracing::warn!(path = %p.display(), "not archived: the name is not UTF-8");
                continue;
            };
            let top = rel_s.split('/').next().unwrap_or_default();
            if matches!(top, "wal" | "blocks" | "LOCK")
                || top.starts_with(".snapshot")
                || rel_s.ends_with(".tmp")
            {
                continue;
            }
            let ft = e.file_type()?;
            if ft.is_dir() {
                out.dirs.push(rel_s);
                walk(root, &p, out)?;
            } else if ft.is_file() {
                out.files.push(rel_s);
            } else if ft.is_symlink() {
                out.links.push(rel_s);
            }
        }
        Ok(())
    }
    let mut out = Others::default();
    walk(data_dir, data_dir, &mut out)?;
    out.dirs.sort();
    out.files.sort();
    out.links.sort();
    Ok(out)
}

fn rel_str(rel: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts.map(|p| p.join("/"))
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn is_sqlite(path: &Path) -> bool {
    let mut head = [0u8; 16];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == SQLITE_MAGIC
}

/// Copy a SQLite database through its online backup API: consistent even while another
/// connection writes, and whole even when the newest pages are still in its `-wal` file.
fn sqlite_copy(from: &Path, to: &Path) -> io::Result<()> {
    use rusqlite::{Connection, DatabaseName, OpenFlags};
    let err = |e: rusqlite::Error| io::Error::other(format!("{}: {e}", from.display()));
    let src = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    src.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err)?;
    src.backup(DatabaseName::Main, to, None).map_err(err)?;
    drop(src);
    // The copy is one self-contained file.
    for side in ["-wal", "-shm", "-journal"] {
        let mut s = to.as_os_str().to_owned();
        s.push(side);
        let _ = fs::remove_file(PathBuf::from(s));
    }
    Ok(())
}

/// Copy the first `len` bytes of `from` into `to`.
fn copy_prefix(from: &Path, to: &Path, len: u64) -> io::Result<u64> {
    let mut src = File::open(from)?.take(len);
    let mut dst = File::create(to)?;
    io::copy(&mut src, &mut dst)
}

/// SHA-256 (hex) of the first `len` bytes of `path`; fails if the file is shorter.
fn hash_file(path: &Path, len: u64) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut r = File::open(path)?.take(len);
    let n = io::copy(&mut r, &mut h)?;
    if n != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} shrank while it was archived", path.display()),
        ));
    }
    Ok(format!("{:x}", h.finalize()))
}

fn mtime(path: &Path) -> u64 {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Write the archive of a cut (its links in `snap_dir`) plus the data dir's other files.
pub fn write_archive<W: Write>(
    data_dir: &Path,
    snap_dir: &Path,
    cut: &Cut,
    opts: Options,
    out: W,
) -> io::Result<(W, Manifest)> {
    // Every file with where it is read from and the length it is archived with, fixed and
    // hashed before anything is written.
    let mut files: Vec<(String, PathBuf, u64)> = Vec::new();
    for b in &cut.blocks {
        let p = snap_dir.join(b);
        let len = fs::metadata(&p)?.len();
        files.push((b.clone(), p, len));
    }
    for (s, len) in &cut.wal {
        files.push((s.clone(), snap_dir.join(s), *len));
    }
    let others = other_files(data_dir)?;
    let mut excluded: Vec<Excluded> = others
        .links
        .iter()
        .map(|l| Excluded {
            path: l.clone(),
            reason: "symbolic link (never archived)".into(),
        })
        .collect();
    let secret = |rel: &str| {
        if opts.include_secrets {
            None
        } else {
            secret_reason(rel)
        }
    };
    let mut dirs: Vec<String> = vec!["blocks".into(), "wal".into()];
    dirs.extend(
        others
            .dirs
            .iter()
            .filter(|d| secret(&format!("{d}/")).is_none())
            .cloned(),
    );
    let copies = snap_dir.join("other");
    let sqlite: Vec<&String> = others
        .files
        .iter()
        .filter(|f| is_sqlite(&data_dir.join(f)))
        .collect();
    let mut other_names = Vec::new();
    for f in &others.files {
        if let Some(why) = secret(f) {
            excluded.push(Excluded {
                path: f.clone(),
                reason: format!("{why}; pass --include-secrets to archive it"),
            });
            continue;
        }
        // A SQLite database's side files: its backup below holds their content.
        if ["-wal", "-shm", "-journal"].iter().any(|side| {
            f.strip_suffix(side)
                .is_some_and(|db| sqlite.iter().any(|s| s.as_str() == db))
        }) {
            continue;
        }
        let src = data_dir.join(f);
        let copy = copies.join(f);
        fs::create_dir_all(copy.parent().expect("a file has a parent"))?;
        let r = if sqlite.contains(&f) {
            sqlite_copy(&src, &copy)
        } else {
            match fs::metadata(&src) {
                Ok(md) => copy_prefix(&src, &copy, md.len()).map(|_| ()),
                Err(e) => Err(e),
            }
        };
        match r {
            Ok(()) => {}
            // Removed meanwhile (a rotated file): not part of the state any more.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        let len = fs::metadata(&copy)?.len();
        files.push((f.clone(), copy, len));
        other_names.push(f.clone());
    }
    excluded.sort_by(|a, b| a.path.cmp(&b.path));

    let mut entries: Vec<Entry> = dirs
        .iter()
        .map(|d| Entry {
            path: d.clone(),
            kind: EntryKind::Dir,
            size: 0,
            sha256: None,
        })
        .collect();
    for (name, path, len) in &files {
        entries.push(Entry {
            path: name.clone(),
            kind: EntryKind::File,
            size: *len,
            sha256: Some(hash_file(path, *len)?),
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        created: fieldlab_core::time::format_ms(fieldlab_core::time::now_ms()),
        fieldlab_version: env!("CARGO_PKG_VERSION").to_string(),
        blocks: cut.blocks.len(),
        wal_segments: cut.wal.len(),
        files: other_names,
        bytes: files.iter().map(|e| e.2).sum(),
        secrets_included: opts.include_secrets,
        excluded,
        entries,
    };
    let mut tar = tar::Builder::new(out);
    let m = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
    let mut h = tar::Header::new_gnu();
    h.set_size(m.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(fieldlab_core::time::now_ms() as u64 / 1000);
    h.set_cksum();
    tar.append_data(&mut h, MANIFEST, &m[..])?;
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o700);
        h.set_mtime(mtime(&data_dir.join(d)));
        h.set_cksum();
        tar.append_data(&mut h, d, io::empty())?;
    }
    for (name, path, len) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(*len);
        h.set_mode(0o600);
        h.set_mtime(mtime(path));
        h.set_cksum();
        tar.append_data(&mut h, name, File::open(path)?.take(*len))?;
    }
    let out = tar.into_inner()?;
    Ok((out, manifest))
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A manifest path is plain: relative, `/`-separated, no `.`/`..`/empty parts, no NUL.
fn check_path(p: &str) -> io::Result<()> {
    let ok = !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\0')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "refusing the archive: the path `{p}` would leave the data dir or is not a plain relative path"
        )))
    }
}

fn kind_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::Fifo => "a FIFO",
        tar::EntryType::Directory => "a directory",
        t if t.is_file() => "a regular file",
        _ => "a special entry",
    }
}

/// Make `dir` (and missing parents inside `root`) with mode 0700, never following a link.
fn make_dirs(root: &Path, rel: &str) -> io::Result<()> {
    let mut p = root.to_path_buf();
    for c in rel.split('/') {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(invalid(format!(
                    "refusing the archive: {} is not a directory",
                    p.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut b = fs::DirBuilder::new();
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                b.create(&p)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Create a new file 0600 (fails if anything exists there, links included).
fn create_private(path: &Path) -> io::Result<File> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
}

/// Unpack an archive into `data_dir`, which must be empty or not exist. See the module
/// documentation for what is accepted; on any refusal nothing is left behind.
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
    let name = data_dir
        .file_name()
        .ok_or_else(|| invalid(format!("{} names no directory", data_dir.display())))?;
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let mut staging_name = std::ffi::OsString::from(".");
    staging_name.push(name);
    staging_name.push(format!(".restoring-{}", std::process::id()));
    let staging = parent.join(staging_name);
    let _ = fs::remove_dir_all(&staging);
    make_dirs(&parent, &staging.file_name().unwrap().to_string_lossy())?;
    let r = unpack(archive, &staging).and_then(|m| {
        if data_dir.exists() {
            // Empty (checked above): rename(2) replaces an empty directory.
            fs::remove_dir(data_dir)?;
        }
        fs::rename(&staging, data_dir)?;
        if let Ok(d) = File::open(&parent) {
            let _ = d.sync_all();
        }
        Ok(m)
    });
    if r.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    r
}

/// Read the manifest (the first entry) of an archive, e.g. to show what a backup holds.
pub fn read_manifest<R: Read>(archive: R) -> io::Result<Manifest> {
    let mut ar = tar::Archive::new(archive);
    let mut entries = ar.entries()?;
    manifest_entry(&mut entries)
}

fn manifest_entry<R: Read>(entries: &mut tar::Entries<'_, R>) -> io::Result<Manifest> {
    let mut e = entries
        .next()
        .ok_or_else(|| invalid("empty archive; not a fieldlab backup"))??;
    if e.path_bytes().as_ref() != MANIFEST.as_bytes() || !e.header().entry_type().is_file() {
        return Err(invalid(
            "not a fieldlab backup (the archive does not start with BACKUP.json)",
        ));
    }
    if e.size() > MAX_MANIFEST_BYTES {
        return Err(invalid("BACKUP.json is implausibly large"));
    }
    let mut buf = Vec::new();
    (&mut e).take(MAX_MANIFEST_BYTES).read_to_end(&mut buf)?;
    let v: serde_json::Value =
        serde_json::from_slice(&buf).map_err(|err| invalid(format!("BACKUP.json: {err}")))?;
    let format = v.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if format != u64::from(FORMAT) {
        return Err(invalid(format!(
            "BACKUP.json has format {format}; this fieldlab restores format {FORMAT} (take a new backup with this version, or restore with the version that wrote it)"
        )));
    }
    serde_json::from_value(v).map_err(|err| invalid(format!("BACKUP.json: {err}")))
}

fn unpack<R: Read>(archive: R, root: &Path) -> io::Result<Manifest> {
    let mut ar = tar::Archive::new(archive);
    let mut entries = ar.entries()?;
    let manifest = manifest_entry(&mut entries)?;
    // Path -> (listed entry, seen yet).
    let mut want: BTreeMap<&str, (&Entry, bool)> = BTreeMap::new();
    for en in &manifest.entries {
        check_path(&en.path)?;
        if en.path == MANIFEST {
            return Err(invalid("BACKUP.json lists itself"));
        }
        if en.kind == EntryKind::File && en.sha256.is_none() {
            return Err(invalid(format!("BACKUP.json: {} has no sha256", en.path)));
        }
        if want.insert(&en.path, (en, false)).is_some() {
            return Err(invalid(format!("BACKUP.json lists {} twice", en.path)));
        }
    }
    for e in entries {
        let mut e = e?;
        let raw = e.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).to_string();
        let t = e.header().entry_type();
        let path = std::str::from_utf8(&raw)
            .map_err(|_| {
                invalid(format!(
                    "refusing the archive: entry `{shown}` is not UTF-8"
                ))
            })?
            .trim_end_matches('/');
        if !(t.is_file() || t.is_dir()) {
            return Err(invalid(format!(
                "refusing the archive: entry `{shown}` is {}; a fieldlab backup holds only regular files and directories",
                kind_name(t)
            )));
        }
        check_path(path)?;
        let Some((en, seen)) = want.get_mut(path) else {
            return Err(invalid(format!(
                "refusing the archive: entry `{shown}` is not listed in BACKUP.json"
            )));
        };
        if *seen {
            return Err(invalid(format!(
                "refusing the archive: entry `{shown}` appears twice"
            )));
        }
        *seen = true;
        let expect = if t.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        if en.kind != expect {
            return Err(invalid(format!(
                "refusing the archive: entry `{shown}` is {} but BACKUP.json lists it as a {:?}",
                kind_name(t),
                en.kind
            )));
        }
        if expect == EntryKind::Dir {
            make_dirs(root, path)?;
            continue;
        }
        if e.size() != en.size {
            return Err(invalid(format!(
                "refusing the archive: `{shown}` has {} bytes, BACKUP.json says {}",
                e.size(),
                en.size
            )));
        }
        if let Some((dir, _)) = path.rsplit_once('/') {
            make_dirs(root, dir)?;
        }
        let target = root.join(path);
        let mut f = create_private(&target)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut n = 0u64;
        loop {
            let k = e.read(&mut buf)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            f.write_all(&buf[..k])?;
            n += k as u64;
        }
        let got = format!("{:x}", h.finalize());
        if n != en.size || Some(&got) != en.sha256.as_ref() {
            return Err(invalid(format!(
                "refusing the archive: `{shown}` does not match its SHA-256 in BACKUP.json (damaged or altered)"
            )));
        }
        f.sync_all()?;
    }
    if let Some((p, _)) = want.iter().find(|(_, (_, seen))| !seen) {
        return Err(invalid(format!(
            "the archive is incomplete: {p} is listed in BACKUP.json but missing"
        )));
    }
    // Directories 0700 (make_dirs created them so), the data dir itself too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(root: &Path, rel: &str, body: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }

    /// A data dir with ordinary files, secrets, a SQLite database in WAL mode whose newest
    /// rows are only in its `-wal` file, and a symbolic link out of the dir.
    fn lab(root: &Path) -> rusqlite::Connection {
        write(root, "quarantine/quarantine.jsonl", b"{\"x\":1}\n");
        write(root, "events/anomalies.jsonl", b"");
        write(root, "auth/jwt.secret", b"s3cret");
        write(root, "auth/users.json", b"{\"users\":[]}");
        write(root, "cap/keys/abc.key", b"KEY");
        write(root, "cap/keys/keyring.json", b"{}");
        write(root, "opcua/pki/private/private.pem", b"PEM");
        fs::create_dir_all(root.join("empty")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let db = rusqlite::Connection::open(root.join("cap/registry.db")).unwrap();
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1), (2), (3);",
        )
        .unwrap();
        db
    }

    fn archive(data: &Path, include_secrets: bool) -> (Vec<u8>, Manifest) {
        let snap = tempfile::tempdir().unwrap();
        write_archive(
            data,
            snap.path(),
            &Cut::default(),
            Options { include_secrets },
            Vec::new(),
        )
        .unwrap()
    }

    fn names(tar: &[u8]) -> Vec<String> {
        let mut ar = tar::Archive::new(tar);
        ar.entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
            .collect()
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn secrets_are_left_out_unless_asked_and_sqlite_is_copied_whole() {
        let d = tempfile::tempdir().unwrap();
        let _db = lab(d.path());
        assert!(d.path().join("cap/registry.db-wal").exists());

        let (tar, m) = archive(d.path(), false);
        let n = names(&tar);
        assert_eq!(n[0], MANIFEST);
        for secret in [
            "auth/jwt.secret",
            "auth/users.json",
            "cap/keys/abc.key",
            "cap/keys/keyring.json",
            "opcua/pki/private/private.pem",
        ] {
            assert!(!n.iter().any(|x| x == secret), "{secret} archived: {n:?}");
            let x = m.excluded.iter().find(|x| x.path == secret).unwrap();
            assert!(x.reason.contains("--include-secrets"), "{x:?}");
        }
        assert!(!n.iter().any(|x| x.starts_with("cap/keys")), "{n:?}");
        assert!(m.excluded.iter().any(|x| x.path == "link"));
        assert!(!n.iter().any(|x| x.ends_with("-wal") || x.ends_with("-shm")));
        assert!(!m.secrets_included);
        for e in &m.entries {
            assert_eq!(e.sha256.is_some(), e.kind == EntryKind::File, "{e:?}");
        }

        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("data");
        assert_eq!(restore(&tar[..], &r).unwrap(), m);
        assert_eq!(
            fs::read(r.join("quarantine/quarantine.jsonl")).unwrap(),
            b"{\"x\":1}\n"
        );
        assert!(r.join("empty").is_dir() && !r.join("link").exists());
        assert!(!r.join("auth/jwt.secret").exists());
        let db = rusqlite::Connection::open(r.join("cap/registry.db")).unwrap();
        let n: i64 = db
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(n, 3, "rows still in the source's -wal are in the copy");
        drop(db);
        // Restored: the data dir and every directory 0700, every file 0600.
        assert_eq!(mode(&r), 0o700);
        for e in &m.entries {
            let want = if e.kind == EntryKind::Dir {
                0o700
            } else {
                0o600
            };
            assert_eq!(mode(&r.join(&e.path)), want, "{}", e.path);
        }

        let (tar, m) = archive(d.path(), true);
        assert!(m.secrets_included);
        let n = names(&tar);
        for secret in [
            "auth/jwt.secret",
            "cap/keys/abc.key",
            "opcua/pki/private/private.pem",
        ] {
            assert!(n.iter().any(|x| x == secret), "{secret} missing: {n:?}");
        }
        assert_eq!(m.excluded.len(), 1, "only the link: {:?}", m.excluded);
        let r2 = t.path().join("with-secrets");
        restore(&tar[..], &r2).unwrap();
        assert_eq!(fs::read(r2.join("auth/jwt.secret")).unwrap(), b"s3cret");
        assert_eq!(mode(&r2.join("auth/jwt.secret")), 0o600);
    }

    /// A header whose name is written raw, so `..` and absolute paths can be made.
    fn raw_header(name: &str, t: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_old();
        let n = name.as_bytes();
        h.as_old_mut().name[..n.len()].copy_from_slice(n);
        h.set_entry_type(t);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    /// An archive with a valid manifest listing `listed` and then `extra` raw entries.
    fn hostile(listed: &[(&str, &[u8])], extra: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
        let entries: Vec<Entry> = listed
            .iter()
            .map(|(p, body)| Entry {
                path: p.to_string(),
                kind: EntryKind::File,
                size: body.len() as u64,
                sha256: Some(format!("{:x}", Sha256::digest(body))),
            })
            .collect();
        let m = Manifest {
            format: FORMAT,
            created: "now".into(),
            fieldlab_version: "test".into(),
            blocks: 0,
            wal_segments: 0,
            files: vec![],
            bytes: 0,
            secrets_included: false,
            excluded: vec![],
            entries,
        };
        let mut b = tar::Builder::new(Vec::new());
        let body = serde_json::to_vec(&m).unwrap();
        let mut h = raw_header(MANIFEST, tar::EntryType::Regular, body.len() as u64);
        h.set_cksum();
        b.append(&h, &body[..]).unwrap();
        for (p, body) in listed {
            let mut h = raw_header(p, tar::EntryType::Regular, body.len() as u64);
            h.set_cksum();
            b.append(&h, *body).unwrap();
        }
        for (h, body) in extra {
            let mut h = h.clone();
            h.set_cksum();
            b.append(&h, &body[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn refused(tar: &[u8], want: &str) {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("data");
        let e = restore(tar, &target).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
        let left: Vec<_> = fs::read_dir(t.path()).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn hostile_archives_are_refused_and_leave_nothing() {
        let ok: &[(&str, &[u8])] = &[("quarantine/q.jsonl", b"{}\n")];
        // The well-formed one restores.
        let t = tempfile::tempdir().unwrap();
        restore(&hostile(ok, &[])[..], &t.path().join("d")).unwrap();

        let mut link = raw_header("evil", tar::EntryType::Symlink, 0);
        link.set_link_name("/etc").unwrap();
        refused(&hostile(ok, &[(link, vec![])]), "symbolic link");
        let mut hard = raw_header("hard", tar::EntryType::Link, 0);
        hard.set_link_name("quarantine/q.jsonl").unwrap();
        refused(&hostile(ok, &[(hard, vec![])]), "hard link");
        refused(
            &hostile(ok, &[(raw_header("fifo", tar::EntryType::Fifo, 0), vec![])]),
            "FIFO",
        );
        refused(
            &hostile(ok, &[(raw_header("dev", tar::EntryType::Char, 0), vec![])]),
            "character device",
        );
        let up = raw_header("../escaped", tar::EntryType::Regular, 2);
        refused(
            &hostile(ok, &[(up, b"hi".to_vec())]),
            "would leave the data dir",
        );
        let abs = raw_header("/tmp/escaped-abs", tar::EntryType::Regular, 2);
        refused(
            &hostile(ok, &[(abs, b"hi".to_vec())]),
            "would leave the data dir",
        );
        let unlisted = raw_header("extra.txt", tar::EntryType::Regular, 2);
        refused(&hostile(ok, &[(unlisted, b"hi".to_vec())]), "not listed");
        // Listed in the manifest but leaving the dir: refused before anything is read.
        refused(
            &hostile(&[("../x", b"hi")], &[]),
            "would leave the data dir",
        );
        // Altered content: the hash does not match.
        let mut tar = hostile(ok, &[]);
        let at = tar.windows(3).position(|w| w == b"{}\n").unwrap();
        tar[at] = b'[';
        refused(&tar, "SHA-256");
        // Truncated: a listed file is missing.
        refused(&hostile(&[("a", b"1"), ("b", b"2")], &[])[..1536], "");
        assert!(!Path::new("/tmp/escaped-abs").exists());
        refused(b"not a tar", "");
    }
}
