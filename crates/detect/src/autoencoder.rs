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
    fn gates(self) -> usize {
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

/// Plain-f32 copy of one recurrent layer's weights for the hand-written forward pass
/// (PyTorch's and candle's layout: gate blocks of `hidden` rows, GRU r|z|n, LSTM i|f|g|o).
#[derive(Debug, Clone)]
struct RnnWeights {
    cell: Cell,
    w_ih: Vec<f32>, // (gates*H, in)
    w_hh: Vec<f32>, // (gates*H, H)
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
    input: usize,
    hidden: usize,
}

/// The state of one layer while running a window: `h`, and `c` for an LSTM; `gi`/`gh` are
/// scratch for the gate pre-activations.
struct RnnState {
    h: Vec<f32>,
    c: Vec<f32>,
    gi: Vec<f32>,
    gh: Vec<f32>,
}

impl RnnState {
    fn new(cell: Cell, hidden: usize) -> RnnState {
        RnnState {
            h: vec![0.0; hidden],
            c: vec![0.0; hidden],
            gi: vec![0.0; cell.gates() * hidden],
            gh: vec![0.0; cell.gates() * hidden],
        }
    }
}

impl RnnWeights {
    fn step(&self, x: &[f32], st: &mut RnnState) {
        let hd = self.hidden;
        let (h, gi, gh) = (&mut st.h, &mut st.gi, &mut st.gh);
        for r in 0..self.cell.gates() * hd {
            let mut a = self.b_ih[r];
            let row = &self.w_ih[r * self.input..(r + 1) * self.input];
            for (w, v) in row.iter().zip(x) {
                a += w * v;
            }
            gi[r] = a;
            let mut c = self.b_hh[r];
            let row = &self.w_hh[r * hd..(r + 1) * hd];
            for (w, v) in row.iter().zip(h.iter()) {
                c += w * v;
            }
            gh[r] = c;
        }
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        match self.cell {
            Cell::Gru => {
                for j in 0..hd {
                    let r = sig(gi[j] + gh[j]);
                    let z = sig(gi[hd + j] + gh[hd + j]);
                    let n = (gi[2 * hd + j] + r * gh[2 * hd + j]).tanh();
                    h[j] = z * h[j] + (1.0 - z) * n;
                }
            }
            Cell::Lstm => {
                let c = &mut st.c;
                for j in 0..hd {
                    let g = |k: usize| gi[k * hd + j] + gh[k * hd + j];
                    let (i, f) = (sig(g(0)), sig(g(1)));
                    let (cand, o) = (g(2).tanh(), sig(g(3)));
                    c[j] = f * c[j] + i * cand;
                    h[j] = o * c[j].tanh();
                }
            }
        }
    }
}

/// A trained autoencoder.
pub struct Autoencoder {
    varmap: VarMap,
    net: Net,
    pub meta: ModelMeta,
    enc: RnnWeights,
    dec: RnnWeights,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
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

fn rnn_weights(
    varmap: &VarMap,
    cell: Cell,
    p: &str,
    input: usize,
    hidden: usize,
) -> Result<RnnWeights, ModelError> {
    Ok(RnnWeights {
        cell,
        w_ih: named(varmap, &format!("{p}.weight_ih_l0"))?,
        w_hh: named(varmap, &format!("{p}.weight_hh_l0"))?,
        b_ih: named(varmap, &format!("{p}.bias_ih_l0"))?,
        b_hh: named(varmap, &format!("{p}.bias_hh_l0"))?,
        input,
        hidden,
    })
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
        let enc = rnn_weights(&varmap, meta.cell, "enc", f, meta.hidden)?;
        let dec = rnn_weights(&varmap, meta.cell, "dec", meta.hidden, meta.hidden)?;
        let out_w = named(&varmap, "out.weight")?;
        let out_b = named(&varmap, "out.bias")?;
        Ok(Autoencoder {
            varmap,
            net,
            meta,
            enc,
            dec,
            out_w,
            out_b,
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
        let hd = self.meta.hidden;
        let f = self.meta.features.len();
        let mut enc = RnnState::new(self.meta.cell, hd);
        for r in w {
            self.enc.step(r, &mut enc);
        }
        let z = enc.h;
        let mut dec = RnnState::new(self.meta.cell, hd);
        dec.gi = enc.gi;
        dec.gh = enc.gh;
        let mut err = 0.0f64;
        for r in w {
            self.dec.step(&z, &mut dec);
            for (j, rj) in r.iter().enumerate().take(f) {
                let mut y = self.out_b[j];
                for (k, hv) in dec.h.iter().enumerate() {
                    y += self.out_w[j * hd + k] * hv;
                }
                err += ((y - rj) as f64).powi(2);
            }
        }
        err / (w.len() * f) as f64
    }

    /// Mean squared reconstruction error (scaled units) of one window of raw rows.
    pub fn window_error(&self, rows: &[Vec<f64>]) -> f64 {
        let scaled: Vec<Vec<f32>> = rows.iter().map(|r| scale(&self.meta.scaler, r)).collect();
        self.window_error_scaled(&scaled)
    }

    /// Score in `[0, 1]` for an error: 0.5 at three times the training p99, 0.8 at six times.
    pub fn error_score(&self, err: f64) -> f64 {
        squash(err, 3.0 * self.meta.training.error_p99.max(1e-9))
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

/// A univariate streaming detector: collects `train_after` points, trains the autoencoder on
/// them once, then scores the window ending at every new point. Or starts from a trained model.
pub struct OnlineAutoencoder {
    cfg: OnlineConfig,
    model: Option<Autoencoder>,
    first: Vec<(i64, f64)>,
    recent: VecDeque<Vec<f64>>,
    failed: bool,
}

impl OnlineAutoencoder {
    pub fn new(cfg: OnlineConfig) -> Self {
        OnlineAutoencoder {
            recent: VecDeque::with_capacity(cfg.window),
            first: Vec::with_capacity(cfg.train_after),
            cfg,
            model: None,
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
        d.model = Some(model);
        d
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
        let s = match &self.model {
            Some(m) if self.recent.len() + 1 >= self.cfg.window => {
                let mut w: Vec<Vec<f64>> = self
                    .recent
                    .iter()
                    .skip(self.recent.len() + 1 - self.cfg.window)
                    .cloned()
                    .collect();
                w.push(vec![x]);
                m.error_score(m.window_error(&w))
            }
            _ => 0.0,
        };
        if self.recent.len() == self.cfg.window {
            self.recent.pop_front();
        }
        self.recent.push_back(vec![x]);
        if self.model.is_none() && !self.failed {
            self.first.push((ts, x));
            if self.first.len() >= self.cfg.train_after {
                let rows: Vec<Vec<f64>> = self.first.iter().map(|(_, v)| vec![*v]).collect();
                let range = (
                    self.first.first().map(|p| p.0),
                    self.first.last().map(|p| p.0),
                );
                let cfg = TrainConfig {
                    cell: self.cfg.cell,
                    window: self.cfg.window,
                    hidden: self.cfg.hidden,
                    epochs: self.cfg.epochs,
                    seed: self.cfg.seed,
                    ..TrainConfig::default()
                };
                match Autoencoder::train(&rows, vec!["value".into()], range, &cfg) {
                    Ok(m) => self.model = Some(m),
                    Err(_) => self.failed = true,
                }
                self.first = Vec::new(); // bounded: the training buffer is released
            }
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
