//! `fieldlab cap` end to end through the real binary: prepare -> manifest -> proof -> export ->
//! verify-bundle, exit codes of lint and verify, keys, registry and audit.

use crate::common::{cap_build_proof, cap_example as ex};
use std::path::{Path, PathBuf};
use std::process::Command;

fn cap(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
        .current_dir(dir)
        .arg("cap")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `fieldlab cap ARGS` in `dir`, which must succeed: its output.
fn cap_ok(dir: &Path, args: &[&str]) -> String {
    let (c, out) = cap(dir, args);
    assert_eq!(c, 0, "{args:?}: {out}");
    out
}

#[test]
fn cap_pipeline_exit_codes_and_tamper_detection() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    assert_eq!(cap(p, &["policy", "lint", &ex("lint_errors.yaml")]).0, 3);
    assert_eq!(cap(p, &["policy", "validate", &ex("lksg_v1.yaml")]).0, 2);
    cap_build_proof(&ex("ubos.csv"), |args| {
        cap_ok(p, args);
    });
    assert_eq!(cap(p, &["proof", "verify", "--dir", "w"]).0, 0);
    cap_ok(p, &["keys", "keygen", "--name", "exporter"]);
    cap_ok(
        p,
        &[
            "proof", "export", "--dir", "w", "--key", "exporter", "--out", "b.zip",
        ],
    );
    // The public key file `keys keygen` wrote.
    let public = std::fs::read_dir(p.join("data/cap/keys"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|f| f.to_string_lossy().ends_with(".pub.json"))
        .expect("keygen wrote a public key file");
    let public = public.display().to_string();
    // A valid signature alone is not trust: without a pinned signer, exit 5.
    let (c, out) = cap(p, &["verifier", "run", "--package", "b.zip"]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("UNTRUSTED"), "{out}");
    cap_ok(p, &["verify-bundle", "b.zip", "--allow-any-signer"]);
    let out = cap_ok(
        p,
        &["verifier", "run", "--package", "b.zip", "--trust", &public],
    );
    assert!(out.contains("OK"));
    // The policy can be pinned by hash: the right one passes, any other fails.
    let verify_pinned = |flag: &str, value: &str| {
        cap(
            p,
            &["verify-bundle", "b.zip", "--trust", &public, flag, value],
        )
    };
    let (_, report) = cap(p, &["verify-bundle", "b.zip", "--trust", &public, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    let hash = report["policy_hash"].as_str().unwrap().to_string();
    let (c, out) = verify_pinned("--policy-hash", &hash);
    assert_eq!(c, 0, "{out}");
    let other = "0".repeat(64);
    let (c, out) = verify_pinned("--policy-hash", &other);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("is not a trusted policy"), "{out}");
    // A trusted policy list (a file, `#` comments) with the right hash among others passes;
    // one without it fails.
    let list = p.join("policies.txt");
    std::fs::write(&list, format!("# trusted\n{other}\n{hash}  # lksg v2\n")).unwrap();
    let list_arg = list.to_str().unwrap();
    let (c, out) = verify_pinned("--trusted-policies", list_arg);
    assert_eq!(c, 0, "{out}");
    std::fs::write(&list, format!("{other}\n")).unwrap();
    let (c, out) = verify_pinned("--trusted-policies", list_arg);
    assert_eq!(c, 1, "{out}");
    let mut z = std::fs::read(p.join("b.zip")).unwrap();
    let n = z.len();
    z[n / 3] ^= 0x04;
    std::fs::write(p.join("t.zip"), &z).unwrap();
    let (c, out) = cap(p, &["verify-bundle", "t.zip"]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("FAIL"));
    // Registry and audit.
    assert_eq!(cap(p, &["registry", "add", "b.zip"]).0, 0);
    assert_eq!(cap(p, &["registry", "add", "t.zip"]).0, 0);
    assert_eq!(
        cap(p, &["registry", "prove", "1", "--out", "incl.json"]).0,
        0
    );
    // A proof checked without the log's key pinned: valid, but exit 5.
    let (c, out) = cap(p, &["registry", "verify", "--proof", "incl.json"]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("UNTRUSTED"), "{out}");
    let (_, inspect) = cap(p, &["registry", "inspect"]);
    let vkey = inspect
        .lines()
        .find_map(|l| l.strip_prefix("verifier key: "))
        .expect("inspect prints the verifier key")
        .trim()
        .to_string();
    cap_ok(
        p,
        &[
            "registry",
            "verify",
            "--proof",
            "incl.json",
            "--vkey",
            &vkey,
        ],
    );
    cap_ok(
        p,
        &[
            "registry",
            "verify",
            "--proof",
            "incl.json",
            "--allow-any-signer",
        ],
    );
    assert_eq!(cap(p, &["registry", "verify"]).0, 0);
    assert_eq!(cap(p, &["audit", "verify"]).0, 0);
    let audit = p.join("data/cap/audit.jsonl");
    let t = std::fs::read_to_string(&audit)
        .unwrap()
        .replacen("b.zip", "c.zip", 1);
    std::fs::write(&audit, t).unwrap();
    assert_eq!(cap(p, &["audit", "verify"]).0, 1);
}

/// The independent verifier's finding: a UBO with `ownership_pct` 96.81818181818181 made
/// `proof build` write 96.8181818181818 (serde_json's parse was not correctly rounded), so the
/// proof said "record is not included" and export refused. Every step must keep the number.
#[test]
fn a_correctly_rounded_number_survives_prepare_proof_and_export() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut ubos = std::fs::read_to_string(ex("ubos.csv")).unwrap();
    if !ubos.ends_with('\n') {
        ubos.push('\n');
    }
    ubos.push_str("U900,S001,Ada Exact,DE,96.81818181818181\n");
    std::fs::write(p.join("ubos.csv"), ubos).unwrap();
    cap_build_proof("ubos.csv", |args| {
        cap_ok(p, args);
    });
    cap_ok(p, &["proof", "verify", "--dir", "w"]);
    cap_ok(p, &["keys", "keygen", "--name", "exporter"]);
    cap_ok(
        p,
        &[
            "proof", "export", "--dir", "w", "--key", "exporter", "--out", "b.zip",
        ],
    );
    cap_ok(p, &["verify-bundle", "b.zip", "--allow-any-signer"]);
    let mut found = false;
    for e in walk(&p.join("w")) {
        if let Ok(t) = std::fs::read_to_string(&e) {
            assert!(
                !t.contains("96.8181818181818,") && !t.contains("96.8181818181818}"),
                "{}: the number was rounded",
                e.display()
            );
            found |= t.contains("96.81818181818181");
        }
    }
    assert!(found, "the prepared records keep 96.81818181818181");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// prepare -> manifest -> proof -> export with a fresh key named `exporter`; returns the path
/// of its public key file.
fn export_bundle(p: &Path, out: &str) -> String {
    cap_build_proof(&ex("ubos.csv"), |args| {
        cap_ok(p, args);
    });
    let made = cap_ok(p, &["keys", "keygen", "--name", "exporter"]);
    let kid = made.split_whitespace().nth(1).unwrap().to_string();
    cap_ok(
        p,
        &[
            "proof", "export", "--dir", "w", "--key", "exporter", "--out", out,
        ],
    );
    p.join(format!("data/cap/keys/{kid}.pub.json"))
        .display()
        .to_string()
}

fn public_key_b64(pub_file: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pub_file).expect(pub_file)).unwrap();
    v["public_key"].as_str().unwrap().to_string()
}

