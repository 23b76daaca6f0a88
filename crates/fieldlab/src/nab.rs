//! `fieldlab nab run|score`: the Numenta Anomaly Benchmark for fieldlab's detectors
//! (argument parsing and printing; the work is in `fieldlab-nab`).

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum NabCmd {
    /// Run a detector over NAB data files and write NAB result CSVs
    /// (`<out>/<name>/<category>/<name>_<file>.csv`: timestamp,value,anomaly_score,label).
    Run(RunArgs),
    /// Score NAB result CSVs with NAB's three profiles (threshold optimised, normalised).
    Score(ScoreArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// NAB data directory (`<category>/<file>.csv`).
    #[arg(long)]
    data: PathBuf,
    /// Where result directories are written.
    #[arg(long)]
    out: PathBuf,
    /// Detector spec: robust_z, ewma, seasonal, iforest, autoencoder, sequence, ensemble, with optional
    /// parameters (`robust_z:window=120,calibrate=1`). Run as the live lab runs it (behind the
    /// gross outlier check unless the spec sets `gross=0`); the default is the lab's default
    /// detector (`detect.default_detector`), so this scores exactly what `fieldlab up` runs.
    #[arg(long, default_value = "ensemble")]
    detector: String,
    /// Name of the result directory (default: the detector name).
    #[arg(long)]
    name: Option<String>,
    /// Labelled windows, for the label column and to score right away
    /// (default: `<data>/../labels/combined_windows.json` when it exists).
    #[arg(long)]
    labels: Option<PathBuf>,
}

#[derive(Args)]
pub struct ScoreArgs {
    /// A detector's result directory, or a directory of them (one line per detector).
    #[arg(long)]
    results: PathBuf,
    /// NAB's `combined_windows.json`.
    #[arg(long)]
    labels: PathBuf,
    /// NAB's `profiles.json` (default: NAB's three profiles built in).
    #[arg(long)]
    profiles: Option<PathBuf>,
}

pub fn run(cmd: NabCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        NabCmd::Run(a) => nab_run(a),
        NabCmd::Score(a) => nab_score(a),
    }
}

fn nab_run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = fieldlab_detect::Spec::parse(&a.detector)
        .map_err(|e| anyhow::anyhow!("--detector: {e}"))?;
    fieldlab_detect::build_live(&a.detector).map_err(|e| anyhow::anyhow!("--detector: {e}"))?;
    let name = a.name.clone().unwrap_or_else(|| spec.name.clone());
    let labels = a.labels.clone().or_else(|| {
        let p = a.data.join("../labels/combined_windows.json");
        p.is_file().then_some(p)
    });
    let windows = match &labels {
        Some(p) => fieldlab_nab::corpus::read_windows(p)?,
        None => Default::default(),
    };
    let out = a.out.join(&name);
    let started = std::time::Instant::now();
    // NAB hands every detector the file's probationary length; `sequence` (and the ensemble,
    // for its sequence member and warm-up) uses it as its learning period unless the spec
    // sets `probation` itself.
    let make = |rows: usize| {
        let mut spec = a.detector.clone();
        if (spec.starts_with("sequence") || spec.starts_with("ensemble"))
            && !spec.contains("probation")
        {
            let p = fieldlab_nab::score::probationary_length(rows, 0.15) as usize;
            spec.push_str(if spec.contains(':') { "," } else { ":" });
            spec.push_str(&format!("probation={p}"));
        }
        fieldlab_detect::build_live(&spec).expect("checked above")
    };
    let pb = crate::progress::bar(0, "files");
    pb.set_message(format!("nab run {name}"));
    let (files, rows) = fieldlab_nab::run::run_corpus(
        &a.data,
        &windows,
        &out,
        &name,
        &make,
        &|done, total, _file| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "nab run: {name} ({}) over {files} files, {rows} rows in {secs:.1} s ({:.0} rows/s); results in {}",
        a.detector,
        rows as f64 / secs,
        out.display()
    );
    if labels.is_some() {
        print_scores(
            &[(name, out)],
            &windows,
            &fieldlab_nab::parse_profiles(fieldlab_nab::DEFAULT_PROFILES)
                .map_err(anyhow::Error::msg)?,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn nab_score(a: ScoreArgs) -> anyhow::Result<ExitCode> {
    let windows = fieldlab_nab::corpus::read_windows(&a.labels)?;
    let profiles_text = match &a.profiles {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => fieldlab_nab::DEFAULT_PROFILES.to_string(),
    };
    let profiles = fieldlab_nab::parse_profiles(&profiles_text).map_err(anyhow::Error::msg)?;
    let dirs = result_dirs(&a.results, &windows)?;
    print_scores(&dirs, &windows, &profiles)?;
    Ok(ExitCode::SUCCESS)
}

/// `dir` itself when it holds the labels' categories, otherwise each of its subdirectories.
fn result_dirs(
    dir: &Path,
    windows: &fieldlab_nab::corpus::Windows,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let cat = windows
        .keys()
        .next()
        .and_then(|k| k.split('/').next())
        .unwrap_or_default()
        .to_string();
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    if dir.join(&cat).is_dir() {
        return Ok(vec![(name(dir), dir.to_path_buf())]);
    }
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join(&cat).is_dir())
        .map(|p| (name(&p), p))
        .collect();
    v.sort();
    if v.is_empty() {
        anyhow::bail!(
            "{}: no NAB results here (expected {cat}/<detector>_<file>.csv, or one such directory per detector)",
            dir.display()
        );
    }
    Ok(v)
}

fn print_scores(
    dirs: &[(String, PathBuf)],
    windows: &fieldlab_nab::corpus::Windows,
    profiles: &[fieldlab_nab::Profile],
) -> anyhow::Result<()> {
    let files = windows.len();
    let n_windows: usize = windows.values().map(Vec::len).sum();
    println!(
        "NAB score over {files} files, {n_windows} windows (normalised: null = 0, perfect = 100)"
    );
    print!("{:<24}", "detector");
    for p in profiles {
        print!(" {:>20}", p.name);
    }
    println!("   thresholds");
    for (name, dir) in dirs {
        let res =
            fieldlab_nab::score_results(dir, windows, profiles).map_err(anyhow::Error::msg)?;
        print!("{name:<24}");
        for r in &res {
            print!(" {:>20.1}", r.normalized);
        }
        let th: Vec<String> = res.iter().map(|r| format!("{:.4}", r.threshold)).collect();
        println!("   {}", th.join(" "));
        if std::env::var_os("FIELDLAB_NAB_VERBOSE").is_some() {
            for (f, s) in &res[0].per_file {
                println!("    {f:<60} {s:>8.3}");
            }
            let c = &res[0].counts;
            println!(
                "    standard: raw {:.3} null {:.1} perfect {:.1} tp {} fp {} fn {} tn {}",
                res[0].raw, res[0].null, res[0].perfect, c.tp, c.fp, c.fn_, c.tn
            );
        }
    }
    Ok(())
}
