//! The TLS, WebSocket and password listeners, spoken to by real clients: rumqttc (TLS and
//! WebSocket transports) and Mosquitto's `mosquitto_pub --cafile`. Certificates are made at
//! test time with rcgen.

use super::*;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Transport};
use std::path::Path;
use tokio_rustls::rustls;

use fieldlab_testkit::pki::Pki;

fn pki(dir: &Path) -> Pki {
    Pki::localhost(dir, "", "fieldlab test CA")
}

fn only_dev1() -> MqttAuth {
    crate::plain_auth(|_id: &str, user: &str, pass: &str| {
        (user == "dev1" && pass == "secret-password-1").then(Acl::all)
    })
}

fn tls_transport(ca_pem: &str) -> Transport {
    let mut roots = rustls::RootCertStore::empty();
    let ders: Vec<_> = rumqttc_pem_certs(ca_pem);
    for d in ders {
        roots.add(d).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(cfg)))
}

fn rumqttc_pem_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn client(id: &str, host: &str, port: u16, t: Transport, pass: &str) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, host, port);
    o.set_transport(t);
    o.set_credentials("dev1", pass);
    o.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(o, 10)
}

/// Subscribe on `sub`, publish `payload` with `publish`, and return what `sub` received.
async fn round_trip(sub: (AsyncClient, EventLoop), topic: &str, publish: impl FnOnce()) -> Vec<u8> {
    let (c, mut el) = sub;
    c.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut publish = Some(publish);
    loop {
        let ev = tokio::time::timeout_at(deadline, el.poll())
            .await
            .expect("no message within 15 s")
            .expect("subscriber connection failed");
        match ev {
            Event::Incoming(Packet::SubAck(_)) => (publish.take().unwrap())(),
            Event::Incoming(Packet::Publish(p)) => return p.payload.to_vec(),
            _ => {}
        }
    }
}