/// Issue 25, item 2: a keyring of trusted signers (several --trust, keyring files) for
/// bundles, `cap serve` and registry checkpoints; a standalone checkpoint without a pinned log
/// key exits 5; a proof whose own vkey differs from the pinned key fails.
#[test]
fn cap_trust_keyrings_and_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let exporter = export_bundle(p, "b.zip");
    let other = fieldlab_attest::sign::KeyPair::generate(None).unwrap();
    let other_file = p.join("other.pub.json");
    std::fs::write(
        &other_file,
        serde_json::to_vec(&other.public_file()).unwrap(),
    )
    .unwrap();
    let other_file = other_file.display().to_string();
    std::fs::write(
        p.join("signers.keyring"),
        format!(
            "# trusted exporters\n{}   # someone else\n\n{} # ours\n",
            other.public_file().public_key,
            public_key_b64(&exporter)
        ),
    )
    .unwrap();
    let exporter_kid = Path::new(&exporter)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".pub.json")
        .to_string();
    // A keyring file: any of its keys; the report names the signer.
    let out = cap_ok(p, &["verify-bundle", "b.zip", "--trust", "signers.keyring"]);
    assert!(
        out.contains(&format!("Ed25519 key {exporter_kid} (trusted key)")),
        "{out}"
    );
    // --trust several times.
    cap_ok(
        p,
        &[
            "verifier",
            "run",
            "--package",
            "b.zip",
            "--trust",
            &other_file,
            "--trust",
            &exporter,
        ],
    );
    // The DSSE form (fieldlab.bundle/v2): the same trust rules.
    cap_ok(
        p,
        &[
            "proof", "export", "--dir", "w", "--key", "exporter", "--out", "d.zip", "--dsse",
        ],
    );
    let out = cap_ok(
        p,
        &[
            "verify-bundle",
            "d.zip",
            "--trust",
            "signers.keyring",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["bundle_format"], "fieldlab.bundle/v2", "{out}");
    assert_eq!(cap(p, &["verify-bundle", "d.zip"]).0, 5);
    assert_eq!(
        cap(p, &["verify-bundle", "d.zip", "--trust", &other_file]).0,
        1
    );
    // Only someone else pinned: FAIL, naming both.
    let (c, out) = cap(p, &["verify-bundle", "b.zip", "--trust", &other_file]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("which is not a trusted key"), "{out}");
    std::fs::write(p.join("bad.keyring"), "AAAA\n").unwrap();
    let (c, out) = cap(p, &["verify-bundle", "b.zip", "--trust", "bad.keyring"]);
    assert_ne!(c, 0, "{out}");
    assert!(out.contains("bad.keyring:1"), "{out}");

    // Registry: a proof and a standalone checkpoint.
    assert_eq!(cap(p, &["registry", "add", "b.zip"]).0, 0);
    assert_eq!(
        cap(p, &["registry", "prove", "0", "--out", "incl.json"]).0,
        0
    );
    let (_, inspect) = cap(p, &["registry", "inspect"]);
    let (note, vkey) = inspect.split_once("verifier key: ").unwrap();
    let vkey = vkey.trim().to_string();
    let other_vkey = fieldlab_attest::note::vkey("fieldlab.registry/other", &other.public());
    std::fs::write(p.join("note.txt"), note).unwrap();
    std::fs::write(
        p.join("cp.json"),
        serde_json::json!({"checkpoint": note, "vkey": vkey, "size": 1}).to_string(),
    )
    .unwrap();
    std::fs::write(
        p.join("logs.keyring"),
        format!("# logs we trust\n{other_vkey}\n{vkey} # ours\n"),
    )
    .unwrap();
    let reg = |args: &[&str]| {
        let mut a = vec!["registry", "verify"];
        a.extend_from_slice(args);
        cap(p, &a)
    };
    let (c, out) = reg(&["--checkpoint", "cp.json"]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("signature valid, signer not trusted"), "{out}");
    let (c, out) = reg(&["--checkpoint", "cp.json", "--allow-any-signer"]);
    assert_eq!(c, 0, "{out}");
    let (c, out) = reg(&["--checkpoint", "cp.json", "--trust", "logs.keyring"]);
    assert_eq!(c, 0, "{out}");
    assert!(out.contains(&format!("signed by log key {vkey}")), "{out}");
    let (c, out) = reg(&[
        "--checkpoint",
        "note.txt",
        "--vkey",
        &other_vkey,
        "--vkey",
        &vkey,
    ]);
    assert_eq!(c, 0, "{out}");
    let (c, out) = reg(&["--checkpoint", "note.txt"]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("names no verifier key"), "{out}");
    let (c, out) = reg(&["--checkpoint", "cp.json", "--vkey", &other_vkey]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("not pinned"), "{out}");
    // A proof whose own vkey is not the pinned key: a failure, not ignored.
    let (c, out) = reg(&["--proof", "incl.json", "--trust", "logs.keyring"]);
    assert_eq!(c, 0, "{out}");
    let mut swapped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("incl.json")).unwrap()).unwrap();
    swapped["vkey"] = other_vkey.clone().into();
    std::fs::write(p.join("swapped.json"), swapped.to_string()).unwrap();
    let (c, out) = reg(&["--proof", "swapped.json", "--vkey", &vkey]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("which is not pinned"), "{out}");

    // `cap serve --trust KEYRING`: bundles by any key of the ring pass, others fail.
    for (ring, want) in [("signers.keyring", "OK"), (other_file.as_str(), "FAIL")] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
            .current_dir(p)
            .args([
                "cap",
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--insecure-no-auth",
                "--trust",
                ring,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let url = line.trim().rsplit(' ').next().unwrap().to_string();
        let resp = reqwest::blocking::Client::new()
            .post(format!("{url}/verify"))
            .header("content-type", "application/zip")
            .body(std::fs::read(p.join("b.zip")).unwrap())
            .send();
        let _ = child.kill();
        let _ = child.wait();
        let body: serde_json::Value = resp.unwrap().json().unwrap();
        assert_eq!(body["result"], want, "{ring}: {body}");
    }
}

/// The committed test vectors (examples/proof-vectors): the binary's `--json` report of each
/// is the committed report, byte for byte, and its exit code is the documented one.
#[test]
fn cap_verify_bundle_reproduces_the_test_vector_reports() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/proof-vectors");
    let key = dir.join("test-key.pub.json").display().to_string();
    for (name, code) in [
        ("valid", 0),
        ("valid-dsse", 0),
        ("tampered-proof-json", 1),
        ("tampered-zip-attributes", 1),
    ] {
        let zip = dir.join(format!("{name}.zip")).display().to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
            .args(["cap", "verify-bundle", &zip, "--json", "--trust", &key])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{name}");
        let want = std::fs::read(dir.join(format!("{name}.report.json"))).unwrap();
        assert!(
            out.stdout == want,
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
