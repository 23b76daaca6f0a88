//! `fieldlab bench ingest`: durable points per second through the real pipeline.
//!
//! Publishers (rumqttc, QoS 1, one connection each) send N fieldlab-JSON messages of M fields
//! through the embedded broker; ingest parses them and writes them to a fresh store with the
//! configured fsync policy. The clock stops when the store has acknowledged all N*M points as
//! durable — so the figure is "points on disk per second", not "messages sent per second".

use fieldlab_core::config::{FsyncPolicy, Qos};
use fieldlab_core::{DeviceDirectory, Readiness};
use fieldlab_ingest::{IngestMetrics, IngestSettings};
use fieldlab_store::{Quarantine, Store, StoreOptions};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct IngestBench {
    pub messages: usize,
    pub fields: usize,
    pub publishers: usize,
    pub runs: usize,
    pub fsync: FsyncPolicy,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub points: u64,
    pub seconds: f64,
    pub points_per_s: f64,
    pub quarantined: u64,
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Run the benchmark; prints one line per run and returns the results.
pub async fn ingest(b: &IngestBench) -> anyhow::Result<Vec<RunResult>> {
    let broker = fieldlab_broker::start(&fieldlab_broker::BrokerSettings {
        host: "127.0.0.1".into(),
        port: 0,
        max_payload_size: 1 << 20,
        max_connections: b.publishers + 16,
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
                username: None,
                password: None,
                topics: vec!["devices/+/+/telemetry".into()],
                qos: Qos::AtLeastOnce,
                batch_max: 4096,
                max_payload_size: 1 << 20,
                observers: Default::default(),
                admit: None,
                persistent_session: false,
                mqtt5: false,
                share_group: None,
                dedup_window: 256,
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
        let t0 = Instant::now();
        let per = b.messages.div_ceil(b.publishers);
        let mut pubs = Vec::new();
        for p in 0..b.publishers {
            let n = per.min(b.messages.saturating_sub(p * per));
            pubs.push(tokio::spawn(publish(
                addr.ip().to_string(),
                addr.port(),
                run,
                p,
                n,
                b.fields,
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
            "run {}: {} messages x {} fields = {} points durable in {:.3} s = {:.0} points/s ({:.0} msgs/s)",
            run + 1,
            b.messages,
            b.fields,
            r.points,
            r.seconds,
            r.points_per_s,
            b.messages as f64 / secs
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
    n: usize,
    fields: usize,
) -> anyhow::Result<()> {
    let mut o = MqttOptions::new(format!("bench-pub-{run}-{p}"), host, port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 1000);
    let driver = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "bench publisher connection ended");
                    break;
                }
            }
        }
    });
    let topic = format!("devices/Bench/bench-{p}/telemetry");
    let t0 = fieldlab_core::time::now_ms();
    for i in 0..n {
        let mut data = String::with_capacity(fields * 16);
        for f in 0..fields {
            if f > 0 {
                data.push(',');
            }
            data.push_str(&format!(
                "\"f{f}\":{:.3}",
                20.0 + ((i + f) % 100) as f64 * 0.01
            ));
        }
        let payload = format!(
            "{{\"device_id\":\"bench-{p}\",\"device_type\":\"Bench\",\"seq\":{i},\"ts\":{},\"data\":{{{data}}}}}",
            t0 + i as i64
        );
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
            .await?;
    }
    // Give the last PUBACKs time, then disconnect.
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
