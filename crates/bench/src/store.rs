//! `fieldlab bench store`: bytes per point on disk and query latency of the embedded store.
//!
//! Why it exists: the store's two promises that a unit test cannot pin down — "compact" and
//! "fast to query" — need figures measured on this machine from the real block files and the
//! real query path. Bytes/point is whole block file size (chunks + index + footer) divided by
//! points, for each synthetic generator kind, each emulator device field, and each NAB CSV.

use anyhow::Context;
use clap::Args;
use fieldlab_core::{FieldValue, SeriesKey, Tags};
use fieldlab_store::block::encode_block;
use fieldlab_store::{downsample, Agg, Store, StoreOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct BenchStoreArgs {
    /// Directory searched (recursively) for NAB-style CSVs (`timestamp,value`).
    #[arg(long, default_value = "/work/shared/data/nab/data")]
    nab: PathBuf,
    /// Points per synthetic series (1 Hz).
    #[arg(long, default_value_t = 86_400)]
    points: usize,
    /// Query repetitions for the latency figure.
    #[arg(long, default_value_t = 200)]
    queries: usize,
}

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// Sensor resolution of the synthetic series: values are reported to 0.01, as a real sensor
/// (and the emulator) would; full-precision noise is reported separately.
fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The synthetic generator kinds, `n` points at 1 Hz, seeded.
fn generators(n: usize) -> Vec<(&'static str, Vec<(i64, FieldValue)>)> {
    let mut rng = SmallRng::seed_from_u64(42);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let mut series = |f: &mut dyn FnMut(usize, &mut SmallRng) -> f64| -> Vec<(i64, FieldValue)> {
        (0..n)
            .map(|i| (T0 + i as i64 * 1000, FieldValue::F64(f(i, &mut rng))))
            .collect()
    };
    let mut walk = 20.0;
    let mut level = 50.0;
    vec![
        ("constant", series(&mut |_, _| 21.5)),
        (
            "uniform",
            series(&mut |_, r| r2(r.random_range(0.0..100.0))),
        ),
        ("gaussian", series(&mut |_, r| r2(20.0 + normal.sample(r)))),
        (
            "random_walk",
            series(&mut |_, r| {
                walk += 0.05 * normal.sample(r);
                r2(walk)
            }),
        ),
        (
            "sine",
            series(&mut |i, _| r2(20.0 + 5.0 * (i as f64 * std::f64::consts::TAU / 3600.0).sin())),
        ),
        (
            "trend",
            series(&mut |i, r| r2(10.0 + i as f64 * 0.001 + 0.02 * normal.sample(r))),
        ),
        (
            "step",
            series(&mut |i, r| {
                if i % 600 == 0 {
                    level = (r.random_range(0..10) * 10) as f64;
                }
                level
            }),
        ),
        (
            "gaussian_full_precision",
            series(&mut |_, r| 20.0 + normal.sample(r)),
        ),
    ]
}

/// Every field of every emulator device type, `n` samples at 1 Hz.
fn emulator_series(n: usize) -> Vec<(String, Vec<(i64, FieldValue)>)> {
    let mut out = Vec::new();
    let settings = fieldlab_emulator::DeviceSettings::default();
    for t in fieldlab_emulator::catalog() {
        let Some(mut m) = fieldlab_emulator::model::build(t.name, &settings) else {
            continue;
        };
        let mut rng = SmallRng::seed_from_u64(7);
        let mut fields: BTreeMap<String, Vec<(i64, FieldValue)>> = BTreeMap::new();
        for i in 0..n {
            let ts = T0 + i as i64 * 1000;
            for (k, v) in
                fieldlab_emulator::model::sample(m.as_mut(), ts, 1.0, &BTreeMap::new(), &mut rng)
            {
                fields.entry(k.to_string()).or_default().push((ts, v));
            }
        }
        for (k, v) in fields {
            out.push((format!("{}.{k}", t.name), v));
        }
    }
    out
}

fn nab_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            nab_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "csv") {
            out.push(p);
        }
    }
    Ok(())
}

/// A NAB CSV: `timestamp,value` with timestamps like `2014-04-01 00:05:00`.
fn read_nab(path: &Path) -> anyhow::Result<Vec<(i64, FieldValue)>> {
    let text = std::fs::read_to_string(path)?;
    let mut pts = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let (t, v) = line
            .split_once(',')
            .with_context(|| format!("{}:{}: expected `timestamp,value`", path.display(), n + 1))?;
        let ts = fieldlab_core::time::parse_instant_ms(&format!("{}Z", t.replacen(' ', "T", 1)), 0)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
        let v: f64 = v
            .trim()
            .parse()
            .with_context(|| format!("{}:{}: bad value", path.display(), n + 1))?;
        pts.push((ts, FieldValue::F64(v)));
    }
    pts.sort_by_key(|p| p.0);
    pts.dedup_by_key(|p| p.0);
    Ok(pts)
}

