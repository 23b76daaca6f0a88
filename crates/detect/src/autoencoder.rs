//! An LSTM or GRU autoencoder over windows (the legacy model's window: 30), trained with candle
//! on the CPU.
//!
//! The encoder RNN reads a window of scaled feature rows and keeps its last hidden state; the
//! decoder RNN unrolls that state back into a window and a linear layer maps it to features.
//! The recurrent cell is a choice ([`Cell`]): LSTM, as the legacy system described its model,
//! or GRU (fewer weights, the default of earlier versions and of saved models without `cell`).
//! The reconstruction error (mean squared, in scaled units) is the anomaly signal: windows
//! unlike the training data reconstruct badly.
//!
//! Training uses candle (autograd, AdamW). Scoring one window at a time through candle costs
//! thousands of tiny tensor dispatches, so [`Autoencoder::window_error`] runs the same
//! forward pass by hand on the extracted weights (a few thousand multiply-adds for 16 hidden
//! units); a test pins it to candle's forward pass.
//!
//! A model is saved as `model.safetensors` plus `model.json` (window, hidden size, feature
//! names, scaler, training range, final loss, and the SHA-256 of the weights, checked on load).

use crate::recurrent::{Forward, Layer, Scratch};
use crate::stats::squash;
use crate::Detector;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::rnn::{GRUConfig, LSTMConfig, RNN};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc::{
    channel, sync_channel, Receiver, Sender, SyncSender, TryRecvError, TrySendError,
};
use std::sync::{Arc, Mutex, OnceLock};

/// What went wrong with a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("model file {path}: {msg}")]
    File { path: String, msg: String },
    #[error("{0}")]
    Invalid(String),
}

/// Per-feature standardisation learnt from the training data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scaler {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// The recurrent cell of the encoder and decoder.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Cell {
    /// Gated recurrent unit: three gates, one state.
    #[default]
    Gru,
    /// Long short-term memory: four gates, hidden and cell state.
    Lstm,
}

impl Cell {
    /// Gates per hidden unit (rows of the weight matrices per hidden unit).
    pub(crate) fn gates(self) -> usize {
        match self {
            Cell::Gru => 3,
            Cell::Lstm => 4,
        }
    }

    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Everything needed to use (and trust) a saved model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelMeta {
    pub format: String,
    /// Absent in models saved before the choice existed: GRU.
    #[serde(default)]
    pub cell: Cell,
    pub window: usize,
    pub hidden: usize,
    pub features: Vec<String>,
    pub scaler: Scaler,
    /// Training rows, first and last timestamp (ms, when known), epochs and final loss.
    pub training: TrainingInfo,
    /// SHA-256 (hex) of `model.safetensors`.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainingInfo {
    pub rows: usize,
    pub windows: usize,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub epochs: usize,
    pub final_loss: f64,
    /// Mean and 99th percentile of the training windows' reconstruction error.
    pub error_mean: f64,
    pub error_p99: f64,
}

/// The format of `model.json`; models of format 1 (GRU only, no `cell`) still load.
pub const FORMAT: &str = "fieldlab-autoencoder/2";
const FORMAT_1: &str = "fieldlab-gru-autoencoder/1";

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub cell: Cell,
    pub window: usize,
    pub hidden: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Use at most this many windows (evenly spaced) to bound training time.
    pub max_windows: usize,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            cell: Cell::Gru,
            window: 30,
            hidden: 16,
            epochs: 20,
            batch: 32,
            lr: 0.01,
            max_windows: 2000,
            seed: 1,
        }
    }
}

/// Encoder and decoder of one cell type.
enum Rnns {
    Gru(candle_nn::GRU, candle_nn::GRU),
    Lstm(candle_nn::LSTM, candle_nn::LSTM),
}

struct Net {
    rnns: Rnns,
    out: candle_nn::Linear,
    hidden: usize,
}

/// `rnn.seq` over `x`: the last hidden state of the encoder, or all hidden states of the
/// decoder as one (batch, window, hidden) tensor.
fn run<R: RNN>(
    rnn: &R,
    x: &Tensor,
    all: bool,
    last_h: impl Fn(&R::State) -> Tensor,
) -> candle_core::Result<Tensor> {
    let states = rnn.seq(x)?;
    if all {
        rnn.states_to_tensor(&states)
    } else {
        Ok(last_h(states.last().expect("window >= 1")))
    }
}

