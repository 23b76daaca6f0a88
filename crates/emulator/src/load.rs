//! Load mode (`fieldlab emulate`): a fleet against any broker, measured from the outside.
//!
//! Like emqtt-bench, but with real device payloads: N devices publish every `interval`; a
//! separate subscriber takes everything back from the broker and measures, per message,
//! latency (receive time minus the payload's send timestamp) and, per device, loss by
//! sequence number (a seq never received is lost; one received twice is a duplicate).

use crate::runner::{Emulator, EmulatorMetrics, EmulatorSettings};
use crate::{ConnectionMode, DeviceSpec};
use fieldlab_core::config::Qos;
use fieldlab_core::DeviceDirectory;
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub settings: EmulatorSettings,
    pub fleet: Vec<DeviceSpec>,
    pub duration: Duration,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub devices: usize,
    pub seconds: f64,
    /// Messages the devices produced (sum of their final seq).
    pub sent: u64,
    pub received: u64,
    pub duplicates: u64,
    pub lost: u64,
    pub loss_percent: f64,
    pub publish_errors: u64,
    pub msgs_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "devices {}  duration {:.1} s  sent {}  received {}  lost {} ({:.3} %)  duplicates {}  publish errors {}\n\
             throughput {:.0} msgs/s  latency p50 {:.1} ms  p99 {:.1} ms",
            self.devices,
            self.seconds,
            self.sent,
            self.received,
            self.lost,
            self.loss_percent,
            self.duplicates,
            self.publish_errors,
            self.msgs_per_s,
            self.latency_p50_ms,
            self.latency_p99_ms
        )
    }
}

/// Seen sequence numbers of one device (a growable bitmap: 1 bit per message).
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    distinct: u64,
    dups: u64,
}

impl Seen {
    fn mark(&mut self, seq: u64) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            self.dups += 1;
        } else {
            self.bits[w] |= 1 << b;
            self.distinct += 1;
        }
    }
}

/// The `q`-quantile of the latencies (ms); NaN when none were seen.
fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64
}

fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// `count` devices of `device_type` named `<prefix>-<i>`, one message every `interval_ms`.
pub fn generated_fleet(
    count: usize,
    device_type: &str,
    prefix: &str,
    interval_ms: u64,
) -> Vec<DeviceSpec> {
    (0..count)
        .map(|i| DeviceSpec {
            name: format!("{prefix}-{i}"),
            device_type: device_type.into(),
            config: crate::DeviceSettings {
                update_interval: interval_ms as f64 / 1000.0,
                ..Default::default()
            },
            scenarios: vec![],
        })
        .collect()
}

