//! Value generators: the building blocks of custom device types.
//!
//! A generator turns (time, random source) into a number. The primitive ones are the shapes
//! data-science courses name — constant, uniform, gaussian noise, random walk, sine and daily
//! cycle, linear trend, step, exponential decay, replay of a CSV column — and `sum`, `product`
//! and `clamp` compose them (a daily cycle plus noise plus a slow trend is three lines of YAML).
//!
//! Generators are pure: time is an argument (epoch ms), randomness comes from the device's
//! seeded generator, so the same seed gives the same values. Their state is a few numbers.
//!
//! ```yaml
//! generator:
//!   kind: sum
//!   of:
//!     - { kind: daily, mean: 21, amplitude: 3, peak_hour: 15 }
//!     - { kind: gaussian, std: 0.2 }
//!     - { kind: trend, slope_per_hour: 0.1 }
//! ```

use rand::rngs::SmallRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use std::path::PathBuf;
use std::sync::Arc;

/// What the user writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GeneratorSpec {
    Constant {
        value: f64,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    Gaussian {
        #[serde(default)]
        mean: f64,
        std: f64,
    },
    /// Each sample moves by a uniform step in `[-step, step]`, reflected at the bounds.
    RandomWalk {
        start: f64,
        step: f64,
        #[serde(default = "neg_inf")]
        min: f64,
        #[serde(default = "pos_inf")]
        max: f64,
    },
    Sine {
        #[serde(default)]
        offset: f64,
        amplitude: f64,
        period_s: f64,
        #[serde(default)]
        phase_s: f64,
    },
    /// A 24-hour cycle (UTC) with its maximum at `peak_hour`.
    Daily {
        #[serde(default)]
        mean: f64,
        amplitude: f64,
        #[serde(default = "fifteen")]
        peak_hour: f64,
    },
    /// `start + slope_per_hour * hours since the generator started`.
    Trend {
        #[serde(default)]
        start: f64,
        slope_per_hour: f64,
    },
    /// `before` until `at_s` seconds after start, then `after`.
    Step {
        before: f64,
        after: f64,
        at_s: f64,
    },
    /// `target + (initial - target) * exp(-t / tau_s)`.
    Decay {
        initial: f64,
        #[serde(default)]
        target: f64,
        tau_s: f64,
    },
    /// One column of a CSV file, one row per sample, looping at the end.
    Replay {
        file: PathBuf,
        column: String,
    },
    Sum {
        of: Vec<GeneratorSpec>,
    },
    Product {
        of: Vec<GeneratorSpec>,
    },
    Clamp {
        inner: Box<GeneratorSpec>,
        #[serde(default = "neg_inf")]
        min: f64,
        #[serde(default = "pos_inf")]
        max: f64,
    },
}

fn neg_inf() -> f64 {
    f64::NEG_INFINITY
}
fn pos_inf() -> f64 {
    f64::INFINITY
}
fn fifteen() -> f64 {
    15.0
}

/// A generator with its state.
#[derive(Debug, Clone)]
pub enum Generator {
    Constant(f64),
    Uniform(f64, f64),
    Gaussian(f64, f64),
    RandomWalk {
        x: f64,
        step: f64,
        min: f64,
        max: f64,
    },
    Sine {
        offset: f64,
        amplitude: f64,
        period_ms: f64,
        phase_ms: f64,
    },
    Daily {
        mean: f64,
        amplitude: f64,
        peak_hour: f64,
    },
    /// The `Option<i64>` of the time-relative shapes is the start time, set by the first sample.
    Trend {
        start: f64,
        slope_per_ms: f64,
        t0: Option<i64>,
    },
    Step {
        before: f64,
        after: f64,
        at_ms: i64,
        t0: Option<i64>,
    },
    Decay {
        initial: f64,
        target: f64,
        tau_ms: f64,
        t0: Option<i64>,
    },
    Replay {
        values: Arc<[f64]>,
        i: usize,
    },
    Sum(Vec<Generator>),
    Product(Vec<Generator>),
    Clamp(Box<Generator>, f64, f64),
}

