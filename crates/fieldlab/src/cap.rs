//! `fieldlab cap <command>`: the proof tool of seed 001 (`cap`), as a subcommand.
//!
//! Argument parsing and printing only; every format and check lives in `fieldlab-attest`.
//! Exit codes: 0 OK; 1 FAIL or error; `policy lint|validate`: 2 warnings, 3 errors;
//! `verify-bundle`: 4 when the bundle is valid but its policy is not satisfied.

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use fieldlab_attest::bundle;
use fieldlab_attest::policy::{self, PolicyIr};
use fieldlab_attest::proof::{self, Manifest, Proof, SortedList, Status};
use fieldlab_attest::records::{Schema, Workspace};
use fieldlab_attest::sign::{KeyPair, PublicKeyFile};
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
    /// The seed's offline verifier: `verifier run --package FILE`.
    #[command(subcommand)]
    Verifier(VerifierCmd),
}

#[derive(Args)]
pub struct PrepareArgs {
    /// Supplier CSV (columns id,name,country[,tier,audit_score]).
    #[arg(long)]
    suppliers: Option<PathBuf>,
    /// UBO CSV (columns id,supplier_id,name[,nationality,ownership_pct]).
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
    /// Require this signer (public key file).
    #[arg(long)]
    trust: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum VerifierCmd {
    /// Verify a bundle offline (same as `cap verify-bundle`).
    Run {
        #[arg(long)]
        package: PathBuf,
        #[arg(long)]
        trust: Option<PathBuf>,
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
            let k = KeyPair::read_secret(&key)?;
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
        CapCmd::VerifyBundle(a) => verify_bundle(&a.package, a.trust.as_deref(), a.json),
        CapCmd::Verifier(VerifierCmd::Run {
            package,
            trust,
            json,
        }) => verify_bundle(&package, trust.as_deref(), json),
    }
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
        let c = ws.prepare(&set, &input, &schema).map_err(|m| anyhow!(m))?;
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
                "size": rs.records.len(), "index": o.index, "record": o.record, "proof": o.proof});
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

fn verify_bundle(path: &Path, trust: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let trusted = trust.map(PublicKeyFile::read).transpose()?;
    let t = std::time::Instant::now();
    let r = bundle::verify(&bytes, trusted.as_ref());
    let took = t.elapsed();
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
    Ok(match (r.ok, r.policy_status) {
        (false, _) => ExitCode::FAILURE,
        (true, Some(Status::Pass)) => ExitCode::SUCCESS,
        (true, _) => ExitCode::from(4),
    })
}
