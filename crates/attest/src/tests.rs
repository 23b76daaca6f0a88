//! End-to-end: example CSVs -> commitments -> policy -> manifest -> proof -> bundle -> verify,
//! and the tamper test: every single-byte change of every file in a bundle is refused.

use crate::bundle::{self, write_zip};
use crate::policy;
use crate::proof::{self, Evidence, SortedList, Status};
use crate::records::{Schema, Workspace};
use crate::sign::KeyPair;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cap")
        .join(name)
}

/// The example data prepared in a temp workspace, the example policy compiled, the sanctions
/// list: what every bundle of these tests is made from. Keep `_dir` bound while using `ws`.
pub(crate) struct Inputs {
    pub _dir: tempfile::TempDir,
    pub ws: Workspace,
    pub ir: crate::policy::PolicyIr,
    pub lists: BTreeMap<String, SortedList>,
}

impl Inputs {
    /// The manifest (created at `created`; now if none) and the proof of these inputs.
    pub fn manifest_and_proof(&self, created: Option<&str>) -> (proof::Manifest, proof::Proof) {
        let mut m = proof::build_manifest(&self.ws, &self.ir, &self.lists).unwrap();
        if let Some(c) = created {
            m.created = c.into();
        }
        let p = proof::build_proof(&self.ws, &self.ir, &m, &self.lists).unwrap();
        (m, p)
    }
}

pub(crate) fn inputs(policy_file: &str) -> Inputs {
    let d = tempfile::tempdir().unwrap();
    let ws = Workspace::new(d.path());
    ws.prepare("suppliers", &example("suppliers.csv"), &Schema::suppliers())
        .unwrap();
    ws.prepare("ubos", &example("ubos.csv"), &Schema::ubos())
        .unwrap();
    let linted = policy::lint(&std::fs::read_to_string(example(policy_file)).unwrap());
    let ir = linted.ir.expect("example policy compiles");
    let lists = sanctions_as(&["sanctions"]);
    Inputs {
        _dir: d,
        ws,
        ir,
        lists,
    }
}

/// The example sanctions list under each of `names`.
fn sanctions_as(names: &[&str]) -> BTreeMap<String, SortedList> {
    names
        .iter()
        .map(|n| {
            let list = SortedList::from_csv(n, &example("sanctions.csv")).unwrap();
            (n.to_string(), list)
        })
        .collect()
}

/// A temp workspace with one record set, `set`, prepared from the CSV text `csv`. Keep the
/// directory bound while using the workspace.
fn workspace_of(set: &str, schema: &Schema, csv: &str) -> (tempfile::TempDir, Workspace) {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join(format!("{set}.csv"));
    std::fs::write(&path, csv).unwrap();
    let ws = Workspace::new(d.path().join("w"));
    ws.prepare(set, &path, schema).unwrap();
    (d, ws)
}

/// The manifest and proof of `ir` over `ws` and `lists`.
fn manifest_and_proof(
    ws: &Workspace,
    ir: &policy::PolicyIr,
    lists: &BTreeMap<String, SortedList>,
) -> (proof::Manifest, proof::Proof) {
    let m = proof::build_manifest(ws, ir, lists).unwrap();
    let p = proof::build_proof(ws, ir, &m, lists).unwrap();
    (m, p)
}

/// The manifest and proof of the policy text `policy` over suppliers prepared from the CSV
/// text `csv`, with the example sanctions list under each of the names `lists`; the compiled
/// policy too. Keep the directory bound while using them.
fn suppliers_proof(
    csv: &str,
    policy: &str,
    lists: &[&str],
) -> (
    tempfile::TempDir,
    policy::PolicyIr,
    proof::Manifest,
    proof::Proof,
) {
    let (d, ws) = workspace_of("suppliers", &Schema::suppliers(), csv);
    let ir = policy::lint(policy).ir.unwrap();
    let (m, p) = manifest_and_proof(&ws, &ir, &sanctions_as(lists));
    (d, ir, m, p)
}

