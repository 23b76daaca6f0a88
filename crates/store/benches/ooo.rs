//! Out-of-order ingest cost: one device's readings written in ascending and in descending
//! time order through the store's write path (the `Store::write_batch` that ingest calls:
//! WAL append + fsync per the default `wal_fsync: always`, then the head), for 120k, 240k
//! and 480k readings, each run repeated; prints medians and the descending/ascending ratio.
//!
//! Why it exists: issue 29 measured descending input at 2.9x the ascending time at 120k
//! readings and 8.1x at 240k (a sorted `Vec` insert per point); the head's late buffer
//! (`head.rs`) is meant to keep the ratio small and flat as the count grows. It also
//! measures how long a query of another series waits while the descending ingest runs.
//!
//! The last two columns time the head alone (`Head::insert_batch` of the same batches,
//! then the merge a cut does), without the WAL and the writer thread.
//!
//! Run: `cargo bench -p fieldlab-store --bench ooo` (release profile), or with arguments
//! `-- <repeats> <batch readings> <counts...>`.

use fieldlab_core::{Batch, FieldValue, Row, SeriesKey, Tags};
use fieldlab_store::{Store, StoreOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: i64 = 1_767_225_600_000;

/// Readings `idx` of the device `dev`, one per second, each with two fields (temperature,
/// humidity): one store batch, as ingest builds it from a run of MQTT messages.
fn batch(dev: &str, idx: &[i64]) -> Batch {
    let tags = Tags {
        device_type: "TemperatureSensor".into(),
        extra: Default::default(),
    };
    let series = vec![
        (SeriesKey::new(dev, "temperature"), tags.clone()),
        (SeriesKey::new(dev, "humidity"), tags),
    ];
    let mut rows = Vec::with_capacity(idx.len() * 2);
    for &i in idx {
        let ts = T0 + i * 1000;
        rows.push(Row {
            series: 0,
            ts_ms: ts,
            value: FieldValue::F64(20.0 + (i % 100) as f64 / 10.0),
        });
        rows.push(Row {
            series: 1,
            ts_ms: ts,
            value: FieldValue::F64(40.0 + (i % 37) as f64),
        });
    }
    Batch { series, rows }
}

struct Run {
    ingest: Duration,
    flush: Duration,
    /// Longest wait of a query of another series while the ingest ran.
    query_max: Duration,
}

fn run(rt: &tokio::runtime::Runtime, n: usize, descending: bool, per_batch: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
    let mut order: Vec<i64> = (0..n as i64).collect();
    if descending {
        order.reverse();
    }
    let batches: Vec<Batch> = order.chunks(per_batch).map(|c| batch("dev-1", c)).collect();
    // Another device, queried over and over while the ingest runs.
    rt.block_on(store.write_batch(batch("other", &[0, 1, 2])))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let key = SeriesKey::new("other", "temperature");
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let pts = store.range(&key, i64::MIN, i64::MAX).unwrap();
                assert_eq!(pts.len(), 3);
                worst = worst.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(2));
            }
            worst
        })
    };
    let t = Instant::now();
    rt.block_on(async {
        for b in batches {
            store.write_batch(b).await.unwrap();
        }
    });
    let ingest = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let query_max = prober.join().unwrap();
    // The cut: the late points merged, the block written.
    let t = Instant::now();
    rt.block_on(store.flush()).unwrap();
    let flush = t.elapsed();
    let key = SeriesKey::new("dev-1", "temperature");
    let pts = store.range(&key, i64::MIN, i64::MAX).unwrap();
    assert_eq!(pts.len(), n, "every reading stored once");
    assert!(pts.windows(2).all(|w| w[0].0 < w[1].0), "in time order");
    rt.block_on(store.close()).unwrap();
    Run {
        ingest,
        flush,
        query_max,
    }
}

/// The head alone (no WAL, no writer thread): what the out-of-order path itself costs.
fn head_only(n: usize, descending: bool, per_batch: usize) -> Duration {
    let mut order: Vec<i64> = (0..n as i64).collect();
    if descending {
        order.reverse();
    }
    let mut batches: Vec<Batch> = order.chunks(per_batch).map(|c| batch("dev-1", c)).collect();
    let mut head = fieldlab_store::head::Head::default();
    let t = Instant::now();
    for b in &mut batches {
        let mut spans = Vec::new();
        head.insert_batch(b, 0, &mut spans);
    }
    head.seal();
    let took = t.elapsed();
    let key = SeriesKey::new("dev-1", "humidity");
    assert_eq!(head.range(&key, i64::MIN, i64::MAX).len(), n);
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; numbers are ours.
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let repeats = args.first().copied().unwrap_or(3).max(1);
    let per_batch = args.get(1).copied().unwrap_or(1000).max(1);
    let counts: Vec<usize> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        vec![120_000, 240_000, 480_000]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "one device, 2 fields per reading, {per_batch} readings per batch, wal_fsync: always; \
         median of {repeats} runs (asc and desc alternate)"
    );
    println!(
        "{:>8} {:>10} {:>10} {:>9} {:>12} {:>12} {:>9} {:>13} {:>12} {:>12}",
        "readings",
        "asc s",
        "desc s",
        "desc/asc",
        "asc+cut s",
        "desc+cut s",
        "ratio",
        "query max ms",
        "head asc ms",
        "head desc ms"
    );
    for &n in &counts {
        let (mut asc, mut desc) = (Vec::new(), Vec::new());
        let (mut hasc, mut hdesc) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            asc.push(run(&rt, n, false, per_batch));
            desc.push(run(&rt, n, true, per_batch));
            hasc.push(head_only(n, false, per_batch));
            hdesc.push(head_only(n, true, per_batch));
        }
        let ingest = |v: &[Run]| median(v.iter().map(|r| r.ingest).collect());
        let total = |v: &[Run]| median(v.iter().map(|r| r.ingest + r.flush).collect());
        let q = desc.iter().chain(&asc).map(|r| r.query_max).max().unwrap();
        let (a, d, at, dt) = (ingest(&asc), ingest(&desc), total(&asc), total(&desc));
        println!(
            "{:>8} {:>10.3} {:>10.3} {:>9.2} {:>12.3} {:>12.3} {:>9.2} {:>13.1} {:>12.1} {:>12.1}",
            n,
            a.as_secs_f64(),
            d.as_secs_f64(),
            d.as_secs_f64() / a.as_secs_f64(),
            at.as_secs_f64(),
            dt.as_secs_f64(),
            dt.as_secs_f64() / at.as_secs_f64(),
            q.as_secs_f64() * 1e3,
            median(hasc).as_secs_f64() * 1e3,
            median(hdesc).as_secs_f64() * 1e3
        );
    }
}
