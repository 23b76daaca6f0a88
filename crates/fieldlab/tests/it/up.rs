//! `fieldlab up` end to end, as a newcomer (and the release check) would run it: real process,
//! free ports, temp data dir, the real mosquitto_pub client, SIGINT, restart.

use crate::common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DEMO: [(&str, &str, &str); 3] = [
    ("temperature_sensor_1", "TemperatureSensor", "temperature"),
    ("pressure_valve_1", "PressureValve", "pressure"),
    ("pv_inverter_1", "PvInverter", "dc_power"),
];

/// Every (field, ts) -> value of a device.
fn points_of(f: &Fieldlab, device: &str) -> BTreeMap<(String, String), Value> {
    let (st, v) = f.get(&format!("/api/v1/query?device_id={device}"));
    if st != 200 {
        return BTreeMap::new();
    }
    let mut out = BTreeMap::new();
    for s in v["series"].as_array().unwrap() {
        let field = s["field"].as_str().unwrap().to_string();
        let pts = s["points"].as_array().unwrap();
        let ts: Vec<&str> = pts.iter().map(|p| p["ts"].as_str().unwrap()).collect();
        let mut sorted = ts.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            ts, sorted,
            "{device}/{field}: points must be strictly ordered without duplicates"
        );
        for p in pts {
            out.insert(
                (field.clone(), p["ts"].as_str().unwrap().to_string()),
                p["value"].clone(),
            );
        }
    }
    out
}

