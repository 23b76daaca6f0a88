//! Proof bundles: a zip with the manifest, compiled policy and proof, plus signed metadata
//! listing every file's SHA-256; and the offline verifier.
//!
//! Why it exists: an auditor receives one file and must be able to say OK or FAIL without
//! network access or fieldlab state. The legacy `cap`'s fresh bundles failed their own verification.
//! Here the zip itself is canonical (stored entries, sorted names, fixed timestamps), so the
//! verifier can re-create it from its contents and refuse any container byte that was changed;
//! the content is bound by hashes in `metadata.json`, and `metadata.json` by an Ed25519
//! signature in `signature.json`. Every JSON file must be exactly its RFC 8785 encoding.

use crate::canon::{self, hex32};
use crate::policy::PolicyIr;
use crate::proof::{self, Manifest, Proof, RuleCheck, Status};
use crate::sign::{KeyPair, PublicKeyFile, Signature};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Cursor, Read};

pub const BUNDLE_FORMAT: &str = "fieldlab.bundle/v1";
/// The DSSE version: `envelope.json` (an in-toto statement signed as DSSE) and
/// `signer.pub.json` take the place of `metadata.json` and `signature.json`.
pub const BUNDLE_FORMAT_V2: &str = "fieldlab.bundle/v2";
/// The entries of a v2 bundle, in order.
pub const V2_FILES: [&str; 5] = [
    "manifest.json",
    "policy.ir.json",
    "proof.json",
    "envelope.json",
    "signer.pub.json",
];
/// Signature context of `signature.json` (see [`crate::sign`]).
pub const SIG_CONTEXT: &str = "fieldlab.bundle/v1";
pub const CONTENT_FILES: [&str; 3] = ["manifest.json", "policy.ir.json", "proof.json"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// `metadata.json`: what the bundle holds; the signed document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub format: String,
    pub created: String,
    pub policy_id: String,
    pub policy_hash: String,
    pub manifest_hash: String,
    pub proof_status: Status,
    /// Every other file of the bundle except `signature.json`, sorted by name.
    pub files: Vec<FileEntry>,
}

/// The zip header values of every bundle entry, set here rather than left to a zip library's
/// defaults (docs/formats.md §6 states them; the verifier refuses any other value). They are
/// the values fieldlab's bundles have had since v1, so older bundles still verify.
pub mod zip_header {
    /// Version made by: high byte 3 = UNIX (the external attributes hold `st_mode`), low byte
    /// 10 = zip specification 1.0.
    pub const VERSION_MADE_BY: u16 = 0x030A;
    /// Version needed to extract: 1.0 (stored entries; no zip64, no data descriptor).
    pub const VERSION_NEEDED: u16 = 10;
    /// General purpose flags: none (no encryption, no data descriptor; bit 11 unset: the names
    /// are ASCII, which fieldlab's file names are).
    pub const FLAGS: u16 = 0;
    /// Compression method 0: stored.
    pub const METHOD_STORED: u16 = 0;
    /// Last modification: MS-DOS time 00:00:00 and date 1980-01-01 (`(1980−1980)<<9 | 1<<5 | 1`).
    pub const DOS_TIME: u16 = 0;
    pub const DOS_DATE: u16 = 0x0021;
    /// Internal attributes: 0.
    pub const INTERNAL_ATTRS: u16 = 0;
    /// External attributes: `st_mode` 0100644 (regular file, rw-r--r--) in the high 16 bits.
    pub const EXTERNAL_ATTRS: u32 = 0o100644 << 16;
}

/// Why a bundle could not be written: an entry a canonical zip cannot hold, or content that
/// has no canonical encoding.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Zip(String),
    #[error(transparent)]
    Canon(#[from] canon::CanonError),
}

/// Why a bundle was refused; its text is the report's `reason`. `Container`: the zip itself;
/// `NotCanonical`: a JSON file not in its RFC 8785 form; `Invalid`: anything the content says.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Container(String),
    #[error("{file} is not in canonical RFC 8785 form")]
    NotCanonical { file: String },
    #[error("{0}")]
    Invalid(String),
}

/// A canonical zip with a description of where each of its header fields lies (to name the
/// field a verifier found changed).
struct ZipLayout {
    bytes: Vec<u8>,
    fields: Vec<(usize, String)>,
}

