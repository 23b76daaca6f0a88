//! `fieldlab detect train` (the autoencoder) and `fieldlab bench detect` (detector throughput
//! and `/predict` latency). Argument parsing, file reading and printing; the models and
//! detectors live in `fieldlab-detect` and `fieldlab-watch`.

use anyhow::Context;
use clap::{Args, Subcommand};
use fieldlab_detect::autoencoder::{Autoencoder, TrainConfig};
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
    /// Recurrent cell of the encoder and decoder: lstm (the legacy system's model) or gru.
    #[arg(long, default_value = "lstm")]
    cell: fieldlab_detect::autoencoder::Cell,
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
        cell: a.cell,
        window: a.window_size,
        hidden: a.hidden,
        epochs: a.epochs,
        batch: a.batch_size,
        seed: a.seed,
        ..TrainConfig::default()
    };
    let started = Instant::now();
    let mut m = Autoencoder::train(&rows, features, (first, last), &cfg)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = m.save(&a.out).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = &m.meta.training;
    println!(
        "trained {} autoencoder: {} features {:?}, window {}, hidden {}, {} rows -> {} windows, {} epochs in {:.1} s",
        m.meta.cell.name().to_uppercase(),
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