/// `p` does not verify against `ir` and `m`, for a reason that says `why`.
fn assert_refused(ir: &policy::PolicyIr, m: &proof::Manifest, p: &proof::Proof, why: &str) {
    let e = proof::verify_proof(ir, m, p).unwrap_err().to_string();
    assert!(e.contains(why), "{e}");
}

pub(crate) fn build(policy_file: &str) -> (tempfile::TempDir, Vec<u8>, KeyPair) {
    let Inputs {
        _dir: d,
        ws,
        ir,
        lists,
    } = inputs(policy_file);
    let (m, p) = manifest_and_proof(&ws, &ir, &lists);
    let key = KeyPair::generate(None).unwrap();
    let zip = bundle::export(&ir, &m, &p, &key).unwrap();
    (d, zip, key)
}

fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().to_string(), b)
        })
        .collect()
}

#[test]
fn fresh_bundle_verifies_and_every_rule_is_evaluated() {
    let (_d, zip, key) = build("lksg_v2.yaml");
    let r = bundle::verify(&zip, Some(&key.public_file()));
    assert!(r.ok, "{}", r.render());
    assert_eq!(r.policy_status, Some(Status::Pass));
    assert_eq!(r.rules.len(), 6);
    assert!(r
        .rules
        .iter()
        .any(|c| c.rule == "not-sanctioned" && c.basis == "verified"));
    // Pinned to another key: refused.
    let other = KeyPair::generate(None).unwrap();
    assert!(!bundle::verify(&zip, Some(&other.public_file())).ok);
}

#[test]
fn a_created_time_that_is_not_rfc_3339_is_refused() {
    let inp = inputs("lksg_v2.yaml");
    let key = KeyPair::generate(None).unwrap();
    let trust = key.public_file();
    let good = "2026-01-01T00:00:00.000Z";
    // The report on a bundle signed at `signed`, its manifest created at `created` (default:
    // now).
    let report = |created: Option<&str>, signed: &str| {
        let (m, p) = inp.manifest_and_proof(created);
        bundle::verify(
            &bundle::export_at(&inp.ir, &m, &p, &key, signed).unwrap(),
            Some(&trust),
        )
    };
    for bad in [
        "yesterday",
        "2026-01-01",
        "2026-01-01 00:00:00Z",
        "2026-13-01T00:00:00Z",
        "",
    ] {
        // In the signed metadata.
        let r = report(None, bad);
        assert!(
            !r.ok && r.render().contains("metadata.json: `created`"),
            "{bad:?}: {}",
            r.render()
        );
        // In the manifest.
        let r = report(Some(bad), good);
        assert!(
            !r.ok && r.render().contains("manifest.json: `created`"),
            "{bad:?}: {}",
            r.render()
        );
    }
    for ok in [good, "2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00"] {
        let r = report(Some(ok), ok);
        assert!(r.ok, "{ok}: {}", r.render());
    }
}

#[test]
fn violated_policy_gives_a_valid_bundle_with_the_violating_record() {
    let (_d, zip, _) = build("lksg_v2_strict.yaml");
    let r = bundle::verify(&zip, None);
    assert!(r.ok, "{}", r.render());
    assert_eq!(r.policy_status, Some(Status::Fail));
    assert!(
        r.rules[0].detail.contains("audit_score = 68.25"),
        "{}",
        r.rules[0].detail
    );
}

#[test]
fn v1_policy_links_every_supplier_to_a_ubo() {
    let (_d, zip, _) = build("lksg_v1.yaml");
    let files = unzip(&zip);
    let proof: proof::Proof =
        serde_json::from_slice(&files.iter().find(|f| f.0 == "proof.json").unwrap().1).unwrap();
    match &proof.results[0].evidence {
        Evidence::UboLinks { links } => assert_eq!(links.len(), 8),
        e => panic!("unexpected evidence {e:?}"),
    }
    assert!(bundle::verify(&zip, None).ok);
}