impl Net {
    fn new(vb: VarBuilder, cell: Cell, features: usize, hidden: usize) -> candle_core::Result<Net> {
        let rnns = match cell {
            Cell::Gru => Rnns::Gru(
                candle_nn::rnn::gru(features, hidden, GRUConfig::default(), vb.pp("enc"))?,
                candle_nn::rnn::gru(hidden, hidden, GRUConfig::default(), vb.pp("dec"))?,
            ),
            Cell::Lstm => Rnns::Lstm(
                candle_nn::rnn::lstm(features, hidden, LSTMConfig::default(), vb.pp("enc"))?,
                candle_nn::rnn::lstm(hidden, hidden, LSTMConfig::default(), vb.pp("dec"))?,
            ),
        };
        Ok(Net {
            rnns,
            out: candle_nn::linear(hidden, features, vb.pp("out"))?,
            hidden,
        })
    }

    /// (batch, window, features) -> reconstruction of the same shape.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, w, _) = x.dims3()?;
        let repeat = |z: Tensor| -> candle_core::Result<Tensor> {
            z.unsqueeze(1)?
                .broadcast_as((b, w, self.hidden))?
                .contiguous()
        };
        let hs = match &self.rnns {
            Rnns::Gru(enc, dec) => {
                let z = run(enc, x, false, |s| s.h().clone())?;
                run(dec, &repeat(z)?, true, |s| s.h().clone())?
            }
            Rnns::Lstm(enc, dec) => {
                let z = run(enc, x, false, |s| s.h().clone())?;
                run(dec, &repeat(z)?, true, |s| s.h().clone())?
            }
        };
        self.out.forward(&hs.reshape((b, w, self.hidden))?)
    }
}

/// 0.5 at three times the training windows' 99th percentile error, 0.8 at six times.
fn error_score(err: f64, p99: f64) -> f64 {
    squash(err, 3.0 * p99.max(1e-9))
}

/// The part of a trained single-feature model that scores: the hand-written forward pass,
/// the scaler and the training error (about 11 KB for 16 hidden units).
#[derive(Debug, Clone)]
pub struct Scorer {
    fast: Forward,
    scaler: Scaler,
    error_p99: f64,
}

impl Scorer {
    /// Score in `[0, 1]` of the window of raw single-feature `values` ([`Autoencoder::error_score`]).
    fn score(&self, values: impl Iterator<Item = f64>, xs: &mut Vec<f32>, s: &mut Scratch) -> f64 {
        let (m, sd) = (self.scaler.mean[0], self.scaler.std[0]);
        xs.clear();
        xs.extend(values.map(|v| ((v - m) / sd) as f32));
        error_score(self.fast.window_error(xs, s), self.error_p99)
    }
}

/// A trained autoencoder.
pub struct Autoencoder {
    varmap: VarMap,
    net: Net,
    pub meta: ModelMeta,
    fast: Forward,
}

fn tensor_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

fn named(varmap: &VarMap, name: &str) -> Result<Vec<f32>, ModelError> {
    let data = varmap.data().lock().expect("varmap lock");
    let v = data
        .get(name)
        .ok_or_else(|| ModelError::Invalid(format!("weight `{name}` missing")))?;
    Ok(tensor_vec(v.as_tensor())?)
}

fn layer(
    varmap: &VarMap,
    cell: Cell,
    p: &str,
    input: usize,
    hidden: usize,
) -> Result<Layer, ModelError> {
    Ok(Layer::from_rows(
        cell,
        input,
        hidden,
        &named(varmap, &format!("{p}.weight_ih_l0"))?,
        &named(varmap, &format!("{p}.weight_hh_l0"))?,
        named(varmap, &format!("{p}.bias_ih_l0"))?,
        named(varmap, &format!("{p}.bias_hh_l0"))?,
    ))
}

/// Windows (stride 1, at most `max` evenly spaced) of scaled rows, flattened.
fn windows(rows: &[Vec<f32>], window: usize, max: usize) -> Vec<f32> {
    let n = rows.len() + 1 - window;
    let step = n.div_ceil(max.max(1)).max(1);
    let mut out = Vec::new();
    for s in (0..n).step_by(step) {
        for r in &rows[s..s + window] {
            out.extend_from_slice(r);
        }
    }
    out
}

