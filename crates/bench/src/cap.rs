//! `fieldlab bench cap`: prepare throughput (1M records), bundle verification time, and
//! `POST /verify` of `fieldlab cap serve` under `wrk`.

use anyhow::{anyhow, bail, Context};
use clap::Args;
use fieldlab_attest::bundle;
use fieldlab_attest::policy::{self, PolicyIr};
use fieldlab_attest::proof::{self, SortedList};
use fieldlab_attest::records::{Schema, Workspace};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

/// The example policy, compiled (its lint errors, if any, named).
fn compile_file(path: &Path) -> anyhow::Result<PolicyIr> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    policy::lint(&text).ir.ok_or_else(|| {
        anyhow!(
            "{}: policy has errors (see `fieldlab cap policy lint`)",
            path.display()
        )
    })
}

#[derive(Args)]
pub struct BenchCapArgs {
    /// Records for the prepare benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Bundle verifications timed for the median.
    #[arg(long, default_value_t = 200)]
    pub verify_runs: usize,
    /// Seconds of `wrk` load against POST /verify (0 skips it).
    #[arg(long, default_value_t = 10)]
    wrk_seconds: u64,
    #[arg(long, default_value_t = 32)]
    connections: usize,
}

fn median(v: &mut [f64]) -> f64 {
    crate::stats::median(v)
}

