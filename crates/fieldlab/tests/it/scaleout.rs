//! Scale-out: two `fieldlab up` instances share one external Mosquitto through an MQTT 5 shared
//! subscription, and redelivered messages are stored once.

use crate::common;

use common::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Publish many messages on one topic with one `mosquitto_pub -l` (one message per line).
fn publish_lines(port: u16, topic: &str, lines: &[String]) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-l"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto_pub (scripts/test.sh installs mosquitto-clients)");
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A counter from /metrics.
fn metric(f: &Fieldlab, name: &str) -> u64 {
    let (_, text) = f.text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_total ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// (device, ts, seq) of every stored `seq` point of the devices.
fn stored(f: &Fieldlab, devices: &[String]) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for d in devices {
        let (st, v) = f.get(&format!("/api/v1/query?device_id={d}&field=seqv"));
        if st != 200 {
            continue;
        }
        for p in v["series"][0]["points"].as_array().into_iter().flatten() {
            out.push((
                d.clone(),
                p["ts"].as_str().unwrap().to_string(),
                p["value"].as_i64().unwrap(),
            ));
        }
    }
    out
}

#[test]
fn two_instances_share_the_load_and_store_each_point_once() {
    let m = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", m.port);
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("fieldlab.yaml");
    std::fs::write(
        &cfg,
        "devices:\n  fleet: []\ningest:\n  share_group: lab\n  batch_max: 16\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Fieldlab::start(da.path(), &["--broker", &url, "--config", cfg]);
    let b = Fieldlab::start(db.path(), &["--broker", &url, "--config", cfg]);
    a.wait_ready(Duration::from_secs(15));
    b.wait_ready(Duration::from_secs(15));

    // 3 devices x 100 unique messages; every 10th message is published three times in a row
    // (so, whatever the broker's distribution, some instance receives it at least twice), and
    // the first 20 of each device are published again at the end (a redelivery).
    let devices: Vec<String> = (0..3).map(|i| format!("share_{i}")).collect();
    let t0 = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z
    let mut expected = BTreeSet::new();
    let mut published = 0u64;
    for d in &devices {
        let msg = |seq: i64| {
            format!(
                "{{\"device_id\":\"{d}\",\"device_type\":\"Share\",\"seq\":{seq},\"ts\":{},\"data\":{{\"seqv\":{seq},\"x\":1.5}}}}",
                t0 + seq * 1000
            )
        };
        let mut lines = Vec::new();
        for seq in 0..100 {
            let copies = if seq % 10 == 0 { 3 } else { 1 };
            for _ in 0..copies {
                lines.push(msg(seq));
            }
            expected.insert((d.clone(), t0 + seq * 1000, seq));
        }
        for seq in 0..20 {
            lines.push(msg(seq));
        }
        published += lines.len() as u64;
        publish_lines(m.port, &format!("devices/Share/{d}/telemetry"), &lines);
    }
    assert_eq!(expected.len(), 300);

    // Both instances together received every message.
    eventually(Duration::from_secs(20), "all messages received", || {
        let got = metric(&a, "fieldlab_ingest_messages") + metric(&b, "fieldlab_ingest_messages");
        (got >= published).then_some(())
    });
    // Shared, not copied: each message went to one instance (no reconnects here, so no
    // broker redeliveries either).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        metric(&a, "fieldlab_ingest_messages") + metric(&b, "fieldlab_ingest_messages"),
        published
    );
    let to_ms = |ts: &str| fieldlab_core::time::parse_instant_ms(ts, 0).unwrap();
    let (sa, sb) = (stored(&a, &devices), stored(&b, &devices));
    assert!(
        !sa.is_empty() && !sb.is_empty(),
        "both instances must get a share: a {} b {}",
        sa.len(),
        sb.len()
    );
    // The union of what they stored is exactly the unique points, with the right values.
    let union: BTreeSet<(String, i64, i64)> = sa
        .iter()
        .chain(&sb)
        .map(|(d, ts, v)| (d.clone(), to_ms(ts), *v))
        .collect();
    assert_eq!(union, expected);
    // Within each instance a message received again was stored once: points stored are
    // exactly 2 fields x (messages - duplicates), and duplicates were caught.
    let mut dups = 0;
    for f in [&a, &b] {
        let msgs = metric(f, "fieldlab_ingest_messages");
        let d = metric(f, "fieldlab_ingest_duplicates");
        assert_eq!(metric(f, "fieldlab_ingest_points"), 2 * (msgs - d));
        dups += d;
    }
    // 30 triples give at least 30 duplicates by pigeonhole; the 60 late repeats may add more.
    assert!(dups >= 30, "duplicates caught: {dups}");
    assert!(sa.len() + sb.len() <= expected.len() + 90);
}