impl ZipLayout {
    fn field(&mut self, label: String, v: &[u8]) {
        self.fields.push((self.bytes.len(), label));
        self.bytes.extend_from_slice(v);
    }

    /// The field that byte `at` belongs to.
    fn field_at(&self, at: usize) -> &str {
        let i = self.fields.partition_point(|(start, _)| *start <= at);
        self.fields
            .get(i.wrapping_sub(1))
            .map_or("(before the first header)", |f| f.1.as_str())
    }
}

impl ZipLayout {
    /// The fields a local header and a central header share, in their common order (from
    /// "version needed" to "extra field length"); `h` names each for error messages.
    fn entry_fields(&mut self, h: &dyn Fn(&str) -> String, crc: u32, size: u32, name: &str) {
        use zip_header::*;
        self.field(h("version needed"), &VERSION_NEEDED.to_le_bytes());
        self.field(h("flags"), &FLAGS.to_le_bytes());
        self.field(h("compression method"), &METHOD_STORED.to_le_bytes());
        self.field(h("time"), &DOS_TIME.to_le_bytes());
        self.field(h("date"), &DOS_DATE.to_le_bytes());
        self.field(h("CRC-32"), &crc.to_le_bytes());
        self.field(h("compressed size"), &size.to_le_bytes());
        self.field(h("size"), &size.to_le_bytes());
        self.field(h("name length"), &(name.len() as u16).to_le_bytes());
        self.field(h("extra field length"), &0u16.to_le_bytes());
    }
}

fn layout(files: &[(String, Vec<u8>)]) -> Result<ZipLayout, BundleError> {
    let too_large = |_| BundleError::Zip("bundle too large".into());
    use zip_header::*;
    let mut z = ZipLayout {
        bytes: Vec::with_capacity(
            files
                .iter()
                .map(|(n, b)| b.len() + 2 * n.len() + 76)
                .sum::<usize>()
                + 22,
        ),
        fields: Vec::new(),
    };
    let n = u16::try_from(files.len())
        .map_err(|_| BundleError::Zip("too many files for a zip without zip64".into()))?;
    let mut offsets = Vec::with_capacity(files.len());
    let mut crcs = Vec::with_capacity(files.len());
    for (name, body) in files {
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_graphic()) || name.len() > 255 {
            return Err(BundleError::Zip(format!(
                "bundle file name `{name}` is not 1 to 255 printable ASCII characters"
            )));
        }
        let size = u32::try_from(body.len())
            .ok()
            .filter(|s| *s < u32::MAX)
            .ok_or_else(|| {
                BundleError::Zip(format!("{name} is too large for a zip without zip64"))
            })?;
        let crc = crc32fast::hash(body);
        offsets.push(u32::try_from(z.bytes.len()).map_err(too_large)?);
        crcs.push(crc);
        let h = |f: &str| format!("local header of `{name}`: {f}");
        z.field(h("signature"), &0x0403_4b50u32.to_le_bytes());
        z.entry_fields(&h, crc, size, name);
        z.field(h("name"), name.as_bytes());
        z.field(format!("contents of `{name}`"), body);
    }
    let cd_start = z.bytes.len();
    for (i, (name, body)) in files.iter().enumerate() {
        let size = body.len() as u32;
        let h = |f: &str| format!("central header of `{name}`: {f}");
        z.field(h("signature"), &0x0201_4b50u32.to_le_bytes());
        z.field(h("version made by"), &VERSION_MADE_BY.to_le_bytes());
        z.entry_fields(&h, crcs[i], size, name);
        z.field(h("comment length"), &0u16.to_le_bytes());
        z.field(h("disk number"), &0u16.to_le_bytes());
        z.field(h("internal attributes"), &INTERNAL_ATTRS.to_le_bytes());
        z.field(h("external attributes"), &EXTERNAL_ATTRS.to_le_bytes());
        z.field(h("local header offset"), &offsets[i].to_le_bytes());
        z.field(h("name"), name.as_bytes());
    }
    let cd_size = u32::try_from(z.bytes.len() - cd_start).map_err(too_large)?;
    let cd_start = u32::try_from(cd_start).map_err(too_large)?;
    let h = |f: &str| format!("end of central directory: {f}");
    z.field(h("signature"), &0x0605_4b50u32.to_le_bytes());
    z.field(h("disk number"), &0u16.to_le_bytes());
    z.field(h("central directory disk"), &0u16.to_le_bytes());
    z.field(h("entries on this disk"), &n.to_le_bytes());
    z.field(h("entries"), &n.to_le_bytes());
    z.field(h("central directory size"), &cd_size.to_le_bytes());
    z.field(h("central directory offset"), &cd_start.to_le_bytes());
    z.field(h("comment length"), &0u16.to_le_bytes());
    Ok(z)
}

