//! `fieldlab up` with its OPC UA server and devices on MQTT over TLS, and `fieldlab emulate`
//! against a Mosquitto TLS listener, from the outside: the real binary on free ports,
//! python-asyncua as the OPC UA client, the HTTP API and the load report as the judges.

use crate::common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The default fleet of `fieldlab up`, by name (as OPC UA browses it).
const DEFAULT_FLEET: [&str; 9] = [
    "algae_farm_1",
    "biogas_plant_1",
    "energy_storage_1",
    "engine_test_bench_1",
    "heat_boiler_1",
    "pressure_valve_1",
    "pv_inverter_1",
    "temperature_sensor_1",
    "wind_turbine_1",
];

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
    let r = fieldlab_testkit::client_json(&out);
    assert_eq!(r["devices"], serde_json::json!(DEFAULT_FLEET), "{r}");
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

/// `fieldlab up` with auth on: OPC UA listens beyond loopback without
/// `auth.allow_open_network`, and takes only fieldlab users (made with `fieldlab users add`),
/// with their roles: python-asyncua as a viewer reads but may not stop a device; as an
/// operator it stops and starts one.
#[test]
fn up_with_auth_serves_opcua_to_fieldlab_users_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (name, role, pass) in [
        ("vera", "viewer", "viewer password one"),
        ("otto", "operator", "operator password one"),
    ] {
        let out = fieldlab_cmd(
            &["users", "add", name, "--role", role, "--password-stdin"],
            &data,
            Some(&format!("{pass}\n")),
        );
        assert!(out.status.success(), "{out:?}");
    }
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(
        &cfg,
        "auth:\n  enabled: true\n\
         opcua:\n  host: 0.0.0.0\n  port: 0\n  trust_client_certs: true\n",
    )
    .unwrap();
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let line = loop {
        let banner = f.stdout_text();
        if let Some(l) = banner.lines().find(|l| l.trim().starts_with("OPC UA")) {
            break l.trim().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no OPC UA line in the banner:\n{banner}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.contains("fieldlab users"), "{line}");
    let opc = line
        .strip_prefix("OPC UA")
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let plan = serde_json::json!([
        {"label": "anonymous"},
        {"label": "wrong_password", "user": "vera", "password": "viewer password two"},
        {"label": "viewer", "user": "vera", "password": "viewer password one",
         "device": "temperature_sensor_1", "actions": ["browse", "read", "stop"]},
        {"label": "operator", "user": "otto", "password": "operator password one",
         "device": "temperature_sensor_1", "actions": ["stop", "start"]},
        // Guessing on one connection: three refusals, then even the right password is refused
        // without a check on that connection (the per-connection cap of crate::front).
        {"label": "guesses", "user": "otto", "passwords": [
            "guess 1", "guess 2", "guess 3", "operator password one"]},
        // A fresh connection may sign in (the per-user limiter allows a few failures).
        {"label": "after_guesses", "user": "otto", "password": "operator password one",
         "device": "temperature_sensor_1"},
        // A burst of connections from one address: the front door admits its burst and
        // closes the rest before they reach the OPC UA stack.
        {"label": "flood", "connections": 100},
    ]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../opcua/tests/opcua_auth_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&opc)
        .arg(dir.path())
        .arg(plan.to_string())
        .output()
        .expect("run python3 (needs `pip install asyncua`, see scripts/test.sh)");
    let r = fieldlab_testkit::client_json(&out);
    assert_eq!(
        r["endpoints"],
        serde_json::json!([[
            "SignAndEncrypt",
            "Basic256Sha256",
            ["Certificate", "UserName"]
        ]]),
        "{r}"
    );
    assert_ne!(r["anonymous"]["connect"], "ok", "{r}");
    assert_eq!(r["wrong_password"]["connect"], "BadUserAccessDenied", "{r}");
    let v = &r["viewer"];
    assert_eq!(v["connect"], "ok", "{r}");
    assert_eq!(v["browse"], serde_json::json!(DEFAULT_FLEET), "{r}");
    assert_eq!(v["read"], "running", "{r}");
    assert_eq!(v["stop"], "BadUserAccessDenied", "{r}");
    let o = &r["operator"];
    assert_eq!(o["connect"], "ok", "{r}");
    assert_eq!(o["stop"], true, "the viewer's Stop changed nothing: {r}");
    assert_eq!(o["stop_state"], "stopped", "{r}");
    assert_eq!(o["start"], true, "{r}");
    assert_eq!(o["start_state"], "running", "{r}");
    assert_eq!(
        r["guesses"]["connect"],
        serde_json::json!([
            "BadUserAccessDenied",
            "BadUserAccessDenied",
            "BadUserAccessDenied",
            "BadUserAccessDenied"
        ]),
        "{r}"
    );
    assert_eq!(r["after_guesses"]["connect"], "ok", "{r}");
    // Connections used above: about 20 (asyncua opens two per secure sign-in); the burst is
    // 60 per address, refilled one per second.
    let flood = &r["flood"]["connect"];
    eprintln!("flood of 100 connections from one address: {flood}");
    let answered = flood["answered"].as_u64().unwrap();
    assert!(
        (1..=60).contains(&answered),
        "the front door admitted {answered} of 100 connections from one address: {r}"
    );
    assert_eq!(
        answered + flood["closed"].as_u64().unwrap(),
        100,
        "every refused connection is closed: {r}"
    );
}