#[test]
fn up_runs_the_pipeline_and_a_restart_keeps_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fieldlab::start(dir.path(), &[]);
    let took = f.wait_ready(Duration::from_secs(10));
    eprintln!("ready after {took:?}");

    // The demo fleet is listed with types, and each device's points are queryable.
    let (_, devs) = f.get("/api/v1/devices");
    let listed: BTreeMap<String, String> = devs["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["device_id"].as_str().unwrap().into(),
                d["device_type"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (id, ty, field) in DEMO {
        assert_eq!(listed.get(id).map(String::as_str), Some(ty), "{devs}");
        eventually(
            Duration::from_secs(10),
            &format!("points of {id}/{field}"),
            || {
                let (st, v) = f.get(&format!(
                    "/api/v1/query?device_id={id}&field={field}&from=-1h"
                ));
                (st == 200 && v["series"][0]["count"].as_u64()? >= 2).then_some(())
            },
        );
    }
    let (_, series) = f.get("/api/v1/series?device_id=pv_inverter_1");
    assert!(series["count"].as_u64().unwrap() >= 6, "{series}");
    assert_eq!(series["series"][0]["tags"]["site"], "renewable-lab");

    // A hand-written payload from the real mosquitto_pub client is stored.
    let payload = br#"{"device_id":"manual_1","device_type":"TemperatureSensor","seq":1,"ts":"2026-01-01T00:00:00.000Z","data":{"temperature":21.4,"door_open":false},"status":"operational"}"#;
    mosquitto_pub(
        f.mqtt_port,
        "devices/TemperatureSensor/manual_1/telemetry",
        payload,
    );
    let manual = eventually(Duration::from_secs(10), "manual_1 stored", || {
        let (st, v) = f.get("/api/v1/query?device_id=manual_1&field=temperature");
        (st == 200).then_some(v)
    });
    assert_eq!(
        manual["series"][0]["points"][0],
        serde_json::json!({"ts": "2026-01-01T00:00:00.000Z", "value": 21.4})
    );
    let (_, door) = f.get("/api/v1/query?device_id=manual_1&field=door_open");
    assert_eq!(door["series"][0]["points"][0]["value"], false);

    // Garbage lands in quarantine with topic, bytes and reason.
    mosquitto_pub(
        f.mqtt_port,
        "devices/TemperatureSensor/broken_1/telemetry",
        b"{\"data\": {\"temperature\": 21.4",
    );
    let q = eventually(Duration::from_secs(10), "quarantined payload", || {
        let (_, v) = f.get("/api/v1/quarantine");
        (v["total"].as_u64()? >= 1).then_some(v)
    });
    let item = &q["items"][0];
    assert_eq!(
        item["topic"],
        "devices/TemperatureSensor/broken_1/telemetry"
    );
    assert!(
        item["reason"].as_str().unwrap().contains("invalid JSON"),
        "{item}"
    );
    assert_eq!(item["payload_text"], "{\"data\": {\"temperature\": 21.4");

    // /metrics parses as Prometheus text and has the promised series.
    let (st, text) = f.text("/metrics");
    assert_eq!(st, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("metrics parse");
    let names: BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for want in [
        "fieldlab_ingest_messages_total",
        "fieldlab_ingest_quarantined_total",
        "fieldlab_store_points_total",
        "fieldlab_active_devices",
        "fieldlab_http_request_duration_seconds_count",
    ] {
        assert!(
            names.contains(want),
            "{want} missing from /metrics: {names:?}"
        );
    }
    let value = |n: &str| match scrape.samples.iter().find(|s| s.metric == n).unwrap().value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{n} has an unexpected type"),
    };
    assert!(value("fieldlab_ingest_quarantined_total") >= 1.0);
    assert!(value("fieldlab_active_devices") >= 3.0);

    // Everything visible now must survive SIGINT and a restart, exactly once.
    let before: BTreeMap<&str, _> = DEMO
        .iter()
        .map(|(id, _, _)| (*id, points_of(&f, id)))
        .collect();
    let st = f.interrupt();
    assert!(
        st.success(),
        "exit status {st:?}; stderr: {:?}",
        f.stderr.lock().unwrap()
    );
    assert!(
        f.stdout_text().contains("stopped cleanly"),
        "{}",
        f.stdout_text()
    );

    let f2 = Fieldlab::start(dir.path(), &[]);
    f2.wait_ready(Duration::from_secs(10));
    for (id, pts) in &before {
        assert!(!pts.is_empty());
        let after = points_of(&f2, id);
        for (k, v) in pts {
            assert_eq!(
                after.get(k),
                Some(v),
                "{id} {k:?} lost or changed after restart"
            );
        }
    }
    let (_, manual_after) = f2.get("/api/v1/query?device_id=manual_1&field=temperature");
    assert_eq!(
        manual_after["series"][0]["points"],
        manual["series"][0]["points"]
    );
    let (_, q2) = f2.get("/api/v1/quarantine");
    assert_eq!(q2["total"], q["total"]);
    // Devices seen before the restart are still listed.
    let (_, devs2) = f2.get("/api/v1/devices");
    assert!(devs2["devices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["device_id"] == "manual_1"));
}

#[test]
fn sigkill_loses_no_point_that_was_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fieldlab::start(dir.path(), &[]);
    f.wait_ready(Duration::from_secs(10));
    for i in 0..20 {
        let p = format!(
            r#"{{"device_id":"crash_1","seq":{i},"ts":{},"data":{{"v":{i}}}}}"#,
            1_767_225_600_000i64 + i * 1000
        );
        mosquitto_pub(f.mqtt_port, "devices/Probe/crash_1/telemetry", p.as_bytes());
    }
    eventually(Duration::from_secs(10), "20 crash_1 points", || {
        let (_, v) = f.get("/api/v1/query?device_id=crash_1");
        (v["series"][0]["count"].as_u64()? == 20).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let before = points_of(&f, "temperature_sensor_1");
    f.kill9();
    let f2 = Fieldlab::start(dir.path(), &[]);
    f2.wait_ready(Duration::from_secs(10));
    let (_, v) = f2.get("/api/v1/query?device_id=crash_1");
    assert_eq!(v["series"][0]["count"], 20, "{v}");
    let after = points_of(&f2, "temperature_sensor_1");
    for (k, val) in &before {
        assert_eq!(after.get(k), Some(val), "{k:?} lost after SIGKILL");
    }
}

#[test]
fn external_mosquitto_broker_with_broker_flag() {
    let m = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{}", m.port);
    let mut f = Fieldlab::start(dir.path(), &["--broker", &url]);
    assert!(
        f.stdout_text().contains("external broker"),
        "{}",
        f.stdout_text()
    );
    assert_eq!(f.mqtt_port, m.port);
    f.wait_ready(Duration::from_secs(10));
    // The emulator publishes through Mosquitto and ingest stores it.
    eventually(
        Duration::from_secs(10),
        "emulated data via mosquitto",
        || {
            let (st, v) = f.get("/api/v1/query?device_id=pv_inverter_1&field=ac_power");
            (st == 200 && v["series"][0]["count"].as_u64()? >= 1).then_some(())
        },
    );
    mosquitto_pub(
        m.port,
        "devices/PressureValve/ext_1/telemetry",
        b"{\"data\":{\"pressure\":5.5},\"seq\":7}",
    );
    let v = eventually(Duration::from_secs(10), "ext_1 stored", || {
        let (st, v) = f.get("/api/v1/query?device_id=ext_1");
        (st == 200).then_some(v)
    });
    assert_eq!(v["series"][0]["points"][0]["value"], 5.5);
    assert!(f.terminate().success(), "SIGTERM must also stop cleanly");
}

#[test]
fn readiness_is_503_while_the_external_broker_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens here
    let f = Fieldlab::start(
        dir.path(),
        &["--broker", &format!("mqtt://127.0.0.1:{port}")],
    );
    let (st, v) = f.get("/ready");
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["components"]["broker"]["status"], "DOWN");
    assert_eq!(
        f.get("/health").0,
        200,
        "liveness does not depend on the broker"
    );
}

#[test]
fn watch_events_are_pushed_on_the_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fieldlab::start(dir.path(), &[]);
    f.wait_ready(Duration::from_secs(10));
    let ws_url = f
        .url("/ws/events?device_id=ws_probe_1&kind=quality")
        .replacen("http", "ws", 1);
    let (mut ws, _) = tungstenite::connect(ws_url).expect("websocket handshake");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    }
    // A reading that goes back in time is a quality event (out of order) for this device.
    for (seq, t) in [(1, "00:00:10"), (2, "00:00:05")] {
        let p = format!(
            r#"{{"device_id":"ws_probe_1","device_type":"TemperatureSensor","seq":{seq},"ts":"2026-01-01T{t}.000Z","data":{{"temperature":21.0}}}}"#
        );
        mosquitto_pub(
            f.mqtt_port,
            "devices/TemperatureSensor/ws_probe_1/telemetry",
            p.as_bytes(),
        );
    }
    let msg = ws.read().expect("an event within 15 s");
    let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(v["kind"], "quality", "{v}");
    assert_eq!(v["device_id"], "ws_probe_1", "{v}");

    // A bad filter is a problem+json 400, not a silent empty stream.
    let (st, p) = f.get("/ws/events?kind=nope");
    assert_eq!(st, 400, "{p}");
}

