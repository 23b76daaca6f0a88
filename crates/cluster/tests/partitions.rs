//! Against a real nats-server (Debian's 2.9, MQTT listener, JetStream): devices publish MQTT,
//! each device's stream reaches one replica whole and in order, and when a replica dies the
//! survivor takes its partitions over and reads them from the log, losing nothing.

use fieldlab_cluster::{start, ClusterConfig, Started};
use fieldlab_core::config::HumanDuration;
use fieldlab_ingest::LogMsg;
use fieldlab_testkit::TempNats;
use parking_lot::Mutex;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEVICES: usize = 20;

fn config(nats: &TempNats) -> ClusterConfig {
    ClusterConfig {
        nats_url: Some(nats.url()),
        partitions: 6,
        lease: HumanDuration::from_secs(2),
        ..Default::default()
    }
}

/// A replica's node and what it received, "committed" as soon as received (no store here).
struct Replica {
    started: fieldlab_cluster::Cluster,
    got: Arc<Mutex<Vec<LogMsg>>>,
}

async fn replica(cfg: &ClusterConfig, id: &str, dir: &std::path::Path) -> Replica {
    let Started {
        cluster,
        mut rx,
        committed,
    } = start(cfg, id.into(), format!("http://{id}"), dir, 256)
        .await
        .expect("join the cluster");
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            committed(&[(m.partition, m.seq)]);
            g.lock().push(m);
        }
    });
    Replica {
        started: cluster,
        got,
    }
}

