//! `cap prepare`, `inspect`, `policy`, `manifest`, `proof`, `verify-bundle`, `attest-series`:
//! commitments, policies, proofs and their verification, printed.

use super::*;

pub(super) fn attest_series(a: SeriesArgs) -> anyhow::Result<ExitCode> {
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
        .transpose()?;
    let att = fieldlab_attest::series::attest(
        &a.device,
        &a.field,
        from,
        to,
        lo,
        hi,
        &numeric,
        key.as_ref(),
    )?;
    let verdict = fieldlab_attest::series::verify(&att)?;
    match &a.out {
        Some(o) => fieldlab_attest::write_json(o, &att)?,
        None => println!("{}", serde_json::to_string_pretty(&att)?),
    }
    println!("{verdict}");
    Ok(if att.claim.in_range {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

pub(super) fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Fail => "FAIL",
    }
}

pub(super) fn load_ir_manifest(dir: &Path) -> anyhow::Result<(PolicyIr, Manifest)> {
    let ir: PolicyIr = fieldlab_attest::read_json(&dir.join("policy.ir.json")).map_err(|m| {
        anyhow!(
            "{m} (run `fieldlab cap manifest build --dir {} --policy FILE` first)",
            dir.display()
        )
    })?;
    let m: Manifest = fieldlab_attest::read_json(&dir.join("manifest.json"))?;
    Ok((ir, m))
}

pub(super) fn compile_file(path: &Path) -> anyhow::Result<PolicyIr> {
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

pub(super) fn prepare(a: PrepareArgs) -> anyhow::Result<ExitCode> {
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
        let schema = Schema::load(&schema)?;
        let set = a.set.unwrap_or_else(|| schema.name.clone());
        jobs.push((set, r, schema));
    }
    if jobs.is_empty() {
        bail!("nothing to prepare: give --suppliers CSV, --ubos CSV or --records FILE --schema S");
    }
    for (set, input, schema) in jobs {
        let t = std::time::Instant::now();
        let pb = crate::progress::spinner(&format!("committing {set} from {}", input.display()));
        let c = ws.prepare(&set, &input, &schema);
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

pub(super) fn inspect(dir: &Path, prove: Option<&str>) -> anyhow::Result<ExitCode> {
    let ws = Workspace::new(dir);
    let c = ws.commitments()?;
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
            let rs = ws.load_set(set)?;
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

pub(super) fn policy_cmd(p: PolicyCmd) -> anyhow::Result<ExitCode> {
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

pub(super) fn verify_bundle(path: &Path, pin: &PinArgs, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let trusted = fieldlab_attest::trust::load_signers(&pin.trust)?;
    let policies =
        fieldlab_attest::trust::load_policy_hashes(&pin.policy_hash, &pin.trusted_policies)?;
    let t = std::time::Instant::now();
    let mut r = bundle::verify_trusting(&bytes, &trusted);
    let took = t.elapsed();
    if r.ok && !policies.is_empty() {
        let got = r.policy_hash.clone().unwrap_or_default();
        if !policies.contains(&got) {
            r.ok = false;
            r.reason = Some(format!(
                "the bundle's policy hash {} is not a trusted policy (pinned: {})",
                if got.is_empty() { "(none)" } else { &got },
                policies.join(", ")
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
    let unpinned = r.ok && trusted.is_empty() && !pin.allow_any_signer;
    if unpinned {
        eprintln!(
            "UNTRUSTED: the signature is valid, but no signer was pinned, so anyone could have made this bundle (signed by key {}). Pass --trust KEY.pub.json (or a keyring file; repeatable) to require your signer, or --allow-any-signer to accept any (exit {EXIT_SIGNER_NOT_TRUSTED}).",
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
