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
use std::io::{Cursor, Read, Write};

pub const BUNDLE_FORMAT: &str = "fieldlab.bundle/v1";
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

/// Write a canonical zip: entries stored (no compression), in the given order, DOS time
/// 1980-01-01 00:00:00, mode 0644, no extra fields.
pub fn write_zip(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    // Stored entries: the zip is the bodies plus a local and a central header per entry
    // (30 + 46 bytes, each with the name) and the 22-byte end record; one allocation.
    let size: usize = files
        .iter()
        .map(|(n, b)| b.len() + 2 * n.len() + 76)
        .sum::<usize>()
        + 22;
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(size)));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    for (name, body) in files {
        z.start_file(name.as_str(), opts)
            .map_err(|e| e.to_string())?;
        z.write_all(body).map_err(|e| e.to_string())?;
    }
    Ok(z.finish().map_err(|e| e.to_string())?.into_inner())
}

/// Assemble and sign a bundle.
pub fn export(
    ir: &PolicyIr,
    manifest: &Manifest,
    proof: &Proof,
    key: &KeyPair,
) -> Result<Vec<u8>, String> {
    let enc = |r: Result<Vec<u8>, canon::CanonError>| r.map_err(|e| e.to_string());
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("manifest.json".into(), enc(canon::canonical(manifest))?),
        ("policy.ir.json".into(), enc(canon::canonical(ir))?),
        ("proof.json".into(), enc(canon::canonical(proof))?),
    ];
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = Metadata {
        format: BUNDLE_FORMAT.into(),
        created: crate::now_rfc3339(),
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
    let meta_bytes = canon::canonical(&meta).map_err(|e| e.to_string())?;
    let sig = key.sign(SIG_CONTEXT, &meta_bytes);
    files.push(("metadata.json".into(), meta_bytes));
    files.push((
        "signature.json".into(),
        canon::canonical(&sig).map_err(|e| e.to_string())?,
    ));
    write_zip(&files)
}

/// The outcome of verifying a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `true` when the bundle is authentic and internally consistent.
    pub ok: bool,
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
    fn fail(mut self, reason: impl Into<String>) -> Report {
        self.ok = false;
        self.reason = Some(reason.into());
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

fn parse_canonical<T: serde::de::DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T, String> {
    // The bytes are checked for canonical form in one pass, then deserialized straight into
    // the typed struct (no intermediate `serde_json::Value`).
    if !canon::is_canonical(bytes) {
        return Err(format!("{name} is not in canonical RFC 8785 form"));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("{name}: {e}"))
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
    match write_zip(&entries) {
        Ok(again) if again == bytes => {}
        _ => {
            return r.fail(
                "zip container is not in canonical form (bytes outside the files were changed)",
            )
        }
    }
    let map: BTreeMap<&str, &[u8]> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    if map.len() != entries.len() {
        return r.fail("duplicate file names in the bundle");
    }
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
    r.files = meta.files.clone();
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
    let proof: Proof = match parse_canonical("proof.json", map["proof.json"]) {
        Ok(v) => v,
        Err(e) => return r.fail(e),
    };
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
    r.policy_id = Some(ir.id.clone());
    r.policy_hash = Some(ir_hash.clone());
    r.manifest_hash = Some(manifest_hash.clone());
    if meta.policy_hash != ir_hash
        || meta.policy_id != ir.id
        || meta.manifest_hash != manifest_hash
        || meta.proof_status != proof.status
    {
        return r.fail("metadata.json does not describe this policy, manifest and proof");
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
