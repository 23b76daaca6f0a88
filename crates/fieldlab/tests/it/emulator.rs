//! The emulator from the outside: load mode against a real Mosquitto, and the control API
//! and CLI against a running `fieldlab up`.

use crate::common;

use common::*;
use std::time::Duration;

/// `fieldlab emulate --broker <broker> <load> --json`, which must succeed: its JSON report and
/// its stderr.
fn emulate(broker: &str, load: &[&str]) -> (serde_json::Value, String) {
    let args = [&["emulate", "--broker", broker][..], load, &["--json"]].concat();
    let (code, out, err) = fieldlab(&args);
    assert_eq!(code, 0, "{err}");
    (serde_json::from_str(&out).unwrap(), err)
}

/// Ten devices at QoS 1, a message every 200 ms each, for two seconds.
const TEN_FOR_2S: [&str; 8] = [
    "--count",
    "10",
    "--interval",
    "200",
    "--qos",
    "1",
    "--duration",
    "2",
];

#[test]
fn load_mode_against_mosquitto_loses_nothing_at_qos_1() {
    let m = Mosquitto::start();
    let broker = format!("mqtt://127.0.0.1:{}", m.port);
    let load = [
        "--count",
        "20",
        "--interval",
        "100",
        "--qos",
        "1",
        "--duration",
        "3",
    ];
    let (r, err) = emulate(&broker, &load);
    assert_eq!(r["devices"], 20);
    assert!(r["sent"].as_u64().unwrap() >= 400, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["received"], r["sent"], "{r}");
    assert!(r["latency_p99_ms"].as_f64().unwrap() >= r["latency_p50_ms"].as_f64().unwrap());
    assert!(err.contains("published"), "progress lines: {err}");
}

#[test]
fn load_mode_speaks_mqtt_5_and_shared_connections() {
    let m = Mosquitto::start();
    let broker = format!("mqtt://127.0.0.1:{}", m.port);
    for extra in [["--protocol", "5"], ["--connections", "2"]] {
        let (r, _) = emulate(&broker, &[&TEN_FOR_2S[..], &extra].concat());
        assert!(r["sent"].as_u64().unwrap() >= 50, "{extra:?}: {r}");
        assert_eq!(r["lost"], 0, "{extra:?}: {r}");
    }
}

/// MQTT 5 against a broker that does not take it is an error that says so, not a run that
/// reports the refused connections as lost messages. The "broker" here closes every
/// connection at once, as a 3.1.1-only broker does with a protocol level it does not know.
#[test]
fn load_mode_names_a_broker_without_mqtt_5() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    let broker = format!("mqtt://127.0.0.1:{port}");
    let (code, out, err) = fieldlab(&[
        "emulate",
        "--broker",
        &broker,
        "--protocol",
        "5",
        "--count",
        "2",
        "--duration",
        "1",
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("does not take MQTT 5") && err.contains("--protocol 3.1.1"),
        "{err}"
    );
}

/// The embedded broker speaks MQTT 5 too: `emulate --protocol 5` against `fieldlab up` loses
/// nothing, and ingest itself on MQTT 5 (`ingest.mqtt_version: 5`) stores the emulated fleet.
#[test]
fn the_embedded_broker_takes_mqtt_5_load_and_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(&cfg, "ingest:\n  mqtt_version: 5\n").unwrap();
    let data = dir.path().join("data");
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    f.wait_ready(Duration::from_secs(10));
    let broker = format!("mqtt://127.0.0.1:{}", f.mqtt_port);
    let (r, _) = emulate(&broker, &[&["--protocol", "5"][..], &TEN_FOR_2S].concat());
    assert!(r["sent"].as_u64().unwrap() >= 50, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    // (`received` also counts the running fleet's own telemetry on the same topics.)
    // Ingest (an MQTT 5 subscriber here) stored readings of the default fleet.
    common::eventually(Duration::from_secs(20), "stored readings", || {
        let (st, v) = f.get("/api/v1/query?device_id=temperature_sensor_1");
        let n: usize = v["series"]
            .as_array()?
            .iter()
            .map(|s| s["points"].as_array().map_or(0, |p| p.len()))
            .sum();
        (st == 200 && n > 0).then_some(n)
    });
}

