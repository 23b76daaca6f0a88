//! Devices over MQTT/TLS, against the embedded broker's real TLS listener (rumqttd + rustls),
//! with a CA and server certificate made at test time by rcgen. Load mode runs both sides
//! (devices and the measuring subscriber) over TLS, so "received" means the messages went
//! through the TLS listener.

use fieldlab_core::config::Qos;
use fieldlab_emulator::load::{generated_fleet, run, LoadOptions};
use fieldlab_emulator::tls::client_config;
use fieldlab_emulator::EmulatorSettings;
use fieldlab_mqtt_tls::MqttTlsConfig;
use std::path::Path;
use std::time::Duration;

use fieldlab_testkit::pki::Pki;

fn pki(dir: &Path, name: &str) -> Pki {
    Pki::localhost(dir, &format!("{name}-"), name)
}

fn tls_broker(p: &Pki) -> u16 {
    let b = fieldlab_broker::start(&fieldlab_broker::BrokerSettings {
        port: 0,
        tls_port: Some(0),
        tls: Some(fieldlab_broker::BrokerTls {
            cert: p.cert.clone(),
            key: p.key.clone(),
        }),
        ..Default::default()
    })
    .unwrap();
    b.tls_listen.unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_publish_through_the_brokers_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), "lab");
    let port = tls_broker(&p);
    let mut s = EmulatorSettings::new("localhost", port);
    s.qos = Qos::AtLeastOnce;
    s.tls = Some(
        client_config(&MqttTlsConfig {
            ca_file: Some(p.ca.clone()),
            ..Default::default()
        })
        .unwrap(),
    );
    let r = run(LoadOptions {
        settings: s,
        fleet: generated_fleet(3, "TemperatureSensor", "tls", 100),
        duration: Duration::from_secs(2),
        progress: false,
    })
    .await
    .unwrap();
    assert!(r.sent >= 3, "{r}");
    assert_eq!(r.received, r.sent, "{r}");
    assert_eq!(r.lost, 0, "{r}");
    assert_eq!(r.publish_errors, 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = pki(dir.path(), "real");
    let other = pki(dir.path(), "other");
    let port = tls_broker(&real);
    let cfg = client_config(&MqttTlsConfig {
        ca_file: Some(other.ca.clone()),
        ..Default::default()
    })
    .unwrap();
    let mut o = rumqttc::MqttOptions::new("wrong-ca", "localhost", port);
    o.set_transport(rumqttc::Transport::tls_with_config(cfg));
    let (_c, mut el) = rumqttc::AsyncClient::new(o, 10);
    let first = tokio::time::timeout(Duration::from_secs(15), el.poll())
        .await
        .expect("no answer within 15 s");
    let e = first.expect_err("the TLS handshake must fail with a certificate of another CA");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

#[test]
fn bad_tls_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let e = client_config(&MqttTlsConfig {
        ca_file: Some(missing.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.key, "ca_file");
    assert!(e.message.contains("nope.pem"), "{e}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let e = client_config(&MqttTlsConfig {
        ca_file: Some(junk),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.message.contains("no PEM certificate"), "{e}");
    let p = pki(dir.path(), "x");
    let e = client_config(&MqttTlsConfig {
        ca_file: Some(p.ca.clone()),
        cert_file: Some(p.cert.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.key, "key_file");
    // A client certificate with its key is accepted.
    client_config(&MqttTlsConfig {
        ca_file: Some(p.ca.clone()),
        cert_file: Some(p.cert),
        key_file: Some(p.key),
        server_name: None,
    })
    .unwrap();
}
