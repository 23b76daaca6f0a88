//! `fieldlab bench ingest`: durable points per second through the real pipeline.
//!
//! Publishers (rumqttc, QoS 1, one connection each) send N readings of M fields through the
//! embedded broker, `batch` readings per MQTT message: one fieldlab-JSON reading per message
//! (a device), or a gateway's batch as a JSON array or as InfluxDB line protocol (the very bytes
//! `bench influx` POSTs to InfluxDB). Ingest parses them and writes them to a fresh store with
//! the configured fsync policy. The clock stops when the store has acknowledged all N*M points
//! as durable — so the figure is "points on disk per second", not "messages sent per second".

pub use crate::stats::median;
use clap::Args;
use fieldlab_core::config::Qos;
use fieldlab_core::{DeviceDirectory, Readiness};
use fieldlab_ingest::{IngestMetrics, IngestSettings};
use fieldlab_store::FsyncPolicy;
use fieldlab_store::{Quarantine, Store, StoreOptions};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the benchmark encodes readings into MQTT messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchFormat {
    /// fieldlab JSON; a batch is a JSON array of readings.
    Json,
    /// InfluxDB line protocol, one line per reading, nanosecond timestamps.
    Line,
}

impl std::str::FromStr for BenchFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "line" => Ok(Self::Line),
            o => Err(format!("unknown format `{o}` (json | line)")),
        }
    }
}

impl BenchFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Line => "line",
        }
    }
}

/// The value of field `f` in reading `i`: a slow ramp at 0.01 resolution, as a sensor sends.
fn value(i: usize, f: usize) -> f64 {
    20.0 + ((i + f) % 100) as f64 * 0.01
}

/// Every publisher's share of `b.messages` readings as message bodies of `step` readings each
/// (the last may be shorter), reading `i` at `ts0_ms + i`; one `Vec` per publisher. Both
/// benchmarks encode every body before their clock starts, so the load generator's formatting
/// is not counted for either system (it shares this machine's two cores with the system under
/// test), as TSBS pre-generates its data.
pub fn bodies(b: &IngestBench, format: BenchFormat, step: usize, ts0_ms: i64) -> Vec<Vec<String>> {
    let step = step.max(1);
    let per = b.messages.div_ceil(b.publishers);
    (0..b.publishers)
        .map(|p| {
            let n = per.min(b.messages.saturating_sub(p * per));
            (0..n)
                .step_by(step)
                .map(|i| encode(format, p, i, (i + step).min(n), b.fields, ts0_ms))
                .collect()
        })
        .collect()
}