/// Write a canonical zip: entries stored, in the given order, with the header values of
/// [`zip_header`]: no extra fields, comments, data descriptors or zip64 records.
pub fn write_zip(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, BundleError> {
    layout(files).map(|z| z.bytes)
}

/// Compare a bundle's bytes with the canonical zip of its entries; on a difference, name the
/// header field (or file) where it starts.
fn check_container(bytes: &[u8], entries: &[(String, Vec<u8>)]) -> Result<(), VerifyError> {
    let z = layout(entries).map_err(|e| VerifyError::Container(e.to_string()))?;
    if z.bytes == bytes {
        return Ok(());
    }
    let at = z
        .bytes
        .iter()
        .zip(bytes)
        .position(|(a, b)| a != b)
        .unwrap_or(z.bytes.len().min(bytes.len()));
    Err(VerifyError::Container(match (z.bytes.get(at), bytes.get(at)) {
        (Some(want), Some(got)) => format!(
            "zip container is not in canonical form: byte {at} ({}) is 0x{got:02x}, docs/formats.md §6 requires 0x{want:02x}",
            z.field_at(at)
        ),
        (None, _) => format!(
            "zip container is not in canonical form: {} byte(s) after the end of central directory",
            bytes.len() - z.bytes.len()
        ),
        (Some(_), None) => format!(
            "zip container is not in canonical form: it ends at byte {at}, inside {}",
            z.field_at(at)
        ),
    }))
}

/// Assemble and sign a bundle.
pub fn export(
    ir: &PolicyIr,
    manifest: &Manifest,
    proof: &Proof,
    key: &KeyPair,
) -> Result<Vec<u8>, BundleError> {
    export_at(ir, manifest, proof, key, &crate::now_rfc3339())
}

/// [`export`] with metadata's `created` given (the bundle is then a function of its inputs:
/// Ed25519 signatures are deterministic; the test vectors are made so).
pub fn export_at(
    ir: &PolicyIr,
    manifest: &Manifest,
    proof: &Proof,
    key: &KeyPair,
    created: &str,
) -> Result<Vec<u8>, BundleError> {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("manifest.json".into(), canon::canonical(manifest)?),
        ("policy.ir.json".into(), canon::canonical(ir)?),
        ("proof.json".into(), canon::canonical(proof)?),
    ];
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = Metadata {
        format: BUNDLE_FORMAT.into(),
        created: created.to_string(),
        policy_id: ir.id.clone(),
        policy_hash: ir.hash(),
        manifest_hash: manifest.hash(),
        proof_status: proof.status,
        files: files
            .iter()
            .map(|(n, b)| FileEntry {
                name: n.clone(),
                sha256: hex32(&canon::sha256(b)),
                size: b.len() as u64,
            })
            .collect(),
    };
    let meta_bytes = canon::canonical(&meta)?;
    let sig = key.sign(SIG_CONTEXT, &meta_bytes);
    files.push(("metadata.json".into(), meta_bytes));
    files.push(("signature.json".into(), canon::canonical(&sig)?));
    write_zip(&files)
}

/// The in-toto statement of a v2 bundle: the content files by SHA-256, every committed set
/// and list by its root (`sets/NAME`, `lists/NAME`, digest [`crate::dsse::ROOT_DIGEST`]), the
/// proof as predicate.
fn statement_of(
    files: &[(String, Vec<u8>)],
    manifest: &Manifest,
    proof: &serde_json::Value,
) -> crate::dsse::Statement {
    use crate::dsse::{Statement, Subject, PREDICATE_TYPE, ROOT_DIGEST, STATEMENT_TYPE};
    let digest = |alg: &str, hex: String| BTreeMap::from([(alg.to_string(), hex)]);
    let mut subject: Vec<Subject> = files
        .iter()
        .map(|(n, b)| Subject {
            name: n.clone(),
            digest: digest("sha256", hex32(&canon::sha256(b))),
        })
        .collect();
    for (kind, roots) in [("sets", &manifest.sets), ("lists", &manifest.lists)] {
        for (name, r) in roots {
            subject.push(Subject {
                name: format!("{kind}/{name}"),
                digest: digest(ROOT_DIGEST, r.root.clone()),
            });
        }
    }
    Statement {
        type_: STATEMENT_TYPE.into(),
        subject,
        predicate_type: PREDICATE_TYPE.into(),
        predicate: proof.clone(),
    }
}