#[test]
fn sanctioned_supplier_is_caught_with_a_membership_proof() {
    let (_d, ir, m, p) = suppliers_proof(
        "id,name,country\nS1,Good Co,DE\nS2,  umbra   LOGISTICS jsc ,DE\n",
        "version: 2\nid: s\nrules:\n  - {id: s, op: non_membership, set: suppliers, field: name, list: sanctions}\n",
        &["sanctions"],
    );
    assert_eq!(p.status, Status::Fail);
    assert!(
        matches!(&p.results[0].evidence, Evidence::Membership { key, .. } if key == "umbra logistics jsc")
    );
    proof::verify_proof(&ir, &m, &p).unwrap();
    // Claiming a pass with that evidence is refused.
    let mut forged = p.clone();
    forged.results[0].status = Status::Pass;
    forged.status = Status::Pass;
    assert!(proof::verify_proof(&ir, &m, &forged).is_err());
}

/// The independent verifier's finding: a record without the screened field passed
/// `non_membership` (its key was ""). It now fails the rule, with the record as verified
/// evidence, unless the policy says `missing: allow`; a proof that slips such a record into a
/// non-membership claim is refused.
#[test]
fn a_record_without_the_screened_field_fails_screening_unless_allowed() {
    let (_d, ws) = workspace_of(
        "ubos",
        &Schema::ubos(),
        "id,supplier_id,name,nationality\nU1,S1,Ann,DE\nU2,S1,Bob,\n",
    );
    let lists = sanctions_as(&["sanctions"]);
    let rule = "version: 2\nid: s\nrules:\n  - {id: s, op: non_membership, set: ubos, field: nationality, list: sanctions";
    let ir = policy::lint(&format!("{rule}}}\n")).ir.unwrap();
    assert_eq!(ir.validate(), Ok(()));
    let (m, p) = manifest_and_proof(&ws, &ir, &lists);
    assert_eq!(p.status, Status::Fail);
    assert!(
        matches!(&p.results[0].evidence, Evidence::Violation { record, .. } if record.index == 1),
        "{:?}",
        p.results[0].evidence
    );
    let checks = proof::verify_proof(&ir, &m, &p).unwrap();
    assert_eq!(checks[0].status, Status::Fail);

    let allow = policy::lint(&format!("{rule}, missing: allow}}\n"))
        .ir
        .unwrap();
    assert_eq!(allow.validate(), Ok(()));
    let (ma, pa) = manifest_and_proof(&ws, &allow, &lists);
    assert_eq!(pa.status, Status::Pass);
    proof::verify_proof(&allow, &ma, &pa).unwrap();

    // The allowed proof's evidence, presented for the strict policy, is refused: its items
    // include the record without the field.
    let mut forged = pa.clone();
    forged.policy_hash = p.policy_hash.clone();
    forged.manifest_hash = p.manifest_hash.clone();
    assert_refused(&ir, &m, &forged, "has no `nationality` to screen");
}

#[test]
fn forged_non_membership_neighbours_are_refused() {
    let (_d, zip, _) = build("lksg_v2.yaml");
    let files = unzip(&zip);
    let get = |n: &str| files.iter().find(|f| f.0 == n).unwrap().1.clone();
    let ir: policy::PolicyIr = serde_json::from_slice(&get("policy.ir.json")).unwrap();
    let m: proof::Manifest = serde_json::from_slice(&get("manifest.json")).unwrap();
    let p: proof::Proof = serde_json::from_slice(&get("proof.json")).unwrap();
    proof::verify_proof(&ir, &m, &p).unwrap();
    let Evidence::NonMembership { items, .. } = &p.results[5].evidence else {
        panic!()
    };
    assert_eq!(items.len(), 8);
    // Drop one supplier's non-membership item: not every record is covered any more.
    let mut q = p.clone();
    if let Evidence::NonMembership { items, .. } = &mut q.results[5].evidence {
        items.pop();
    }
    assert!(proof::verify_proof(&ir, &m, &q).is_err());
    // Swap a neighbour for a non-adjacent one.
    let mut q = p.clone();
    if let Evidence::NonMembership { items, .. } = &mut q.results[5].evidence {
        let it = items
            .iter_mut()
            .find(|i| i.lower.is_some() && i.upper.is_some())
            .unwrap();
        it.lower.as_mut().unwrap().index = it.lower.as_ref().unwrap().index.saturating_sub(1);
    }
    assert!(proof::verify_proof(&ir, &m, &q).is_err());
}

