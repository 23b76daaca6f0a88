//! Lab check: inject each kind of fault into a clean temperature stream and report which
//! quality rule or detector flagged it, and how many readings after the fault started; read
//! every 10 s, and every second as the lab's own devices read. The tables are printed
//! (`cargo test -p fieldlab-watch --test lab_check -- --nocapture`).

use fieldlab_core::reading::{FieldValue, Reading};
use fieldlab_watch::{Event, Watch, WatchConfig};

/// Clean time before the fault (about 7 h: the ensemble warms up for 750 ticks of 10 s).
const WARM_MS: i64 = 25_000_000;
/// Time watched after the fault starts.
const AFTER_MS: i64 = 4_000_000;

/// The clean temperature at reading `i` of a series read every `step` ms.
fn clean(step: i64, i: usize) -> f64 {
    let t = i as i64 * step;
    let day = (t % 86_400_000) as f64 / 86_400_000.0 * std::f64::consts::TAU;
    let mut h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 31;
    21.0 + 1.5 * day.sin() + ((h % 1000) as f64 / 1000.0 - 0.5) * 0.3
}

/// One reading as the device sends it: (sample ts, receive time, seq, value); None = silence.
type Emit = Option<(i64, i64, u64, f64)>;

fn fault(step: i64, kind: &str, k: usize, i: usize) -> Vec<Emit> {
    // k: readings since the fault started; i: absolute index
    let ts = i as i64 * step;
    let since_ms = k as i64 * step;
    let normal = Some((ts, ts, i as u64, clean(step, i)));
    let v = clean(step, i);
    let warm = (WARM_MS / step) as usize;
    match kind {
        "spike" if k == 0 => vec![Some((ts, ts, i as u64, v + 8.0))],
        "dip" if k == 0 => vec![Some((ts, ts, i as u64, v - 8.0))],
        "stuck-at" => vec![Some((ts, ts, i as u64, clean(step, warm)))],
        "drift" => vec![Some((
            ts,
            ts,
            i as u64,
            v + 0.001 * (since_ms / 1000) as f64,
        ))],
        "level shift" => vec![Some((ts, ts, i as u64, v + 3.0))],
        "dropout" if since_ms < 300_000 => vec![None],
        "duplicates" if k == 0 => vec![normal, normal],
        "out-of-order" if k == 0 => vec![Some((ts - 5 * step, ts, i as u64, clean(step, i - 5)))],
        "clock skew" => vec![Some((ts + 3_600_000, ts, i as u64, v))],
        "NaN" if k == 0 => vec![Some((ts, ts, i as u64, f64::NAN))],
        "unit switch °C->°F" => vec![Some((ts, ts, i as u64, v * 9.0 / 5.0 + 32.0))],
        "out of range" if k == 0 => vec![Some((ts, ts, i as u64, 150.0))],
        _ => vec![normal],
    }
}

fn reading(ts: i64, seq: u64, v: f64) -> Reading {
    Reading {
        device_id: "t1".into(),
        device_type: "TemperatureSensor".into(),
        ts_ms: ts,
        seq: Some(seq),
        fields: vec![("temperature".into(), FieldValue::F64(v))],
        units: Default::default(),
        tags: Default::default(),
        status: None,
    }
}

/// The first quality verdict and the first detector verdict on the fault: (rule or detector,
/// readings after the fault start); and the false alarms before it.
struct Outcome {
    quality: Option<(String, usize)>,
    detector: Option<(String, usize)>,
    false_alarms: usize,
}

fn run(step: i64, kind: &str, detector: &str) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WatchConfig {
        default_detector: detector.into(),
        ..WatchConfig::default()
    };
    let w = Watch::open(dir.path(), cfg).unwrap();
    let mut out = Outcome {
        quality: None,
        detector: None,
        false_alarms: 0,
    };
    let warm = (WARM_MS / step) as usize;
    for i in 0..warm {
        let ts = i as i64 * step;
        let mut evs = w.observe(&reading(ts, i as u64, clean(step, i)), ts);
        evs.extend(w.check_stale(ts));
        for e in &evs {
            eprintln!("{kind}: false alarm at clean reading {i}: {e:?}");
        }
        out.false_alarms += evs.len();
    }
    for k in 0..(AFTER_MS / step) as usize {
        let i = warm + k;
        let now = i as i64 * step;
        let mut evs = Vec::new();
        for (ts, recv, seq, v) in fault(step, kind, k, i).into_iter().flatten() {
            evs.extend(w.observe(&reading(ts, seq, v), recv));
        }
        evs.extend(w.check_stale(now));
        for e in evs {
            match e {
                Event::Quality(q) => {
                    out.quality.get_or_insert((q.rule.to_string(), k));
                }
                Event::Anomaly(a) => {
                    out.detector.get_or_insert((a.detector, k));
                }
            }
        }
        if out.quality.is_some() && out.detector.is_some() {
            break;
        }
    }
    out
}

/// The table for one reading interval; every fault must be flagged (a drift by the trend check,
/// once its level has moved for a while), and the clean hours before it raise nothing.
fn check(step: i64) {
    let kinds = [
        "spike",
        "dip",
        "stuck-at",
        "drift",
        "level shift",
        "dropout",
        "duplicates",
        "out-of-order",
        "clock skew",
        "NaN",
        "unit switch °C->°F",
        "out of range",
    ];
    println!(
        "\nlab check: TemperatureSensor every {} s, {} h clean, then the fault; watch {} s",
        step / 1000,
        WARM_MS / 3_600_000,
        AFTER_MS / 1000
    );
    println!(
        "{:<20} {:<26} {:>12} {:<26} {:>12} {:>6}",
        "fault", "first quality rule", "after pts/s", "first detector", "after pts/s", "false"
    );
    let mut missed = Vec::new();
    for kind in kinds {
        let o = run(
            step,
            kind,
            &std::env::var("LC_DET").unwrap_or("ensemble".into()),
        );
        let cell = |v: &Option<(String, usize)>| match v {
            Some((by, k)) => (by.clone(), format!("{k}/{}", *k as i64 * step / 1000)),
            None => ("-".to_string(), "-".to_string()),
        };
        let (q, qa) = cell(&o.quality);
        let (d, da) = cell(&o.detector);
        println!(
            "{kind:<20} {q:<26} {qa:>12} {d:<26} {da:>12} {:>6}",
            o.false_alarms
        );
        assert_eq!(
            o.false_alarms, 0,
            "{kind}: false alarms during the clean warm-up"
        );
        if o.quality.is_none() && o.detector.is_none() {
            missed.push(kind);
        }
    }
    assert!(missed.is_empty(), "not flagged: {missed:?}");
}

#[test]
fn every_fault_kind_is_flagged_every_10_s_and_every_second() {
    check(10_000);
    check(1_000);
}