/// Assemble a `fieldlab.bundle/v2`: the content files, the DSSE envelope of the statement,
/// and the signer's public key (docs/formats.md §6a).
pub fn export_dsse(
    ir: &PolicyIr,
    manifest: &Manifest,
    proof: &Proof,
    key: &KeyPair,
) -> Result<Vec<u8>, BundleError> {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("manifest.json".into(), canon::canonical(manifest)?),
        ("policy.ir.json".into(), canon::canonical(ir)?),
        ("proof.json".into(), canon::canonical(proof)?),
    ];
    let proof_value = serde_json::to_value(proof).map_err(|e| BundleError::Zip(e.to_string()))?;
    let statement = crate::dsse::statement_bytes(&statement_of(&files, manifest, &proof_value))?;
    let env = crate::dsse::sign(&statement, key);
    files.push(("envelope.json".into(), canon::canonical(&env)?));
    files.push((
        "signer.pub.json".into(),
        canon::canonical(&key.public_file())?,
    ));
    write_zip(&files)
}

/// The outcome of verifying a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `true` when the bundle is authentic and internally consistent.
    pub ok: bool,
    /// `fieldlab.bundle/v1` or `/v2`, once the container is read.
    pub bundle_format: Option<String>,
    /// Why not, when `ok` is false.
    pub reason: Option<String>,
    pub signer_kid: Option<String>,
    /// Whether the signer is the pinned trusted key (None: no key was pinned).
    pub signer_trusted: Option<bool>,
    pub policy_id: Option<String>,
    pub policy_hash: Option<String>,
    pub manifest_hash: Option<String>,
    pub policy_status: Option<Status>,
    pub files: Vec<FileEntry>,
    pub rules: Vec<RuleCheck>,
}

impl Report {
    fn fail(mut self, reason: impl std::fmt::Display) -> Report {
        self.ok = false;
        self.reason = Some(reason.to_string());
        self
    }

    /// Human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(k) = &self.signer_kid {
            let t = match self.signer_trusted {
                Some(true) => " (trusted key)",
                Some(false) => " (NOT the trusted key)",
                None => " (key not pinned: pass --trust KEY.pub.json to require a signer)",
            };
            s += &format!("signer:    Ed25519 key {k}{t}\n");
        }
        if let (Some(id), Some(h)) = (&self.policy_id, &self.policy_hash) {
            s += &format!("policy:    {id} ({h})\n");
        }
        if let Some(m) = &self.manifest_hash {
            s += &format!("manifest:  {m}\n");
        }
        for f in &self.files {
            s += &format!(
                "file:      {:<16} {:>7} bytes  sha256 {}\n",
                f.name, f.size, f.sha256
            );
        }
        for r in &self.rules {
            s += &format!(
                "rule:      {:<28} {:<4} {:<8} {}\n",
                r.rule,
                match r.status {
                    Status::Pass => "pass",
                    Status::Fail => "FAIL",
                },
                r.basis,
                r.detail
            );
        }
        if self.ok {
            let ps = match self.policy_status {
                Some(Status::Pass) => "satisfied",
                _ => "NOT satisfied",
            };
            s += &format!("result:    OK — bundle authentic and consistent; policy {ps}\n");
        } else {
            s += &format!(
                "result:    FAIL — {}\n",
                self.reason.as_deref().unwrap_or("unknown")
            );
        }
        s
    }
}

fn parse_canonical<T: serde::de::DeserializeOwned>(
    name: &str,
    bytes: &[u8],
) -> Result<T, VerifyError> {
    // The bytes are checked for canonical form in one pass, then deserialized straight into
    // the typed struct (no intermediate `serde_json::Value`).
    if !canon::is_canonical(bytes) {
        return Err(VerifyError::NotCanonical { file: name.into() });
    }
    serde_json::from_slice(bytes).map_err(|e| VerifyError::Invalid(format!("{name}: {e}")))
}

