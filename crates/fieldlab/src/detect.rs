//! `fieldlab detect train` (the autoencoder) and `fieldlab bench detect` (detector throughput
//! and `/predict` latency). Argument parsing, file reading and printing; the models and
//! detectors live in `fieldlab-detect` and `fieldlab-watch`.

use anyhow::Context;
use clap::{Args, Subcommand};
use fieldlab_detect::autoencoder::{GruAutoencoder, TrainConfig};
use fieldlab_detect::Detector;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Subcommand)]
pub enum DetectCmd {
    /// Train the GRU autoencoder on a CSV file or on stored series; save it with its hash.
    Train(TrainArgs),
}

#[derive(Args)]
pub struct TrainArgs {
    /// CSV with a header; numeric columns are features (a `timestamp`/`time`/`ts` column is
    /// used for the training range).
    #[arg(long, conflicts_with = "series", required_unless_present = "series")]
    input: Option<PathBuf>,
    /// Use only these CSV columns (comma-separated).
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// Stored series as `device_id/field` (comma-separated); read from --data-dir, aligned on
    /// the first series' timestamps. fieldlab must not be running on that directory.
    #[arg(long, value_delimiter = ',')]
    series: Vec<String>,
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Start of the training range for --series (`-7d`, RFC 3339...).
    #[arg(long, default_value = "-7d")]
    from: String,
    #[arg(long, default_value = "now")]
    to: String,
    #[arg(long, default_value_t = 30)]
    window_size: usize,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 16)]
    hidden: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (model.safetensors + model.json).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: DetectCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DetectCmd::Train(a) => train(a),
    }
}

type Table = (Vec<String>, Vec<Vec<f64>>, Option<i64>, Option<i64>);

