//! `fieldlab cap <command>`: the legacy proof tool `cap`, as a subcommand.
//!
//! Argument parsing and printing only; every format and check lives in `fieldlab-attest`.
//! Exit codes: 0 OK; 1 FAIL or error; `policy lint|validate`: 2 warnings, 3 errors;
//! `verify-bundle`: 4 when the bundle is valid but its policy is not satisfied, 5 when its
//! signature is valid but no signer was pinned (`--trust KEY`, or `--allow-any-signer`).

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use fieldlab_attest::bundle;
use fieldlab_attest::policy::{self, PolicyIr};
use fieldlab_attest::proof::{self, Manifest, Proof, SortedList, Status};
use fieldlab_attest::records::{Schema, Workspace};
use fieldlab_attest::sign::PublicKeyFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum CapCmd {
    /// Commit records: RFC 6962 trees over canonical records; writes DIR/commitments.json.
    Prepare(PrepareArgs),
    /// Show a prepared directory's commitments; `--prove SET:INDEX` prints one record's inclusion proof.
    Inspect {
        dir: PathBuf,
        #[arg(long, value_name = "SET:INDEX")]
        prove: Option<String>,
    },
    /// Policies: validate, lint, compile, show.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Build the manifest (policy hash + roots of every set and list).
    #[command(subcommand)]
    Manifest(ManifestCmd),
    /// Evaluate the policy into a proof, verify it, export a signed bundle.
    #[command(subcommand)]
    Proof(ProofCmd),
    /// Verify a bundle offline. Exit 0 OK, 1 FAIL, 4 valid but policy not satisfied.
    VerifyBundle(VerifyArgs),
    /// The legacy offline verifier: `verifier run --package FILE`.
    #[command(subcommand)]
    Verifier(VerifierCmd),
    /// Signing keys: keygen, list, show, rotate, revoke, attest, verify-chain.
    Keys {
        /// Keyring directory.
        #[arg(long, default_value = "data/cap/keys", global = true)]
        dir: PathBuf,
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Transparency registry: add, list, inspect, prove, verify.
    Registry {
        /// Registry data directory (registry.db, blobs/, audit.jsonl, keys/).
        #[arg(long, default_value = "data/cap", global = true)]
        data: PathBuf,
        #[command(subcommand)]
        cmd: RegistryCmd,
    },
    /// Content-addressed blob store of the registry: list, get, release, gc.
    Blob {
        #[arg(long, default_value = "data/cap", global = true)]
        data: PathBuf,
        #[command(subcommand)]
        cmd: BlobCmd,
    },
    /// The hash-chained audit log: verify, tip, export.
    Audit {
        #[arg(long, default_value = "data/cap", global = true)]
        data: PathBuf,
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Prove (or refute) that every stored point of a series lay within a range.
    AttestSeries(SeriesArgs),
    /// Verify a series attestation file.
    VerifySeries { file: PathBuf },
    /// Run the verifier API alone (the legacy `cap-verifier-api`), with /healthz, /readyz,
    /// /metrics and /openapi.json; OAuth2 JWT scopes; TLS and mTLS.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Registry data directory; without it the registry endpoints answer 404.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Expected `iss` of bearer tokens.
    #[arg(long, env = "CAP_OAUTH_ISSUER")]
    issuer: Option<String>,
    /// Expected `aud` of bearer tokens.
    #[arg(long, env = "CAP_OAUTH_AUDIENCE", default_value = "cap-verifier")]
    audience: String,
    /// PEM public key(s) of the token issuer (RSA for RS256, Ed25519 for EdDSA).
    #[arg(long = "jwt-public-key", value_name = "PEM")]
    jwt_pem: Vec<PathBuf>,
    /// JWKS file of the token issuer.
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// Serve without authentication (only allowed on a loopback address).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Require bundles to be signed by this key.
    #[arg(long)]
    trust: Option<PathBuf>,
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Require client certificates from this CA (mTLS).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Allowed client certificate subject (`CN=auditor` or a full DN); repeatable.
    #[arg(long = "allowed-subject")]
    allowed_subjects: Vec<String>,
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Generate an Ed25519 key (secret file mode 0600).
    Keygen {
        #[arg(long)]
        name: Option<String>,
    },
    List,
    Show {
        key: String,
    },
    /// New key attested by the old one; the old one is retired.
    Rotate {
        key: String,
    },
    Revoke {
        key: String,
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// SIGNER signs SUBJECT's public key.
    Attest {
        signer: String,
        subject: String,
    },
    /// Follow attestations from ROOT to LEAF; refuses revoked keys.
    VerifyChain {
        root: String,
        leaf: String,
    },
}

#[derive(Subcommand)]
pub enum RegistryCmd {
    /// Register a file (e.g. a bundle); prints the entry and the new signed checkpoint.
    Add { file: PathBuf },
    List {
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// One entry, or the latest checkpoint and verifier key without an index.
    Inspect { index: Option<u64> },
    /// Inclusion proof of INDEX, or --consistency OLD_SIZE; JSON to stdout or --out.
    Prove {
        index: Option<u64>,
        #[arg(long)]
        consistency: Option<u64>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify the whole registry, or a proof file offline. A proof file's log key must be
    /// pinned with --vkey (else exit 5: valid, but signed by a log nobody pinned), or
    /// --allow-any-signer said.
    Verify {
        #[arg(long)]
        proof: Option<PathBuf>,
        /// The log's verifier key (`registry inspect` prints it).
        #[arg(long)]
        vkey: Option<String>,
        /// Accept a proof signed by any log key (exit 0 instead of 5 without --vkey).
        #[arg(long, conflicts_with = "vkey")]
        allow_any_signer: bool,
    },
}

#[derive(Subcommand)]
pub enum BlobCmd {
    List,
    Get {
        hash: String,
        #[arg(long)]
        out: PathBuf,
    },
    Release {
        hash: String,
    },
    Gc,
}

#[derive(Subcommand)]
pub enum AuditCmd {
    Verify,
    Tip,
    /// Verify, then copy the log to OUT.
    Export {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct SeriesArgs {
    #[arg(long)]
    device: String,
    #[arg(long)]
    field: String,
    /// Start: RFC 3339 time, epoch ms, or relative to now (`-1h`, `--from -10m` works too).
    #[arg(long, allow_hyphen_values = true)]
    from: String,
    /// End, in the same forms as --from.
    #[arg(long, allow_hyphen_values = true, default_value = "now")]
    to: String,
    /// Allowed range `a..b`, e.g. 2..8.
    #[arg(long)]
    range: String,
    /// fieldlab data directory (the store).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Secret key file or keyring key to sign with.
    #[arg(long)]
    key: Option<PathBuf>,
    #[arg(long, default_value = "data/cap/keys")]
    keys: PathBuf,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct PrepareArgs {
    /// Supplier CSV (columns id,name,country, optionally tier,audit_score).
    #[arg(long)]
    suppliers: Option<PathBuf>,
    /// UBO CSV (columns id,supplier_id,name, optionally nationality,ownership_pct).
    #[arg(long)]
    ubos: Option<PathBuf>,
    /// Any other records (CSV, JSON array or JSON lines); needs --schema and --set.
    #[arg(long)]
    records: Option<PathBuf>,
    /// `suppliers`, `ubos` or a schema YAML file (name + fields with type string|integer|number|bool).
    #[arg(long)]
    schema: Option<String>,
    /// Name of the set committed from --records.
    #[arg(long)]
    set: Option<String>,
    /// Output directory.
    #[arg(long, default_value = "cap-work")]
    out: PathBuf,
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Exit 0 valid, 2 valid with warnings, 3 invalid; prints only a summary.
    Validate { file: PathBuf },
    /// Print every finding with its code. Exit 0 / 2 / 3. `--codes` lists all codes.
    Lint {
        file: Option<PathBuf>,
        #[arg(long)]
        codes: bool,
    },
    /// Compile to the IR (RFC 8785 JSON) and print its hash.
    Compile {
        file: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show the compiled rules in words.
    Show { file: PathBuf },
}

#[derive(Subcommand)]
pub enum ManifestCmd {
    /// Write DIR/manifest.json, DIR/policy.ir.json and DIR/lists/*.json.
    Build {
        #[arg(long, default_value = "cap-work")]
        dir: PathBuf,
        #[arg(long)]
        policy: PathBuf,
        /// A public list the policy needs, e.g. `sanctions=examples/cap/sanctions.csv`.
        #[arg(long = "list", value_name = "NAME=CSV")]
        lists: Vec<String>,
        /// Shorthand for --list sanctions=FILE.
        #[arg(long)]
        sanctions: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ProofCmd {
    /// Evaluate every rule; writes DIR/proof.json.
    Build {
        #[arg(long, default_value = "cap-work")]
        dir: PathBuf,
    },
    /// Verify DIR/proof.json against DIR/manifest.json and DIR/policy.ir.json.
    Verify {
        #[arg(long, default_value = "cap-work")]
        dir: PathBuf,
    },
    /// Write the signed bundle (zip).
    Export {
        #[arg(long, default_value = "cap-work")]
        dir: PathBuf,
        /// Secret key file (see `fieldlab cap keys keygen`).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The bundle (zip).
    #[arg(value_name = "FILE")]
    package: PathBuf,
    #[command(flatten)]
    pin: PinArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// What a verification must trust: without a pinned signer a valid signature proves only that
/// someone signed, so that is its own exit code (5), never a pass by accident.
#[derive(Args, Clone)]
pub struct PinArgs {
    /// Require this signer (public key file, `KEY.pub.json`).
    #[arg(long)]
    trust: Option<PathBuf>,
    /// Accept a valid signature by any key (exit 0 instead of 5 without --trust): say so
    /// explicitly when the signer does not matter.
    #[arg(long, conflicts_with = "trust")]
    allow_any_signer: bool,
    /// Require this policy hash (`policy_hash` of `cap policy compile`, hex): a bundle under
    /// any other policy fails, whatever its id says.
    #[arg(long)]
    policy_hash: Option<String>,
}

/// Exit code of a bundle whose signature is valid but whose signer nobody pinned.
const EXIT_SIGNER_NOT_TRUSTED: u8 = 5;

#[derive(Subcommand)]
pub enum VerifierCmd {
    /// Verify a bundle offline (same as `cap verify-bundle`).
    Run {
        #[arg(long)]
        package: PathBuf,
        #[command(flatten)]
        pin: PinArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CapCmd) -> anyhow::Result<ExitCode> {
    let e = |m: String| anyhow!(m);
    match cmd {
        CapCmd::Prepare(a) => prepare(a),
        CapCmd::Inspect { dir, prove } => inspect(&dir, prove.as_deref()),
        CapCmd::Policy(p) => policy_cmd(p),
        CapCmd::Manifest(ManifestCmd::Build {
            dir,
            policy,
            lists,
            sanctions,
        }) => {
            let ws = Workspace::new(&dir);
            let ir = compile_file(&policy)?;
            let mut ls = BTreeMap::new();
            let mut specs: Vec<(String, PathBuf)> = Vec::new();
            for l in lists {
                let (n, f) = l
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--list `{l}`: use NAME=FILE.csv"))?;
                specs.push((n.to_string(), f.into()));
            }
            if let Some(s) = sanctions {
                specs.push(("sanctions".into(), s));
            }
            std::fs::create_dir_all(dir.join("lists"))?;
            for (n, f) in specs {
                let list = SortedList::from_csv(&n, &f).map_err(e)?;
                fieldlab_attest::write_json(&dir.join("lists").join(format!("{n}.json")), &list)
                    .map_err(e)?;
                ls.insert(n, list);
            }
            let m = proof::build_manifest(&ws, &ir, &ls).map_err(e)?;
            fieldlab_attest::write_json(&dir.join("manifest.json"), &m).map_err(e)?;
            fieldlab_attest::write_json(&dir.join("policy.ir.json"), &ir).map_err(e)?;
            println!("manifest {} for policy {} ({})", m.hash(), ir.id, ir.hash());
            for (n, r) in &m.sets {
                println!("  set  {n:<12} {:>8} records  root {}", r.count, r.root);
            }
            for (n, r) in &m.lists {
                println!("  list {n:<12} {:>8} entries  root {}", r.count, r.root);
            }
            println!("wrote {}", dir.join("manifest.json").display());
            Ok(ExitCode::SUCCESS)
        }
        CapCmd::Proof(ProofCmd::Build { dir }) => {
            let (ir, m) = load_ir_manifest(&dir)?;
            let mut lists = BTreeMap::new();
            for l in ir.lists() {
                let p = dir.join("lists").join(format!("{l}.json"));
                lists.insert(l, fieldlab_attest::read_json::<SortedList>(&p).map_err(e)?);
            }
            let p = proof::build_proof(&Workspace::new(&dir), &ir, &m, &lists).map_err(e)?;
            fieldlab_attest::write_json(&dir.join("proof.json"), &p).map_err(e)?;
            for r in &p.results {
                println!("  {:<28} {:<24} {}", r.rule, r.op, status_word(r.status));
            }
            println!(
                "policy {}: {}; wrote {}",
                ir.id,
                status_word(p.status),
                dir.join("proof.json").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CapCmd::Proof(ProofCmd::Verify { dir }) => {
            let (ir, m) = load_ir_manifest(&dir)?;
            let p: Proof = fieldlab_attest::read_json(&dir.join("proof.json")).map_err(e)?;
            match proof::verify_proof(&ir, &m, &p) {
                Ok(checks) => {
                    for c in checks {
                        println!(
                            "  {:<28} {:<4} {:<8} {}",
                            c.rule,
                            status_word(c.status),
                            c.basis,
                            c.detail
                        );
                    }
                    println!(
                        "OK: proof is consistent with manifest {} and policy {}; policy {}",
                        m.hash(),
                        ir.hash(),
                        status_word(p.status)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(r) => {
                    println!("FAIL: {r}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        CapCmd::Proof(ProofCmd::Export { dir, key, out }) => {
            let (ir, m) = load_ir_manifest(&dir)?;
            let p: Proof = fieldlab_attest::read_json(&dir.join("proof.json")).map_err(e)?;
            proof::verify_proof(&ir, &m, &p).map_err(|r| {
                anyhow!(
                    "{}: the proof does not verify ({r}); rebuild it",
                    dir.display()
                )
            })?;
            let k =
                fieldlab_attest::keyring::load_key(&key, Path::new("data/cap/keys")).map_err(e)?;
            let z = bundle::export(&ir, &m, &p, &k).map_err(e)?;
            std::fs::write(&out, &z).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote {} ({} bytes), signed by key {}",
                out.display(),
                z.len(),
                k.kid()
            );
            Ok(ExitCode::SUCCESS)
        }
        CapCmd::VerifyBundle(a) => verify_bundle(&a.package, &a.pin, a.json),
        CapCmd::Verifier(VerifierCmd::Run { package, pin, json }) => {
            verify_bundle(&package, &pin, json)
        }
        CapCmd::Keys { dir, cmd } => keys(&dir, cmd),
        CapCmd::Registry { data, cmd } => registry(&data, cmd),
        CapCmd::Blob { data, cmd } => blob(&data, cmd),
        CapCmd::Audit { data, cmd } => audit(&data, cmd),
        CapCmd::AttestSeries(a) => attest_series(a),
        CapCmd::Serve(a) => serve(a),
        CapCmd::VerifySeries { file } => {
            let a: fieldlab_attest::series::SeriesAttestation =
                fieldlab_attest::read_json(&file).map_err(e)?;
            match fieldlab_attest::series::verify(&a) {
                Ok(m) => {
                    println!("OK: {m}");
                    Ok(if a.claim.in_range {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(4)
                    })
                }
                Err(m) => {
                    println!("FAIL: {m}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

fn keys(dir: &Path, cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    use fieldlab_attest::keyring::Keyring;
    let kr = Keyring::open(dir).map_err(|m| anyhow!(m))?;
    let e = |m: String| anyhow!(m);
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

fn registry(data: &Path, cmd: RegistryCmd) -> anyhow::Result<ExitCode> {
    use fieldlab_attest::registry::{Registry, RegistryProof};
    let e = |m: String| anyhow!(m);
    if let RegistryCmd::Verify {
        proof: Some(p),
        vkey,
        allow_any_signer,
    } = &cmd
    {
        let rp: RegistryProof = fieldlab_attest::read_json(p).map_err(e)?;
        return Ok(match rp.verify(vkey.as_deref()) {
            Ok(m) if vkey.is_none() && !allow_any_signer => {
                println!("OK: {m}");
                eprintln!("UNTRUSTED: the proof is valid, but no log key was pinned, so any log could have signed it. Pass --vkey KEY (`cap registry inspect` prints it), or --allow-any-signer (exit {EXIT_SIGNER_NOT_TRUSTED}).");
                ExitCode::from(EXIT_SIGNER_NOT_TRUSTED)
            }
            Ok(m) => {
                println!("OK: {m}");
                ExitCode::SUCCESS
            }
            Err(m) => {
                println!("FAIL: {m}");
                ExitCode::FAILURE
            }
        });
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

fn blob(data: &Path, cmd: BlobCmd) -> anyhow::Result<ExitCode> {
    let r = fieldlab_attest::registry::Registry::open(data).map_err(|m| anyhow!(m))?;
    let e = |m: String| anyhow!(m);
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

fn audit(data: &Path, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
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

fn attest_series(a: SeriesArgs) -> anyhow::Result<ExitCode> {
    use fieldlab_core::time::{now_ms, parse_instant_ms};
    let now = now_ms();
    let from = parse_instant_ms(&a.from, now).map_err(|e| anyhow!("--from: {e}"))?;
    let to = parse_instant_ms(&a.to, now).map_err(|e| anyhow!("--to: {e}"))?;
    let (lo, hi) = a
        .range
        .split_once("..")
        .ok_or_else(|| anyhow!("--range `{}`: use a..b, e.g. 2..8", a.range))?;
    let lo: f64 = lo
        .trim()
        .parse()
        .map_err(|_| anyhow!("--range: `{lo}` is not a number"))?;
    let hi: f64 = hi
        .trim()
        .parse()
        .map_err(|_| anyhow!("--range: `{hi}` is not a number"))?;
    // Read-only, as `fieldlab query` does: works beside a running `fieldlab up` (which holds the
    // data dir's lock), reading what is on disk now.
    let (store, _) = fieldlab_store::Store::open_read_only(&a.data_dir)
        .with_context(|| format!("opening the store in {}", a.data_dir.display()))?;
    let pts = store.range(
        &fieldlab_core::SeriesKey::new(&a.device, &a.field),
        from,
        to,
    )?;
    let numeric: Vec<(i64, f64)> = pts
        .iter()
        .filter_map(|(t, v)| v.as_f64().map(|x| (*t, x)))
        .collect();
    if numeric.is_empty() {
        bail!(
            "no numeric points of {}/{} between {} and {} in {}",
            a.device,
            a.field,
            a.from,
            a.to,
            a.data_dir.display()
        );
    }
    let key = a
        .key
        .as_deref()
        .map(|k| fieldlab_attest::keyring::load_key(k, &a.keys))
        .transpose()
        .map_err(|m| anyhow!(m))?;
    let att = fieldlab_attest::series::attest(
        &a.device,
        &a.field,
        from,
        to,
        lo,
        hi,
        &numeric,
        key.as_ref(),
    )
    .map_err(|m| anyhow!(m))?;
    let verdict = fieldlab_attest::series::verify(&att).map_err(|m| anyhow!(m))?;
    match &a.out {
        Some(o) => fieldlab_attest::write_json(o, &att).map_err(|m| anyhow!(m))?,
        None => println!("{}", serde_json::to_string_pretty(&att)?),
    }
    println!("{verdict}");
    Ok(if att.claim.in_range {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Fail => "FAIL",
    }
}

fn load_ir_manifest(dir: &Path) -> anyhow::Result<(PolicyIr, Manifest)> {
    let ir: PolicyIr = fieldlab_attest::read_json(&dir.join("policy.ir.json")).map_err(|m| {
        anyhow!(
            "{m} (run `fieldlab cap manifest build --dir {} --policy FILE` first)",
            dir.display()
        )
    })?;
    let m: Manifest =
        fieldlab_attest::read_json(&dir.join("manifest.json")).map_err(|m| anyhow!(m))?;
    Ok((ir, m))
}

fn compile_file(path: &Path) -> anyhow::Result<PolicyIr> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let l = policy::lint(&text);
    match l.ir {
        Some(ir) => Ok(ir),
        None => {
            let errs: Vec<String> = l
                .findings
                .iter()
                .filter(|f| f.severity == policy::Severity::Error)
                .map(|f| f.to_string())
                .collect();
            bail!(
                "{}: policy has errors (see `fieldlab cap policy lint`):\n  {}",
                path.display(),
                errs.join("\n  ")
            )
        }
    }
}

fn prepare(a: PrepareArgs) -> anyhow::Result<ExitCode> {
    let ws = Workspace::new(&a.out);
    let mut jobs: Vec<(String, PathBuf, Schema)> = Vec::new();
    if let Some(s) = a.suppliers {
        jobs.push(("suppliers".into(), s, Schema::suppliers()));
    }
    if let Some(u) = a.ubos {
        jobs.push(("ubos".into(), u, Schema::ubos()));
    }
    if let Some(r) = a.records {
        let schema = a.schema.ok_or_else(|| {
            anyhow!("--records needs --schema (suppliers, ubos or a schema file)")
        })?;
        let schema = Schema::load(&schema).map_err(|m| anyhow!(m))?;
        let set = a.set.unwrap_or_else(|| schema.name.clone());
        jobs.push((set, r, schema));
    }
    if jobs.is_empty() {
        bail!("nothing to prepare: give --suppliers CSV, --ubos CSV or --records FILE --schema S");
    }
    for (set, input, schema) in jobs {
        let t = std::time::Instant::now();
        let pb = crate::progress::spinner(&format!("committing {set} from {}", input.display()));
        let c = ws.prepare(&set, &input, &schema).map_err(|m| anyhow!(m));
        pb.finish_and_clear();
        let c = c?;
        println!(
            "{set:<12} {:>9} records  root {}  ({:.0} ms)",
            c.count,
            c.root,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    println!("wrote {}", ws.commitments_path().display());
    Ok(ExitCode::SUCCESS)
}

fn inspect(dir: &Path, prove: Option<&str>) -> anyhow::Result<ExitCode> {
    let ws = Workspace::new(dir);
    let c = ws.commitments().map_err(|m| anyhow!(m))?;
    match prove {
        None => {
            println!("{} ({})", ws.commitments_path().display(), c.format);
            for (n, s) in &c.sets {
                let fields: Vec<String> = s
                    .schema
                    .fields
                    .iter()
                    .map(|f| format!("{}:{:?}", f.name, f.ty).to_lowercase())
                    .collect();
                println!(
                    "  {n:<12} {:>9} records  root {}  fields {}",
                    s.count,
                    s.root,
                    fields.join(",")
                );
            }
            for f in ["manifest.json", "proof.json"] {
                if dir.join(f).exists() {
                    println!("  {f} present");
                }
            }
        }
        Some(spec) => {
            let (set, idx) = spec
                .split_once(':')
                .ok_or_else(|| anyhow!("--prove `{spec}`: use SET:INDEX, e.g. suppliers:0"))?;
            let i: usize = idx
                .parse()
                .map_err(|_| anyhow!("--prove: `{idx}` is not an index"))?;
            let rs = ws.load_set(set).map_err(|m| anyhow!(m))?;
            if i >= rs.records.len() {
                bail!(
                    "--prove: set `{set}` has {} records (indices 0..{})",
                    rs.records.len(),
                    rs.records.len()
                );
            }
            let o = rs.open(i);
            let out = serde_json::json!({"set": set, "root": fieldlab_attest::canon::hex32(&rs.root()),
                "size": rs.records.len(), "index": o.index, "record": o.record,
                "proof": o.proof.iter().map(fieldlab_attest::canon::hex32).collect::<Vec<_>>()});
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn policy_cmd(p: PolicyCmd) -> anyhow::Result<ExitCode> {
    let read =
        |f: &Path| std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()));
    match p {
        PolicyCmd::Lint { codes: true, .. } => {
            for (c, m) in policy::CODES {
                println!("{c}  {m}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Lint { file: None, .. } => {
            bail!("give a policy file, or --codes to list the lint codes")
        }
        PolicyCmd::Lint { file: Some(f), .. } | PolicyCmd::Validate { file: f } => {
            let l = policy::lint(&read(&f)?);
            for x in &l.findings {
                println!("{}: {x}", f.display());
            }
            let (e, w) = l
                .findings
                .iter()
                .fold((0, 0), |(e, w), x| match x.severity {
                    policy::Severity::Error => (e + 1, w),
                    policy::Severity::Warning => (e, w + 1),
                });
            match &l.ir {
                Some(ir) => println!(
                    "{}: valid, {} rules, {w} warning(s); hash {}",
                    f.display(),
                    ir.rules.len(),
                    ir.hash()
                ),
                None => println!("{}: invalid: {e} error(s), {w} warning(s)", f.display()),
            }
            Ok(ExitCode::from(l.exit_code()))
        }
        PolicyCmd::Compile { file, out } => {
            let ir = compile_file(&file)?;
            let bytes = fieldlab_attest::canon::canonical(&ir)?;
            match out {
                Some(o) => {
                    std::fs::write(&o, &bytes)
                        .with_context(|| format!("writing {}", o.display()))?;
                    println!("wrote {} (policy hash {})", o.display(), ir.hash());
                }
                None => {
                    println!("{}", String::from_utf8_lossy(&bytes));
                    eprintln!("policy hash {}", ir.hash());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Show { file } => {
            let ir = compile_file(&file)?;
            println!(
                "policy {} (from v{} YAML), hash {}",
                ir.id,
                ir.source_version,
                ir.hash()
            );
            if let Some(d) = &ir.description {
                println!("  {}", d.trim());
            }
            for r in &ir.rules {
                let what = policy::OPS.iter().find(|o| o.0 == r.op).map_or("", |o| o.2);
                let mut params = Vec::new();
                for (k, v) in [
                    ("set", r.set.clone()),
                    ("field", r.field.clone()),
                    ("list", r.list.clone()),
                ] {
                    if let Some(v) = v {
                        params.push(format!("{k}={v}"));
                    }
                }
                if let Some(v) = &r.value {
                    params.push(format!("value={v}"));
                }
                if let Some(v) = &r.values {
                    params.push(format!("values={}", serde_json::Value::from(v.clone())));
                }
                if let Some(v) = r.min {
                    params.push(format!("min={v}"));
                }
                if let Some(v) = r.max {
                    params.push(format!("max={v}"));
                }
                println!(
                    "  - {:<24} {:<24} {}  [{what}]",
                    r.id,
                    r.op,
                    params.join(" ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify_bundle(path: &Path, pin: &PinArgs, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let trusted = pin.trust.as_deref().map(PublicKeyFile::read).transpose()?;
    let t = std::time::Instant::now();
    let mut r = bundle::verify(&bytes, trusted.as_ref());
    let took = t.elapsed();
    if let (true, Some(want)) = (r.ok, &pin.policy_hash) {
        let want = want.trim().to_ascii_lowercase();
        if r.policy_hash.as_deref() != Some(want.as_str()) {
            r.ok = false;
            r.reason = Some(format!(
                "the bundle's policy hash {} is not the pinned --policy-hash {want}",
                r.policy_hash.as_deref().unwrap_or("(none)")
            ));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "bundle:    {} ({} bytes, verified in {:.2} ms)",
            path.display(),
            bytes.len(),
            took.as_secs_f64() * 1e3
        );
        print!("{}", r.render());
    }
    let unpinned = r.ok && trusted.is_none() && !pin.allow_any_signer;
    if unpinned {
        eprintln!(
            "UNTRUSTED: the signature is valid, but no signer was pinned, so anyone could have made this bundle (signed by key {}). Pass --trust KEY.pub.json to require your signer, or --allow-any-signer to accept any (exit {EXIT_SIGNER_NOT_TRUSTED}).",
            r.signer_kid.as_deref().unwrap_or("?")
        );
    }
    Ok(match (r.ok, r.policy_status) {
        (false, _) => ExitCode::FAILURE,
        _ if unpinned => ExitCode::from(EXIT_SIGNER_NOT_TRUSTED),
        (true, Some(Status::Pass)) => ExitCode::SUCCESS,
        (true, _) => ExitCode::from(4),
    })
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    use fieldlab_verifier::{tls, Auth, Verifier};
    let addr: std::net::SocketAddr = a
        .bind
        .parse()
        .map_err(|_| anyhow!("--bind `{}`: use HOST:PORT, e.g. 0.0.0.0:8443", a.bind))?;
    let auth = if a.insecure_no_auth {
        if !addr.ip().is_loopback() {
            bail!("--insecure-no-auth is only allowed on a loopback address; configure --issuer and --jwt-public-key/--jwks");
        }
        Auth::Disabled
    } else {
        let iss = a.issuer.clone().ok_or_else(|| anyhow!("--issuer is required (the `iss` of accepted tokens), with --jwt-public-key PEM or --jwks FILE; or --insecure-no-auth on loopback"))?;
        let mut j = fieldlab_auth::jwt::JwtVerifier::new(&iss, &a.audience);
        for p in &a.jwt_pem {
            j.add_pem_file(p).map_err(|m| anyhow!(m))?;
        }
        if let Some(f) = &a.jwks {
            j.add_jwks_file(f).map_err(|m| anyhow!(m))?;
        }
        if j.key_count() == 0 {
            bail!("no token keys: give --jwt-public-key PEM or --jwks FILE");
        }
        Auth::Jwt(j)
    };
    let trusted = a.trust.as_deref().map(PublicKeyFile::read).transpose()?;
    let reg = a
        .data
        .as_deref()
        .map(fieldlab_attest::registry::Registry::open)
        .transpose()
        .map_err(|m| anyhow!(m))?;
    let v = std::sync::Arc::new(Verifier::new(auth, trusted, reg));
    let app = fieldlab_verifier::standalone(v);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match (a.tls_cert, a.tls_key) {
            (Some(cert), Some(key)) => {
                let mtls = a.client_ca.is_some();
                println!(
                    "cap verifier API on https://{local}{}",
                    if mtls { " (mTLS)" } else { "" }
                );
                let s = tls::TlsSettings {
                    cert,
                    key,
                    client_ca: a.client_ca,
                    allowed_subjects: a.allowed_subjects,
                };
                tls::serve(listener, app, s, stop)
                    .await
                    .map_err(|m| anyhow!(m))
            }
            (None, None) => {
                if a.client_ca.is_some() {
                    bail!("--client-ca needs --tls-cert and --tls-key");
                }
                println!("cap verifier API on http://{local}");
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
                    .map_err(Into::into)
            }
            _ => bail!("give both --tls-cert and --tls-key"),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
