//! `fieldlab bench influx`: fieldlab against a real InfluxDB 1.x, measured in the same run.
//!
//! Three comparisons, each printed with medians and the ratio:
//! 1. **Durable ingest.** fieldlab: `bench ingest` (MQTT QoS 1 through the embedded broker, WAL
//!    fsync per batch), once with one JSON reading per message (a device) and once with the
//!    line-protocol bodies InfluxDB gets, one per message (a gateway). InfluxDB: the same points
//!    as line protocol, POSTed to `/write` by as
//!    many concurrent writers as there are publishers, 5000 points per request (InfluxData's
//!    recommended batch), the clock stopping when every request answered 204 (InfluxDB 1.x
//!    fsyncs its WAL before answering). Both sides encode all their payloads before the clock starts (`bench::bodies`).
//! 2. **Bytes per point on disk** (allocated blocks, as `du` counts them) for one day of 1 Hz sensor data (`--series` series, a daily
//!    cycle plus noise at 0.01 resolution): fieldlab's data dir after `close()` (blocks) vs
//!    InfluxDB's data + WAL dirs once its caches were snapshotted and fully compacted.
//! 3. **Query latency.** One day of one series downsampled to 1-minute means, over HTTP on
//!    loopback for both (`/api/v1/query?step=60s&agg=mean` vs InfluxQL `mean() GROUP BY
//!    time(1m)`), p50 of `--queries` queries after a warm-up.

use crate::ingest::{bodies, ingest, median, BenchFormat, IngestBench};
use clap::Args;
use fieldlab_core::{FieldValue, Point, SeriesKey, Tags};
use fieldlab_store::FsyncPolicy;
use fieldlab_store::{Quarantine, Store, StoreOptions};
use fieldlab_testkit::{dir_bytes, InfluxServer};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct InfluxBench {
    pub ingest: IngestBench,
    /// Also measure fieldlab with gateway batches: the line protocol InfluxDB gets, one
    /// 5000-point request body per MQTT message.
    pub gateway: bool,
    /// Series of one day at 1 Hz for the disk and query comparisons.
    pub series: usize,
    pub queries: usize,
}

const DAY_MS: i64 = 86_400_000;
const DAY0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