/// `fieldlab bench cap`: prepare throughput, bundle verification time, /verify under wrk.
pub fn cmd(a: BenchCapArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::time::Instant;
    let d = tempfile::tempdir()?;
    // 1. prepare: N synthetic suppliers.
    let csv = d.path().join("suppliers.csv");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        writeln!(w, "id,name,country,tier,audit_score")?;
        let cc = ["DE", "AT", "PL", "FR", "PT", "HU", "LT", "HR"];
        for i in 0..a.records {
            writeln!(
                w,
                "S{i:07},Synthetic Supplier {i} GmbH,{},{},{}.{}",
                cc[i % 8],
                1 + i % 3,
                50 + i % 50,
                i % 10
            )?;
        }
    }
    let size = std::fs::metadata(&csv)?.len();
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for r in 0..a.runs.max(1) {
        let ws = Workspace::new(d.path().join(format!("w{r}")));
        let t = Instant::now();
        let c = ws
            .prepare("suppliers", &csv, &Schema::suppliers())
            .map_err(|m| anyhow!(m))?;
        ours.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(c.count == a.records as u64);
        let t = Instant::now();
        let ok = std::process::Command::new("sha256sum")
            .arg(&csv)
            .stdout(std::process::Stdio::null())
            .status()?
            .success();
        anyhow::ensure!(ok, "sha256sum failed");
        peer.push(t.elapsed().as_secs_f64());
    }
    let (p, s) = (median(&mut ours), median(&mut peer));
    println!("prepare: {} records ({:.1} MB CSV): median {:.3} s ({:.0} records/s); peer `sha256sum` of the same file (one flat hash, no tree): {:.3} s; ratio {:.1}x (target < 2 s)",
        a.records, size as f64 / 1e6, p, a.records as f64 / p, s, p / s);

    // 2. bundle verification of the example bundle.
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cap");
    let ws = Workspace::new(d.path().join("ex"));
    ws.prepare("suppliers", &ex.join("suppliers.csv"), &Schema::suppliers())
        .map_err(|m| anyhow!(m))?;
    ws.prepare("ubos", &ex.join("ubos.csv"), &Schema::ubos())
        .map_err(|m| anyhow!(m))?;
    let ir = compile_file(&ex.join("lksg_v2.yaml"))?;
    let mut lists = BTreeMap::new();
    lists.insert(
        "sanctions".to_string(),
        SortedList::from_csv("sanctions", &ex.join("sanctions.csv")).map_err(|m| anyhow!(m))?,
    );
    let m = proof::build_manifest(&ws, &ir, &lists).map_err(|m| anyhow!(m))?;
    let pr = proof::build_proof(&ws, &ir, &m, &lists).map_err(|m| anyhow!(m))?;
    let key = fieldlab_attest::sign::KeyPair::generate(None)?;
    let zip = bundle::export(&ir, &m, &pr, &key).map_err(|m| anyhow!(m))?;
    let mut t_verify = Vec::new();
    for _ in 0..a.verify_runs {
        let t = Instant::now();
        let r = bundle::verify(&zip, None);
        t_verify.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(r.ok, "bundle did not verify");
    }
    let mut t_sha = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        std::hint::black_box(fieldlab_attest::canon::sha256(&zip));
        t_sha.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (v, h) = (median(&mut t_verify), median(&mut t_sha));
    println!("bundle verification: {} byte bundle (6 rules, 8 suppliers): median {v:.3} ms over {} runs; peer SHA-256 of the zip alone {h:.4} ms; ratio {:.0}x (target < 5 ms)", zip.len(), a.verify_runs, v / h.max(1e-9));

    // 3. POST /verify under wrk, with EdDSA JWT auth, against GET /healthz on the same server.
    if a.wrk_seconds > 0 {
        bench_wrk(&a, d.path(), &zip)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_wrk(a: &BenchCapArgs, dir: &Path, zip: &[u8]) -> anyhow::Result<()> {
    use fieldlab_verifier::{Auth, Verifier};
    let k = dir.join("jwt.key");
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ED25519", "-out"])
        .arg(&k)
        .status()?
        .success();
    anyhow::ensure!(ok, "openssl genpkey failed (apt-get install openssl)");
    let pubpem = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&k)
        .output()?
        .stdout;
    let mut jv = fieldlab_auth::jwt::JwtVerifier::new("https://bench.idp", "cap-verifier");
    jv.add_pem(&pubpem, None).map_err(|m| anyhow!(m))?;
    let exp = fieldlab_core::time::now_ms() / 1000 + 3600;
    let claims = serde_json::json!({"sub": "bench", "iss": "https://bench.idp", "aud": "cap-verifier", "exp": exp, "scope": "verify:run"});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(&k)?)?,
    )?;
    let body = dir.join("bundle.zip");
    std::fs::write(&body, zip)?;
    let lua = dir.join("verify.lua");
    std::fs::write(&lua, format!(
        "local f = io.open(\"{}\", \"rb\")\nwrk.method = \"POST\"\nwrk.body = f:read(\"*a\")\nf:close()\nwrk.headers[\"Content-Type\"] = \"application/zip\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n",
        body.display()))?;
    let v = std::sync::Arc::new(Verifier::new(Auth::Jwt(jv), None, None));
    let app = fieldlab_verifier::standalone(v.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    let run = |path: &str, script: Option<&Path>| -> anyhow::Result<(f64, String)> {
        let mut c = fieldlab_testkit::peer_command("wrk");
        c.args([
            "-t2",
            &format!("-c{}", a.connections),
            &format!("-d{}s", a.wrk_seconds),
            "--latency",
        ]);
        if let Some(s) = script {
            c.arg("-s").arg(s);
        }
        let out = c
            .arg(format!("http://{addr}{path}"))
            .output()
            .context("running wrk (apt-get install wrk)")?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let rps = text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|x| x.trim().parse().ok())
            .ok_or_else(|| anyhow!("wrk output not understood:\n{text}"))?;
        let p99 = text
            .lines()
            .find(|l| l.trim_start().starts_with("99%"))
            .map(|l| l.trim().trim_start_matches("99%").trim().to_string())
            .unwrap_or_default();
        if text.contains("Non-2xx") {
            bail!("wrk saw non-2xx responses:\n{text}");
        }
        Ok((rps, p99))
    };
    let (rps, p99) = run("/verify", Some(&lua))?;
    let (hrps, hp99) = run("/healthz", None)?;
    let _ = tx.send(());
    let _ = rt.block_on(server);
    let ok = v
        .metrics
        .requests
        .get_or_create(&fieldlab_verifier::ReqLabels {
            route: "/verify".into(),
            result: "ok".into(),
        })
        .get();
    let fail = v
        .metrics
        .requests
        .get_or_create(&fieldlab_verifier::ReqLabels {
            route: "/verify".into(),
            result: "fail".into(),
        })
        .get();
    anyhow::ensure!(fail == 0 && ok > 0, "/verify answered FAIL {fail} times");
    println!("POST /verify (EdDSA JWT, full bundle verification, {} connections, {} s): {rps:.0} requests/s, p99 {p99}; all {ok} results OK; peer GET /healthz on the same server: {hrps:.0} requests/s, p99 {hp99}; ratio {:.2} (target >= 5000/s, p99 < 10 ms)",
        a.connections, a.wrk_seconds, rps / hrps);
    Ok(())
}