/// Readings `from..to` of publisher `p` encoded as one message body; reading `i` is at
/// `ts0_ms + i`. `bench influx` sends `Line` bodies of the same readings to InfluxDB.
pub fn encode(
    format: BenchFormat,
    p: usize,
    from: usize,
    to: usize,
    fields: usize,
    ts0_ms: i64,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity((to - from) * (fields * 14 + 80));
    match format {
        BenchFormat::Line => {
            for i in from..to {
                let _ = write!(out, "bench,device_id=bench-{p},device_type=Bench ");
                for f in 0..fields {
                    if f > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "f{f}={:.3}", value(i, f));
                }
                let _ = writeln!(out, " {}", (ts0_ms + i as i64) * 1_000_000);
            }
        }
        BenchFormat::Json => {
            let batch = to - from > 1;
            if batch {
                out.push('[');
            }
            for i in from..to {
                if i > from {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    "{{\"device_id\":\"bench-{p}\",\"device_type\":\"Bench\",\"seq\":{i},\"ts\":{},\"data\":{{",
                    ts0_ms + i as i64
                );
                for f in 0..fields {
                    if f > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "\"f{f}\":{:.3}", value(i, f));
                }
                out.push_str("}}");
            }
            if batch {
                out.push(']');
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct IngestBench {
    /// Readings in all (each of `fields` points).
    pub messages: usize,
    pub fields: usize,
    /// Readings per MQTT message.
    pub batch: usize,
    pub format: BenchFormat,
    /// Ingest's MQTT connections (a shared subscription when > 1).
    pub connections: usize,
    pub publishers: usize,
    pub runs: usize,
    pub fsync: FsyncPolicy,
    /// Auth on: clients log in, and reach rumqttd through the broker's topic ACL gate, which
    /// checks every publish against a device-style write filter.
    pub acl: bool,
}

/// The logins of `IngestBench::acl` (bench only; the broker lives as long as the bench).
const BENCH_PUB: (&str, &str) = ("bench-device", "bench-device-password");
const BENCH_INGEST: (&str, &str) = ("bench-ingest", "bench-ingest-password");

#[derive(Debug, Clone)]
pub struct RunResult {
    pub points: u64,
    pub seconds: f64,
    pub points_per_s: f64,
    pub quarantined: u64,
}

/// Run the benchmark; prints one line per run and returns the results.
pub async fn ingest(b: &IngestBench) -> anyhow::Result<Vec<RunResult>> {
    let broker = fieldlab_broker::start(&fieldlab_broker::BrokerSettings {
        host: "127.0.0.1".into(),
        port: 0,
        max_payload_size: 1 << 20,
        max_connections: b.publishers + 16,
        auth: b.acl.then(|| {
            fieldlab_broker::plain_auth(|_id: &str, user: &str, pass: &str| {
                if (user, pass) == BENCH_INGEST {
                    Some(fieldlab_broker::Acl::all())
                } else if (user, pass) == BENCH_PUB {
                    Some(fieldlab_broker::Acl {
                        read: Some(vec![]),
                        write: Some(vec!["devices/+/+/telemetry".into()]),
                    })
                } else {
                    None
                }
            })
        }),
        ..Default::default()
    })?;
    let addr = broker.local_addr();
    let mut out = Vec::new();
    for run in 0..b.runs {
        let dir = tempfile::tempdir()?;
        let mut opts = StoreOptions::new(dir.path());
        opts.fsync = b.fsync;
        let (store, _) = Store::open(opts)?;
        let quarantine = Arc::new(Quarantine::open(dir.path())?);
        let readiness = Readiness::new();
        let metrics = IngestMetrics::default();
        let ingest = fieldlab_ingest::start(
            IngestSettings {
                host: addr.ip().to_string(),
                port: addr.port(),
                client_id: format!("bench-ingest-{run}"),
                keep_alive: Duration::from_secs(30),
                username: b.acl.then(|| BENCH_INGEST.0.to_string()),
                password: b.acl.then(|| BENCH_INGEST.1.to_string()),
                topics: vec!["devices/+/+/telemetry".into()],
                qos: Qos::AtLeastOnce,
                batch_max: 4096,
                max_payload_size: 1 << 20,
                observers: Default::default(),
                admit: None,
                // Exactly what the bench sends: the guard's cost is measured, nothing refused.
                limits: fieldlab_ingest::Limits {
                    max_devices: b.publishers.max(1),
                    max_series_per_device: b.fields.max(1),
                    ..Default::default()
                },
                persistent_session: false,
                mqtt5: false,
                share_group: None,
                dedup_window: 256,
                connections: b.connections,
                tls: None,
            },
            store.clone(),
            quarantine,
            DeviceDirectory::new(),
            readiness.clone(),
            metrics.clone(),
            fieldlab_sinks::Sinks::default(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !readiness.is_ready() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "ingest did not subscribe within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let want = (b.messages * b.fields) as u64;
        let payloads = bodies(b, b.format, b.batch, fieldlab_core::time::now_ms());
        let t0 = Instant::now();
        let mut pubs = Vec::new();
        for (p, payloads) in payloads.into_iter().enumerate() {
            pubs.push(tokio::spawn(publish(
                addr.ip().to_string(),
                addr.port(),
                run,
                p,
                payloads,
                b.acl,
            )));
        }
        // Wait while points keep arriving; give up after 30 s without progress.
        let mut progress = (Instant::now(), 0u64);
        while store.points_written() < want {
            let now = store.points_written();
            if now > progress.1 {
                progress = (Instant::now(), now);
            }
            anyhow::ensure!(
                progress.0.elapsed() < Duration::from_secs(30),
                "only {now} of {want} points arrived (no progress for 30 s); ingest saw {} messages, {} duplicates, {} quarantined",
                metrics.messages.get(),
                metrics.duplicates.get(),
                metrics.quarantined.get()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        for p in pubs {
            p.await??;
        }
        ingest.stop().await;
        store.close().await?;
        let r = RunResult {
            points: want,
            seconds: secs,
            points_per_s: want as f64 / secs,
            quarantined: metrics.quarantined.get(),
        };
        println!(
            "run {}: {} readings x {} fields = {} points durable in {:.3} s = {:.0} points/s ({:.0} readings/s, {:.0} MQTT msgs/s)",
            run + 1,
            b.messages,
            b.fields,
            r.points,
            r.seconds,
            r.points_per_s,
            b.messages as f64 / secs,
            b.messages.div_ceil(b.batch.max(1)) as f64 / secs
        );
        out.push(r);
    }
    Ok(out)
}

async fn publish(
    host: String,
    port: u16,
    run: usize,
    p: usize,
    payloads: Vec<String>,
    acl: bool,
) -> anyhow::Result<()> {
    let mut o = MqttOptions::new(format!("bench-pub-{run}-{p}"), host, port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    if acl {
        o.set_credentials(BENCH_PUB.0, BENCH_PUB.1);
    }
    let (client, mut el) = AsyncClient::new(o, 1000);
    // PUBACKs received: a QoS 1 message is the broker's only once acknowledged, so the
    // publisher disconnects only after the last one (as a correct device would).
    let (acked_tx, mut acked) = tokio::sync::watch::channel(0usize);
    let driver = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    acked_tx.send_modify(|n| *n += 1);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "bench publisher connection ended");
                    break;
                }
            }
        }
    });
    let topic = format!("devices/Bench/bench-{p}/telemetry");
    let mut sent = 0;
    for payload in payloads {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
            .await?;
        sent += 1;
    }
    tokio::time::timeout(Duration::from_secs(60), acked.wait_for(|a| *a >= sent))
        .await
        .map_err(|_| {
            anyhow::anyhow!("publisher {p}: {sent} messages sent, PUBACKs missing after 60 s")
        })??;
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    Ok(())
}

/// `fieldlab bench ingest`.
#[derive(Args)]
pub struct IngestArgs {
    /// Readings in all (each of --fields points).
    #[arg(long, alias = "readings", default_value_t = 50_000)]
    messages: usize,
    #[arg(long, default_value_t = 10)]
    fields: usize,
    /// Readings per MQTT message (1 = a device; more = a gateway's batch).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Message encoding: json (a batch is a JSON array) | line (InfluxDB line protocol).
    #[arg(long, default_value = "json")]
    format: BenchFormat,
    /// Ingest's MQTT connections (shared subscription when > 1).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// WAL fsync policy: always | interval | never.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Auth on: through the broker's topic ACL gate (every publish checked).
    #[arg(long)]
    acl: bool,
}

/// Publishes N messages of M fields through the embedded broker; prints durable points/s.
pub fn cmd(a: IngestArgs) -> anyhow::Result<ExitCode> {
    let IngestArgs {
        messages,
        fields,
        batch,
        format,
        connections,
        publishers,
        runs,
        fsync,
        acl,
    } = a;
    let rt = tokio::runtime::Runtime::new()?;
    let b = IngestBench {
        messages,
        fields,
        batch: batch.max(1),
        format,
        connections: connections.max(1),
        publishers: publishers.max(1),
        runs: runs.max(1),
        fsync,
        acl,
    };
    println!(
        "bench ingest: {messages} readings x {fields} fields, {} per MQTT message as {}, {} publishers, {} ingest connection(s), QoS 1, wal_fsync={}, {} runs{}",
        b.batch,
        format.as_str(),
        b.publishers,
        b.connections,
        fsync.as_str(),
        b.runs,
        if b.acl {
            ", auth on: through the topic ACL gate"
        } else {
            ""
        }
    );
    let res = rt.block_on(ingest(&b))?;
    let rates: Vec<f64> = res.iter().map(|r| r.points_per_s).collect();
    println!(
        "median: {:.0} durable points/s ({:.0} readings/s)",
        median(&rates),
        median(&rates) / fields as f64
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_batches_parse_back_to_the_same_readings() {
        for format in [BenchFormat::Json, BenchFormat::Line] {
            for (from, to) in [(0, 1), (5, 9)] {
                // A real epoch-ms time: JSON `ts` below 1e11 reads as seconds.
                let t0 = 1_767_225_600_000;
                let body = encode(format, 3, from, to, 4, t0);
                let r =
                    fieldlab_ingest::parse("devices/Bench/bench-3/telemetry", body.as_bytes(), 0)
                        .unwrap();
                assert_eq!(r.len(), to - from, "{format:?} {body}");
                assert_eq!(r[0].device_id, "bench-3");
                assert_eq!(r[0].ts_ms, t0 + from as i64);
                assert_eq!(r[0].fields.len(), 4);
                assert_eq!(
                    r.last().unwrap().fields[1].1,
                    fieldlab_core::FieldValue::F64(value(to - 1, 1))
                );
            }
        }
    }
}