/// Flip bits of byte `i` of one file, re-pack (so the container itself is valid) and verify.
#[test]
fn every_single_byte_change_of_every_file_fails() {
    let (_d, zip, _) = build("lksg_v1.yaml");
    let files = unzip(&zip);
    let mut checked = 0;
    for (fi, (name, body)) in files.iter().enumerate() {
        for i in 0..body.len() {
            for mask in [0x01u8, 0x20] {
                let mut tampered = files.clone();
                tampered[fi].1[i] ^= mask;
                let z = write_zip(&tampered).unwrap();
                let r = bundle::verify(&z, None);
                assert!(!r.ok, "{name} byte {i} ^ {mask:#x} was accepted");
                checked += 1;
            }
        }
    }
    assert!(checked > 2000, "only {checked} changes tested");
}

#[test]
fn container_byte_changes_fail() {
    let (_d, zip, _) = build("lksg_v1.yaml");
    assert!(bundle::verify(&zip, None).ok);
    // Every byte outside the file contents (headers, central directory) plus a dense sample
    // of the rest: all refused.
    for i in (0..zip.len()).step_by(3) {
        let mut z = zip.clone();
        z[i] ^= 0x01;
        assert!(!bundle::verify(&z, None).ok, "zip byte {i} accepted");
    }
    assert!(!bundle::verify(&zip[..zip.len() - 1], None).ok);
    let mut longer = zip.clone();
    longer.push(0);
    assert!(!bundle::verify(&longer, None).ok);
}

#[test]
fn prepare_reports_bad_rows_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let csv = d.path().join("s.csv");
    std::fs::write(&csv, "id,name,country,tier\nS1,A,DE,1\nS2,B,DE,two\n").unwrap();
    let e = Workspace::new(d.path().join("w"))
        .prepare("suppliers", &csv, &Schema::suppliers())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s.csv:3") && e.contains("`two` is not an integer"),
        "{e}"
    );
    std::fs::write(&csv, "id,name,colour\nS1,A,red\n").unwrap();
    let e = Workspace::new(d.path().join("w"))
        .prepare("suppliers", &csv, &Schema::suppliers())
        .unwrap_err()
        .to_string();
    assert!(e.contains("column `colour`"), "{e}");
}

#[test]
fn per_record_inclusion_proofs_verify_against_the_commitment() {
    let d = tempfile::tempdir().unwrap();
    let ws = Workspace::new(d.path());
    let c = ws
        .prepare("suppliers", &example("suppliers.csv"), &Schema::suppliers())
        .unwrap();
    let rs = ws.load_set("suppliers").unwrap();
    let root = crate::canon::parse_hex32(&c.root).unwrap();
    for i in 0..rs.records.len() {
        let o = rs.open(i);
        o.verify(&root, c.count).unwrap();
        let mut bad = o.clone();
        bad.record["country"] = serde_json::json!("XX");
        assert!(bad.verify(&root, c.count).is_err());
    }
}

