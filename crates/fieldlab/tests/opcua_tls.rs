//! `fieldlab up` with its OPC UA server and devices on MQTT over TLS, and `fieldlab emulate`
//! against a Mosquitto TLS listener, from the outside: the real binary on free ports,
//! python-asyncua as the OPC UA client, the HTTP API and the load report as the judges.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn up_serves_opcua_and_devices_publish_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Pki::new(dir.path(), "lab", &["localhost"]);
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(
        &cfg,
        format!(
            "mqtt:\n  tls_port: 0\n  server_cert_file: {}\n  server_key_file: {}\n\
             devices:\n  tls:\n    ca_file: {}\n\
             opcua:\n  port: 0\n  security: [none]\n",
            certs.cert.display(),
            certs.key.display(),
            certs.ca.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    f.wait_ready(Duration::from_secs(15));
    let banner = f.stdout_text();
    let opc = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("OPC UA"))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no OPC UA line in the banner:\n{banner}"))
        .to_string();
    assert!(opc.starts_with("opc.tcp://127.0.0.1:"), "{banner}");

    // Devices reach the store only through the broker's TLS listener: stored points prove it.
    eventually(Duration::from_secs(15), "points of the TLS devices", || {
        let (code, v) =
            f.get("/api/v1/query?device_id=temperature_sensor_1&field=temperature&from=-1h");
        (code == 200 && v.to_string().contains("temperature_sensor_1")).then_some(())
    });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../opcua/tests/opcua_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([
            opc.as_str(),
            "temperature_sensor_1",
            "temperature",
            "none",
            dir.path().to_str().unwrap(),
            "high_temperature_alert",
        ])
        .output()
        .expect("run python3 (needs `pip install asyncua`, see scripts/test.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        r["devices"],
        serde_json::json!(["pressure_valve_1", "pv_inverter_1", "temperature_sensor_1"]),
        "{r}"
    );
    assert_ne!(r["first"], r["second"], "{r}");
    assert_eq!(r["state_after"], "stopped", "{r}");
    assert_eq!(r["bad_scenario"], "BadInvalidArgument", "{r}");
    assert_eq!(r["run_scenario"], true, "{r}");

    // The HTTP control API agrees: Stop over OPC UA stopped the device.
    let (code, v) = f.get("/api/v1/emulator/devices/temperature_sensor_1");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["state"], "stopped", "{v}");
    assert_eq!(v["scenario"]["name"], "high_temperature_alert", "{v}");
    let (_, v) = f.get("/api/v1/emulator/devices/pv_inverter_1");
    assert_eq!(v["state"], "running", "{v}");
}

#[test]
fn emulate_loads_a_mosquitto_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Pki::new(dir.path(), "lab", &["localhost"]);
    let tls_port = free_port();
    let _m = Mosquitto::start_with(&mosquitto_tls_listener(tls_port, &certs, false));
    eventually(Duration::from_secs(10), "mosquitto's TLS listener", || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok()
    });
    let broker = format!("mqtts://localhost:{tls_port}");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&[
        "emulate",
        "--broker",
        &broker,
        "--ca",
        certs.ca.to_str().unwrap(),
        "--count",
        "5",
        "--interval",
        "100",
        "--qos",
        "1",
        "--duration",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["sent"].as_u64().unwrap() >= 50, "{r}");
    assert_eq!(r["received"], r["sent"], "{r}");
    assert_eq!(r["lost"], 0, "{r}");

    // Bad input: clear one-line errors.
    let (code, _, err) = run(&[
        "emulate",
        "--broker",
        &broker,
        "--ca",
        "/nonexistent/ca.pem",
        "--count",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--ca") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
    let plain = format!("mqtt://127.0.0.1:{tls_port}");
    let (code, _, err) = run(&[
        "emulate",
        "--broker",
        &plain,
        "--ca",
        certs.ca.to_str().unwrap(),
        "--count",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("mqtts://"), "{err}");
}
