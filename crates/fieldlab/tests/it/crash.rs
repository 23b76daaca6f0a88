//! Crash safety end to end: SIGKILL during heavy ingest, restart, nothing acknowledged is lost,
//! nothing is duplicated, and a torn WAL tail is truncated with a warning.
//!
//! The chain under test: a publisher sends QoS 1 messages to a real Mosquitto and records
//! which ones Mosquitto PUBACKed. fieldlab ingests from Mosquitto with a persistent session
//! and PUBACKs a message only after the store has made it durable (WAL + fsync). So after a
//! SIGKILL, every message the publisher saw acknowledged is either on fieldlab's disk or
//! still held by Mosquitto for fieldlab's session — and must be in the store once fieldlab
//! is back. If ingest acknowledged before the store commit, messages acknowledged but not
//! yet written would be lost at the kill, and this test would catch it.

use crate::common;

use common::*;
use rumqttc::{Client, Event, MqttOptions, Outgoing, QoS};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEVICES: usize = 4;
const MAX_MESSAGES: usize = 40_000;

fn ts(i: usize) -> String {
    // 2026-01-01T00:00:00Z + i seconds (unique per message).
    let (h, m, s) = (i / 3600, (i / 60) % 60, i % 60);
    format!("2026-01-{:02}T{:02}:{m:02}:{s:02}.000Z", 1 + h / 24, h % 24)
}

fn payload(i: usize) -> String {
    format!(
        r#"{{"device_id":"crash_{}","device_type":"CrashTest","seq":{i},"ts":"{}","data":{{"v":{i},"ok":true}}}}"#,
        i % DEVICES,
        ts(i)
    )
}

/// Publishes numbered messages until stopped; returns the numbers Mosquitto acknowledged.
struct Publisher {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    acked: Arc<Mutex<BTreeSet<usize>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    fn start(port: u16) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let mut o = MqttOptions::new("crash-publisher", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30)).set_inflight(200);
        let (client, mut conn) = Client::new(o, 400);
        let (st, se, ac) = (stop.clone(), sent.clone(), acked.clone());
        let publisher = std::thread::spawn(move || {
            let mut i = 0;
            // Bounded, so that catching up after the restart does not depend on how fast a
            // debug build on a loaded machine ingests.
            while !st.load(Ordering::Relaxed) && i < MAX_MESSAGES {
                let topic = format!("devices/CrashTest/crash_{}/telemetry", i % DEVICES);
                if client
                    .publish(topic, QoS::AtLeastOnce, false, payload(i))
                    .is_err()
                {
                    break;
                }
                i += 1;
                se.store(i, Ordering::Relaxed);
            }
            let _ = client.disconnect();
        });
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut acks = common::PubAcks::new(0);
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(ev) => {
                        if let Some(n) = acks.on_event(&ev) {
                            ac.lock().unwrap().insert(n);
                        }
                    }
                    Err(_) if stop2.load(Ordering::Relaxed) => break,
                    Err(e) => panic!("publisher connection failed: {e}"),
                }
            }
            let _ = publisher.join();
        });
        Publisher {
            stop,
            sent,
            acked,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> BTreeSet<usize> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.take().unwrap().join();
        self.acked.lock().unwrap().clone()
    }
}

/// Every stored (device, v) with its timestamp, asserting strict order (no duplicates).
fn stored(f: &Fieldlab) -> BTreeMap<usize, String> {
    common::stored_messages(f, "crash", DEVICES)
}

fn newest_wal_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a WAL segment")
}

#[test]
fn sigkill_during_heavy_ingest_loses_no_acknowledged_point_and_duplicates_none() {
    // Unlimited queue for the offline session, so Mosquitto never drops what it acknowledged.
    let m = Mosquitto::start_with("max_queued_messages 0\n");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(
        &cfg,
        "devices:\n  fleet: []\nstorage:\n  wal_fsync: always\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let broker = format!("mqtt://127.0.0.1:{}", m.port);
    let args = ["--config", cfg.to_str().unwrap(), "--broker", &broker];
    let mut f = Fieldlab::start(&data, &args);
    f.wait_ready(Duration::from_secs(15));

    let publisher = Publisher::start(m.port);
    // Heavy ingest: wait until fieldlab has stored a good number, then kill it mid-stream.
    let t0 = Instant::now();
    loop {
        let n = stored(&f).len();
        if n >= 3000 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "ingest too slow: {n} stored"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    f.kill9();
    let sent_at_kill = publisher.sent.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200)); // publishing goes on into Mosquitto
    let acked = publisher.finish();
    assert!(acked.len() > 3000, "{} acknowledged", acked.len());

    // What the killed process had on disk: a read-only look at the data dir.
    let out = output_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_fieldlab"))
            .args(["query", "--data-dir"])
            .arg(&data)
            .args([
                "--device-type",
                "CrashTest",
                "--field",
                "v",
                "--format",
                "csv",
            ]),
    );
    let on_disk = String::from_utf8_lossy(&out.stdout).lines().count() - 1;
    assert!(
        on_disk < acked.len(),
        "the kill must come during ingest: {on_disk} on disk, {} acknowledged (sent {sent_at_kill})",
        acked.len()
    );

    // A torn tail: half a record at the end of the newest WAL segment.
    let seg = newest_wal_segment(&data);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0x10, 0x27, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    std::fs::write(&seg, &bytes).unwrap();

    let f = Fieldlab::start(&data, &args);
    f.wait_ready(Duration::from_secs(15));
    // Eventually: fail only when ingest makes no progress for a while (a stall), not on a
    // fixed deadline that a slow machine could miss.
    let mut progress = (Instant::now(), 0usize);
    let got = loop {
        let got = stored(&f);
        if got.len() > progress.1 {
            progress = (Instant::now(), got.len());
        }
        if acked.iter().all(|n| got.contains_key(n)) {
            break got;
        }
        let missing: Vec<_> = acked
            .iter()
            .filter(|n| !got.contains_key(n))
            .take(5)
            .collect();
        assert!(
            progress.0.elapsed() < Duration::from_secs(20),
            "acknowledged messages missing after restart, no progress for 20 s, e.g. {missing:?} ({} stored, {} acknowledged)\nfieldlab stderr:\n{}",
            got.len(),
            acked.len(),
            f.stderr.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Nothing invented: every stored message was published, at its own timestamp.
    for (n, t) in &got {
        assert!(*n < sent_at_kill + 100_000);
        assert_eq!(t, &ts(*n), "message {n} at the wrong time");
    }
    let stderr = f.stderr.lock().unwrap().join("\n");
    assert!(
        stderr.contains("torn or corrupt tail"),
        "a truncated WAL tail must be reported: {stderr}"
    );
    let (_, metrics) = f.text("/metrics");
    assert!(
        metrics.contains("fieldlab_store_wal_truncations_total 1"),
        "{metrics}"
    );
}