/// Issue 25, item 1: a manifest claiming 3 suppliers for an 8-leaf root passed `count_max 5`
/// as verified. A signer forging it now has no size proof that verifies; a bundle without one
/// (as made before size proofs) verifies with the count marked `attested`, never `verified`.
#[test]
fn a_count_not_bound_to_its_root_is_refused_or_only_attested() {
    let rows: String = (1..=8).map(|i| format!("S{i},Co {i},DE\n")).collect();
    let (_d, ir, m, p) = suppliers_proof(
        &format!("id,name,country\n{rows}"),
        "version: 2\nid: c\nrules:\n  - {id: few, op: count_max, set: suppliers, value: 5}\n",
        &[],
    );
    let key = KeyPair::generate(None).unwrap();
    // The truth: 8 suppliers, count_max 5 fails, and the count is verified.
    let r = bundle::verify(&bundle::export(&ir, &m, &p, &key).unwrap(), None);
    assert!(r.ok, "{}", r.render());
    assert_eq!(r.policy_status, Some(Status::Fail));
    assert_eq!(r.rules[0].basis, "verified", "{}", r.render());
    // The forgery: the manifest claims 3, the proof passes, re-signed by the signer.
    let mut fm = m.clone();
    fm.sets.get_mut("suppliers").unwrap().count = 3;
    let mut fp = p.clone();
    fp.manifest_hash = fm.hash();
    fp.status = Status::Pass;
    fp.results[0].status = Status::Pass;
    let Evidence::Count {
        count, size_proof, ..
    } = &mut fp.results[0].evidence
    else {
        panic!("count evidence")
    };
    *count = 3;
    // Best effort of the forger: the real records at the indices a 3-leaf tree needs.
    let real = size_proof.clone().unwrap();
    *size_proof = Some(vec![real[0].clone(), {
        let mut o = real[1].clone(); // record 4 of 8 with its real path
        o.index = 2;
        o
    }]);
    let r = bundle::verify(&bundle::export(&ir, &fm, &fp, &key).unwrap(), None);
    assert!(!r.ok, "{}", r.render());
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("is not the size of its Merkle tree"),
        "{reason}"
    );
    // The same forgery without a size proof (the old format): not refused, but the count is
    // only the signer's claim, and the report says so.
    if let Evidence::Count { size_proof, .. } = &mut fp.results[0].evidence {
        *size_proof = None;
    }
    let r = bundle::verify(&bundle::export(&ir, &fm, &fp, &key).unwrap(), None);
    assert!(r.ok, "{}", r.render());
    assert_eq!(r.rules[0].basis, "attested");
    assert!(
        r.rules[0].detail.contains("the signer's claim"),
        "{}",
        r.rules[0].detail
    );
}

/// `examples/proof-vectors/`: bundles with their expected verification reports, for writers
/// of independent verifiers. The bundles are made here (deterministically: fixed `created`
/// times, the published INSECURE test key, deterministic Ed25519), so this test holds both the
/// files and the reports true. `FIELDLAB_WRITE_VECTORS=1` rewrites them after an intended change.
mod vectors {
    use super::*;

