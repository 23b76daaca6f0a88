//! Fuzzing entry points of bundle verification and policy compilation (see
//! `fieldlab_core::fuzzing`).
//!
//! Why it exists: a proof bundle comes from whoever hands it to the auditor, and a policy file
//! from whoever writes it; both are untrusted bytes. The cargo-fuzz targets `bundle_verify` and
//! `attest_policy` call these functions, and so does the stable corpus replay below. Not part
//! of fieldlab's API.

use crate::bundle;

/// `bundle_verify`. Byte 0 even: the rest is the bundle's bytes as they are. Odd: the rest is
/// a list of files `[name_len: u8][name][body_len: u16 LE][body]`, packed into a canonical zip
/// first, so the fuzzer gets past the container check to the JSON, hashes and signature.
/// Byte 0 & 2: verify against a pinned key (a fixed one, which did not sign the seeds).
pub fn fuzz_bundle_verify(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut files = Vec::new();
        let mut p = 0;
        while p < rest.len() {
            let n = rest[p] as usize;
            let Some(name) = rest.get(p + 1..p + 1 + n) else {
                break;
            };
            p += 1 + n;
            let Some(len) = rest.get(p..p + 2) else {
                break;
            };
            let len = u16::from_le_bytes([len[0], len[1]]) as usize;
            p += 2;
            let body = rest.get(p..(p + len).min(rest.len())).unwrap_or_default();
            p += body.len();
            files.push((String::from_utf8_lossy(name).into_owned(), body.to_vec()));
        }
        match bundle::write_zip(&files) {
            Ok(z) => z,
            Err(_) => return,
        }
    };
    // A fixed key pair; no seed was signed with it.
    let pinned = crate::sign::KeyPair {
        signing: ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        name: None,
        created: String::new(),
    }
    .public_file();
    let report = bundle::verify(&bytes, (mode & 2 != 0).then_some(&pinned));
    assert_eq!(
        report.ok,
        report.reason.is_none(),
        "a verdict and its reason disagree"
    );
    if mode & 2 != 0 {
        // The seeds were signed by throwaway keys: nothing may verify against the pinned one.
        assert!(
            !report.ok,
            "a bundle verified against a key that never signed it"
        );
    }
    let _ = report.render();
}

/// `attest_policy`: compile any text as a policy; the findings must be renderable.
pub fn fuzz_attest_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let linted = crate::policy::lint(text);
    let code = linted.exit_code();
    if let Some(ir) = &linted.ir {
        assert!(code != 3, "a policy with errors compiled");
        let _ = (ir.hash(), ir.lists());
    } else {
        assert_eq!(
            code, 3,
            "a policy that did not compile has no error finding"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bundle_verify_corpus_replays() {
        let n = fieldlab_core::fuzzing::replay(
            env!("CARGO_MANIFEST_DIR"),
            "bundle_verify",
            super::fuzz_bundle_verify,
        );
        assert!(n >= 3);
    }

    #[test]
    fn attest_policy_corpus_replays() {
        let n = fieldlab_core::fuzzing::replay(
            env!("CARGO_MANIFEST_DIR"),
            "attest_policy",
            super::fuzz_attest_policy,
        );
        assert!(n >= 3);
    }

    /// Writes the seeds of `bundle_verify` from real bundles of the example policies:
    /// `cargo test -p fieldlab-attest --lib write_seed_corpus -- --ignored`.
    #[test]
    #[ignore = "regenerates fuzz/corpus; run by hand after a format change"]
    fn write_seed_corpus() {
        use std::io::Read;
        let d = fieldlab_core::fuzzing::fuzz_dir(env!("CARGO_MANIFEST_DIR"))
            .join("corpus/bundle_verify");
        std::fs::create_dir_all(&d).unwrap();
        for policy in ["lksg_v2.yaml", "lksg_v2_strict.yaml"] {
            let (_dir, zip, _key) = crate::tests::build(policy);
            let stem = policy.trim_end_matches(".yaml");
            std::fs::write(d.join(format!("{stem}-zip")), [&[0u8][..], &zip].concat()).unwrap();
            std::fs::write(
                d.join(format!("{stem}-pinned")),
                [&[2u8][..], &zip].concat(),
            )
            .unwrap();
            let mut z = zip::ZipArchive::new(std::io::Cursor::new(&zip)).unwrap();
            let mut framed = vec![1u8];
            for i in 0..z.len() {
                let mut f = z.by_index(i).unwrap();
                let mut body = Vec::new();
                f.read_to_end(&mut body).unwrap();
                framed.push(f.name().len() as u8);
                framed.extend_from_slice(f.name().as_bytes());
                framed.extend_from_slice(&(body.len() as u16).to_le_bytes());
                framed.extend_from_slice(&body);
            }
            std::fs::write(d.join(format!("{stem}-files")), framed).unwrap();
        }
    }
}