/// Verify a bundle offline. `trusted`: the only key allowed to have signed it.
pub fn verify(bytes: &[u8], trusted: Option<&PublicKeyFile>) -> Report {
    verify_trusting(bytes, trusted.map(std::slice::from_ref).unwrap_or_default())
}

/// Verify a bundle offline. `trusted`: the keys allowed to have signed it (any of them; the
/// report's `signer_kid` says which); empty: no signer pinned (`signer_trusted` is `None`).
pub fn verify_trusting(bytes: &[u8], trusted: &[PublicKeyFile]) -> Report {
    let mut r = Report {
        ok: true,
        bundle_format: None,
        reason: None,
        signer_kid: None,
        signer_trusted: None,
        policy_id: None,
        policy_hash: None,
        manifest_hash: None,
        policy_status: None,
        files: Vec::new(),
        rules: Vec::new(),
    };
    // 1. The container: a zip whose canonical re-encoding is byte-identical.
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut z = match zip::ZipArchive::new(Cursor::new(bytes)) {
        Ok(z) => z,
        Err(e) => return r.fail(format!("not a readable zip: {e}")),
    };
    for i in 0..z.len() {
        let mut f = match z.by_index(i) {
            Ok(f) => f,
            Err(e) => return r.fail(format!("zip entry {i}: {e}")),
        };
        // The declared size only sizes the buffer (bounded by the bundle: entries are stored).
        let mut body = Vec::with_capacity((f.size() as usize).min(bytes.len()));
        if let Err(e) = f.read_to_end(&mut body) {
            return r.fail(format!("zip entry `{}`: {e}", f.name()));
        }
        entries.push((f.name().to_string(), body));
    }
    if let Err(e) = check_container(bytes, &entries) {
        return r.fail(e);
    }
    let map: BTreeMap<&str, &[u8]> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    if map.len() != entries.len() {
        return r.fail("duplicate file names in the bundle");
    }
    if map.contains_key("envelope.json") {
        return verify_v2(r, &entries, &map, trusted);
    }
    r.bundle_format = Some(BUNDLE_FORMAT.into());
    let (Some(meta_bytes), Some(sig_bytes)) = (map.get("metadata.json"), map.get("signature.json"))
    else {
        return r.fail("metadata.json or signature.json is missing");
    };
    // 2. The signature over metadata.json.
    let sig: Signature = match parse_canonical("signature.json", sig_bytes) {
        Ok(s) => s,
        Err(e) => return r.fail(e),
    };
    r.signer_kid = Some(sig.kid.clone());
    if let Err(e) = sig.verify(SIG_CONTEXT, meta_bytes) {
        return r.fail(format!("signature.json: {e}"));
    }
    if !trusted.is_empty() {
        let ok = trusted
            .iter()
            .any(|t| t.kid == sig.kid && t.public_key == sig.public_key);
        r.signer_trusted = Some(ok);
        if !ok {
            let kids: Vec<&str> = trusted.iter().map(|t| t.kid.as_str()).collect();
            return r.fail(format!(
                "signed by key {}, which is not a trusted key (trusted: {}); if this signer is yours, pin its KEY.pub.json with --trust",
                sig.kid,
                kids.join(", ")
            ));
        }
    }
    // 3. Metadata: every other file listed with the right hash and size, nothing extra.
    let meta: Metadata = match parse_canonical("metadata.json", meta_bytes) {
        Ok(m) => m,
        Err(e) => return r.fail(e),
    };
    if meta.format != BUNDLE_FORMAT {
        return r.fail(format!(
            "metadata format `{}` is not `{BUNDLE_FORMAT}`",
            meta.format
        ));
    }
    if let Err(e) = check_created("metadata.json", &meta.created) {
        return r.fail(e);
    }
    r.files = meta.files.clone();
    let listed: Vec<&str> = meta.files.iter().map(|f| f.name.as_str()).collect();
    if listed != CONTENT_FILES {
        return r.fail(format!(
            "metadata.json lists {listed:?}; a {BUNDLE_FORMAT} bundle holds exactly {CONTENT_FILES:?}, in this order (no other signed files)"
        ));
    }
    let expected_order: Vec<String> = {
        let mut n: Vec<String> = meta.files.iter().map(|f| f.name.clone()).collect();
        n.sort();
        n.push("metadata.json".into());
        n.push("signature.json".into());
        n
    };
    let actual_order: Vec<String> = entries.iter().map(|e| e.0.clone()).collect();
    if actual_order != expected_order {
        return r.fail(format!(
            "bundle files {actual_order:?} differ from those listed in metadata.json"
        ));
    }
    for f in &meta.files {
        let body = map[f.name.as_str()];
        if body.len() as u64 != f.size || hex32(&canon::sha256(body)) != f.sha256 {
            return r.fail(format!(
                "{}: SHA-256 or size differs from metadata.json (file was changed)",
                f.name
            ));
        }
    }
    for c in CONTENT_FILES {
        if !map.contains_key(c) {
            return r.fail(format!("{c} is missing"));
        }
    }
    // Both files were checked to be canonical, so the SHA-256 of their bytes is the hash of
    // their canonical encoding (`PolicyIr::hash`, `Manifest::hash`) without re-encoding them;
    // a file with fields the structs do not know would hash differently and fail (stricter).
    // Those hashes were just checked against metadata.json's file list.
    let listed = |name: &str| {
        meta.files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.sha256.clone())
            .unwrap_or_else(|| hex32(&canon::sha256(map[name])))
    };
    let (ir_hash, manifest_hash) = (listed("policy.ir.json"), listed("manifest.json"));
    verify_content(
        r,
        &map,
        ir_hash,
        manifest_hash,
        &|ir, mh, _manifest, proof| {
            if meta.policy_hash != ir.hash_hex
                || meta.policy_id != ir.ir.id
                || meta.manifest_hash != mh
                || meta.proof_status != proof.status
            {
                return Err(VerifyError::Invalid(
                    "metadata.json does not describe this policy, manifest and proof".into(),
                ));
            }
            Ok(())
        },
    )
}