    const CREATED: &str = "2026-01-01T00:00:00.000Z";
    /// The seed of the test key is SHA-256 of this text. Published: never trust this key.
    const TEST_KEY_SEED_TEXT: &str =
        "fieldlab proof test vectors: INSECURE published test key, never trust it";

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/proof-vectors")
    }

    fn test_key() -> KeyPair {
        KeyPair {
            signing: ed25519_dalek::SigningKey::from_bytes(&crate::canon::sha256(
                TEST_KEY_SEED_TEXT.as_bytes(),
            )),
            name: Some("INSECURE fieldlab test-vector key (published; never trust it)".into()),
            created: CREATED.into(),
        }
    }

    /// Every vector file: name -> bytes.
    fn make() -> Vec<(String, Vec<u8>)> {
        let inp = inputs("lksg_v2.yaml");
        let (m, p) = inp.manifest_and_proof(Some(CREATED));
        let key = test_key();
        let valid = bundle::export_at(&inp.ir, &m, &p, &key, CREATED).unwrap();
        let valid_dsse = bundle::export_dsse(&inp.ir, &m, &p, &key).unwrap();
        // One supplier's country changed inside proof.json, the zip rebuilt around it (a valid
        // zip; metadata.json's hash no longer matches).
        let mut files = unzip(&valid);
        let (_, proof_json) = files.iter_mut().find(|f| f.0 == "proof.json").unwrap();
        let text = String::from_utf8(proof_json.clone()).unwrap();
        assert!(text.contains(r#""country":"DE""#));
        *proof_json = text
            .replacen(r#""country":"DE""#, r#""country":"RU""#, 1)
            .into_bytes();
        let tampered_proof = write_zip(&files).unwrap();
        // The central directory's external attributes of manifest.json: 0100755, not 0100644.
        let mut tampered_attrs = valid.clone();
        let eocd = tampered_attrs.len() - 22;
        let cd = u32::from_le_bytes(tampered_attrs[eocd + 16..eocd + 20].try_into().unwrap());
        let at = cd as usize + 38;
        assert_eq!(
            tampered_attrs[at..at + 4],
            bundle::zip_header::EXTERNAL_ATTRS.to_le_bytes()
        );
        tampered_attrs[at..at + 4].copy_from_slice(&(0o100755u32 << 16).to_le_bytes());
        let secret = serde_json::json!({
            "format": crate::sign::SECRET_FORMAT,
            "kid": key.kid(),
            "public_key": crate::sign::b64(&key.public()),
            "secret_key": crate::sign::b64(&key.signing.to_bytes()),
            "name": key.name,
            "created": CREATED,
        });
        let mut out = vec![
            (
                "test-key.INSECURE.secret.json".to_string(),
                serde_json::to_vec_pretty(&secret).unwrap(),
            ),
            (
                "test-key.pub.json".to_string(),
                serde_json::to_vec_pretty(&key.public_file()).unwrap(),
            ),
        ];
        for (name, zip) in [
            ("valid", valid),
            ("valid-dsse", valid_dsse),
            ("tampered-proof-json", tampered_proof),
            ("tampered-zip-attributes", tampered_attrs),
        ] {
            let r = bundle::verify_trusting(&zip, &[key.public_file()]);
            let mut report = serde_json::to_vec_pretty(&r).unwrap();
            report.push(b'\n');
            out.push((format!("{name}.zip"), zip));
            out.push((format!("{name}.report.json"), report));
        }
        for f in out
            .iter_mut()
            .filter(|f| f.0.ends_with("key.pub.json") || f.0.ends_with("secret.json"))
        {
            f.1.push(b'\n');
        }
        out
    }

    #[test]
    fn proof_vectors_are_reproduced_and_verify_to_their_reports() {
        let files = make();
        if std::env::var_os("FIELDLAB_WRITE_VECTORS").is_some() {
            std::fs::create_dir_all(dir()).unwrap();
            for (n, b) in &files {
                std::fs::write(dir().join(n), b).unwrap();
            }
        }
        for (n, b) in &files {
            let on_disk = std::fs::read(dir().join(n)).unwrap_or_else(|e| {
                panic!("examples/proof-vectors/{n}: {e} (FIELDLAB_WRITE_VECTORS=1 writes them)")
            });
            assert!(
                on_disk == *b,
                "examples/proof-vectors/{n} differs from what fieldlab makes now; if the change is intended, rerun with FIELDLAB_WRITE_VECTORS=1 and review the diff"
            );
        }
        // Each committed bundle, verified as found on disk, gives its committed report byte for
        // byte, under the committed public test key.
        let key = crate::sign::PublicKeyFile::read(&dir().join("test-key.pub.json")).unwrap();
        let mut seen = 0;
        for e in std::fs::read_dir(dir()).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "zip") {
                let r = bundle::verify_trusting(
                    &std::fs::read(&path).unwrap(),
                    std::slice::from_ref(&key),
                );
                let mut got = serde_json::to_vec_pretty(&r).unwrap();
                got.push(b'\n');
                let want = std::fs::read(path.with_extension("report.json")).unwrap();
                assert!(
                    got == want,
                    "{}: report differs:\n{}",
                    path.display(),
                    String::from_utf8_lossy(&got)
                );
                seen += 1;
            }
        }
        assert_eq!(seen, 4);
    }
}

/// The zip headers are written by fieldlab itself with the values of docs/formats.md §6; they
/// are the bytes the `zip` crate wrote for bundles before, so those bundles still verify.
#[test]
fn explicit_zip_headers_are_the_bytes_earlier_bundles_have() {
    use std::io::Write;
    let files: Vec<(String, Vec<u8>)> = vec![
        ("a.json".into(), b"{}".to_vec()),
        ("b.json".into(), vec![]),
        ("metadata.json".into(), b"{\"x\":1}".to_vec()),
    ];
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    for (name, body) in &files {
        z.start_file(name.as_str(), opts).unwrap();
        z.write_all(body).unwrap();
    }
    let before = z.finish().unwrap().into_inner();
    assert_eq!(write_zip(&files).unwrap(), before);
    // Names a zip without the UTF-8 flag cannot carry are refused.
    assert!(write_zip(&[("é.json".into(), vec![])]).is_err());
}