impl Autoencoder {
    fn assemble(varmap: VarMap, meta: ModelMeta) -> Result<Self, ModelError> {
        let f = meta.features.len();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = Net::new(vb, meta.cell, f, meta.hidden)?;
        let fast = Forward {
            enc: layer(&varmap, meta.cell, "enc", f, meta.hidden)?,
            dec: layer(&varmap, meta.cell, "dec", meta.hidden, meta.hidden)?,
            out_w: named(&varmap, "out.weight")?,
            out_b: named(&varmap, "out.bias")?,
            hidden: meta.hidden,
            features: f,
        };
        Ok(Autoencoder {
            varmap,
            net,
            meta,
            fast,
        })
    }

    /// Train on `rows` (each row one value per feature, in time order).
    pub fn train(
        rows: &[Vec<f64>],
        features: Vec<String>,
        time_range: (Option<i64>, Option<i64>),
        cfg: &TrainConfig,
    ) -> Result<Self, ModelError> {
        let f = features.len();
        if f == 0 || cfg.window < 2 || cfg.hidden == 0 || cfg.epochs == 0 {
            return Err(ModelError::Invalid(
                "need at least one feature, window >= 2, hidden >= 1, epochs >= 1".into(),
            ));
        }
        if rows.len() < cfg.window + 1 {
            return Err(ModelError::Invalid(format!(
                "{} rows are fewer than window {} + 1",
                rows.len(),
                cfg.window
            )));
        }
        if let Some((i, r)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != f || r.iter().any(|v| !v.is_finite()))
        {
            return Err(ModelError::Invalid(format!(
                "row {i} has {} values (want {f}) or a non-finite value",
                r.len()
            )));
        }
        let mut mean = vec![0.0; f];
        let mut std = vec![0.0; f];
        for r in rows {
            for j in 0..f {
                mean[j] += r[j] / rows.len() as f64;
            }
        }
        for r in rows {
            for j in 0..f {
                std[j] += (r[j] - mean[j]).powi(2) / rows.len() as f64;
            }
        }
        for s in &mut std {
            *s = s.sqrt().max(1e-9);
        }
        let scaler = Scaler { mean, std };
        let scaled: Vec<Vec<f32>> = rows.iter().map(|r| scale(&scaler, r)).collect();
        let flat = windows(&scaled, cfg.window, cfg.max_windows);
        let n = flat.len() / (cfg.window * f);

        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = Net::new(vb, cfg.cell, f, cfg.hidden)?;
        seeded_init(&varmap, cfg.cell, cfg.seed)?;
        let data = Tensor::from_vec(flat, (n, cfg.window, f), &Device::Cpu)?;
        let mut opt = candle_nn::AdamW::new(
            varmap.all_vars(),
            candle_nn::ParamsAdamW {
                lr: cfg.lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let mut order: Vec<usize> = (0..n).collect();
        let mut final_loss = f64::NAN;
        for _ in 0..cfg.epochs {
            for i in (1..n).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            let (mut sum, mut count) = (0.0, 0);
            for chunk in order.chunks(cfg.batch.max(1)) {
                let idx = Tensor::from_vec(
                    chunk.iter().map(|i| *i as u32).collect::<Vec<_>>(),
                    chunk.len(),
                    &Device::Cpu,
                )?;
                let x = data.index_select(&idx, 0)?;
                let loss = (net.forward(&x)? - &x)?.sqr()?.mean_all()?;
                opt.backward_step(&loss)?;
                sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
                count += chunk.len();
            }
            final_loss = sum / count as f64;
        }
        drop(net);
        let meta = ModelMeta {
            format: FORMAT.into(),
            cell: cfg.cell,
            window: cfg.window,
            hidden: cfg.hidden,
            features,
            scaler,
            training: TrainingInfo {
                rows: rows.len(),
                windows: n,
                from_ms: time_range.0,
                to_ms: time_range.1,
                epochs: cfg.epochs,
                final_loss,
                error_mean: 0.0,
                error_p99: 0.0,
            },
            sha256: String::new(),
        };
        let mut model = Self::assemble(varmap, meta)?;
        let mut errs: Vec<f64> = (0..=rows.len() - cfg.window)
            .step_by(((rows.len() - cfg.window) / 2000).max(1))
            .map(|s| model.window_error_scaled(&scaled[s..s + cfg.window]))
            .collect();
        errs.sort_by(f64::total_cmp);
        model.meta.training.error_mean = errs.iter().sum::<f64>() / errs.len() as f64;
        model.meta.training.error_p99 = errs[((errs.len() - 1) as f64 * 0.99) as usize];
        Ok(model)
    }

    fn window_error_scaled(&self, w: &[Vec<f32>]) -> f64 {
        let flat: Vec<f32> = w.iter().flatten().copied().collect();
        self.fast.window_error(&flat, &mut Scratch::default())
    }

    /// Mean squared reconstruction error (scaled units) of one window of raw rows.
    pub fn window_error(&self, rows: &[Vec<f64>]) -> f64 {
        let flat: Vec<f32> = rows
            .iter()
            .flat_map(|r| scale(&self.meta.scaler, r))
            .collect();
        self.fast.window_error(&flat, &mut Scratch::default())
    }

    /// What scoring needs, without candle's copy of the weights (the online detector keeps
    /// only this).
    pub fn scorer(&self) -> Scorer {
        Scorer {
            fast: self.fast.clone(),
            scaler: self.meta.scaler.clone(),
            error_p99: self.meta.training.error_p99,
        }
    }

    /// Score in `[0, 1]` for an error: 0.5 at three times the training p99, 0.8 at six times.
    pub fn error_score(&self, err: f64) -> f64 {
        error_score(err, self.meta.training.error_p99)
    }

    /// Candle's own forward pass for a batch of raw windows (used to check the fast path).
    pub fn window_errors_candle(&self, batch: &[Vec<Vec<f64>>]) -> Result<Vec<f64>, ModelError> {
        let (w, f) = (self.meta.window, self.meta.features.len());
        let mut flat = Vec::with_capacity(batch.len() * w * f);
        for win in batch {
            for r in win {
                flat.extend(scale(&self.meta.scaler, r));
            }
        }
        let x = Tensor::from_vec(flat, (batch.len(), w, f), &Device::Cpu)?;
        let e = (self.net.forward(&x)? - &x)?
            .sqr()?
            .mean(D::Minus1)?
            .mean(D::Minus1)?;
        Ok(tensor_vec(&e)?.into_iter().map(f64::from).collect())
    }

    /// Save to `dir/model.safetensors` and `dir/model.json`; returns the weights' SHA-256.
    pub fn save(&mut self, dir: &Path) -> Result<String, ModelError> {
        let ferr = |e: std::io::Error| ModelError::File {
            path: dir.display().to_string(),
            msg: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(ferr)?;
        let weights = dir.join("model.safetensors");
        self.varmap.save(&weights)?;
        let bytes = std::fs::read(&weights).map_err(ferr)?;
        self.meta.sha256 = hex(&Sha256::digest(&bytes));
        let json = serde_json::to_string_pretty(&self.meta).expect("meta serialises");
        std::fs::write(dir.join("model.json"), json).map_err(ferr)?;
        Ok(self.meta.sha256.clone())
    }

    /// Load a saved model, refusing weights whose hash differs from the metadata.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let meta_path = dir.join("model.json");
        let ferr = |p: &Path, msg: String| ModelError::File {
            path: p.display().to_string(),
            msg,
        };
        let text =
            std::fs::read_to_string(&meta_path).map_err(|e| ferr(&meta_path, e.to_string()))?;
        let meta: ModelMeta =
            serde_json::from_str(&text).map_err(|e| ferr(&meta_path, e.to_string()))?;
        if meta.format != FORMAT && !(meta.format == FORMAT_1 && meta.cell == Cell::Gru) {
            return Err(ferr(
                &meta_path,
                format!("format `{}`, expected `{FORMAT}`", meta.format),
            ));
        }
        let wpath = dir.join("model.safetensors");
        let bytes = std::fs::read(&wpath).map_err(|e| ferr(&wpath, e.to_string()))?;
        let got = hex(&Sha256::digest(&bytes));
        if got != meta.sha256 {
            return Err(ferr(
                &wpath,
                format!(
                    "SHA-256 {got} does not match model.json ({}); retrain or restore the file",
                    meta.sha256
                ),
            ));
        }
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        drop(Net::new(vb, meta.cell, meta.features.len(), meta.hidden)?);
        varmap.load(&wpath)?;
        Self::assemble(varmap, meta)
    }
}

fn scale(s: &Scaler, r: &[f64]) -> Vec<f32> {
    r.iter()
        .enumerate()
        .map(|(j, v)| ((v - s.mean[j]) / s.std[j]) as f32)
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic initialisation (candle's CPU RNG cannot be seeded): uniform in
/// `±1/sqrt(fan_in)` as PyTorch does for recurrent and linear layers, variables in name order.
fn seeded_init(varmap: &VarMap, cell: Cell, seed: u64) -> Result<(), ModelError> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.as_tensor().dims().to_vec();
        let fan_in = if dims.len() == 2 {
            dims[1]
        } else {
            dims[0] / cell.gates()
        }
        .max(1);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
        var.set(&Tensor::from_vec(v, dims, &Device::Cpu)?)?;
    }
    Ok(())
}

/// Settings of the online (self-training) detector.
#[derive(Debug, Clone)]
pub struct OnlineConfig {
    pub cell: Cell,
    pub window: usize,
    pub hidden: usize,
    pub epochs: usize,
    /// Points collected before the model is trained (nothing scores before).
    pub train_after: usize,
    pub seed: u64,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            cell: Cell::Gru,
            window: 30,
            hidden: 16,
            epochs: 20,
            train_after: 600,
            seed: 1,
        }
    }
}