/// Bytes per point of `pts` as block files (the exact bytes `write_block` puts on disk,
/// encoded in memory to spare the fsyncs): all in one block (a compacted day), and cut every
/// 600 points (what the head writes every 10 minutes at 1 Hz, before compaction).
fn bytes_per_point(pts: &[(i64, FieldValue)]) -> anyhow::Result<(f64, f64)> {
    let key = SeriesKey::new("bench_device", "value");
    let tags = Tags {
        device_type: "BenchSensor".into(),
        ..Default::default()
    };
    let block = |p: &[(i64, FieldValue)]| -> anyhow::Result<usize> {
        Ok(encode_block(1, 0, 0, std::iter::once((&key, &tags, p)))?
            .0
            .len())
    };
    let whole = block(pts)?;
    let mut cut = 0;
    for c in pts.chunks(600) {
        cut += block(c)?;
    }
    let n = pts.len().max(1) as f64;
    Ok((whole as f64 / n, cut as f64 / n))
}

pub fn run(a: BenchStoreArgs) -> anyhow::Result<()> {
    println!("bench store: bytes/point = block file size / points (timestamps + values + index)");
    println!(
        "{:<62} {:>8} {:>12} {:>16}",
        "series", "points", "B/pt 1 block", "B/pt 600-pt blks"
    );
    let row = |name: &str, pts: &[(i64, FieldValue)]| -> anyhow::Result<f64> {
        let (whole, cut) = bytes_per_point(pts)?;
        println!("{name:<62} {:>8} {whole:>12.3} {cut:>16.3}", pts.len());
        Ok(whole)
    };
    let mut smooth = Vec::new();
    for (name, pts) in generators(a.points) {
        let b = row(&format!("generator/{name}"), &pts)?;
        if ["constant", "random_walk", "sine", "trend", "step"].contains(&name) {
            smooth.push(b);
        }
    }
    for (name, pts) in emulator_series(a.points) {
        let b = row(&format!("emulator/{name}"), &pts)?;
        smooth.push(b);
    }
    let mut files = Vec::new();
    if a.nab.is_dir() {
        nab_files(&a.nab, &mut files)?;
    } else {
        println!("(no NAB data at {}; skipped)", a.nab.display());
    }
    files.sort();
    let mut nab = Vec::new();
    for f in &files {
        let pts = read_nab(f)?;
        let name = f.strip_prefix(&a.nab).unwrap_or(f).display().to_string();
        nab.push(row(&format!("nab/{name}"), &pts)?);
    }
    println!(
        "smooth sensor series (constant, random walk, sine, trend, step, emulator fields): median {:.3} B/pt, max {:.3} B/pt (target <= 2.0)",
        median(&mut smooth),
        smooth.iter().cloned().fold(0.0, f64::max)
    );
    if !nab.is_empty() {
        println!(
            "NAB ({} files): median {:.3} B/pt",
            nab.len(),
            median(&mut nab)
        );
    }
    query_latency(a.queries)
}

/// One day of 1 Hz data downsampled to 1-minute means, through the store's query path
/// (block read, decode, merge, aggregate), repeated; prints p50 and p99.
fn query_latency(runs: usize) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (store, _) = Store::open(StoreOptions::new(tmp.path()))?;
    let mut rng = SmallRng::seed_from_u64(1);
    let normal = Normal::new(0.0, 0.05).unwrap();
    let mut walk = 20.0;
    let tags = Tags {
        device_type: "TemperatureSensor".into(),
        ..Default::default()
    };
    let key = SeriesKey::new("bench_sensor", "temperature");
    let points: Vec<fieldlab_core::Point> = (0..86_400)
        .map(|i| {
            walk += normal.sample(&mut rng);
            fieldlab_core::Point {
                key: key.clone(),
                tags: tags.clone(),
                ts_ms: T0 + i * 1000,
                value: FieldValue::F64(r2(walk)),
            }
        })
        .collect();
    rt.block_on(async {
        for c in points.chunks(10_000) {
            store.write(c.to_vec()).await.map_err(|e| e.error)?;
        }
        store.flush().await
    })?;
    let (from, to) = (T0, T0 + 86_400_000 - 1);
    let mut lat = Vec::with_capacity(runs);
    let mut buckets = 0;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let pts = store.range(&key, from, to)?;
        let out = downsample(&pts, 60_000, Agg::Mean);
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        buckets = out.len();
    }
    rt.block_on(store.close())?;
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    println!(
        "query: 1 day of 1 Hz (86400 points, from a block) -> {buckets} 1-minute means: p50 {:.3} ms, p99 {:.3} ms over {} runs (target p50 < 5 ms)",
        p(0.5),
        p(0.99),
        lat.len()
    );
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    crate::stats::median(v)
}
