//! Hostile ingest against the real binary (issue 30, points 1, 2 and 9): a device login that
//! writes as another device, and one login that names 20k devices.
//!
//! What must hold: a reading is stored only under the device its topic (and so, with auth on,
//! its login) names, or one a configured gateway may speak for; everything else is quarantined
//! with the reason and counted in `fieldlab_ingest_rejected_total{reason=...}`, and the devices
//! one login can bring in are capped (`MAX_DEVICES`, `ingest.gateways.<login>.max_devices`) so
//! memory stays bounded (measured from VmRSS of the `fieldlab up` process).

use crate::common;

use common::{add_key, add_user, eventually, Fieldlab};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Publish `msgs` (topic, payload) at QoS 1 over one connection as `login` (user, password;
/// the user is also the client id), and wait until the broker acknowledged all of them.
fn publish_all(port: u16, login: Option<(&str, &str)>, msgs: Vec<(String, String)>) {
    let id = login.map_or("hostile-ingest", |l| l.0);
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (client, mut conn) = Client::new(o, 64);
    let n = msgs.len();
    let publisher = std::thread::spawn(move || {
        for (t, p) in msgs {
            client.publish(t, QoS::AtLeastOnce, false, p).unwrap();
        }
        client
    });
    let mut acked = 0;
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                if acked == n {
                    break;
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => panic!("publishing failed after {acked} of {n} acknowledgements: {e}"),
        }
    }
    let client = publisher.join().unwrap();
    let _ = client.disconnect();
    for ev in conn.iter() {
        if !matches!(ev, Ok(Event::Outgoing(o)) if o != Outgoing::Disconnect) {
            break;
        }
    }
}