/// A `created` time as docs/formats.md requires it: an RFC 3339 date-time with `T` and an
/// offset (`Z` or `+hh:mm`), e.g. `2026-01-01T00:00:00.000Z`.
pub fn check_created(file: &str, created: &str) -> Result<(), VerifyError> {
    let shaped = created.as_bytes().get(10) == Some(&b'T')
        && created.ends_with(|c: char| c == 'Z' || c.is_ascii_digit());
    if shaped && chrono::DateTime::parse_from_rfc3339(created).is_ok() {
        Ok(())
    } else {
        Err(VerifyError::Invalid(format!(
            "{file}: `created` {created:?} is not an RFC 3339 date-time such as 2026-01-01T00:00:00.000Z"
        )))
    }
}

/// The IR with the hash of its file.
struct HashedIr<'a> {
    ir: &'a PolicyIr,
    hash_hex: &'a str,
}

type ContentCheck<'c> = dyn Fn(&HashedIr, &str, &Manifest, &Proof) -> Result<(), VerifyError> + 'c;

/// Step 4 of both versions: the content files parse (canonical), the IR is valid, `check`
/// binds them to the signed document, and the proof verifies. `ir_hash`/`manifest_hash`: the
/// SHA-256 of the files, as the signed document lists them.
fn verify_content(
    mut r: Report,
    map: &BTreeMap<&str, &[u8]>,
    ir_hash: String,
    manifest_hash: String,
    check: &ContentCheck,
) -> Report {
    // 4. The proof: policy, manifest and results bind together and the evidence checks out.
    let ir: PolicyIr = match parse_canonical("policy.ir.json", map["policy.ir.json"]) {
        Ok(v) => v,
        Err(e) => return r.fail(e),
    };
    // The signer wrote the IR: check it is one `policy compile` could have made.
    if let Err(e) = ir.validate() {
        return r.fail(format!("policy.ir.json: {e}"));
    }
    let manifest: Manifest = match parse_canonical("manifest.json", map["manifest.json"]) {
        Ok(v) => v,
        Err(e) => return r.fail(e),
    };
    if let Err(e) = check_created("manifest.json", &manifest.created) {
        return r.fail(e);
    }
    let proof: Proof = match parse_canonical("proof.json", map["proof.json"]) {
        Ok(v) => v,
        Err(e) => return r.fail(e),
    };
    r.policy_id = Some(ir.id.clone());
    r.policy_hash = Some(ir_hash.clone());
    r.manifest_hash = Some(manifest_hash.clone());
    let hashed = HashedIr {
        ir: &ir,
        hash_hex: &ir_hash,
    };
    if let Err(e) = check(&hashed, &manifest_hash, &manifest, &proof) {
        return r.fail(e);
    }
    match proof::verify_proof_hashed(&ir, &ir_hash, &manifest, &manifest_hash, &proof) {
        Ok(rules) => {
            r.rules = rules;
            r.policy_status = Some(proof.status);
            r
        }
        Err(e) => r.fail(format!("proof: {e}")),
    }
}