/// Train on one thread. Candle's CPU matrix product asks rayon for a thread count at every
/// call, and without `RAYON_NUM_THREADS` that parses `/proc/cpuinfo` each time: more than half
/// of a series' training time went to it (3.7 s against 1.3 s, `fieldlab bench detect`), and
/// a 16-unit model's products are too small to share out anyway. One thread also makes a
/// trained model the same on every machine. Sets `RAYON_NUM_THREADS=1` unless the user set
/// it; call at the start of `main`, before any thread exists (changing the environment is
/// only sound then).
pub fn train_on_one_thread() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

/// Where the online detectors train. Inline by default: deterministic, and what `nab run`,
/// the bench and the tests use. The live lab calls [`train_in_background`]: training takes
/// seconds of CPU, and a series reaching its training point must not stall the ingest of all
/// the others.
static TRAINER: OnceLock<SyncSender<Job>> = OnceLock::new();

struct Job {
    values: Vec<f64>,
    range: (Option<i64>, Option<i64>),
    cfg: TrainConfig,
    done: Sender<Option<Scorer>>,
}

/// Train online autoencoders on `threads` background threads from now on, with at most
/// `queue` series waiting (a series finding the queue full keeps its training data and asks
/// again at its next reading; it scores 0 until its model arrives, as before training).
/// Only the first call counts.
pub fn train_in_background(threads: usize, queue: usize) {
    TRAINER.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("ae-train-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let scorer = train_series(&job.values, job.range, &job.cfg);
                    // The series may be gone (evicted) by now: nobody to tell.
                    let _ = job.done.send(scorer);
                })
                .expect("spawn a training thread");
        }
        tx
    });
}

