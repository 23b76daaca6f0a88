//! `cap keys`, `cap registry`, `cap blob`, `cap audit`: the key ring, the transparency log,
//! the blob store and the audit chain of a data directory.

use super::*;

/// An error of the registry (a message) or of `fieldlab-attest`, as printed.
fn e(m: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{m}")
}

pub(super) fn keys(dir: &Path, cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    use fieldlab_attest::keyring::Keyring;
    let kr = Keyring::open(dir)?;
    match cmd {
        KeysCmd::Keygen { name } => {
            let k = kr.keygen(name).map_err(e)?;
            println!(
                "key {} written: {} (0600), {}",
                k.kid(),
                kr.secret_path(&k.kid()).display(),
                kr.public_path(&k.kid()).display()
            );
        }
        KeysCmd::List => {
            for k in kr.list().map_err(e)? {
                println!(
                    "{}  {:<8} {:<24} created {}{}",
                    k.kid,
                    format!("{:?}", k.status).to_lowercase(),
                    k.name.unwrap_or_default(),
                    k.created,
                    k.attested_by
                        .map(|a| format!("  attested by {a}"))
                        .unwrap_or_default()
                );
            }
        }
        KeysCmd::Show { key } => {
            let k = kr.find(&key).map_err(e)?;
            println!("{}", serde_json::to_string_pretty(&k)?);
            println!("{}", std::fs::read_to_string(kr.public_path(&k.kid))?);
        }
        KeysCmd::Rotate { key } => {
            let (k, _) = kr.rotate(&key, None).map_err(e)?;
            println!(
                "new key {} attested by {key}; the old key is retired",
                k.kid()
            );
        }
        KeysCmd::Revoke { key, reason } => {
            let k = kr.revoke(&key, &reason).map_err(e)?;
            println!("key {} revoked ({reason})", k.kid);
        }
        KeysCmd::Attest { signer, subject } => {
            let a = kr.attest(&signer, &subject).map_err(e)?;
            println!("{} attested by {}", a.body.subject.kid, a.signature.kid);
        }
        KeysCmd::VerifyChain { root, leaf } => match kr.verify_chain(&root, &leaf) {
            Ok(c) => println!("OK: {}", c.join(" -> ")),
            Err(m) => {
                println!("FAIL: {m}");
                return Ok(ExitCode::FAILURE);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn registry(data: &Path, cmd: RegistryCmd) -> anyhow::Result<ExitCode> {
    use fieldlab_registry::Registry;
    if let RegistryCmd::Verify {
        proof,
        checkpoint,
        vkey,
        trust,
        allow_any_signer,
    } = &cmd
    {
        if proof.is_some() || checkpoint.is_some() {
            let pinned = fieldlab_attest::trust::load_log_keys(vkey, trust).map_err(e)?;
            return verify_offline(
                proof.as_deref(),
                checkpoint.as_deref(),
                &pinned,
                *allow_any_signer,
            );
        }
        if !vkey.is_empty() || !trust.is_empty() {
            bail!("--vkey/--trust pin the key of a --proof or --checkpoint file; the whole registry is checked against its own key");
        }
    }
    let mut r = Registry::open(data).map_err(e)?;
    match cmd {
        RegistryCmd::Add { file } => {
            let b = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let rep = bundle::verify(&b, None);
            let meta = if rep.ok {
                serde_json::json!({"type": "bundle", "policy_id": rep.policy_id, "manifest_hash": rep.manifest_hash, "signer": rep.signer_kid})
            } else {
                serde_json::json!({"type": "file"})
            };
            let name = file
                .file_name()
                .map_or("file".into(), |n| n.to_string_lossy().to_string());
            let (entry, note) = r.add(&name, &b, meta).map_err(e)?;
            println!(
                "entry {} leaf {}\n{}",
                entry.index,
                entry.leaf_hash,
                serde_json::to_string(&entry.body)?
            );
            print!("{note}");
        }
        RegistryCmd::List { offset, limit } => {
            for x in r.list(offset, limit).map_err(e)? {
                println!(
                    "{:>6}  {}  {}",
                    x.index,
                    x.leaf_hash,
                    serde_json::to_string(&x.body)?
                );
            }
        }
        RegistryCmd::Inspect { index: Some(i) } => {
            println!("{}", serde_json::to_string_pretty(&r.get(i).map_err(e)?)?)
        }
        RegistryCmd::Inspect { index: None } => {
            print!("{}", r.latest_checkpoint().map_err(e)?);
            println!("verifier key: {}", r.vkey());
        }
        RegistryCmd::Prove {
            index,
            consistency,
            out,
        } => {
            let p = match (index, consistency) {
                (Some(i), None) => r.prove_inclusion(i).map_err(e)?,
                (None, Some(m)) => r.prove_consistency(m).map_err(e)?,
                _ => bail!("give an entry INDEX for an inclusion proof, or --consistency OLD_SIZE"),
            };
            match out {
                Some(o) => {
                    fieldlab_attest::write_json(&o, &p).map_err(e)?;
                    println!("wrote {}", o.display());
                }
                None => println!("{}", serde_json::to_string_pretty(&p)?),
            }
        }
        RegistryCmd::Verify { .. } => match r.verify_all() {
            Ok(m) => println!("OK: {m}"),
            Err(m) => {
                println!("FAIL: {m}");
                return Ok(ExitCode::FAILURE);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// `registry verify --proof FILE | --checkpoint FILE`: offline, against the pinned log keys.
fn verify_offline(
    proof: Option<&Path>,
    checkpoint: Option<&Path>,
    pinned: &[String],
    allow_any_signer: bool,
) -> anyhow::Result<ExitCode> {
    use fieldlab_attest::registry::{verify_checkpoint, CheckpointFile, RegistryProof};
    let result = match (proof, checkpoint) {
        (Some(p), _) => fieldlab_attest::read_json::<RegistryProof>(p)
            .map_err(|e| e.to_string())
            .and_then(|rp| {
                rp.verify(pinned)
                    .map(|m| (m, rp.vkey))
                    .map_err(|e| e.to_string())
            }),
        (None, Some(c)) => {
            let text =
                std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?;
            // The JSON of GET /registry/checkpoint, or the bare note.
            let file: CheckpointFile = if text.trim_start().starts_with('{') {
                serde_json::from_str(&text).map_err(|m| {
                    anyhow!(
                        "{}: not a checkpoint file ({{checkpoint, vkey, size}}): {m}",
                        c.display()
                    )
                })?
            } else {
                CheckpointFile {
                    checkpoint: text,
                    vkey: None,
                    size: None,
                }
            };
            verify_checkpoint(&file.checkpoint, file.vkey.as_deref(), pinned)
                .map_err(|e| e.to_string())
                .and_then(|v| match file.size {
                    Some(s) if s != v.size => Err(format!(
                        "the file says size {s}, its signed checkpoint {}",
                        v.size
                    )),
                    _ => Ok((
                        format!(
                            "checkpoint of {}: size {}, root {}; signed by log key {}",
                            v.origin,
                            v.size,
                            fieldlab_attest::canon::hex32(&v.root),
                            v.vkey
                        ),
                        v.vkey,
                    )),
                })
        }
        (None, None) => unreachable!("called with a file"),
    };
    Ok(match result {
        Ok((m, _)) if !pinned.is_empty() => {
            println!("OK: {m} (pinned)");
            ExitCode::SUCCESS
        }
        Ok((m, _)) if allow_any_signer => {
            println!("OK: {m} (not pinned: --allow-any-signer)");
            ExitCode::SUCCESS
        }
        Ok((m, k)) => {
            println!("OK: {m}");
            eprintln!("UNTRUSTED: signature valid, signer not trusted: it verifies under the log key the file names ({k}), but no log key was pinned, so any log could have signed it. Pass --vkey KEY (`cap registry inspect` prints it) or --trust KEYRING, or --allow-any-signer to accept any (exit {EXIT_SIGNER_NOT_TRUSTED}).");
            ExitCode::from(EXIT_SIGNER_NOT_TRUSTED)
        }
        Err(m) => {
            println!("FAIL: {m}");
            ExitCode::FAILURE
        }
    })
}

pub(super) fn blob(data: &Path, cmd: BlobCmd) -> anyhow::Result<ExitCode> {
    let r = fieldlab_registry::Registry::open(data).map_err(|m| anyhow!(m))?;
    match cmd {
        BlobCmd::List => {
            let mut st = r
                .db()
                .prepare("SELECT hash, size, refs FROM blobs ORDER BY hash")?;
            let rows = st.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (h, s, n) = row?;
                println!("{h}  {s:>10} bytes  {n} ref(s)");
            }
        }
        BlobCmd::Get { hash, out } => {
            std::fs::write(&out, r.blobs.get(&hash).map_err(e)?)?;
            println!("wrote {}", out.display());
        }
        BlobCmd::Release { hash } => println!(
            "{hash}: {} reference(s) left",
            r.blobs.release(r.db(), &hash).map_err(e)?
        ),
        BlobCmd::Gc => {
            let (f, b) = r.blobs.gc(r.db()).map_err(e)?;
            r.audit("blob.gc", serde_json::json!({"files": f, "bytes": b}))
                .map_err(e)?;
            println!("removed {f} blob(s), {b} bytes");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn audit(data: &Path, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    let p = data.join("audit.jsonl");
    match fieldlab_attest::audit::verify(&p) {
        Err(m) => {
            println!("FAIL: {m}");
            Ok(ExitCode::FAILURE)
        }
        Ok(last) => {
            match cmd {
                AuditCmd::Verify => println!(
                    "OK: {} entries, chain intact",
                    last.as_ref().map_or(0, |l| l.seq + 1)
                ),
                AuditCmd::Tip => match last {
                    Some(l) => println!("{} {} {} {}", l.seq, l.hash, l.ts, l.event),
                    None => println!("(empty log) {}", fieldlab_attest::audit::GENESIS),
                },
                AuditCmd::Export { out } => {
                    std::fs::copy(&p, &out)
                        .with_context(|| format!("copying to {}", out.display()))?;
                    println!(
                        "wrote {} (tip {})",
                        out.display(),
                        last.map_or(fieldlab_attest::audit::GENESIS.to_string(), |l| l.hash)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
