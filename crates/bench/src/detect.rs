//! `fieldlab bench detect`: detector throughput (points/s on one thread) and `/predict`
//! latency for a 30x3 window.

use clap::Args;
use fieldlab_detect::autoencoder::{Autoencoder, TrainConfig};
use fieldlab_detect::Detector;
use std::process::ExitCode;
use std::time::Instant;

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

/// Readings fed before an autoencoder row is timed: past its training (600 readings).
const AE_WARM: usize = 700;

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

fn median(v: Vec<f64>) -> f64 {
    crate::stats::median(&v)
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

/// `fieldlab bench detect`.
pub fn cmd(a: BenchArgs) -> anyhow::Result<ExitCode> {
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
        Autoencoder::train(&rows, vec!["value".into()], (None, None), &cfg)
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
            "sequence",
            a.points,
            Box::new(|| fieldlab_detect::build("sequence:probation=100").unwrap()),
        ),
        (
            "trend",
            a.points,
            Box::new(|| fieldlab_detect::build("trend").unwrap()),
        ),
        (
            "iforest (50 trees)",
            a.points / 10,
            Box::new(|| fieldlab_detect::build("iforest").unwrap()),
        ),
        (
            "autoencoder (GRU 16, window 30)",
            a.points / 10,
            Box::new(move || {
                Box::new(fieldlab_detect::autoencoder::OnlineAutoencoder::with_model(
                    Autoencoder::load(&dir).expect("saved above"),
                )) as Box<dyn Detector>
            }),
        ),
        (
            "ensemble without autoencoder (ae=0)",
            a.points / 10,
            Box::new(|| fieldlab_detect::build("ensemble:ae=0").unwrap()),
        ),
        (
            "ensemble, live default (trained)",
            a.points / 10,
            Box::new(|| fieldlab_detect::build_live("ensemble").unwrap()),
        ),
    ];
    // Detectors that train on their first readings (the ensemble's autoencoder) are timed
    // after that: the training, once per series, is timed on its own below.
    let warm = |name: &str| {
        if name.contains("trained") {
            AE_WARM
        } else {
            0
        }
    };
    let mut peer = (0.0, 0.0);
    for (name, n, make) in &cases {
        let skip = warm(name);
        let n = (*n).max(1000).min(data.len() - skip);
        let mut rates = Vec::new();
        for _ in 0..runs {
            let mut d = make();
            let mut acc = 0.0;
            for &(t, x) in &data[..skip] {
                acc += d.score(t, x);
            }
            let t0 = Instant::now();
            for &(t, x) in &data[skip..skip + n] {
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
    // The online autoencoder's training, once per series (600 readings, inline).
    let mut secs = Vec::new();
    for _ in 0..runs {
        let mut d = fieldlab_detect::build("autoencoder").unwrap();
        let t0 = Instant::now();
        for &(t, x) in &data[..AE_WARM] {
            d.score(t, x);
        }
        secs.push(t0.elapsed().as_secs_f64());
    }
    println!(
        "  autoencoder training, once per series (first {AE_WARM} readings): median {:.2} s",
        median(secs)
    );
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
                Autoencoder::train(
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
        let mut lat = crate::stats::Latencies::default();
        for _ in 0..requests.max(1) {
            let t0 = Instant::now();
            send()?;
            lat.record(t0.elapsed());
        }
        println!(
            "  POST /predict 30x3 method={method:<9} p50 {:>8.1} µs  p99 {:>8.1} µs  over HTTP ({} requests, one keep-alive client, loopback)",
            lat.quantile_us(0.5),
            lat.quantile_us(0.99),
            lat.len()
        );
    }
    let _ = stop_tx.send(());
    rt.block_on(server)??;
    Ok(())
}