/// Train a single-feature model on one series' `values`: its [`Scorer`], or `None` when it
/// cannot train (the reason is logged at debug level).
fn train_series(
    values: &[f64],
    range: (Option<i64>, Option<i64>),
    cfg: &TrainConfig,
) -> Option<Scorer> {
    let rows: Vec<Vec<f64>> = values.iter().map(|v| vec![*v]).collect();
    let t0 = std::time::Instant::now();
    match Autoencoder::train(&rows, vec!["value".into()], range, cfg) {
        Ok(m) => {
            tracing::debug!(
                secs = t0.elapsed().as_secs_f64(),
                loss = m.meta.training.final_loss,
                "a series' autoencoder is trained"
            );
            Some(m.scorer())
        }
        Err(e) => {
            tracing::debug!(error = %e, "a series' autoencoder failed to train");
            None
        }
    }
}

/// A univariate streaming detector: collects `train_after` points, trains the autoencoder on
/// them once (inline, or in the background after [`train_in_background`]), then scores the
/// window ending at every new point. Or starts from a trained model.
pub struct OnlineAutoencoder {
    cfg: OnlineConfig,
    model: Option<Scorer>,
    /// The background training's answer, while it is awaited.
    pending: Option<Receiver<Option<Scorer>>>,
    first: Vec<f64>,
    first_ts: (Option<i64>, Option<i64>),
    recent: VecDeque<f64>,
    xs: Vec<f32>,
    scratch: Scratch,
    failed: bool,
}

