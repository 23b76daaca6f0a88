//! Auth end to end on the real binary: `fieldlab users ...` writes the users file, a running
//! `fieldlab up` with auth on issues tokens, refuses what it must, picks up a revocation made
//! by the CLI, lets its own ingest and devices onto the embedded broker with the internal
//! credential and a device with its API key; request ids reach the rotated log file.

use crate::common;

use common::Fieldlab;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn fieldlab(args: &[&str], data: &Path, stdin: Option<&str>) -> std::process::Output {
    common::fieldlab_cmd(args, data, stdin)
}

#[test]
fn users_cli_rejects_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = fieldlab(
        &["users", "add", "ann", "--role", "admin", "--password-stdin"],
        dir.path(),
        Some("short\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12"));
    let out = fieldlab(
        &["users", "add", "ann", "--role", "root", "--password-stdin"],
        dir.path(),
        Some("correct horse battery\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin, operator, viewer"));
    let out = fieldlab(&["users", "revoke", "nobody"], dir.path(), None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user `nobody`"));
    let out = fieldlab(&["users", "list"], dir.path(), None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no users yet"));
}

#[test]
fn token_flow_revocation_mqtt_credentials_and_request_ids_on_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::add_user(&data, "ann", "operator", "correct horse battery");
    let key = common::add_key(&data, "dev9");
    assert!(key.starts_with("flk_"), "{key}");
    let log = dir.path().join("logs/fieldlab.log");
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(
        &cfg,
        format!(
            "auth:\n  enabled: true\nlogging:\n  format: json\n  file: {}\n  max_size: 1MB\n  max_files: 2\n",
            log.display()
        ),
    )
    .unwrap();
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    let banner = f.stdout.lock().unwrap().join("\n");
    assert!(
        banner.contains("auth    on (JWT, API keys; 1 users)"),
        "{banner}"
    );
    // /ready is public, and it turns 200 only when ingest got onto the embedded broker with
    // the internal credential.
    f.wait_ready(Duration::from_secs(20));

    let c = reqwest::blocking::Client::new();
    let r = c.get(f.url("/api/v1/devices")).send().unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(f.url("/api/v1/auth/token"))
        .json(&json!({"username": "ann", "password": "correct horse battery"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    // The emulated devices reach the broker too (internal credential): all three show up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = c
            .get(f.url("/api/v1/devices"))
            .bearer_auth(&token)
            .header("x-request-id", "e2e-request-1")
            .send()
            .unwrap()
            .json()
            .unwrap();
        let n = v["devices"].as_array().map_or(0, |d| {
            d.iter().filter(|x| x["last_seen"].is_string()).count()
        });
        if n >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "devices never reported: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // MQTT: anonymous is refused; a device key works as user = client id = its name.
    let port = f.mqtt_port.to_string();
    let publish = |extra: &[&str]| {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1"])
            .args(extra)
            .args(["-t", "devices/TemperatureSensor/dev9/telemetry"])
            .args(["-m", r#"{"device_id":"dev9","seq":1,"ts":"2026-01-01T00:00:00Z","data":{"temperature":20.5}}"#])
            .output()
            .unwrap()
    };
    assert!(
        !publish(&[]).status.success(),
        "anonymous MQTT must be refused"
    );
    assert!(!publish(&["-u", "dev9", "-P", "wrong", "-i", "dev9"])
        .status
        .success());
    assert!(
        !publish(&["-u", "dev9", "-P", &key, "-i", "someone-else"])
            .status
            .success(),
        "a device key is pinned to its client id"
    );
    let out = publish(&["-u", "dev9", "-P", &key, "-i", "dev9"]);
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while c
        .get(f.url("/api/v1/devices/dev9"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "dev9's message never arrived");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The topic ACL: dev9's key may not write dev8's telemetry. mosquitto_pub still gets its
    // PUBACK (the message is dropped, as Mosquitto does), nothing is stored, and the refusal
    // is counted in /metrics.
    let forged = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1"])
        .args(["-u", "dev9", "-P", &key, "-i", "dev9"])
        .args(["-t", "devices/TemperatureSensor/dev8/telemetry"])
        .args(["-m", r#"{"device_id":"dev8","seq":1,"ts":"2026-01-01T00:00:00Z","data":{"temperature":99.0}}"#])
        .output()
        .unwrap();
    assert!(forged.status.success(), "{forged:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = c.get(f.url("/metrics")).send().unwrap().text().unwrap();
        if m.contains("fieldlab_mqtt_acl_denied_total{kind=\"publish\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "refusal not counted: {m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dev8 = c
        .get(f.url("/api/v1/devices/dev8"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(dev8.status(), 404, "a forged message was stored");

    // Revocation through the CLI reaches the running server at the next request.
    let out = fieldlab(&["users", "revoke", "ann"], &data, None);
    assert!(out.status.success(), "{out:?}");
    let r = c
        .get(f.url("/api/v1/devices"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    // The request id is in the log file, on the request's line.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("e2e-request-1") && l.contains("/api/v1/devices"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with the request id:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn refuses_to_expose_an_open_fieldlab() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("open.yaml");
    std::fs::write(&cfg, "server:\n  host: 0.0.0.0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
        .args(["up", "--http-port", "0", "--mqtt-port", "0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on server.host = 0.0.0.0 with auth off"),
        "{err}"
    );

    // Explicitly allowed: it starts, and the banner says so.
    std::fs::write(
        &cfg,
        "server:\n  host: 0.0.0.0\nauth:\n  allow_open_network: true\n",
    )
    .unwrap();
    let f = Fieldlab::start(&dir.path().join("d"), &["--config", cfg.to_str().unwrap()]);
    let banner = f.stdout.lock().unwrap().join("\n");
    assert!(
        banner.contains("OFF and exposed beyond loopback"),
        "{banner}"
    );
}