fn read_csv(path: &Path, only: &[String]) -> anyhow::Result<Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .with_context(|| format!("{}: empty file", path.display()))?
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let time_col = header
        .iter()
        .position(|h| matches!(h.as_str(), "timestamp" | "time" | "ts"));
    let cols: Vec<usize> = if only.is_empty() {
        (0..header.len()).filter(|i| Some(*i) != time_col).collect()
    } else {
        only.iter()
            .map(|c| {
                header.iter().position(|h| h == c).with_context(|| {
                    format!(
                        "{}: no column `{c}` (columns: {})",
                        path.display(),
                        header.join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let (mut rows, mut first, mut last) = (Vec::new(), None, None);
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let mut row = Vec::with_capacity(cols.len());
        for &c in &cols {
            let v = f.get(c).copied().unwrap_or("");
            row.push(
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .with_context(|| {
                        format!(
                            "{}:{}: column `{}` is `{v}`, not a finite number",
                            path.display(),
                            n + 2,
                            header[c]
                        )
                    })?,
            );
        }
        if let Some(t) = time_col.and_then(|c| f.get(c)) {
            let ms = fieldlab_core::time::parse_instant_ms(t, 0)
                .ok()
                .or_else(|| fieldlab_nab::corpus::parse_time(t));
            first = first.or(ms);
            last = ms.or(last);
        }
        rows.push(row);
    }
    Ok((
        cols.iter().map(|c| header[*c].clone()).collect(),
        rows,
        first,
        last,
    ))
}

fn read_store(a: &TrainArgs) -> anyhow::Result<Table> {
    let now = fieldlab_core::time::now_ms();
    let from = fieldlab_core::time::parse_instant_ms(&a.from, now)
        .map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = fieldlab_core::time::parse_instant_ms(&a.to, now)
        .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let (store, _) = fieldlab_store::Store::open(fieldlab_store::StoreOptions::new(&a.data_dir))
        .with_context(|| {
            format!(
                "cannot open the store in {} (is fieldlab running on it?)",
                a.data_dir.display()
            )
        })?;
    let mut series = Vec::new();
    for s in &a.series {
        let (dev, field) = s
            .split_once('/')
            .with_context(|| format!("--series `{s}`: use device_id/field"))?;
        let pts = store.range(&fieldlab_core::SeriesKey::new(dev, field), from, to)?;
        let pts: Vec<(i64, f64)> = pts
            .into_iter()
            .filter_map(|(t, v)| v.as_f64().map(|x| (t, x)))
            .collect();
        if pts.is_empty() {
            anyhow::bail!(
                "--series `{s}`: no numeric points between --from and --to in {}",
                a.data_dir.display()
            );
        }
        series.push(pts);
    }
    // as-of join on the first series' timestamps
    let mut idx = vec![0usize; series.len()];
    let mut rows = Vec::new();
    for &(t, x0) in &series[0] {
        let mut row = vec![x0];
        let mut ok = true;
        for (k, s) in series.iter().enumerate().skip(1) {
            while idx[k] + 1 < s.len() && s[idx[k] + 1].0 <= t {
                idx[k] += 1;
            }
            if s[idx[k]].0 > t {
                ok = false;
                break;
            }
            row.push(s[idx[k]].1);
        }
        if ok {
            rows.push(row);
        }
    }
    let (f, l) = (
        series[0].first().map(|p| p.0),
        series[0].last().map(|p| p.0),
    );
    Ok((a.series.clone(), rows, f, l))
}

fn train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let (features, rows, first, last) = match &a.input {
        Some(p) => read_csv(p, &a.columns)?,
        None => read_store(&a)?,
    };
    let cfg = TrainConfig {
        window: a.window_size,
        hidden: a.hidden,
        epochs: a.epochs,
        batch: a.batch_size,
        seed: a.seed,
        ..TrainConfig::default()
    };
    let started = Instant::now();
    let mut m = GruAutoencoder::train(&rows, features, (first, last), &cfg)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = m.save(&a.out).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = &m.meta.training;
    println!(
        "trained GRU autoencoder: {} features {:?}, window {}, hidden {}, {} rows -> {} windows, {} epochs in {:.1} s",
        m.meta.features.len(),
        m.meta.features,
        m.meta.window,
        m.meta.hidden,
        t.rows,
        t.windows,
        t.epochs,
        started.elapsed().as_secs_f64()
    );
    println!(
        "final loss {:.4}; reconstruction error mean {:.4}, p99 {:.4}",
        t.final_loss, t.error_mean, t.error_p99
    );
    println!(
        "saved {}/model.safetensors (sha256 {hash}) and model.json",
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct BenchArgs {
    /// Points per run for each detector.
    #[arg(long, default_value_t = 1_000_000)]
    points: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Requests for the `/predict`-over-HTTP latency (p50/p99).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
}

fn series(n: usize) -> Vec<(i64, f64)> {
    (0..n)
        .map(|i| {
            let t = i as i64 * 60_000;
            let day = (t % 86_400_000) as f64 / 86_400_000.0 * std::f64::consts::TAU;
            let mut h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
            let noise = (h % 1000) as f64 / 1000.0;
            let spike = if i % 5000 == 4999 { 15.0 } else { 0.0 };
            (t, 20.0 + 5.0 * day.sin() + noise + spike)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The robust z as first written (sort the window for every point): the peer of `robust_z`.
struct NaiveRobustZ {
    buf: std::collections::VecDeque<f64>,
}

impl Detector for NaiveRobustZ {
    fn name(&self) -> &'static str {
        "robust_z_naive"
    }
    fn score(&mut self, _: i64, x: f64) -> f64 {
        let mut v: Vec<f64> = self.buf.iter().copied().collect();
        let s = if v.len() >= 3 {
            v.sort_by(f64::total_cmp);
            let med = v[v.len() / 2];
            let mut d: Vec<f64> = v.iter().map(|y| (y - med).abs()).collect();
            d.sort_by(f64::total_cmp);
            let z = (x - med).abs() / (1.4826 * d[d.len() / 2]).max(1e-12);
            z / (z + 3.5)
        } else {
            0.0
        };
        if self.buf.len() == 120 {
            self.buf.pop_front();
        }
        self.buf.push_back(x);
        s
    }
}

pub fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let runs = a.runs.max(1);
    println!(
        "bench detect: one thread, {} points per run (fewer for the slow ones), median of {runs} runs",
        a.points
    );
    let data = series(a.points);
    let ae = {
        let rows: Vec<Vec<f64>> = data[..3000].iter().map(|p| vec![p.1]).collect();
        let cfg = TrainConfig {
            epochs: 5,
            max_windows: 500,
            ..TrainConfig::default()
        };
        GruAutoencoder::train(&rows, vec!["value".into()], (None, None), &cfg)
            .map_err(|e| anyhow::anyhow!("{e}"))?
    };
    let ae_dir = tempfile::tempdir()?;
    let mut ae = ae;
    ae.save(ae_dir.path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    type Make = Box<dyn Fn() -> Box<dyn Detector>>;
    let dir = ae_dir.path().to_path_buf();
    let cases: Vec<(&str, usize, Make)> = vec![
        (
            "robust_z (window 120)",
            a.points,
            Box::new(|| fieldlab_detect::build("robust_z").unwrap()),
        ),
        (
            "  peer: naive sort per point",
            a.points / 10,
            Box::new(|| {
                Box::new(NaiveRobustZ {
                    buf: Default::default(),
                }) as Box<dyn Detector>
            }),
        ),
        (
            "ewma",
            a.points,
            Box::new(|| fieldlab_detect::build("ewma").unwrap()),
        ),
        (
            "seasonal",
            a.points,
            Box::new(|| fieldlab_detect::build("seasonal").unwrap()),
        ),
        (
            "sequence (NAB default)",
            a.points,
            Box::new(|| fieldlab_detect::build("sequence:probation=100").unwrap()),
        ),
        (
            "iforest (50 trees)",
            a.points / 10,
            Box::new(|| fieldlab_detect::build("iforest").unwrap()),
        ),
        (
            "autoencoder (GRU 16, window 30)",
            a.points / 100,
            Box::new(move || {
                Box::new(fieldlab_detect::autoencoder::OnlineAutoencoder::with_model(
                    GruAutoencoder::load(&dir).expect("saved above"),
                )) as Box<dyn Detector>
            }),
        ),
        (
            "ensemble",
            a.points / 10,
            Box::new(|| fieldlab_detect::build("ensemble").unwrap()),
        ),
        (
            "ensemble + autoencoder",
            a.points / 100,
            Box::new(|| fieldlab_detect::build("ensemble:ae=1").unwrap()),
        ),
    ];
    let mut peer = (0.0, 0.0);
    for (name, n, make) in &cases {
        let n = (*n).max(1000).min(data.len());
        let mut rates = Vec::new();
        for _ in 0..runs {
            let mut d = make();
            let t0 = Instant::now();
            let mut acc = 0.0;
            for &(t, x) in &data[..n] {
                acc += d.score(t, x);
            }
            std::hint::black_box(acc);
            rates.push(n as f64 / t0.elapsed().as_secs_f64());
        }
        let r = median(rates);
        if name.starts_with("robust_z") {
            peer.0 = r;
        } else if name.contains("peer") {
            peer.1 = r;
        }
        println!("  {name:<34} {r:>14.0} points/s");
    }
    if peer.1 > 0.0 {
        println!("  robust_z vs its naive peer: {:.1}x", peer.0 / peer.1);
    }
    // /predict on a 30x3 window (in-process: validation + scoring, no HTTP)
    let rows: Vec<Vec<Option<f64>>> = data[..30]
        .iter()
        .map(|p| vec![Some(p.1), Some(p.1 * 2.0), Some(-p.1)])
        .collect();
    for method in ["ensemble", "autoencoder"] {
        let req = fieldlab_watch::predict::PredictRequest {
            data: rows.clone(),
            window_size: Some(30),
            method: Some(method.into()),
            threshold: None,
            run_async: false,
        };
        let model = if method == "autoencoder" {
            let r3: Vec<Vec<f64>> = data[..2000]
                .iter()
                .map(|p| vec![p.1, p.1 * 2.0, -p.1])
                .collect();
            let cfg = TrainConfig {
                epochs: 2,
                max_windows: 200,
                ..TrainConfig::default()
            };
            Some(
                GruAutoencoder::train(
                    &r3,
                    vec!["a".into(), "b".into(), "c".into()],
                    (None, None),
                    &cfg,
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            )
        } else {
            None
        };
        let mut lat = Vec::new();
        for _ in 0..(runs * 200) {
            let t0 = Instant::now();
            let r = fieldlab_watch::predict::predict(&req, model.as_ref(), 30, 0.9)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            std::hint::black_box(r);
            lat.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "  /predict 30x3 method={method:<12} median {:>8.1} µs (in-process, without HTTP)",
            median(lat)
        );
    }
    predict_over_http(&rows, a.requests)?;
    Ok(ExitCode::SUCCESS)
}

/// The `p`-quantile (0..1) of sorted `v`, nearest rank.
fn quantile(v: &[f64], p: f64) -> f64 {
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// `POST /predict` with a 30x3 window over real HTTP: fieldlab's server (the same router,
/// middleware and handlers as `fieldlab up`, without auth and rate limit) on a loopback port
/// in this process, one keep-alive client sending requests one after another.
fn predict_over_http(rows: &[Vec<Option<f64>>], requests: usize) -> anyhow::Result<()> {
    use std::sync::Arc;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (store, _) = fieldlab_store::Store::open(fieldlab_store::StoreOptions::new(dir.path()))?;
    let watch = fieldlab_watch::Watch::open(dir.path(), fieldlab_watch::WatchConfig::default())?;
    let state = fieldlab_server::AppState {
        watch: Some(watch),
        ..fieldlab_server::AppState::bare(
            store,
            Arc::new(fieldlab_store::Quarantine::open(dir.path())?),
        )
    };
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(fieldlab_server::serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::blocking::Client::new();
    let url = format!("http://{addr}/predict");
    for method in ["ensemble", "robust_z"] {
        let body = serde_json::to_vec(&serde_json::json!({
            "data": rows,
            "window_size": 30,
            "method": method,
        }))?;
        let send = || -> anyhow::Result<()> {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()?;
            let st = r.status();
            let text = r.text()?;
            anyhow::ensure!(st.is_success(), "POST /predict answered {st}: {text}");
            std::hint::black_box(text);
            Ok(())
        };
        for _ in 0..requests.min(100) {
            send()?; // warm the connection and the allocator
        }
        let mut lat = Vec::with_capacity(requests);
        for _ in 0..requests.max(1) {
            let t0 = Instant::now();
            send()?;
            lat.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "  POST /predict 30x3 method={method:<9} p50 {:>8.1} µs  p99 {:>8.1} µs  over HTTP ({} requests, one keep-alive client, loopback)",
            quantile(&lat, 0.5),
            quantile(&lat, 0.99),
            lat.len()
        );
    }
    let _ = stop_tx.send(());
    rt.block_on(server)??;
    Ok(())
}