/// A signed file the format does not define is refused, even though it is listed and signed.
#[test]
fn extra_signed_files_are_refused() {
    let (_d, zip, key) = build("lksg_v2.yaml");
    let mut files = unzip(&zip);
    files.retain(|f| f.0 != "metadata.json" && f.0 != "signature.json");
    files.push(("notes.txt".into(), b"hello".to_vec()));
    let mut meta: bundle::Metadata = serde_json::from_slice(
        &unzip(&zip)
            .iter()
            .find(|f| f.0 == "metadata.json")
            .unwrap()
            .1,
    )
    .unwrap();
    meta.files.push(bundle::FileEntry {
        name: "notes.txt".into(),
        sha256: crate::canon::hex32(&crate::canon::sha256(b"hello")),
        size: 5,
    });
    let mb = crate::canon::canonical(&meta).unwrap();
    let sig = key.sign(bundle::SIG_CONTEXT, &mb);
    files.push(("metadata.json".into(), mb));
    files.push((
        "signature.json".into(),
        crate::canon::canonical(&sig).unwrap(),
    ));
    let r = bundle::verify(&write_zip(&files).unwrap(), Some(&key.public_file()));
    assert!(!r.ok);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("no other signed files"),
        "{:?}",
        r.reason
    );
}

/// docs/formats.md §5: evidence must name its rule's own set, field and list. Membership
/// evidence was not held to it: a supplier's membership in one list (here `pep`) passed as the
/// failure of screening against another (`sanctions`).
#[test]
fn membership_evidence_must_name_the_rules_own_list() {
    let (_d, ir, m, p) = suppliers_proof(
        "id,name,country\nS1,Good Co,DE\nS2,Umbra Logistics JSC,DE\n",
        "version: 2\nid: s\nrules:\n  - {id: a, op: non_membership, set: suppliers, field: name, list: sanctions}\n  - {id: b, op: non_membership, set: suppliers, field: name, list: pep}\n",
        &["sanctions", "pep"],
    );
    proof::verify_proof(&ir, &m, &p).unwrap();
    let mut forged = p.clone();
    forged.results[0].evidence = p.results[1].evidence.clone();
    assert_refused(&ir, &m, &forged, "another set, field or list");
}

/// docs/formats.md §5: an absent neighbour of a non-membership item is written `null`; a
/// missing member is refused (one encoding per proof).
#[test]
fn absent_neighbours_are_null_not_missing() {
    let item = serde_json::json!({"record": {"index": 0, "record": {}, "proof": []}, "key": "a", "lower": null, "upper": null});
    assert!(serde_json::from_value::<proof::NonMember>(item.clone()).is_ok());
    let mut missing = item.clone();
    missing.as_object_mut().unwrap().remove("lower");
    assert!(serde_json::from_value::<proof::NonMember>(missing).is_err());
}

/// Item 5 of issue 25: `fieldlab.bundle/v2` signs an in-toto Statement v1 as a DSSE envelope;
/// it verifies like v1 (pinned, unpinned, tampered), and v1 bundles still verify.
#[test]
fn dsse_bundles_verify_and_refuse_tampering() {
    let (_d1, v1, key) = build("lksg_v2.yaml");
    let r = bundle::verify(&v1, Some(&key.public_file()));
    assert!(r.ok);
    assert_eq!(r.bundle_format.as_deref(), Some(bundle::BUNDLE_FORMAT));
    let (_d, zip) = build_dsse();
    let key = &zip.1;
    let zip = &zip.0;
    let r = bundle::verify(zip, Some(&key.public_file()));
    assert!(r.ok, "{}", r.render());
    assert_eq!(r.bundle_format.as_deref(), Some(bundle::BUNDLE_FORMAT_V2));
    assert_eq!(r.signer_trusted, Some(true));
    assert_eq!(r.rules.len(), 6);
    let other = KeyPair::generate(None).unwrap();
    let r = bundle::verify(zip, Some(&other.public_file()));
    assert!(!r.ok && r.reason.unwrap().contains("not a trusted key"));
    // Any content byte changed (the zip rebuilt around it): refused by the statement.
    let files = unzip(zip);
    for (i, name) in ["manifest.json", "policy.ir.json", "proof.json"]
        .iter()
        .enumerate()
    {
        let mut f = files.clone();
        let body = &mut f[i].1;
        let at = body.len() / 2;
        body[at] = if body[at] == b'1' { b'2' } else { b'1' };
        let r = bundle::verify(&write_zip(&f).unwrap(), None);
        assert!(!r.ok, "{name} changed and accepted");
    }
    // The signer's key swapped for another's: the envelope does not verify under it.
    let mut f = files.clone();
    f[4].1 = crate::canon::canonical(&other.public_file()).unwrap();
    let r = bundle::verify(&write_zip(&f).unwrap(), None);
    assert!(!r.ok && r.reason.unwrap().contains("envelope.json"));
}

