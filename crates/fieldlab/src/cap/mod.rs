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
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod args;
mod proofs;
mod registry;
mod serve;

pub use args::*;
use proofs::*;
use registry::*;
use serve::*;

pub fn run(cmd: CapCmd) -> anyhow::Result<ExitCode> {
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
                let list = SortedList::from_csv(&n, &f)?;
                fieldlab_attest::write_json(&dir.join("lists").join(format!("{n}.json")), &list)?;
                ls.insert(n, list);
            }
            let m = proof::build_manifest(&ws, &ir, &ls)?;
            fieldlab_attest::write_json(&dir.join("manifest.json"), &m)?;
            fieldlab_attest::write_json(&dir.join("policy.ir.json"), &ir)?;
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
                lists.insert(l, fieldlab_attest::read_json::<SortedList>(&p)?);
            }
            let p = proof::build_proof(&Workspace::new(&dir), &ir, &m, &lists)?;
            fieldlab_attest::write_json(&dir.join("proof.json"), &p)?;
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
            let p: Proof = fieldlab_attest::read_json(&dir.join("proof.json"))?;
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
        CapCmd::Proof(ProofCmd::Export {
            dir,
            key,
            out,
            dsse,
        }) => {
            let (ir, m) = load_ir_manifest(&dir)?;
            let p: Proof = fieldlab_attest::read_json(&dir.join("proof.json"))?;
            proof::verify_proof(&ir, &m, &p).map_err(|r| {
                anyhow!(
                    "{}: the proof does not verify ({r}); rebuild it",
                    dir.display()
                )
            })?;
            let k = fieldlab_attest::keyring::load_key(&key, Path::new("data/cap/keys"))?;
            let z = if dsse {
                bundle::export_dsse(&ir, &m, &p, &k)
            } else {
                bundle::export(&ir, &m, &p, &k)
            }?;
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
            let a: fieldlab_attest::series::SeriesAttestation = fieldlab_attest::read_json(&file)?;
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