impl GeneratorSpec {
    /// Check the parameters and load replay files. Errors say what to write instead.
    pub fn build(&self) -> Result<Generator, String> {
        let finite = |name: &str, v: f64| {
            if v.is_finite() {
                Ok(v)
            } else {
                Err(format!("`{name}` must be a finite number"))
            }
        };
        let positive = |name: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(v)
            } else {
                Err(format!("`{name}` must be a positive number"))
            }
        };
        Ok(match self {
            GeneratorSpec::Constant { value } => Generator::Constant(finite("value", *value)?),
            GeneratorSpec::Uniform { min, max } => {
                if min > max || min.is_nan() || max.is_nan() {
                    return Err("uniform needs min <= max".into());
                }
                Generator::Uniform(finite("min", *min)?, finite("max", *max)?)
            }
            GeneratorSpec::Gaussian { mean, std } => {
                if *std < 0.0 {
                    return Err("`std` must not be negative".into());
                }
                Generator::Gaussian(finite("mean", *mean)?, finite("std", *std)?)
            }
            GeneratorSpec::RandomWalk {
                start,
                step,
                min,
                max,
            } => {
                if !(min <= start && start <= max) {
                    return Err("random_walk needs min <= start <= max".into());
                }
                Generator::RandomWalk {
                    x: finite("start", *start)?,
                    step: finite("step", *step)?.abs(),
                    min: *min,
                    max: *max,
                }
            }
            GeneratorSpec::Sine {
                offset,
                amplitude,
                period_s,
                phase_s,
            } => Generator::Sine {
                offset: finite("offset", *offset)?,
                amplitude: finite("amplitude", *amplitude)?,
                period_ms: positive("period_s", *period_s)? * 1000.0,
                phase_ms: finite("phase_s", *phase_s)? * 1000.0,
            },
            GeneratorSpec::Daily {
                mean,
                amplitude,
                peak_hour,
            } => Generator::Daily {
                mean: finite("mean", *mean)?,
                amplitude: finite("amplitude", *amplitude)?,
                peak_hour: finite("peak_hour", *peak_hour)?,
            },
            GeneratorSpec::Trend {
                start,
                slope_per_hour,
            } => Generator::Trend {
                start: finite("start", *start)?,
                slope_per_ms: finite("slope_per_hour", *slope_per_hour)? / 3_600_000.0,
                t0: None,
            },
            GeneratorSpec::Step {
                before,
                after,
                at_s,
            } => Generator::Step {
                before: finite("before", *before)?,
                after: finite("after", *after)?,
                at_ms: (finite("at_s", *at_s)? * 1000.0) as i64,
                t0: None,
            },
            GeneratorSpec::Decay {
                initial,
                target,
                tau_s,
            } => Generator::Decay {
                initial: finite("initial", *initial)?,
                target: finite("target", *target)?,
                tau_ms: positive("tau_s", *tau_s)? * 1000.0,
                t0: None,
            },
            GeneratorSpec::Replay { file, column } => Generator::Replay {
                values: load_csv_column(file, column)?,
                i: 0,
            },
            GeneratorSpec::Sum { of } | GeneratorSpec::Product { of } => {
                if of.is_empty() {
                    return Err("`of` needs at least one generator".into());
                }
                let parts = of
                    .iter()
                    .enumerate()
                    .map(|(i, g)| g.build().map_err(|e| format!("of[{i}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                if matches!(self, GeneratorSpec::Sum { .. }) {
                    Generator::Sum(parts)
                } else {
                    Generator::Product(parts)
                }
            }
            GeneratorSpec::Clamp { inner, min, max } => {
                if min > max || min.is_nan() || max.is_nan() {
                    return Err("clamp needs min <= max".into());
                }
                Generator::Clamp(
                    Box::new(inner.build().map_err(|e| format!("inner: {e}"))?),
                    *min,
                    *max,
                )
            }
        })
    }
}

/// Read one numeric column of a CSV file with a header row.
fn load_csv_column(file: &PathBuf, column: &str) -> Result<Arc<[f64]>, String> {
    let mut rd = csv::Reader::from_path(file)
        .map_err(|e| format!("cannot read CSV file {}: {e}", file.display()))?;
    let headers = rd
        .headers()
        .map_err(|e| format!("{}: {e}", file.display()))?
        .clone();
    let idx = headers.iter().position(|h| h == column).ok_or_else(|| {
        format!(
            "{} has no column `{column}`; its columns: {}",
            file.display(),
            headers.iter().collect::<Vec<_>>().join(", ")
        )
    })?;
    let mut out = Vec::new();
    for (n, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| format!("{}: {e}", file.display()))?;
        let cell = rec.get(idx).unwrap_or("").trim();
        let v: f64 = cell.parse().map_err(|_| {
            format!(
                "{} row {}: `{cell}` in column `{column}` is not a number",
                file.display(),
                n + 2
            )
        })?;
        out.push(v);
    }
    if out.is_empty() {
        return Err(format!("{} has no data rows", file.display()));
    }
    Ok(out.into())
}