/// `POST /api/v1/models/load` reads only inside `<data_dir>/models`: a model there loads;
/// `..`, absolute paths elsewhere and symlinks out of the directory are problem+json 400/403,
/// and nothing outside is opened.
#[test]
fn models_load_is_confined_to_the_models_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let models = data.join("models");
    std::fs::create_dir_all(&models).unwrap();
    // A real (tiny) autoencoder, trained by the CLI.
    let mut csv = String::from("ts,a,b\n");
    for i in 0..240 {
        let x = i as f64 / 10.0;
        csv.push_str(&format!(
            "{},{:.4},{:.4}\n",
            1_700_000_000_000i64 + i * 1000,
            x.sin(),
            x.cos()
        ));
    }
    let input = dir.path().join("train.csv");
    std::fs::write(&input, csv).unwrap();
    let good = models.join("m1");
    let out = fieldlab_in(
        dir.path(),
        &[
            "detect",
            "train",
            "--input",
            input.to_str().unwrap(),
            "--out",
            good.to_str().unwrap(),
            "--epochs",
            "1",
            "--hidden",
            "4",
            "--window-size",
            "10",
            "--batch-size",
            "16",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same model outside the models directory, and a symlink in it pointing there.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for f in ["model.json", "model.safetensors"] {
        std::fs::copy(good.join(f), outside.join(f)).unwrap();
    }
    std::os::unix::fs::symlink(&outside, models.join("escape")).unwrap();
    let half = models.join("half");
    std::fs::create_dir_all(&half).unwrap();
    std::os::unix::fs::symlink(outside.join("model.json"), half.join("model.json")).unwrap();
    std::fs::copy(
        good.join("model.safetensors"),
        half.join("model.safetensors"),
    )
    .unwrap();

    let f = Fieldlab::start(&data, &[]);
    f.wait_ready(Duration::from_secs(15));
    let http = reqwest::blocking::Client::new();
    let load = |path: &str| -> (u16, String, Value) {
        status_type_json(
            http.post(f.url("/api/v1/models/load"))
                .json(&serde_json::json!({ "path": path }))
                .send()
                .unwrap(),
        )
    };
    let (st, _, v) = load("m1");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["model"]["features"], serde_json::json!(["a", "b"]), "{v}");
    let (st, _, v) = load(good.to_str().unwrap());
    assert_eq!(
        st, 200,
        "an absolute path inside the directory is fine: {v}"
    );

    let outside_abs = outside.to_str().unwrap().to_string();
    for (path, status, slug) in [
        ("../outside", 400, "path-traversal"),
        ("m1/../../outside", 400, "path-traversal"),
        ("", 400, "invalid-path"),
        (outside_abs.as_str(), 403, "path-outside-models-dir"),
        ("/etc", 403, "path-outside-models-dir"),
        ("escape", 403, "path-outside-models-dir"),
        ("half", 403, "path-outside-models-dir"),
        ("nope", 404, "model-not-found"),
    ] {
        let (st, ct, v) = load(path);
        assert_eq!(st, status, "{path}: {v}");
        assert_eq!(ct, "application/problem+json", "{path}");
        assert_eq!(
            v["type"],
            format!("https://fieldlab.dev/problems/{slug}"),
            "{path}: {v}"
        );
        assert_eq!(v["parameter"], "path", "{path}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains("models"),
            "{path}: {v}"
        );
    }
}