impl OnlineAutoencoder {
    pub fn new(cfg: OnlineConfig) -> Self {
        OnlineAutoencoder {
            recent: VecDeque::with_capacity(cfg.window),
            first: Vec::with_capacity(cfg.train_after),
            first_ts: (None, None),
            xs: Vec::with_capacity(cfg.window),
            scratch: Scratch::default(),
            cfg,
            model: None,
            pending: None,
            failed: false,
        }
    }

    /// Start from a trained single-feature model.
    pub fn with_model(model: Autoencoder) -> Self {
        let cfg = OnlineConfig {
            cell: model.meta.cell,
            window: model.meta.window,
            hidden: model.meta.hidden,
            ..OnlineConfig::default()
        };
        let mut d = OnlineAutoencoder::new(cfg);
        d.model = Some(model.scorer());
        d
    }

    /// Whether a model scores (trained, or given).
    pub fn trained(&self) -> bool {
        self.model.is_some()
    }

    fn train(&mut self) {
        let cfg = TrainConfig {
            cell: self.cfg.cell,
            window: self.cfg.window,
            hidden: self.cfg.hidden,
            epochs: self.cfg.epochs,
            seed: self.cfg.seed,
            ..TrainConfig::default()
        };
        match TRAINER.get() {
            Some(trainer) => {
                let (done, answer) = channel();
                let job = Job {
                    values: std::mem::take(&mut self.first),
                    range: self.first_ts,
                    cfg,
                    done,
                };
                match trainer.try_send(job) {
                    Ok(()) => self.pending = Some(answer),
                    Err(TrySendError::Full(job)) => {
                        self.first = job.values; // again at the next reading
                        return;
                    }
                    Err(TrySendError::Disconnected(_)) => self.failed = true,
                }
            }
            None => {
                self.model = train_series(&self.first, self.first_ts, &cfg);
                self.failed = self.model.is_none();
            }
        }
        self.first = Vec::new(); // bounded: the training buffer is released
    }
}