fn since(t0: &mut Option<i64>, t: i64) -> f64 {
    (t - *t0.get_or_insert(t)) as f64
}

impl Generator {
    /// The value at `t_ms`. Called once per sample, with non-decreasing times.
    pub fn next(&mut self, t_ms: i64, rng: &mut SmallRng) -> f64 {
        match self {
            Generator::Constant(v) => *v,
            Generator::Uniform(lo, hi) => {
                if lo == hi {
                    *lo
                } else {
                    rng.random_range(*lo..*hi)
                }
            }
            Generator::Gaussian(m, s) => {
                let z: f64 = StandardNormal.sample(rng);
                *m + *s * z
            }
            Generator::RandomWalk { x, step, min, max } => {
                let d = if *step > 0.0 {
                    rng.random_range(-*step..*step)
                } else {
                    0.0
                };
                let mut n = *x + d;
                if n > *max {
                    n = *max - (n - *max);
                }
                if n < *min {
                    n = *min + (*min - n);
                }
                *x = n.clamp(*min, *max);
                *x
            }
            Generator::Sine {
                offset,
                amplitude,
                period_ms,
                phase_ms,
            } => {
                // Reduce first: an epoch in ms times 2π loses the phase to rounding.
                let x = (t_ms as f64 + *phase_ms).rem_euclid(*period_ms) / *period_ms;
                *offset + *amplitude * (2.0 * PI * x).sin()
            }
            Generator::Daily {
                mean,
                amplitude,
                peak_hour,
            } => *mean + *amplitude * crate::model::daily(t_ms, *peak_hour),
            Generator::Trend {
                start,
                slope_per_ms,
                t0,
            } => *start + *slope_per_ms * since(t0, t_ms),
            Generator::Step {
                before,
                after,
                at_ms,
                t0,
            } => {
                if since(t0, t_ms) < *at_ms as f64 {
                    *before
                } else {
                    *after
                }
            }
            Generator::Decay {
                initial,
                target,
                tau_ms,
                t0,
            } => *target + (*initial - *target) * (-since(t0, t_ms) / *tau_ms).exp(),
            Generator::Replay { values, i } => {
                let v = values[*i % values.len()];
                *i = (*i + 1) % values.len();
                v
            }
            Generator::Sum(parts) => parts.iter_mut().map(|g| g.next(t_ms, rng)).sum(),
            Generator::Product(parts) => parts.iter_mut().map(|g| g.next(t_ms, rng)).product(),
            Generator::Clamp(g, lo, hi) => g.next(t_ms, rng).clamp(*lo, *hi),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn gen(yaml: &str) -> Generator {
        serde_yaml::from_str::<GeneratorSpec>(yaml)
            .unwrap()
            .build()
            .unwrap()
    }

    /// `n` samples one second apart.
    fn take(g: &mut Generator, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|i| g.next(T0 + i as i64 * 1000, &mut rng))
            .collect()
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn constant() {
        assert!(take(&mut gen("{kind: constant, value: 4.5}"), 10, 1)
            .iter()
            .all(|v| *v == 4.5));
    }

    #[test]
    fn uniform_stays_in_bounds_and_fills_them() {
        let v = take(&mut gen("{kind: uniform, min: 10, max: 20}"), 5000, 1);
        assert!(v.iter().all(|x| (10.0..20.0).contains(x)));
        assert!((mean(&v) - 15.0).abs() < 0.3);
        assert!(v.iter().any(|x| *x < 11.0) && v.iter().any(|x| *x > 19.0));
    }

    #[test]
    fn gaussian_has_its_mean_and_std() {
        let v = take(&mut gen("{kind: gaussian, mean: 5, std: 2}"), 20_000, 2);
        let m = mean(&v);
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((m - 5.0).abs() < 0.1, "{m}");
        assert!((sd - 2.0).abs() < 0.1, "{sd}");
    }

    #[test]
    fn random_walk_moves_by_at_most_step_within_bounds() {
        let v = take(
            &mut gen("{kind: random_walk, start: 0, step: 0.5, min: -3, max: 3}"),
            5000,
            3,
        );
        assert!(v.iter().all(|x| (-3.0..=3.0).contains(x)));
        assert!(v.windows(2).all(|w| (w[1] - w[0]).abs() <= 0.5 + 1e-12));
        assert!(v.iter().any(|x| *x > 2.0) && v.iter().any(|x| *x < -2.0));
    }

    #[test]
    fn sine_and_daily_cycles() {
        let v = take(
            &mut gen("{kind: sine, offset: 10, amplitude: 2, period_s: 60}"),
            61,
            0,
        );
        assert!((v[0] - 10.0).abs() < 1e-9);
        assert!((v[15] - 12.0).abs() < 1e-9, "quarter period is the peak");
        assert!((v[45] - 8.0).abs() < 1e-9);
        assert!((v[60] - 10.0).abs() < 1e-9);
        let mut d = gen("{kind: daily, mean: 20, amplitude: 5, peak_hour: 15}");
        let mut rng = SmallRng::seed_from_u64(0);
        assert!((d.next(T0 + 15 * 3_600_000, &mut rng) - 25.0).abs() < 1e-9);
        assert!((d.next(T0 + 27 * 3_600_000, &mut rng) - 15.0).abs() < 1e-9);
    }

    #[test]
    fn trend_step_and_decay_count_from_the_first_sample() {
        let v = take(
            &mut gen("{kind: trend, start: 1, slope_per_hour: 3600}"),
            5,
            0,
        );
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let v = take(&mut gen("{kind: step, before: 0, after: 7, at_s: 3}"), 5, 0);
        assert_eq!(v, vec![0.0, 0.0, 0.0, 7.0, 7.0]);
        let v = take(
            &mut gen("{kind: decay, initial: 100, target: 20, tau_s: 2}"),
            5,
            0,
        );
        assert_eq!(v[0], 100.0);
        assert!((v[2] - (20.0 + 80.0 * (-1f64).exp())).abs() < 1e-9);
        assert!(v.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn replay_reads_a_csv_column_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "t,power\n0,1.5\n1,2.5\n2,3.5\n").unwrap();
        let yaml = format!("{{kind: replay, file: {}, column: power}}", p.display());
        assert_eq!(take(&mut gen(&yaml), 5, 0), vec![1.5, 2.5, 3.5, 1.5, 2.5]);
        let bad = format!("{{kind: replay, file: {}, column: volts}}", p.display());
        let e = serde_yaml::from_str::<GeneratorSpec>(&bad)
            .unwrap()
            .build()
            .unwrap_err();
        assert!(e.contains("its columns: t, power"), "{e}");
    }

    #[test]
    fn compositions_add_multiply_and_clamp() {
        let v = take(
            &mut gen("{kind: sum, of: [{kind: constant, value: 10}, {kind: trend, slope_per_hour: 3600}]}"),
            3,
            0,
        );
        assert_eq!(v, vec![10.0, 11.0, 12.0]);
        let v = take(
            &mut gen("{kind: product, of: [{kind: constant, value: 2}, {kind: step, before: 1, after: 5, at_s: 1}]}"),
            3,
            0,
        );
        assert_eq!(v, vec![2.0, 10.0, 10.0]);
        let v = take(
            &mut gen("{kind: clamp, min: 0, max: 1.5, inner: {kind: trend, slope_per_hour: 3600}}"),
            4,
            0,
        );
        assert_eq!(v, vec![0.0, 1.0, 1.5, 1.5]);
    }

    #[test]
    fn same_seed_same_values_and_bad_parameters_are_explained() {
        let y =
            "{kind: sum, of: [{kind: gaussian, std: 1}, {kind: random_walk, start: 0, step: 1}]}";
        assert_eq!(take(&mut gen(y), 50, 9), take(&mut gen(y), 50, 9));
        assert_ne!(take(&mut gen(y), 50, 9), take(&mut gen(y), 50, 10));
        let e = serde_yaml::from_str::<GeneratorSpec>("{kind: uniform, min: 5, max: 1}")
            .unwrap()
            .build()
            .unwrap_err();
        assert!(e.contains("min <= max"));
        assert!(serde_yaml::from_str::<GeneratorSpec>("{kind: wobble}").is_err());
    }
}