/// The value of one sample line of `/metrics` (exact name and labels), 0 when absent.
fn metric(f: &Fieldlab, sample: &str) -> f64 {
    let (_, text) = f.text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Quarantined entries (topic, reason), as the API lists them.
fn quarantined(f: &Fieldlab, token: Option<&str>) -> Vec<(String, String)> {
    let c = reqwest::blocking::Client::new();
    let mut r = c.get(f.url("/api/v1/quarantine?limit=1000"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let v: Value = r.send().unwrap().json().unwrap();
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {v}"))
        .iter()
        .map(|i| {
            (
                i["topic"].as_str().unwrap_or_default().to_string(),
                i["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_device_login_cannot_write_as_another_device_in_any_payload_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    add_user(&data, "ann", "operator", "correct horse battery");
    let key = add_key(&data, "dev1");
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(&cfg, "auth:\n  enabled: true\ndevices:\n  fleet: []\n").unwrap();
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    f.wait_ready(Duration::from_secs(20));
    let c = reqwest::blocking::Client::new();
    let token: Value = c
        .post(f.url("/api/v1/auth/token"))
        .json(&json!({"username": "ann", "password": "correct horse battery"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();

    // Each message as dev1, on dev1's own topic (the only one its key may write).
    let topic = "devices/TemperatureSensor/dev1/telemetry";
    let spoofs = [
        // fieldlab JSON
        r#"{"device_id":"temperature_sensor_1","seq":1,"ts":"2026-01-01T00:00:00Z","data":{"temperature":999.9}}"#,
        // the legacy emulator payload
        r#"{"device":"temperature_sensor_1","timestamp":"2026-01-01T00:00:01Z","data":{"temperature":{"unit":"C","value":999.9}}}"#,
        // flat JSON
        r#"{"device_id":"temperature_sensor_1","temperature":999.9,"ts":1767225602000}"#,
        // line protocol tag
        "TemperatureSensor,device_id=temperature_sensor_1 temperature=999.9 1767225603000000000",
        // a JSON array whose first element is dev1's own
        r#"[{"device_id":"dev1","ts":1767225604000,"data":{"temperature":20}},{"device_id":"temperature_sensor_1","ts":1767225604000,"data":{"temperature":999.9}}]"#,
    ];
    let mut msgs: Vec<(String, String)> = spoofs
        .iter()
        .map(|p| (topic.to_string(), p.to_string()))
        .collect();
    // dev1's own reading passes.
    msgs.push((
        topic.to_string(),
        r#"{"device_id":"dev1","seq":2,"ts":"2026-01-01T00:01:00Z","data":{"temperature":21.5}}"#
            .to_string(),
    ));
    publish_all(f.mqtt_port, Some(("dev1", &key)), msgs);

    let rejected = r#"fieldlab_ingest_rejected_total{reason="device_mismatch"}"#;
    // Counted when refused, listed once the quarantine has it on disk.
    eventually(Duration::from_secs(15), "5 mismatches quarantined", || {
        (metric(&f, rejected) == 5.0 && metric(&f, "fieldlab_ingest_quarantined_total") == 5.0)
            .then_some(())
    });
    let q = quarantined(&f, Some(&token));
    let mismatches: Vec<_> = q
        .iter()
        .filter(|(t, r)| t == topic && r.starts_with("device mismatch"))
        .collect();
    assert_eq!(mismatches.len(), 5, "{q:?}");
    assert!(
        mismatches
            .iter()
            .all(|(_, r)| r.contains("temperature_sensor_1") && r.contains("dev1")),
        "{mismatches:?}"
    );
    // dev1's own reading is stored, the spoofed device has nothing (not even the array's
    // first element: the message is the unit).
    let points = |dev: &str| {
        let v: Value = c
            .get(f.url(&format!(
                "/api/v1/query?device_id={dev}&field=temperature&from=2025-12-31T00:00:00Z"
            )))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap_or(Value::Null);
        v["series"][0]["points"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    eventually(Duration::from_secs(10), "dev1's reading stored", || {
        (points("dev1").len() == 1).then_some(())
    });
    assert!(points("temperature_sensor_1").is_empty());
    let dev = c
        .get(f.url("/api/v1/devices/temperature_sensor_1"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(dev.status(), 404, "the spoofed device must not exist");
    assert_eq!(metric(&f, "fieldlab_ingest_quarantined_total"), 5.0);
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The pid of the `fieldlab up` whose command line names `data`.
fn pid_of(data: &Path) -> u32 {
    let want = data.to_string_lossy().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "up") && args.contains(&want) {
            return pid;
        }
    }
    panic!("no `fieldlab up` process for {want}");
}

#[test]
fn twenty_thousand_device_ids_from_one_login_are_capped_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("fieldlab.yaml");
    // gw1 may speak for any plant1_ device, as many as the global limit allows; gw2 for at
    // most 5 plant2_ devices. devices.max_devices is what MAX_DEVICES sets; with no emulated
    // devices every device is external.
    std::fs::write(
        &cfg,
        "devices:\n  max_devices: 1006\n  fleet: []\ningest:\n  gateways:\n    gw1:\n      devices: [\"plant1_*\"]\n      max_devices: 100000\n    gw2:\n      devices: [\"plant2_*\"]\n      max_devices: 5\n",
    )
    .unwrap();
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    f.wait_ready(Duration::from_secs(20));
    let pid = pid_of(&data);
    let gw1 = "devices/Gateway/gw1/telemetry".to_string();
    let gw2 = "devices/Gateway/gw2/telemetry".to_string();
    // Warm up: one accepted message of gw1 itself, so the baseline includes ingest's first
    // batch.
    publish_all(
        f.mqtt_port,
        None,
        vec![(
            gw1.clone(),
            r#"{"device_id":"gw1","data":{"uptime":1}}"#.into(),
        )],
    );
    eventually(Duration::from_secs(10), "the warm-up stored", || {
        (metric(&f, "fieldlab_ingest_points_total") >= 1.0).then_some(())
    });
    let before = rss_kib(pid);

    // gw2: 10 devices, its own cap is 5; then a device outside its patterns, and an id with a
    // NUL byte.
    let mut msgs: Vec<(String, String)> = (0..10)
        .map(|i| {
            let m = json!({"device_id": format!("plant2_{i}"), "data": {"t": 1}});
            (gw2.clone(), m.to_string())
        })
        .collect();
    msgs.push((
        gw2.clone(),
        json!({"device_id": "plant1_x", "data": {"t": 1}}).to_string(),
    ));
    msgs.push((
        gw2.clone(),
        json!({"device_id": "plant2_\u{0}x", "data": {"t": 1}}).to_string(),
    ));
    // A field name of 100 KB: every name is kept per series, so it is refused.
    let mut data = serde_json::Map::new();
    data.insert("n".repeat(100_000), json!(1));
    msgs.push((
        gw2.clone(),
        json!({"device_id": "plant2_0", "data": data}).to_string(),
    ));
    // 100 KB of tags on 1000 fields: each field's series would keep a copy (100 MB).
    let fields: serde_json::Map<String, Value> =
        (0..1000).map(|i| (format!("f{i}"), json!(1))).collect();
    msgs.push((
        gw2.clone(),
        json!({"device_id": "plant2_0", "tags": {"note": "t".repeat(100_000)}, "data": fields})
            .to_string(),
    ));
    publish_all(f.mqtt_port, None, msgs);
    eventually(Duration::from_secs(15), "gw2's messages decided", || {
        (metric(&f, "fieldlab_ingest_messages_total") >= 15.0).then_some(())
    });

    // gw1: 40 messages of 500 readings, each naming another device: 20k device ids from one
    // login. 1006 - gw1 - 5 = 1000 fit: the first two messages; the other 38 are refused.
    let ts0 = 1_767_225_600_000i64;
    let batches: Vec<(String, String)> = (0..40)
        .map(|b| {
            let items: Vec<Value> = (0..500)
                .map(|i| {
                    json!({"device_id": format!("plant1_{:05}", b * 500 + i),
                           "device_type": "Sensor", "ts": ts0 + i as i64,
                           "data": {"temperature": 20.0 + (i % 7) as f64}})
                })
                .collect();
            (gw1.clone(), Value::Array(items).to_string())
        })
        .collect();
    publish_all(f.mqtt_port, None, batches);
    // 38 + 5 over a limit, 1 mismatch, 1 invalid id, 1 invalid field, 1 with too many tags:
    // counted once the quarantine has them.
    eventually(Duration::from_secs(60), "every message decided", || {
        (metric(&f, "fieldlab_ingest_messages_total") >= 55.0
            && metric(&f, "fieldlab_ingest_quarantined_total") >= 47.0)
            .then_some(())
    });

    let q = quarantined(&f, None);
    let reasons = |topic: &str, prefix: &str| {
        q.iter()
            .filter(|(t, r)| t == topic && r.starts_with(prefix))
            .count()
    };
    assert_eq!(
        reasons(&gw1, "device limit"),
        38,
        "{:?}",
        &q[..q.len().min(3)]
    );
    assert_eq!(reasons(&gw2, "device limit"), 5, "{q:?}");
    assert_eq!(reasons(&gw2, "device mismatch"), 1, "{q:?}");
    assert_eq!(reasons(&gw2, "invalid device id"), 1, "{q:?}");
    assert_eq!(reasons(&gw2, "invalid field name"), 1, "{q:?}");
    assert_eq!(reasons(&gw2, "too many tags"), 1, "{q:?}");
    let rejected = |r: &str| {
        metric(
            &f,
            &format!("fieldlab_ingest_rejected_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(rejected("device_limit"), 43.0);
    assert_eq!(rejected("device_mismatch"), 1.0);
    assert_eq!(rejected("invalid_device_id"), 1.0);
    assert_eq!(rejected("invalid_field"), 1.0);
    assert_eq!(rejected("invalid_tags"), 1.0);
    assert_eq!(rejected("series_limit"), 0.0);
    let (_, devs) = f.get("/api/v1/devices");
    let n = devs["devices"].as_array().map_or(0, Vec::len);
    assert_eq!(n, 1006, "gw1, gw2's first five and 1000 of gw1's");

    let after = rss_kib(pid);
    let grown_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!("VmRSS {before} KiB -> {after} KiB: +{grown_mib:.1} MiB for 20k device ids");
    assert!(grown_mib < 300.0, "RSS grew by {grown_mib:.1} MiB");
}