/// Whether the broker takes an MQTT 5 CONNECT: one probe connection, before any device. A
/// broker that speaks 3.1.1 only closes it or refuses the protocol level;
/// the devices' connections would then fail one by one and the run would report them as lost
/// messages rather than as the mismatch it is.
async fn probe_mqtt5(s: &crate::EmulatorSettings) -> anyhow::Result<()> {
    use rumqttc::v5;
    let mut o = v5::MqttOptions::new(
        format!("fieldlab-load-probe-{}", std::process::id()),
        s.host.clone(),
        s.port,
    );
    o.set_keep_alive(Duration::from_secs(30));
    if let (Some(u), Some(p)) = (&s.username, &s.password) {
        o.set_credentials(u.clone(), p.clone());
    }
    if let Some(t) = &s.tls {
        o.set_transport(rumqttc::Transport::tls_with_config(t.clone()));
    }
    let (c, mut el) = v5::AsyncClient::new(o, 10);
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match el.poll().await {
                Ok(v5::Event::Incoming(v5::Incoming::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no CONNACK within 5 s".into()));
    let _ = c.disconnect().await;
    r.map_err(|e| {
        anyhow::anyhow!(
            "the broker at {}:{} does not take MQTT 5 connections ({e}); use --protocol 3.1.1, \
             or a broker that speaks MQTT 5 (Mosquitto, EMQX, `fieldlab up`'s embedded broker)",
            s.host,
            s.port
        )
    })
}

/// Run the fleet for `duration`, then stop it and wait (at most 10 s) for the last messages.
pub async fn run(o: LoadOptions) -> anyhow::Result<LoadReport> {
    let s = o.settings.clone();
    if s.protocol == crate::MqttProtocol::V5 {
        probe_mqtt5(&s).await?;
    }
    // The subscriber first, so nothing is missed.
    let mut so = MqttOptions::new(
        format!("fieldlab-load-sub-{}", std::process::id()),
        s.host.clone(),
        s.port,
    );
    so.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(1000);
    if let (Some(u), Some(p)) = (&s.username, &s.password) {
        so.set_credentials(u.clone(), p.clone());
    }
    if let Some(t) = &s.tls {
        so.set_transport(rumqttc::Transport::tls_with_config(t.clone()));
    }
    let (sub, mut el) = AsyncClient::new(so, 1000);
    let filter = if s.topic_template == "devices/{type}/{id}/telemetry" {
        "devices/+/+/telemetry".to_string()
    } else {
        "#".to_string()
    };
    sub.subscribe(filter, qos(s.qos)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(100_000);
    let (suback_tx, suback_rx) = tokio::sync::oneshot::channel::<()>();
    let poller = tokio::spawn(async move {
        let mut suback = Some(suback_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p.payload).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = suback.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "load subscriber lost the broker; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), suback_rx)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the subscriber was not subscribed within 10 s; is the broker at {}:{} up?",
                s.host,
                s.port
            )
        })??;

    let metrics = EmulatorMetrics::default();
    let em = Emulator::new(s.clone(), DeviceDirectory::new(), None, metrics.clone())
        .map_err(anyhow::Error::msg)?;
    let n = o.fleet.len();
    // Devices created from a fleet share nothing but their type; start them spread over the
    // first interval so that they do not all fire in the same millisecond.
    for d in o.fleet {
        let name = d.name.clone();
        em.create_from(&name, Arc::new(d), false)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        em.start_spread(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if s.connection == ConnectionMode::PerDevice {
        tracing::info!(devices = n, "connecting one client per device");
    }

    let mut seen: HashMap<String, Seen> = HashMap::new();
    // Latencies in ms, in an HdrHistogram (3 significant digits): memory stays a few KiB
    // however many messages a long run receives.
    let mut lat: Histogram<u64> = Histogram::new(3).expect("3 significant digits is valid");
    let mut received = 0u64;
    let t0 = Instant::now();
    let mut last_print = Instant::now();
    let on_msg = |payload: &[u8], seen: &mut HashMap<String, Seen>, lat: &mut Histogram<u64>| {
        let now = fieldlab_core::time::now_ms();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        let (Some(id), Some(seq)) = (v["device_id"].as_str(), v["seq"].as_u64()) else {
            return;
        };
        if let Some(ts) = v["ts"]
            .as_str()
            .and_then(|t| fieldlab_core::time::parse_instant_ms(t, now).ok())
        {
            // A device clock ahead of ours counts as 0 ms; the histogram grows as needed.
            let _ = lat.record((now - ts).max(0) as u64);
        }
        match seen.get_mut(id) {
            Some(s) => s.mark(seq),
            None => seen.entry(id.to_string()).or_default().mark(seq),
        }
    };
    while t0.elapsed() < o.duration {
        tokio::select! {
            m = rx.recv() => if let Some(p) = m { received += 1; on_msg(&p, &mut seen, &mut lat); },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if o.progress && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "  {:>5.1} s  published {:>10}  received {:>10}  ({:.0} msgs/s)",
                t0.elapsed().as_secs_f64(),
                metrics.published.get(),
                received,
                received as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    em.stop_all();
    let seconds = t0.elapsed().as_secs_f64();
    let sent: u64 = em.list(usize::MAX).iter().map(|d| d.seq).sum();
    // Drain: until everything arrived or nothing came for 2 s (at most 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let distinct = |seen: &HashMap<String, Seen>| seen.values().map(|s| s.distinct).sum::<u64>();
    while distinct(&seen) < sent && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            Ok(Some(p)) => on_msg(&p, &mut seen, &mut lat),
            _ => break,
        }
    }
    em.clone().stop().await;
    let _ = sub.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), poller).await;

    let got = distinct(&seen);
    let dups: u64 = seen.values().map(|s| s.dups).sum();
    let lost = sent.saturating_sub(got);
    Ok(LoadReport {
        devices: n,
        seconds,
        sent,
        received: got,
        duplicates: dups,
        lost,
        loss_percent: if sent == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / sent as f64
        },
        publish_errors: metrics.publish_errors.get(),
        msgs_per_s: got as f64 / seconds,
        latency_p50_ms: quantile_ms(&lat, 0.5),
        latency_p99_ms: quantile_ms(&lat, 0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_counts_distinct_and_duplicates() {
        let mut s = Seen::default();
        for q in [1, 2, 2, 200, 3] {
            s.mark(q);
        }
        assert_eq!((s.distinct, s.dups), (4, 1));
        let mut h = Histogram::<u64>::new(3).unwrap();
        assert!(quantile_ms(&h, 0.5).is_nan());
        for ms in [1, 2, 3, 4, 5] {
            h.record(ms).unwrap();
        }
        assert_eq!(quantile_ms(&h, 0.5), 3.0);
        assert_eq!(quantile_ms(&h, 0.99), 5.0);
    }
}