/// `fieldlab.bundle/v2` from step 2 on (docs/formats.md §6a): the DSSE envelope verifies
/// under `signer.pub.json` (which must be trusted when keys are pinned), its payload is the
/// canonical in-toto statement naming exactly the content files and the manifest's roots, and
/// its predicate is `proof.json`.
fn verify_v2(
    mut r: Report,
    entries: &[(String, Vec<u8>)],
    map: &BTreeMap<&str, &[u8]>,
    trusted: &[PublicKeyFile],
) -> Report {
    r.bundle_format = Some(BUNDLE_FORMAT_V2.into());
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    if names != V2_FILES {
        return r.fail(format!(
            "bundle files {names:?}; a {BUNDLE_FORMAT_V2} bundle holds exactly {V2_FILES:?}, in this order"
        ));
    }
    let signer: PublicKeyFile = match parse_canonical("signer.pub.json", map["signer.pub.json"]) {
        Ok(s) => s,
        Err(e) => return r.fail(e),
    };
    let pk: Option<[u8; 32]> =
        crate::sign::unb64(&signer.public_key).and_then(|v| v.try_into().ok());
    let Some(pk) = pk.filter(|pk| {
        crate::sign::kid(pk) == signer.kid && signer.format == crate::sign::PUBLIC_FORMAT
    }) else {
        return r.fail("signer.pub.json: not a public key file whose kid matches its key");
    };
    r.signer_kid = Some(signer.kid.clone());
    let env: crate::dsse::Envelope = match parse_canonical("envelope.json", map["envelope.json"]) {
        Ok(e) => e,
        Err(e) => return r.fail(e),
    };
    let payload = match crate::dsse::open(&env, &pk) {
        Ok(p) => p,
        Err(e) => return r.fail(format!("envelope.json: {e}")),
    };
    if !trusted.is_empty() {
        let ok = trusted.iter().any(|t| t.public_key == signer.public_key);
        r.signer_trusted = Some(ok);
        if !ok {
            let kids: Vec<&str> = trusted.iter().map(|t| t.kid.as_str()).collect();
            return r.fail(format!(
                "signed by key {}, which is not a trusted key (trusted: {}); if this signer is yours, pin its KEY.pub.json with --trust",
                signer.kid,
                kids.join(", ")
            ));
        }
    }
    let st: crate::dsse::Statement =
        match parse_canonical("the envelope's payload (statement)", &payload) {
            Ok(s) => s,
            Err(e) => return r.fail(e),
        };
    if st.type_ != crate::dsse::STATEMENT_TYPE || st.predicate_type != crate::dsse::PREDICATE_TYPE {
        return r.fail(format!(
            "statement `_type` {} / `predicateType` {}: expected {} / {}",
            st.type_,
            st.predicate_type,
            crate::dsse::STATEMENT_TYPE,
            crate::dsse::PREDICATE_TYPE
        ));
    }
    let content: Vec<(String, Vec<u8>)> = entries[..3].to_vec();
    r.files = content
        .iter()
        .map(|(n, b)| FileEntry {
            name: n.clone(),
            sha256: hex32(&canon::sha256(b)),
            size: b.len() as u64,
        })
        .collect();
    let (ir_hash, manifest_hash) = (r.files[1].sha256.clone(), r.files[0].sha256.clone());
    verify_content(r, map, ir_hash, manifest_hash, &|_, _, manifest, _| {
        let want = statement_of(&content, manifest, &serde_json::Value::Null);
        if st.subject != want.subject {
            return Err(VerifyError::Invalid("the signed statement's subjects are not the bundle's files and the manifest's roots (a file was changed)".into()));
        }
        // Both are canonical documents: the predicate's JCS text must be proof.json's bytes.
        if canon::canonical(&st.predicate).ok().as_deref() != Some(map["proof.json"]) {
            return Err(VerifyError::Invalid(
                "the signed statement's predicate is not proof.json".into(),
            ));
        }
        Ok(())
    })
}