pub async fn run(b: &InfluxBench) -> anyhow::Result<()> {
    let influx = tokio::task::spawn_blocking(InfluxServer::start).await??;
    println!(
        "influxd {} (data in {})",
        influx.url(),
        influx.dir.path().display()
    );

    // 1. Durable ingest. InfluxDB first (its figure does not depend on our message shape), then
    // fieldlab once per shape: as configured (by default one JSON reading per MQTT message, as a
    // device sends), and as a gateway batching the same line protocol InfluxDB received.
    println!(
        "\n== durable ingest: {} readings x {} fields ==",
        b.ingest.messages, b.ingest.fields
    );
    let mut theirs = Vec::new();
    for run in 0..b.ingest.runs {
        let db = format!("ingest{run}");
        {
            let (i, d) = (influx.url(), db.clone());
            tokio::task::spawn_blocking(move || {
                influx_query(&i, &d, &format!("CREATE DATABASE {d}"))
            })
            .await??;
        }
        let r = influx_ingest(&influx.url(), &db, &b.ingest).await?;
        println!(
            "influx run {}: {} points durable in {:.3} s = {:.0} points/s",
            run + 1,
            b.ingest.messages * b.ingest.fields,
            (b.ingest.messages * b.ingest.fields) as f64 / r,
            r
        );
        theirs.push(r);
        let (i, d) = (influx.url(), db.clone());
        tokio::task::spawn_blocking(move || influx_query(&i, &d, &format!("DROP DATABASE {d}")))
            .await??;
    }
    let mt = median(&theirs);
    let mut shapes = vec![b.ingest.clone()];
    if b.gateway {
        shapes.push(IngestBench {
            batch: (5000 / b.ingest.fields).max(1),
            format: BenchFormat::Line,
            ..b.ingest.clone()
        });
    }
    for shape in shapes {
        println!(
            "fieldlab: {} reading(s) per MQTT message as {}",
            shape.batch,
            shape.format.as_str()
        );
        let ours: Vec<f64> = ingest(&shape)
            .await?
            .iter()
            .map(|r| r.points_per_s)
            .collect();
        let mo = median(&ours);
        println!(
            "ingest median, {} reading(s)/message as {}: fieldlab {mo:.0} points/s, InfluxDB {mt:.0} points/s (5000 points/request), ratio {:.2}x (target >= 2)",
            shape.batch,
            shape.format.as_str(),
            mo / mt
        );
    }

    // 2. Bytes per point, one day at 1 Hz.
    let n_points = b.series as u64 * 86_400;
    println!(
        "\n== bytes/point: {} series x 1 day at 1 Hz = {n_points} points ==",
        b.series
    );
    let dir = tempfile::tempdir()?;
    let mut opts = StoreOptions::new(dir.path());
    opts.fsync = fieldlab_store::FsyncPolicy::Interval;
    opts.head_max_points = 10_000_000;
    let (store, _) = Store::open(opts.clone())?;
    for s in 0..b.series {
        for chunk in day_points(s).chunks(20_000) {
            store.write(chunk.to_vec()).await.map_err(|e| e.error)?;
        }
    }
    store.close().await?;
    drop(store);
    let ours_bytes = dir_bytes(dir.path());
    println!(
        "fieldlab data dir: blocks {} B, wal {} B (du)",
        dir_bytes(&dir.path().join("blocks")),
        dir_bytes(&dir.path().join("wal"))
    );
    {
        let i = influx.url();
        tokio::task::spawn_blocking(move || influx_query(&i, "day", "CREATE DATABASE day"))
            .await??;
    }
    let client = reqwest::Client::new();
    let url = format!("{}/write?db=day&precision=ms", influx.url());
    for s in 0..b.series {
        let mut rej = Vec::new();
        for chunk in day_points(s).chunks(5000) {
            let body = fieldlab_sinks::influx::encode(
                chunk,
                "telemetry",
                fieldlab_sinks::InfluxPrecision::Ms,
                &mut rej,
            );
            let r = client.post(&url).body(body).send().await?;
            anyhow::ensure!(r.status().is_success(), "InfluxDB write: {}", r.status());
        }
    }
    // Wait for the cache snapshot and full compaction (configured to start after 1 s idle):
    // the size must be stable for 5 s and the WAL nearly empty.
    let wal = influx.dir.path().join("wal");
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut last, mut stable_since) = (0u64, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = influx.disk_bytes();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        if stable_since.elapsed() > Duration::from_secs(5) && dir_bytes(&wal) < 64 * 1024 {
            break;
        }
        if Instant::now() > deadline {
            println!("(InfluxDB did not settle within 180 s; measuring as is)");
            break;
        }
    }
    let theirs_bytes = influx.disk_bytes();
    println!(
        "InfluxDB: data {} B, wal {} B (du)",
        dir_bytes(&influx.dir.path().join("data")),
        dir_bytes(&wal)
    );
    let (bo, bt) = (
        ours_bytes as f64 / n_points as f64,
        theirs_bytes as f64 / n_points as f64,
    );
    println!(
        "bytes/point: fieldlab {bo:.2} ({ours_bytes} B), InfluxDB {bt:.2} ({theirs_bytes} B, after compaction), InfluxDB/fieldlab {:.2}x (target: fieldlab smaller)",
        bt / bo
    );

    // 3. Query: one day downsampled to 1-minute means, over HTTP for both.
    println!(
        "\n== query: 1 day of 1 Hz -> 1-minute means, {} queries each ==",
        b.queries
    );
    let (store, _) = Store::open(opts)?;
    let state =
        fieldlab_server::AppState::bare(store.clone(), Arc::new(Quarantine::open(dir.path())?));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fieldlab_server::serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    let from = fieldlab_core::time::format_ms(DAY0);
    let to = fieldlab_core::time::format_ms(DAY0 + DAY_MS);
    let ours_q = time_queries(b, |s| {
        client
            .get(format!(
                "http://{addr}/api/v1/query?device_id=day_{s}&field=temperature&from={from}&to={to}&step=60s&agg=mean"
            ))
            .send()
    })
    .await?;
    let q = |s: usize| {
        format!(
            "SELECT mean(temperature) FROM telemetry WHERE device_id = 'day_{s}' AND time >= {DAY0}ms AND time < {}ms GROUP BY time(1m)",
            DAY0 + DAY_MS
        )
    };
    let iurl = format!("{}/query", influx.url());
    let theirs_q = time_queries(b, |s| {
        client
            .get(&iurl)
            .query(&[("db", "day"), ("epoch", "ms"), ("q", &q(s))])
            .send()
    })
    .await?;
    // Both must have answered 1440 buckets for the comparison to mean anything.
    let ours_n = client
        .get(format!("http://{addr}/api/v1/query?device_id=day_0&field=temperature&from={from}&to={to}&step=60s&agg=mean"))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?["series"][0]["points"]
        .as_array()
        .map_or(0, |a| a.len());
    let theirs_n = client
        .get(&iurl)
        .query(&[("db", "day"), ("epoch", "ms"), ("q", &q(0))])
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?["results"][0]["series"][0]["values"]
        .as_array()
        .map_or(0, |a| a.len());
    let _ = stop_tx.send(());
    let _ = server.await;
    store.close().await?;
    println!(
        "query p50: fieldlab {:.2} ms ({ours_n} buckets), InfluxDB {:.2} ms ({theirs_n} buckets), ratio {:.1}x (target fieldlab < 5 ms and >= 5x)",
        ours_q * 1e3,
        theirs_q * 1e3,
        theirs_q / ours_q
    );
    anyhow::ensure!(
        ours_n == 1440 && theirs_n == 1440,
        "expected 1440 one-minute buckets from both, got fieldlab {ours_n}, InfluxDB {theirs_n}"
    );
    Ok(())
}

