//! TLS end to end, from the outside: `fieldlab up` against a real Mosquitto TLS listener
//! (`--broker mqtts://...`, server-only and mutual TLS, MQTT 5 and 3.1.1), and `fieldlab up`
//! serving HTTPS, the embedded broker's TLS listener and MQTT over (secure) WebSocket at once.
//! Every certificate is made at test time by rcgen; stored points are the judge.

use crate::common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("fieldlab.yaml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Mosquitto with an extra TLS listener on a free port; returns it and that port.
fn mosquitto_tls(pki: &Pki, require_client_cert: bool) -> (Mosquitto, u16) {
    let tls_port = free_port();
    let m = Mosquitto::start_with(&mosquitto_tls_listener(tls_port, pki, require_client_cert));
    eventually(Duration::from_secs(10), "mosquitto's TLS listener", || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok()
    });
    (m, tls_port)
}

/// Points of `device` (any field) stored so far, via the HTTP API.
fn count(f: &Fieldlab, device: &str) -> u64 {
    let (st, v) = f.get(&format!("/api/v1/query?device_id={device}"));
    if st != 200 {
        return 0;
    }
    v["series"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["count"].as_u64()).sum())
        .unwrap_or(0)
}

fn stderr_text(f: &Fieldlab) -> String {
    f.stderr.lock().unwrap().join("\n")
}