/// Drive a client until its CONNACK or a connection error.
async fn connects(mut el: EventLoop) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) => {
                return a.code == rumqttc::ConnectReturnCode::Success
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_with_passwords_serves_rumqttc_and_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let certs = pki(dir.path());
    let b = start(&BrokerSettings {
        port: 0,
        tls_port: Some(0),
        tls: Some(BrokerTls {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
        }),
        auth: Some(only_dev1()),
        ..Default::default()
    })
    .unwrap();
    let tls_port = b.tls_listen.unwrap().port();

    // rumqttc over TLS, right password: a message goes round.
    let sub = client(
        "sub",
        "localhost",
        tls_port,
        tls_transport(&certs.ca_pem),
        "secret-password-1",
    );
    let ca = certs.ca.clone();
    let got = round_trip(sub, "devices/t/dev1/telemetry", move || {
        // mosquitto_pub checks the server against the CA and logs in with the password.
        let out = std::process::Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &tls_port.to_string(), "-q", "1"])
            .args(["--cafile", ca.to_str().unwrap()])
            .args(["-u", "dev1", "-P", "secret-password-1", "-i", "pub1"])
            .args(["-t", "devices/t/dev1/telemetry", "-m", "over-tls"])
            .output()
            .expect("mosquitto_pub is installed (scripts/test.sh installs mosquitto-clients)");
        assert!(out.status.success(), "{out:?}");
    })
    .await;
    assert_eq!(got, b"over-tls");

    // Wrong password: refused on TLS and on plain TCP.
    let (_c, el) = client(
        "bad",
        "localhost",
        tls_port,
        tls_transport(&certs.ca_pem),
        "guess",
    );
    assert!(!connects(el).await);
    let (_c, el) = client(
        "bad2",
        "127.0.0.1",
        b.listen.port(),
        Transport::Tcp,
        "guess",
    );
    assert!(!connects(el).await);
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &tls_port.to_string()])
        .args(["--cafile", certs.ca.to_str().unwrap()])
        .args(["-u", "dev1", "-P", "wrong", "-t", "x", "-m", "y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // A client that does not trust the CA fails the handshake.
    let other_dir = tempfile::tempdir().unwrap();
    let other = pki(other_dir.path());
    let (_c, el) = client(
        "untrusting",
        "localhost",
        tls_port,
        tls_transport(&other.ca_pem),
        "secret-password-1",
    );
    assert!(!connects(el).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_listener_serves_mqtt() {
    let b = start(&BrokerSettings {
        port: 0,
        ws_port: Some(0),
        auth: Some(only_dev1()),
        ..Default::default()
    })
    .unwrap();
    let ws = b.ws_listen.unwrap().port();
    let url = format!("ws://127.0.0.1:{ws}/mqtt");
    let sub = client("ws-sub", &url, ws, Transport::Ws, "secret-password-1");
    let (p, mut pel) = client("ws-pub", &url, ws, Transport::Ws, "secret-password-1");
    tokio::spawn(async move { while pel.poll().await.is_ok() {} });
    let got = round_trip(sub, "devices/t/dev1/telemetry", move || {
        let p = p.clone();
        tokio::spawn(async move {
            p.publish(
                "devices/t/dev1/telemetry",
                QoS::AtLeastOnce,
                false,
                "over-ws",
            )
            .await
            .unwrap();
        });
    })
    .await;
    assert_eq!(got, b"over-ws");
    let (_c, el) = client("ws-bad", &url, ws, Transport::Ws, "guess");
    assert!(!connects(el).await);
}

/// The status line a raw WebSocket handshake to `port` gets, with this `Origin` (if any).
async fn handshake_status(port: u16, origin: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let req = format!(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n{origin}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the broker answers the handshake")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// With auth off any client may publish, so a web page the user visits must not reach the
/// WebSocket listener: browsers send `Origin`, and only this machine's pages (and
/// `allowed_hosts`) pass. Clients without `Origin` (not browsers) still work end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_listener_refuses_foreign_page_origins() {
    let b = start(&BrokerSettings {
        port: 0,
        ws_port: Some(0),
        allowed_hosts: vec!["lab.example.org".into()],
        ..Default::default()
    })
    .unwrap();
    let ws = b.ws_listen.unwrap().port();
    for evil in [
        "http://evil.example",
        "https://evil.example:443",
        "null",
        "http://10.1.2.3:8080",
        "http://localhost.evil.example",
        "file://",
    ] {
        let st = handshake_status(ws, Some(evil)).await;
        assert!(st.contains(" 403"), "{evil}: {st}");
    }
    for ok in [
        "http://localhost:8080",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "http://ui.localhost",
        "https://lab.example.org",
    ] {
        let st = handshake_status(ws, Some(ok)).await;
        assert!(st.contains(" 101"), "{ok}: {st}");
    }
    assert!(handshake_status(ws, None).await.contains(" 101"));

    // MQTT through the gated WebSocket listener reaches rumqttd's TCP clients and back.
    let url = format!("ws://127.0.0.1:{ws}/mqtt");
    let sub = client("ws-sub-open", &url, ws, Transport::Ws, "");
    let (p, mut pel) = client("ws-pub-open", &url, ws, Transport::Ws, "");
    tokio::spawn(async move { while pel.poll().await.is_ok() {} });
    let got = round_trip(sub, "devices/t/dev9/telemetry", move || {
        let p = p.clone();
        tokio::spawn(async move {
            p.publish(
                "devices/t/dev9/telemetry",
                QoS::AtLeastOnce,
                false,
                "open-ws",
            )
            .await
            .unwrap();
        });
    })
    .await;
    assert_eq!(got, b"open-ws");
}

/// A device's ACL as fieldlab's auth gives it (`MqttLogin::topics`), and an operator's.
fn device_and_operator() -> MqttAuth {
    crate::plain_auth(|_id: &str, user: &str, pass: &str| match (user, pass) {
        ("dev1", "key-1") => Some(Acl {
            read: Some(vec!["devices/+/dev1/commands".into()]),
            write: Some(vec![
                "devices/+/dev1/telemetry".into(),
                "devices/+/dev1/status".into(),
            ]),
        }),
        ("op", "op-password") => Some(Acl::all()),
        _ => None,
    })
}

fn login(id: &str, port: u16, user: &str, pass: &str) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials(user, pass);
    o.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(o, 20)
}

/// Poll `el` until `until` says stop (or 15 s pass), collecting every incoming packet.
async fn drive(el: &mut EventLoop, mut until: impl FnMut(&[Packet]) -> bool) -> Vec<Packet> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut got = Vec::new();
    while !until(&got) {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Ok(Ok(Event::Incoming(p))) => got.push(p),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("connection failed: {e}; got {got:?}"),
            Err(_) => panic!("timed out; got {got:?}"),
        }
    }
    got
}

fn publish(p: &Packet) -> Option<rumqttc::Publish> {
    match p {
        Packet::Publish(x) => Some(x.clone()),
        _ => None,
    }
}

fn suback(p: &Packet) -> Option<rumqttc::SubAck> {
    match p {
        Packet::SubAck(x) => Some(x.clone()),
        _ => None,
    }
}

/// Drive `el` until the first packet `pick` accepts, and return what it picked.
async fn first<T>(el: &mut EventLoop, pick: impl Fn(&Packet) -> Option<T>) -> T {
    let got = drive(el, |g| g.iter().any(|p| pick(p).is_some())).await;
    got.iter().find_map(pick).expect("drive stopped on it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_enforces_each_devices_topic_acl() {
    let b = start(&BrokerSettings {
        port: 0,
        auth: Some(device_and_operator()),
        ..Default::default()
    })
    .unwrap();
    let port = b.listen.port();

    // The operator sees everything under devices/ and fieldlab/.
    let (op, mut op_el) = login("op", port, "op", "op-password");
    op.subscribe("devices/#", QoS::AtLeastOnce).await.unwrap();
    op.subscribe("fieldlab/#", QoS::AtLeastOnce).await.unwrap();
    drive(&mut op_el, |g| {
        g.iter().filter(|p| matches!(p, Packet::SubAck(_))).count() == 2
    })
    .await;

    // dev1 publishes its own telemetry (allowed) and, at every QoS, topics it may not write.
    // Each refused publish still completes for the client (PUBACK, PUBREC + PUBCOMP).
    let (dev, mut dev_el) = login("dev1", port, "dev1", "key-1");
    dev.publish(
        "devices/t/dev2/telemetry",
        QoS::AtLeastOnce,
        false,
        "forged",
    )
    .await
    .unwrap();
    dev.publish("devices/t/dev2/status", QoS::ExactlyOnce, false, "forged")
        .await
        .unwrap();
    dev.publish("fieldlab/events", QoS::AtMostOnce, false, "forged")
        .await
        .unwrap();
    dev.publish("devices/t/dev1/telemetry", QoS::AtLeastOnce, false, "own")
        .await
        .unwrap();
    let got = drive(&mut dev_el, |g| {
        g.iter().filter(|p| matches!(p, Packet::PubAck(_))).count() == 2
            && g.iter().any(|p| matches!(p, Packet::PubComp(_)))
    })
    .await;
    assert!(
        got.iter().any(|p| matches!(p, Packet::PubRec(_))),
        "{got:?}"
    );

    // The operator receives only the allowed one.
    let p = first(&mut op_el, publish).await;
    assert_eq!(p.topic, "devices/t/dev1/telemetry");
    assert_eq!(&p.payload[..], b"own");

    // One SUBSCRIBE with an allowed and a refused filter: 0x80 for the refused one only.
    dev.subscribe_many([
        rumqttc::SubscribeFilter::new("devices/#".into(), QoS::AtLeastOnce),
        rumqttc::SubscribeFilter::new("devices/t/dev1/commands".into(), QoS::AtLeastOnce),
    ])
    .await
    .unwrap();
    let ack = first(&mut dev_el, suback).await;
    assert_eq!(
        ack.return_codes,
        vec![
            rumqttc::SubscribeReasonCode::Failure,
            rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ]
    );
    // Commands for dev2 do not reach dev1, its own do.
    op.publish(
        "devices/t/dev2/commands",
        QoS::AtLeastOnce,
        false,
        "not yours",
    )
    .await
    .unwrap();
    op.publish("devices/t/dev1/commands", QoS::AtLeastOnce, false, "yours")
        .await
        .unwrap();
    tokio::spawn(async move { while op_el.poll().await.is_ok() {} });
    let p = first(&mut dev_el, publish).await;
    assert_eq!(p.topic, "devices/t/dev1/commands");
    assert_eq!(&p.payload[..], b"yours");

    // A subscription wholly outside the ACL gets only failure codes.
    dev.subscribe("devices/+/+/commands", QoS::AtMostOnce)
        .await
        .unwrap();
    let ack = first(&mut dev_el, suback).await;
    assert_eq!(
        ack.return_codes,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );

    // A last will on another device's topic is refused at CONNECT (return code 5); a bad key
    // with return code 4.
    let mut o = MqttOptions::new("dev1", "127.0.0.1", port);
    o.set_credentials("dev1", "key-1");
    o.set_last_will(rumqttc::LastWill::new(
        "devices/t/dev2/status",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (_c, el) = AsyncClient::new(o, 10);
    assert!(!connects(el).await);
    let (_c, el) = login("dev1", port, "dev1", "key-2");
    assert!(!connects(el).await);
    // 3 publishes, 2 filters, 1 last will.
    assert_eq!(b.denied(), 6);

    // Nobody reaches rumqttd behind the gate without the gate's password.
    let inner = b.upstream().port();
    let (_c, el) = login("op", inner, "op", "op-password");
    assert!(!connects(el).await);
    let (_c, el) = login("x", inner, gate::GATE_USER, "guess");
    assert!(!connects(el).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_right_behind_connect_are_relayed() {
    use rumqttc::mqttbytes::v4;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = start(&BrokerSettings {
        port: 0,
        auth: Some(device_and_operator()),
        ..Default::default()
    })
    .unwrap();
    // CONNECT and a QoS 1 PUBLISH in one write, before any CONNACK: both must be answered
    // without the client sending anything more.
    let mut out = bytes::BytesMut::new();
    let mut c = v4::Connect::new("dev1");
    c.login = Some(v4::Login::new("dev1", "key-1"));
    v4::Packet::Connect(c).write(&mut out, 1 << 20).unwrap();
    let mut p = v4::Publish::new("devices/t/dev1/telemetry", QoS::AtLeastOnce, "{}");
    p.pkid = 7;
    v4::Packet::Publish(p).write(&mut out, 1 << 20).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(b.local_addr())
        .await
        .unwrap();
    tcp.write_all(&out).await.unwrap();
    let mut got = bytes::BytesMut::new();
    let mut packets = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !packets.iter().any(|p| matches!(p, v4::Packet::PubAck(_))) {
        let n = tokio::time::timeout_at(deadline, tcp.read_buf(&mut got))
            .await
            .expect("no PUBACK within 10 s: the PUBLISH behind CONNECT was not relayed")
            .unwrap();
        assert!(n > 0, "closed; got {packets:?}");
        while let Ok(p) = v4::Packet::read(&mut got, 1 << 20) {
            packets.push(p);
        }
    }
    assert!(
        matches!(&packets[0], v4::Packet::ConnAck(a) if a.code == v4::ConnectReturnCode::Success),
        "{packets:?}"
    );
    assert!(
        packets.contains(&v4::Packet::PubAck(v4::PubAck::new(7))),
        "{packets:?}"
    );
}

#[test]
fn tls_port_without_files_or_with_bad_files_is_a_clear_error() {
    let e = start(&BrokerSettings {
        port: 0,
        tls_port: Some(0),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("mqtt.server_cert_file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let e = start(&BrokerSettings {
        port: 0,
        tls_port: Some(0),
        tls: Some(BrokerTls {
            cert: junk.clone(),
            key: junk,
        }),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
}