/// p50 latency (s) of `b.queries` queries (after 10 warm-up ones), rotating over the series.
async fn time_queries<F, Fut>(b: &InfluxBench, mut send: F) -> anyhow::Result<f64>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let mut lat = Vec::with_capacity(b.queries);
    for i in 0..b.queries + 10 {
        let t0 = Instant::now();
        let r = send(i % b.series).await?;
        anyhow::ensure!(r.status().is_success(), "query answered {}", r.status());
        let _ = r.bytes().await?;
        if i >= 10 {
            lat.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(median(&lat))
}

/// One day of a 1 Hz temperature: a daily cycle, a slow random walk and sensor noise, at the
/// 0.01 resolution real sensors report. Seeded per series (xorshift: no dependency needed).
fn day_points(series: usize) -> Vec<Point> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (series as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let key = SeriesKey::new(format!("day_{series}"), "temperature");
    let tags = Tags {
        device_type: "TemperatureSensor".into(),
        extra: [("site".to_string(), "factory".to_string())].into(),
    };
    let mut walk = 0.0;
    (0..86_400)
        .map(|i| {
            walk = (walk + (rnd() - 0.5) * 0.02) * 0.999;
            let cycle = 5.0 * (i as f64 * std::f64::consts::TAU / 86_400.0).sin();
            let v = 21.0 + series as f64 + cycle + walk + (rnd() - 0.5) * 0.1;
            Point {
                key: key.clone(),
                tags: tags.clone(),
                ts_ms: DAY0 + i * 1000,
                value: FieldValue::F64((v * 100.0).round() / 100.0),
            }
        })
        .collect()
}

fn influx_query(url: &str, db: &str, q: &str) -> anyhow::Result<()> {
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/query"))
        .form(&[("db", db), ("q", q)])
        .send()?;
    anyhow::ensure!(r.status().is_success(), "InfluxDB: {}", r.status());
    Ok(())
}

/// The ingest benchmark's points as line protocol through `publishers` concurrent writers,
/// 5000 points per request; returns points/s. The bodies are `bench::bodies(Line, ..)`, byte
/// for byte what a line-protocol gateway publishes over MQTT in `bench ingest --format line`.
async fn influx_ingest(url: &str, db: &str, b: &IngestBench) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let write = format!("{url}/write?db={db}");
    let lines_per_req = (5000 / b.fields).max(1);
    let payloads = bodies(
        b,
        BenchFormat::Line,
        lines_per_req,
        fieldlab_core::time::now_ms(),
    );
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for payloads in payloads {
        let (client, write) = (client.clone(), write.clone());
        tasks.push(tokio::spawn(async move {
            for body in payloads {
                let r = client.post(&write).body(body).send().await?;
                anyhow::ensure!(r.status().is_success(), "InfluxDB write: {}", r.status());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((b.messages * b.fields) as f64 / t0.elapsed().as_secs_f64())
}

#[derive(Args)]
pub struct InfluxArgs {
    /// Readings per ingest run (each of --fields points).
    #[arg(long, alias = "readings", default_value_t = 50_000)]
    messages: usize,
    /// Readings per MQTT message for the first fieldlab run (1 = a device's message).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Message encoding for the first fieldlab run: json | line.
    #[arg(long, default_value = "json")]
    format: BenchFormat,
    /// Ingest's MQTT connections (shared subscription when > 1).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Skip the second fieldlab run (gateway batches: InfluxDB's request bodies as MQTT messages).
    #[arg(long)]
    no_gateway: bool,
    #[arg(long, default_value_t = 10)]
    fields: usize,
    /// Concurrent MQTT publishers, and concurrent HTTP writers to InfluxDB.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// fieldlab's WAL fsync policy: always | interval | never.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Series of one day at 1 Hz for the bytes/point and query comparisons.
    #[arg(long, default_value_t = 10)]
    series: usize,
    /// Queries per side for the p50 latency.
    #[arg(long, default_value_t = 200)]
    queries: usize,
}

/// `fieldlab bench influx`.
pub fn cmd(a: InfluxArgs) -> anyhow::Result<ExitCode> {
    let b = InfluxBench {
        ingest: IngestBench {
            messages: a.messages,
            fields: a.fields.max(1),
            batch: a.batch.max(1),
            format: a.format,
            connections: a.connections.max(1),
            publishers: a.publishers.max(1),
            runs: a.runs.max(1),
            fsync: a.fsync,
            acl: false,
        },
        gateway: !a.no_gateway,
        series: a.series.max(1),
        queries: a.queries.max(1),
    };
    println!(
        "bench influx: ingest {} readings x {} fields, {} publishers/writers, wal_fsync={}, {} runs; {} day-series; {} queries",
        a.messages, b.ingest.fields, b.ingest.publishers, a.fsync.as_str(), b.ingest.runs, b.series, b.queries
    );
    tokio::runtime::Runtime::new()?.block_on(run(&b))?;
    Ok(ExitCode::SUCCESS)
}