impl Detector for OnlineAutoencoder {
    fn name(&self) -> &'static str {
        "autoencoder"
    }

    fn score(&mut self, ts: i64, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        // Trained when the model is first needed, not after the reading that completes the
        // training data: the same scores, and a series that ends there trains for nothing.
        if self.model.is_none()
            && self.pending.is_none()
            && !self.failed
            && self.first.len() >= self.cfg.train_after
        {
            self.train();
        }
        if let Some(answer) = &self.pending {
            match answer.try_recv() {
                Ok(m) => {
                    self.failed = m.is_none();
                    self.model = m;
                    self.pending = None;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    self.failed = true;
                    self.pending = None;
                }
            }
        }
        let w = self.cfg.window;
        let s = match &self.model {
            Some(m) if self.recent.len() + 1 >= w => {
                let past = self.recent.iter().skip(self.recent.len() + 1 - w).copied();
                m.score(past.chain([x]), &mut self.xs, &mut self.scratch)
            }
            _ => 0.0,
        };
        if self.recent.len() == w {
            self.recent.pop_front();
        }
        self.recent.push_back(x);
        if self.model.is_none()
            && self.pending.is_none()
            && !self.failed
            && self.first.len() < self.cfg.train_after
        {
            self.first_ts.0.get_or_insert(ts);
            self.first_ts.1 = Some(ts);
            self.first.push(x);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine_rows(n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|i| {
                let t = i as f64 / 24.0 * std::f64::consts::TAU;
                vec![t.sin(), (t * 0.5).cos() * 2.0 + 5.0]
            })
            .collect()
    }

    #[test]
    fn trains_saves_loads_and_flags_an_odd_window() {
        for cell in [Cell::Gru, Cell::Lstm] {
            trains_saves_loads_and_flags_an_odd_window_with(cell);
        }
    }

    fn trains_saves_loads_and_flags_an_odd_window_with(cell: Cell) {
        let rows = sine_rows(600);
        let cfg = TrainConfig {
            cell,
            window: 30,
            hidden: 12,
            epochs: 15,
            max_windows: 300,
            ..TrainConfig::default()
        };
        let mut m = Autoencoder::train(
            &rows,
            vec!["a".into(), "b".into()],
            (Some(0), Some(599)),
            &cfg,
        )
        .unwrap();
        assert!(
            m.meta.training.final_loss < 0.5,
            "{cell:?}: {:?}",
            m.meta.training
        );
        // the hand-written forward pass agrees with candle's
        let wins: Vec<Vec<Vec<f64>>> = (0..4).map(|s| rows[s * 50..s * 50 + 30].to_vec()).collect();
        let by_candle = m.window_errors_candle(&wins).unwrap();
        for (w, c) in wins.iter().zip(&by_candle) {
            let fast = m.window_error(w);
            assert!(
                (fast - c).abs() <= 1e-4 * c.max(1e-3),
                "{cell:?}: {fast} vs {c}"
            );
        }
        let normal = m.window_error(&rows[100..130]);
        let mut odd = rows[100..130].to_vec();
        for r in &mut odd[10..14] {
            r[0] += 4.0;
        }
        assert!(
            m.window_error(&odd) > 3.0 * normal,
            "{cell:?}: {} vs {normal}",
            m.window_error(&odd)
        );

        let dir = tempfile::tempdir().unwrap();
        let hash = m.save(dir.path()).unwrap();
        assert_eq!(hash.len(), 64);
        let back = Autoencoder::load(dir.path()).unwrap();
        assert_eq!(
            (
                back.meta.sha256.as_str(),
                back.meta.window,
                &back.meta.features
            ),
            (m.meta.sha256.as_str(), m.meta.window, &m.meta.features)
        );
        assert_eq!(back.meta.cell, cell);
        assert_eq!(back.window_error(&odd), m.window_error(&odd));
        // a tampered weights file is refused
        let p = dir.path().join("model.safetensors");
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&p, b).unwrap();
        let e = Autoencoder::load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("does not match"), "{e}");
    }

    /// A model.json of format 1 (GRU, no `cell`) still loads, as a GRU.
    #[test]
    fn format_1_models_load_as_gru() {
        let rows = sine_rows(100);
        let cfg = TrainConfig {
            window: 10,
            hidden: 4,
            epochs: 1,
            ..TrainConfig::default()
        };
        let mut m =
            Autoencoder::train(&rows, vec!["a".into(), "b".into()], (None, None), &cfg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        let p = dir.path().join("model.json");
        let mut meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        meta["format"] = FORMAT_1.into();
        meta.as_object_mut().unwrap().remove("cell");
        std::fs::write(&p, meta.to_string()).unwrap();
        let back = Autoencoder::load(dir.path()).unwrap();
        assert_eq!(back.meta.cell, Cell::Gru);
        assert_eq!(
            back.window_error(&rows[0..10]),
            m.window_error(&rows[0..10])
        );
        // Format 1 with an LSTM is no model any version wrote.
        meta["cell"] = "lstm".into();
        std::fs::write(&p, meta.to_string()).unwrap();
        assert!(Autoencoder::load(dir.path()).is_err());
    }

    /// Values at the edge of f64 (a mean or a spread that overflows) train and score without
    /// NaN: every score stays in [0, 1].
    #[test]
    fn hostile_values_keep_the_online_scores_in_the_unit_interval() {
        let edges = [1e308, -1e308, f64::MAX, f64::MIN, 0.0, 5e-324, 1e-300];
        for (k, pattern) in [
            |i: usize| [1e308, -1e308][i % 2],
            |i: usize| if i.is_multiple_of(50) { f64::MAX } else { 1.0 },
            |i: usize| (i as f64).powi(40),
        ]
        .iter()
        .enumerate()
        {
            let mut d = OnlineAutoencoder::new(OnlineConfig {
                epochs: 1,
                ..OnlineConfig::default()
            });
            for i in 0..700 {
                let x = if i >= 650 {
                    edges[i % edges.len()]
                } else {
                    pattern(i)
                };
                let s = d.score(i as i64, x);
                assert!((0.0..=1.0).contains(&s), "pattern {k}, reading {i}: {s}");
            }
        }
    }

    #[test]
    fn training_input_is_validated() {
        let cfg = TrainConfig::default();
        let e = Autoencoder::train(
            &sine_rows(10),
            vec!["a".into(), "b".into()],
            (None, None),
            &cfg,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("fewer than window"));
        let mut rows = sine_rows(100);
        rows[7][1] = f64::NAN;
        let e = Autoencoder::train(&rows, vec!["a".into(), "b".into()], (None, None), &cfg)
            .err()
            .unwrap();
        assert!(e.to_string().contains("row 7"));
    }
}