/// `/ready` stays 503 with the broker DOWN for a while, and the log says why (`expect`).
fn refused(f: &Fieldlab, expect: &[&str]) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let (st, v) = f.get("/ready");
        assert_eq!(st, 503, "must not become ready: {v}");
        assert_eq!(v["components"]["broker"]["status"], "DOWN", "{v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let t0 = Instant::now();
    let log = loop {
        let log = stderr_text(f);
        if expect.iter().all(|e| log.contains(e)) {
            break log;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the log does not say {expect:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(log.contains("ingest cannot connect over TLS"), "{log}");
}

#[test]
fn up_ingests_from_an_external_mqtts_broker_and_refuses_a_foreign_ca() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Pki::new(dir.path(), "lab", &["localhost"]);
    let (m, tls_port) = mosquitto_tls(&lab, false);

    // Connect by IP and check the certificate's DNS name: mqtt.tls.server_name.
    let cfg = write_config(
        dir.path(),
        &format!(
            "mqtt:\n  tls:\n    ca_file: {}\n    server_name: localhost\n",
            lab.ca.display()
        ),
    );
    let broker = format!("mqtts://127.0.0.1:{tls_port}");
    let data = dir.path().join("data");
    let mut f = Fieldlab::start(&data, &["--config", &cfg, "--broker", &broker]);
    let banner = f.stdout_text();
    assert!(
        banner.contains(&format!("mqtts://127.0.0.1:{tls_port}"))
            && banner.contains("external broker"),
        "{banner}"
    );
    f.wait_ready(Duration::from_secs(15));
    // The emulated devices publish over TLS too (they share mqtt.tls), and ingest stores it.
    eventually(Duration::from_secs(15), "demo devices via mqtts", || {
        (count(&f, "pv_inverter_1") >= 1).then_some(())
    });
    // A message published on Mosquitto's plain listener reaches the store only through
    // ingest's connection, which is TLS (MQTT 5 by default on an external broker).
    mosquitto_pub(
        m.port,
        "devices/PressureValve/tls_ext_1/telemetry",
        b"{\"data\":{\"pressure\":4.25},\"seq\":1}",
    );
    let v = eventually(Duration::from_secs(10), "tls_ext_1 stored", || {
        let (st, v) = f.get("/api/v1/query?device_id=tls_ext_1");
        (st == 200 && v["series"][0]["count"] == 1).then_some(v)
    });
    assert_eq!(v["series"][0]["points"][0]["value"], 4.25, "{v}");
    assert!(f.interrupt().success());

    // The same broker, trusted through another CA: refused, and the log names the fix.
    let other = Pki::new(dir.path(), "other", &["localhost"]);
    let cfg = write_config(
        dir.path(),
        &format!("mqtt:\n  tls:\n    ca_file: {}\n", other.ca.display()),
    );
    let broker = format!("mqtts://localhost:{tls_port}");
    let f = Fieldlab::start(
        &dir.path().join("data2"),
        &["--config", &cfg, "--broker", &broker],
    );
    refused(
        &f,
        &[
            "UnknownIssuer",
            "not signed by a trusted CA",
            "mqtt.tls.ca_file",
        ],
    );
    assert_eq!(count(&f, "pv_inverter_1"), 0);
    drop(f);

    // The right CA, but a name the certificate does not carry (127.0.0.1, no server_name).
    let cfg = write_config(
        dir.path(),
        &format!("mqtt:\n  tls:\n    ca_file: {}\n", lab.ca.display()),
    );
    let broker = format!("mqtts://127.0.0.1:{tls_port}");
    let f = Fieldlab::start(
        &dir.path().join("data3"),
        &["--config", &cfg, "--broker", &broker],
    );
    refused(&f, &["not valid for name", "mqtt.tls.server_name"]);
}

#[test]
fn up_uses_client_certificates_when_the_mqtts_broker_requires_them() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Pki::new(dir.path(), "lab", &["localhost"]);
    let (client_cert, client_key) = lab.client("fieldlab-ingest");
    let (m, tls_port) = mosquitto_tls(&lab, true);
    let broker = format!("mqtts://localhost:{tls_port}");

    // Mosquitto's require_certificate: the same CA trust but no client certificate is refused.
    let cfg = write_config(
        dir.path(),
        &format!("mqtt:\n  tls:\n    ca_file: {}\n", lab.ca.display()),
    );
    let f = Fieldlab::start(
        &dir.path().join("data0"),
        &["--config", &cfg, "--broker", &broker],
    );
    refused(&f, &["mqtt.tls.cert_file"]);
    drop(f);

    // With the client certificate, over MQTT 3.1.1 this time, and the TLS files given as
    // `up` flags instead of in the file.
    let cfg = write_config(dir.path(), "ingest:\n  mqtt_version: \"3.1.1\"\n");
    let (ca, cert, key) = (
        lab.ca.display().to_string(),
        client_cert.display().to_string(),
        client_key.display().to_string(),
    );
    let mut f = Fieldlab::start(
        &dir.path().join("data"),
        &[
            "--config",
            &cfg,
            "--broker",
            &broker,
            "--broker-ca",
            &ca,
            "--broker-cert",
            &cert,
            "--broker-key",
            &key,
        ],
    );
    f.wait_ready(Duration::from_secs(15));
    eventually(Duration::from_secs(15), "demo devices via mTLS", || {
        (count(&f, "temperature_sensor_1") >= 1).then_some(())
    });
    mosquitto_pub(
        m.port,
        "devices/TemperatureSensor/mtls_1/telemetry",
        b"{\"data\":{\"temperature\":19.5},\"seq\":3}",
    );
    let v = eventually(Duration::from_secs(10), "mtls_1 stored", || {
        let (st, v) = f.get("/api/v1/query?device_id=mtls_1");
        (st == 200 && v["series"][0]["count"] == 1).then_some(v)
    });
    assert_eq!(v["series"][0]["points"][0]["value"], 19.5, "{v}");
    assert!(f.interrupt().success());
}

#[test]
fn tls_settings_that_cannot_work_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Pki::new(dir.path(), "lab", &["localhost"]);
    let run = |cfg: &str, broker: Option<&str>| {
        let cfg = write_config(dir.path(), cfg);
        let data = dir.path().join("data");
        let mut args = vec![
            "up",
            "--config",
            &cfg,
            "--http-port",
            "0",
            "--mqtt-port",
            "0",
        ];
        args.extend(["--data-dir", data.to_str().unwrap()]);
        if let Some(b) = broker {
            args.extend(["--broker", b]);
        }
        let out = fieldlab_in(dir.path(), &args, None);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let tls = format!("mqtt:\n  tls:\n    ca_file: {}\n", lab.ca.display());
    let e = run(&tls, None);
    assert!(e.contains("mqtt.tls") && e.contains("mqtt.tls_port"), "{e}");
    let e = run(&tls, Some("mqtt://127.0.0.1:1"));
    assert!(e.contains("mqtt.tls") && e.contains("mqtts://"), "{e}");
    let e = run(
        "mqtt:\n  tls:\n    ca_file: /nonexistent/ca.pem\n",
        Some("mqtts://localhost:1"),
    );
    assert!(
        e.contains("mqtt.tls.ca_file") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
    let e = run(
        &format!(
            "mqtt:\n  tls:\n    ca_file: {}\n    cert_file: {}\n",
            lab.ca.display(),
            lab.cert.display()
        ),
        Some("mqtts://localhost:1"),
    );
    assert!(e.contains("mqtt.tls.key_file"), "{e}");
    let e = run(
        &format!("devices:\n  tls:\n    ca_file: {}\n", lab.ca.display()),
        Some("mqtt://127.0.0.1:1"),
    );
    assert!(e.contains("devices.tls") && e.contains("mqtts://"), "{e}");
}

/// HTTPS (rustls), the embedded broker's MQTT/TLS listener and MQTT over secure WebSocket in
/// one `fieldlab up`: publish over mqtts (mosquitto_pub) and wss (rumqttc), read the points
/// back over HTTPS trusting only the test CA.
#[test]
fn up_with_https_mqtts_and_websocket_together() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Pki::new(dir.path(), "lab", &["localhost", "127.0.0.1"]);
    let cfg = write_config(
        dir.path(),
        &format!(
            "server:\n  tls_cert_file: {c}\n  tls_key_file: {k}\n\
             mqtt:\n  tls_port: 0\n  ws_port: 0\n  server_cert_file: {c}\n  server_key_file: {k}\n\
             devices:\n  fleet: []\n",
            c = lab.cert.display(),
            k = lab.key.display()
        ),
    );
    let f = Fieldlab::start(&dir.path().join("data"), &["--config", &cfg]);
    let banner = f.stdout_text();
    assert!(f.http.starts_with("https://"), "{banner}");
    let also = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("MQTT    also "))
        .unwrap_or_else(|| panic!("no extra MQTT listeners in the banner:\n{banner}"))
        .to_string();
    let port_of = |scheme: &str| -> u16 {
        let u = also
            .split(", ")
            .find(|u| u.starts_with(scheme))
            .unwrap_or_else(|| panic!("no {scheme} listener in `{also}`"));
        u.trim_start_matches(scheme)
            .split(['/', ' '])
            .next()
            .and_then(|hp| hp.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in `{u}`"))
    };
    let (tls_port, wss_port) = (port_of("mqtts://"), port_of("wss://"));

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&lab.ca).unwrap()).unwrap();
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let get = |path: &str| -> (u16, Value) {
        let r = https.get(f.url(path)).send().expect("HTTPS request");
        let st = r.status().as_u16();
        (st, r.json().unwrap_or(Value::Null))
    };
    eventually(Duration::from_secs(15), "ready over HTTPS", || {
        (get("/ready").0 == 200).then_some(())
    });
    // Without the CA the handshake fails: the server really is HTTPS with this certificate.
    let plain = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(true)
        .build()
        .unwrap();
    assert!(plain.get(f.url("/health")).send().is_err());

    // mqtts: the real Mosquitto client, trusting the test CA.
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &tls_port.to_string()])
        .args(["--cafile", lab.ca.to_str().unwrap()])
        .args([
            "-q",
            "1",
            "-t",
            "devices/TemperatureSensor/over_tls_1/telemetry",
        ])
        .args(["-m", "{\"data\":{\"temperature\":23.5},\"seq\":1}"])
        .output()
        .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // wss: rumqttc over WebSocket + TLS with the same rustls settings fieldlab's clients use.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tls = fieldlab_mqtt_tls::client_config(&fieldlab_topology::config::MqttTlsConfig {
            ca_file: Some(lab.ca.clone()),
            ..Default::default()
        })
        .unwrap();
        let mut o = rumqttc::MqttOptions::new(
            "wss-probe",
            format!("wss://localhost:{wss_port}/mqtt"),
            wss_port,
        );
        o.set_transport(rumqttc::Transport::Wss(tls));
        let (c, mut el) = rumqttc::AsyncClient::new(o, 10);
        c.publish(
            "devices/TemperatureSensor/over_ws_1/telemetry",
            rumqttc::QoS::AtLeastOnce,
            false,
            "{\"data\":{\"temperature\":24.5},\"seq\":1}",
        )
        .await
        .unwrap();
        let acked = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => break,
                    Ok(_) => {}
                    Err(e) => panic!("wss connection failed: {e}"),
                }
            }
        })
        .await;
        assert!(acked.is_ok(), "no PUBACK over wss within 10 s");
    });

    for (dev, val) in [("over_tls_1", 23.5), ("over_ws_1", 24.5)] {
        let v = eventually(Duration::from_secs(10), dev, || {
            let (st, v) = get(&format!("/api/v1/query?device_id={dev}"));
            (st == 200 && v["series"][0]["count"] == 1).then_some(v)
        });
        assert_eq!(v["series"][0]["points"][0]["value"], val, "{v}");
    }
}