fn build_dsse() -> (tempfile::TempDir, (Vec<u8>, KeyPair)) {
    let Inputs {
        _dir: d,
        ws,
        ir,
        lists,
    } = inputs("lksg_v2.yaml");
    let (m, p) = manifest_and_proof(&ws, &ir, &lists);
    let key = KeyPair::generate(None).unwrap();
    let zip = bundle::export_dsse(&ir, &m, &p, &key).unwrap();
    (d, (zip, key))
}

/// The v2 envelope checked by an independent DSSE implementation: securesystemslib's
/// `dsse.Envelope.verify` (PyPI `securesystemslib`; `scripts/test.sh` installs it). It must
/// accept the envelope under the signer's key, compute the same PAE, read the same statement,
/// and refuse a tampered payload.
#[test]
fn dsse_envelope_verifies_with_securesystemslib() {
    let (d, (zip, key)) = build_dsse();
    let files = unzip(&zip);
    let env_path = d.path().join("envelope.json");
    std::fs::write(&env_path, &files[3].1).unwrap();
    let script = r#"
import json, sys
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
env = Envelope.from_dict(json.load(open(sys.argv[1])))
key = SSlibKey(sys.argv[2], "ed25519", "ed25519", {"public": sys.argv[3]})
try:
    ok = sorted(env.verify([key], 1).keys())
except Exception as e:
    print(json.dumps({"error": type(e).__name__}))
    sys.exit(0)
st = json.loads(env.payload)
print(json.dumps({"keyids": ok, "pae": env.pae().hex(), "type": st["_type"],
                  "predicateType": st["predicateType"], "subject": st["subject"]}))
"#;
    let run = |path: &std::path::Path| -> serde_json::Value {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .arg(key.kid())
            .arg(hex::encode(key.public()))
            .output()
            .expect("python3 is needed (scripts/test.sh installs securesystemslib)");
        assert!(
            out.status.success(),
            "python3 with securesystemslib failed (pip install securesystemslib; scripts/test.sh does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = run(&env_path);
    assert_eq!(v["keyids"], serde_json::json!([key.kid()]), "{v}");
    let env: crate::dsse::Envelope = serde_json::from_slice(&files[3].1).unwrap();
    let payload = crate::sign::unb64(&env.payload).unwrap();
    assert_eq!(
        v["pae"],
        hex::encode(crate::dsse::pae(crate::dsse::PAYLOAD_TYPE, &payload))
    );
    assert_eq!(v["type"], "https://in-toto.io/Statement/v1");
    assert_eq!(v["predicateType"], crate::dsse::PREDICATE_TYPE);
    let st: crate::dsse::Statement = serde_json::from_slice(&payload).unwrap();
    assert_eq!(v["subject"], serde_json::to_value(&st.subject).unwrap());
    assert_eq!(
        v["subject"][2]["digest"]["sha256"],
        crate::canon::hex32(&crate::canon::sha256(&files[2].1))
    );
    // A tampered payload: securesystemslib refuses it too.
    let mut bad = env.clone();
    bad.payload = crate::sign::b64(&payload[..payload.len() - 1]);
    let bad_path = d.path().join("bad.json");
    std::fs::write(&bad_path, serde_json::to_vec(&bad).unwrap()).unwrap();
    assert_eq!(run(&bad_path)["error"], "VerificationError");
}