#[test]
fn rest_and_cli_control_devices_scenarios_and_faults() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fieldlab::start(dir.path(), &[]);
    f.wait_ready(Duration::from_secs(10));
    let url = f.http.clone();
    let c = reqwest::blocking::Client::new();
    // `fieldlab devices ARGS --url URL`, which must succeed: its output.
    let devices = |args: &[&str]| {
        let (code, out, err) = fieldlab(&[&["devices"], args, &["--url", &url]].concat());
        assert_eq!(code, 0, "{err}");
        out
    };

    // Create a device from a YAML body; list it via the CLI.
    let r = c
        .post(f.url("/api/v1/devices"))
        .header("content-type", "application/yaml")
        .body("name: wt_1\ntype: WindTurbine\nconfig:\n  update_interval: 0.2\nscenarios:\n  - name: storm\n    duration: 60\n    parameters:\n      wind_speed_range: [30, 35]\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    let out = devices(&["list"]);
    assert!(
        out.contains("wt_1") && out.contains("WindTurbine") && out.contains("temperature_sensor_1"),
        "{out}"
    );

    // A bad body is a problem+json naming the key.
    let r = c
        .post(f.url("/api/v1/devices"))
        .json(&serde_json::json!({"name": "x", "type": "Toaster"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().unwrap().contains("unknown device type"));

    // Simulate a configured scenario via the CLI: the storm stops the turbine (cut-out).
    let out = devices(&["simulate", "--device", "wt_1", "--scenario", "storm"]);
    assert!(out.contains("storm"), "{out}");
    eventually(Duration::from_secs(15), "storm values stored", || {
        let (st, v) = f.get("/api/v1/devices/wt_1/history?field=wind_speed,power&from=-1m");
        if st != 200 {
            return None;
        }
        let ws = v["fields"]["wind_speed"].as_array()?;
        let p = v["fields"]["power"].as_array()?;
        let (w, pw) = (ws.last()?["value"].as_f64()?, p.last()?["value"].as_f64()?);
        (w >= 30.0 && pw == 0.0).then_some(())
    });

    // A fault via the CLI becomes a ground-truth annotation.
    let out = devices(&[
        "fault",
        "--device",
        "temperature_sensor_1",
        "--kind",
        "spike",
        "--field",
        "temperature",
        "--duration",
        "2",
        "--param",
        "magnitude=500",
    ]);
    assert!(out.contains("annotation id"), "{out}");
    let (_, a) = f.get("/api/v1/annotations?device_id=temperature_sensor_1");
    assert_eq!(a["count"], 1, "{a}");
    assert_eq!(a["annotations"][0]["kind"], "spike");
    assert_eq!(a["annotations"][0]["fields"][0], "temperature");
    assert!(
        a["annotations"][0]["end_ms"].as_i64().unwrap()
            - a["annotations"][0]["start_ms"].as_i64().unwrap()
            == 2000
    );
    eventually(Duration::from_secs(10), "a spiked value stored", || {
        let (_, v) =
            f.get("/api/v1/devices/temperature_sensor_1/history?field=temperature&from=-1m");
        v["fields"]["temperature"]
            .as_array()?
            .iter()
            .any(|p| p["value"].as_f64().unwrap_or(0.0) > 400.0)
            .then_some(())
    });

    // Stop all, start one; status reflects it; metrics count states.
    devices(&["stop", "--all"]);
    let (_, v) = f.get("/api/v1/devices/wt_1/status");
    assert_eq!(v["state"], "stopped");
    devices(&["start", "wt_1"]);
    let (_, v) = f.get("/devices/wt_1/status");
    assert_eq!(v["state"], "running");
    eventually(Duration::from_secs(5), "device-state metrics", || {
        let (_, m) = f.text("/metrics");
        (m.contains("fieldlab_emulator_devices{state=\"running\"} 1")
            // The default fleet's nine devices are stopped; wt_1 runs.
            && m.contains("fieldlab_emulator_devices{state=\"stopped\"} 9"))
        .then_some(())
    });
    let (code, _, err) = fieldlab(&["devices", "stop", "--url", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("--all"), "{err}");

    // Replace its configuration (PUT): it keeps running, with the new interval.
    // PUT a JSON configuration to a device: the status and the answer's body.
    let put = |device: &str, body: &'static str| {
        let r = c
            .put(f.url(&format!("/api/v1/devices/{device}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (st, body) = put(
        "wt_1",
        r#"{"type": "WindTurbine", "config": {"update_interval": 0.5}}"#,
    );
    assert_eq!(st, 200, "{body}");
    let (_, v) = f.get("/api/v1/emulator/devices/wt_1");
    assert_eq!(v["update_interval"], 0.5, "{v}");
    assert_eq!(v["state"], "running", "{v}");
    // A body naming another device is refused and changes nothing.
    let (st, body) = put("wt_1", r#"{"name": "wt_2", "type": "WindTurbine"}"#);
    assert_eq!(st, 400, "{body}");
    assert_eq!(f.get("/api/v1/emulator/devices/wt_1").0, 200);
    assert_eq!(f.get("/api/v1/emulator/devices/wt_2").0, 404);
    // PUT of a device that does not exist: 404.
    assert_eq!(put("nope", r#"{"type": "WindTurbine"}"#).0, 404);

    // Delete; then it is gone from the emulator. Its data keeps it known as a device that is
    // no longer emulated (one deleted before it sent anything is forgotten: a directory test).
    let r = c.delete(f.url("/api/v1/devices/wt_1")).send().unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(f.get("/api/v1/emulator/devices/wt_1").0, 404);
    let (st, v) = f.get("/api/v1/devices/wt_1");
    assert_eq!(
        (st, &v["emulated"]),
        (200, &serde_json::json!(false)),
        "{v}"
    );
    let (st, doc) = f.get("/api/v1/emulator/openapi.json");
    assert_eq!(st, 200);
    assert!(doc["paths"]["/api/v1/devices/{id}/faults"]["post"].is_object());
}