/// Publish `from..to` of every device, QoS 1, each device with its own client; returns once
/// every message was acknowledged (PUBACK) by nats-server.
async fn publish(port: u16, from: u64, to: u64) {
    let mut tasks = Vec::new();
    for d in 0..DEVICES {
        tasks.push(tokio::spawn(async move {
            let mut o = MqttOptions::new(format!("dev{d}"), "127.0.0.1", port);
            o.set_keep_alive(Duration::from_secs(10));
            let (c, mut el) = AsyncClient::new(o, 100);
            for seq in from..to {
                let body = format!(
                    r#"{{"device_id":"dev{d}","seq":{seq},"ts":{},"temperature":{seq}}}"#,
                    1_700_000_000_000u64 + seq * 1000
                );
                c.publish(
                    format!("devices/Probe/dev{d}/telemetry"),
                    QoS::AtLeastOnce,
                    false,
                    body,
                )
                .await
                .unwrap();
            }
            let mut acked = 0;
            while acked < to - from {
                if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.expect("mqtt") {
                    acked += 1;
                }
            }
            let _ = c.disconnect().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// seqs received per device by `r`, for the devices it owns.
fn owned_streams(r: &Replica) -> BTreeMap<String, Vec<u64>> {
    let view = r.started.view();
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in r.got.lock().iter() {
        let id = m.topic.split('/').nth(2).unwrap().to_string();
        if view.owns(&id) {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            out.entry(id).or_default().push(v["seq"].as_u64().unwrap());
        }
    }
    out
}

async fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_stream_is_read_whole_by_one_replica_and_survives_its_death() {
    let cfg0 = ClusterConfig::default();
    let nats = match TempNats::start(
        &ClusterConfig {
            partitions: 6,
            ..cfg0
        }
        .nats_mapping(),
    ) {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    };
    let cfg = config(&nats);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = replica(&cfg, "a", dirs[0].path()).await;
    // Replica b in its own runtime, so that it can die without saying goodbye.
    let rt_b = tokio::runtime::Runtime::new().unwrap();
    let (cfg_b, dir_b) = (cfg.clone(), dirs[1].path().to_path_buf());
    let b = rt_b
        .spawn(async move { replica(&cfg_b, "b", &dir_b).await })
        .await
        .unwrap();
    // Both members seen, and every partition owned by exactly one of them.
    wait_for("two members sharing the partitions", 20, || {
        let (sa, sb) = (a.started.status(), b.started.status());
        sa.members.len() == 2
            && (0..6).all(|p| {
                let oa = sa.partitions[p].owner.as_deref();
                let ob = sb.partitions[p].owner.as_deref();
                oa.is_some() && oa == ob && oa == sa.partitions[p].desired.as_deref()
            })
            && (0..DEVICES).all(|d| {
                let id = format!("dev{d}");
                a.started.view().owns(&id) != b.started.view().owns(&id)
            })
    })
    .await;
    let owned_by_b = (0..DEVICES)
        .filter(|d| b.started.view().owns(&format!("dev{d}")))
        .count();
    assert!(
        owned_by_b > 0 && owned_by_b < DEVICES,
        "b owns {owned_by_b} devices"
    );

    publish(nats.mqtt_port, 0, 10).await;
    let whole = |r: &Replica, n: u64| {
        owned_streams(r)
            .values()
            .all(|v| *v == (0..n).collect::<Vec<_>>())
    };
    wait_for(
        "every device's 10 readings, in order, at its owner",
        20,
        || {
            let (sa, sb) = (owned_streams(&a), owned_streams(&b));
            sa.len() + sb.len() == DEVICES && whole(&a, 10) && whole(&b, 10)
        },
    )
    .await;

    // b dies (no goodbye: its leases lapse), more readings arrive.
    drop(b);
    rt_b.shutdown_background();
    publish(nats.mqtt_port, 10, 20).await;
    wait_for("a owning every device, each whole and in order", 30, || {
        let s = owned_streams(&a);
        s.len() == DEVICES && whole(&a, 20)
    })
    .await;
    a.started.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_loses_nothing_acknowledged_and_reading_resumes() {
    let mut nats = TempNats::start(
        &ClusterConfig {
            partitions: 6,
            ..Default::default()
        }
        .nats_mapping(),
    )
    .unwrap();
    let cfg = config(&nats);
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&cfg, "a", dir.path()).await;
    wait_for("a owning every partition", 20, || {
        (0..DEVICES).all(|d| a.started.view().owns(&format!("dev{d}")))
    })
    .await;
    publish(nats.mqtt_port, 0, 10).await;
    let whole = |r: &Replica, n: u64| {
        let s = owned_streams(r);
        s.len() == DEVICES && s.values().all(|v| *v == (0..n).collect::<Vec<_>>())
    };
    wait_for("10 readings of every device", 20, || whole(&a, 10)).await;
    // SIGKILL nats-server: what it acknowledged is in JetStream's files; start it again on the
    // same ports and files, publish more.
    nats.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.run().unwrap();
    publish(nats.mqtt_port, 10, 20).await;
    // And SIGKILL it again the moment the last PUBACK arrived: acknowledged means stored.
    nats.kill();
    nats.run().unwrap();
    wait_for(
        "every device's 20 readings, once and in order, after the restart",
        60,
        || whole(&a, 20),
    )
    .await;
    a.started.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_hands_its_partitions_back_at_once() {
    let nats = TempNats::start(
        &ClusterConfig {
            partitions: 6,
            ..Default::default()
        }
        .nats_mapping(),
    )
    .unwrap();
    // A long lease: taking over after a lapse would take 10 s; a hand-back takes a tick.
    let cfg = ClusterConfig {
        lease: HumanDuration::from_secs(10),
        ..config(&nats)
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = replica(&cfg, "a", dirs[0].path()).await;
    let b = replica(&cfg, "b", dirs[1].path()).await;
    wait_for("b owning its share", 30, || {
        (0..DEVICES).any(|d| b.started.view().owns(&format!("dev{d}")))
            && (0..DEVICES).all(|d| {
                let id = format!("dev{d}");
                a.started.view().owns(&id) != b.started.view().owns(&id)
            })
    })
    .await;
    let t0 = Instant::now();
    b.started.stop().await;
    wait_for("a owning every device after b stopped", 5, || {
        (0..DEVICES).all(|d| a.started.view().owns(&format!("dev{d}")))
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    a.started.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigurations_are_reported_not_silently_served() {
    // The NATS mapping makes 4 partitions, the replicas think 6.
    let nats = TempNats::start(
        &ClusterConfig {
            partitions: 4,
            ..Default::default()
        }
        .nats_mapping(),
    )
    .unwrap();
    let cfg = config(&nats);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = replica(&cfg, "a", dirs[0].path()).await;
    publish(nats.mqtt_port, 0, 2).await;
    wait_for("the partition mismatch reported", 20, || {
        a.started
            .settled()
            .is_err_and(|e| e.contains("cluster.partitions"))
    })
    .await;
    // Two running replicas with one id.
    let twin = replica(&cfg, "a", dirs[1].path()).await;
    wait_for("the shared id reported", 20, || {
        [&a, &twin].iter().any(|r| {
            r.started
                .settled()
                .is_err_and(|e| e.contains("another running replica uses the id `a`"))
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_reach_nats_over_tls_only_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let fieldlab_testkit::pki::Pki { ca, cert, key, .. } =
        fieldlab_testkit::pki::Pki::localhost(dir.path(), "", "fieldlab test CA");
    let mapping = ClusterConfig {
        partitions: 6,
        ..Default::default()
    }
    .nats_mapping();
    let nats = TempNats::start(&format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n{mapping}",
        cert.display(),
        key.display()
    ))
    .unwrap();
    let url = format!("tls://localhost:{}", nats.port);
    let data = tempfile::tempdir().unwrap();
    // Without the CA the server's certificate is not trusted: no connection.
    let plain = ClusterConfig {
        nats_url: Some(url.clone()),
        ..config(&nats)
    };
    let refused = start(&plain, "x".into(), "http://x".into(), data.path(), 16).await;
    assert!(refused.is_err(), "connected without trusting the CA");
    // With it: the replica joins and reads what devices publish.
    let cfg = ClusterConfig {
        tls_ca_file: Some(ca),
        ..plain
    };
    let a = replica(&cfg, "a", data.path()).await;
    wait_for("a owning every partition", 20, || {
        (0..DEVICES).all(|d| a.started.view().owns(&format!("dev{d}")))
    })
    .await;
    publish(nats.mqtt_port, 0, 3).await;
    wait_for("every device's readings over TLS", 20, || {
        let s = owned_streams(&a);
        s.len() == DEVICES && s.values().all(|v| *v == vec![0, 1, 2])
    })
    .await;
    a.started.stop().await;
}
