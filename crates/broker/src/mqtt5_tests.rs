//! Every CONNECT that MQTT 3.1.1 or 5 allows, against the embedded broker with auth off and
//! on: MQTT 5 clients (rumqttc's v5 client, raw frames for topic aliases, Mosquitto's
//! `mosquitto_pub -V mqttv5`), keep-alive 0, and the protocol levels the broker does not speak.

use super::*;
use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5 as m5;
use rumqttc::v5::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// dev1 may write its own telemetry and read its own commands; "op" may do anything.
fn device_and_operator() -> MqttAuth {
    crate::plain_auth(|_id: &str, user: &str, pass: &str| match (user, pass) {
        ("dev1", "key-1") => Some(Acl {
            read: Some(vec!["devices/+/dev1/commands".into()]),
            write: Some(vec!["devices/+/dev1/telemetry".into()]),
        }),
        ("op", "op-password") => Some(Acl::all()),
        _ => None,
    })
}

fn broker(auth: Option<MqttAuth>) -> EmbeddedBroker {
    start(&BrokerSettings {
        port: 0,
        auth,
        ..Default::default()
    })
    .unwrap()
}

/// A client that writes MQTT 5 frames and reads MQTT 5 packets, nothing more.
struct Raw5 {
    tcp: TcpStream,
    buf: BytesMut,
}

impl Raw5 {
    async fn connect(
        b: &EmbeddedBroker,
        id: &str,
        login: Option<(&str, &str)>,
        keep_alive: u16,
    ) -> (Raw5, m5::ConnAck) {
        let mut c = m5::Connect {
            keep_alive,
            client_id: id.into(),
            clean_start: true,
            properties: None,
        };
        c.keep_alive = keep_alive;
        let login = login.map(|(u, p)| m5::Login::new(u, p));
        let mut r = Raw5 {
            tcp: TcpStream::connect(b.local_addr()).await.unwrap(),
            buf: BytesMut::new(),
        };
        r.send(m5::Packet::Connect(c, None, login)).await;
        match r.next().await {
            Some(m5::Packet::ConnAck(a)) => (r, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, p: m5::Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out, None).unwrap();
        self.tcp.write_all(&out).await.unwrap();
    }

    /// The next packet within 5 s; `None` when the broker closed the connection.
    async fn next(&mut self) -> Option<m5::Packet> {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("no packet within 5 s")
    }

    /// `Err` on timeout, `Ok(None)` when closed.
    async fn next_within(&mut self, d: Duration) -> Result<Option<m5::Packet>, ()> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match m5::Packet::read(&mut self.buf, None) {
                Ok(p) => return Ok(Some(p)),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("malformed packet from the broker: {e}"),
            }
            match tokio::time::timeout_at(deadline, self.tcp.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn publish(&mut self, topic: &str, alias: Option<u16>, pkid: u16, payload: &str) {
        let mut p = m5::Publish::new(topic, QoS::AtLeastOnce, payload.to_string(), None);
        p.pkid = pkid;
        p.properties = alias.map(|a| m5::PublishProperties {
            topic_alias: Some(a),
            ..Default::default()
        });
        self.send(m5::Packet::Publish(p)).await;
    }

    async fn puback(&mut self) -> m5::PubAck {
        loop {
            match self.next().await {
                Some(m5::Packet::PubAck(a)) => return a,
                Some(_) => continue,
                None => panic!("closed while waiting for PUBACK"),
            }
        }
    }
}

/// A subscriber on `filter` as the operator (auth on) or anyone (auth off), on MQTT 3.1.1.
async fn watcher(b: &EmbeddedBroker, filter: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut o = rumqttc::MqttOptions::new("watcher", "127.0.0.1", b.local_addr().port());
    o.set_credentials("op", "op-password");
    let (c, mut el) = rumqttc::AsyncClient::new(o, 50);
    c.subscribe(filter, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => return (c, el),
            Ok(Ok(_)) => {}
            other => panic!("watcher failed: {other:?}"),
        }
    }
}

/// The topics and payloads `el` receives within `d`.
async fn received(el: &mut rumqttc::EventLoop, d: Duration) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + d;
    let mut got = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, el.poll()).await {
        if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = e {
            got.push((p.topic, String::from_utf8_lossy(&p.payload).into_owned()));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_clients_publish_and_subscribe_with_auth_off() {
    let b = broker(None);
    let (_w, mut wel) = watcher(&b, "devices/#").await;
    // rumqttc's MQTT 5 client: connect, subscribe, publish at QoS 1, receive it back.
    let mut o = rumqttc::v5::MqttOptions::new("v5-client", "127.0.0.1", b.local_addr().port());
    o.set_keep_alive(Duration::from_secs(5));
    let (c, mut el) = rumqttc::v5::AsyncClient::new(o, 20);
    c.subscribe("devices/t/v5/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    c.publish(
        "devices/t/v5/telemetry",
        QoS::AtLeastOnce,
        false,
        "hello v5",
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut echoed = false;
    while !echoed {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Ok(Ok(rumqttc::v5::Event::Incoming(m5::Packet::Publish(p)))) => {
                assert_eq!(&p.topic[..], b"devices/t/v5/telemetry");
                assert_eq!(&p.payload[..], b"hello v5");
                echoed = true;
            }
            Ok(Ok(_)) => {}
            other => panic!("MQTT 5 client failed: {other:?}"),
        }
    }
    // MQTT 3.1.1 subscribers get what MQTT 5 clients publish.
    let got = received(&mut wel, Duration::from_secs(2)).await;
    assert!(
        got.contains(&("devices/t/v5/telemetry".into(), "hello v5".into())),
        "{got:?}"
    );

    // Publish properties (here user properties and a content type) do not cut 3.1.1
    // subscribers off (rumqttd would panic writing them to a v4 connection).
    let props = m5::PublishProperties {
        user_properties: vec![("site".into(), "lab".into())],
        content_type: Some("application/json".into()),
        message_expiry_interval: Some(60),
        ..Default::default()
    };
    c.publish_with_properties(
        "devices/t/v5/telemetry",
        QoS::AtLeastOnce,
        false,
        "props",
        props,
    )
    .await
    .unwrap();
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let got = received(&mut wel, Duration::from_secs(2)).await;
    assert!(
        got.contains(&("devices/t/v5/telemetry".into(), "props".into())),
        "{got:?}"
    );

    // Mosquitto's client, as MQTT 5 (it failed with "Unsupported protocol version" before),
    // with a user property.
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-V", "mqttv5", "-h", "127.0.0.1", "-q", "1"])
        .args(["-D", "publish", "user-property", "site", "lab"])
        .args(["-p", &b.local_addr().port().to_string()])
        .args([
            "-t",
            "devices/t/mosq5/telemetry",
            "-m",
            "from mosquitto_pub",
        ])
        .output()
        .expect("mosquitto_pub is installed (scripts/test.sh installs mosquitto-clients)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = received(&mut wel, Duration::from_secs(2)).await;
    assert!(
        got.contains(&(
            "devices/t/mosq5/telemetry".into(),
            "from mosquitto_pub".into()
        )),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_clients_are_held_to_the_same_login_and_topic_acl() {
    let b = broker(Some(device_and_operator()));
    let (_w, mut wel) = watcher(&b, "devices/#").await;

    // A bad key: CONNACK 0x86 (bad user name or password), then closed.
    let (mut r, ack) = Raw5::connect(&b, "dev1", Some(("dev1", "wrong")), 30).await;
    assert_eq!(ack.code, m5::ConnectReturnCode::BadUserNamePassword);
    assert!(r.next().await.is_none(), "closed after a refused login");

    let (mut d, ack) = Raw5::connect(&b, "dev1", Some(("dev1", "key-1")), 30).await;
    assert_eq!(ack.code, m5::ConnectReturnCode::Success);
    // Its own topic: relayed. Another device's: PUBACK 0x87 (not authorised), dropped.
    d.publish("devices/t/dev1/telemetry", None, 1, "own").await;
    assert_eq!(d.puback().await.reason, m5::PubAckReason::Success);
    d.publish("devices/t/dev2/telemetry", None, 2, "forged")
        .await;
    let a = d.puback().await;
    assert_eq!((a.pkid, a.reason), (2, m5::PubAckReason::NotAuthorized));

    // Topic aliases: set on an allowed topic and used bare, relayed; an alias re-pointed at a
    // forbidden topic is refused when set and when used bare.
    d.publish("devices/t/dev1/telemetry", Some(1), 3, "alias set")
        .await;
    assert_eq!(d.puback().await.reason, m5::PubAckReason::Success);
    d.publish("", Some(1), 4, "alias used").await;
    assert_eq!(d.puback().await.reason, m5::PubAckReason::Success);
    d.publish("devices/t/dev2/telemetry", Some(2), 5, "forged alias set")
        .await;
    assert_eq!(d.puback().await.reason, m5::PubAckReason::NotAuthorized);
    d.publish("", Some(2), 6, "forged alias used").await;
    assert_eq!(d.puback().await.reason, m5::PubAckReason::NotAuthorized);

    // A SUBSCRIBE outside its read filters: SUBACK 0x87 for that filter only.
    let sub = m5::Subscribe::new_many(
        [
            m5::Filter::new("devices/#", QoS::AtLeastOnce),
            m5::Filter::new("devices/t/dev1/commands", QoS::AtLeastOnce),
        ],
        None,
    );
    let mut sub = sub;
    sub.pkid = 7;
    d.send(m5::Packet::Subscribe(sub)).await;
    let ack = loop {
        match d.next().await {
            Some(m5::Packet::SubAck(a)) => break a,
            Some(_) => continue,
            None => panic!("closed"),
        }
    };
    assert_eq!(
        ack.return_codes,
        vec![
            m5::SubscribeReasonCode::NotAuthorized,
            m5::SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ]
    );

    // The operator saw exactly the allowed publishes, the bare alias under its topic.
    let got = received(&mut wel, Duration::from_secs(2)).await;
    let payloads: Vec<&str> = got.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(payloads, ["own", "alias set", "alias used"], "{got:?}");
    assert!(
        got.iter().all(|(t, _)| t == "devices/t/dev1/telemetry"),
        "{got:?}"
    );
    // 3 publishes and 1 filter refused.
    assert_eq!(b.denied(), 4);

    // An alias that was never set, or one beyond what the broker offers: closed.
    d.publish("", Some(9), 8, "unset alias").await;
    assert!(
        d.next().await.is_none(),
        "an unset alias closes the connection"
    );
    let (mut d, _) = Raw5::connect(&b, "dev1", Some(("dev1", "key-1")), 30).await;
    d.publish("devices/t/dev1/telemetry", Some(5000), 1, "x")
        .await;
    assert!(
        d.next().await.is_none(),
        "alias 5000 > 4096 closes the connection"
    );
}

/// A raw MQTT 3.1.1 CONNECT: protocol level, keep-alive, optional login.
fn connect_v4(level: u8, keep_alive: u16, login: Option<(&str, &str)>) -> Vec<u8> {
    let name: &[u8] = if level == 3 { b"MQIsdp" } else { b"MQTT" };
    let mut v = Vec::new();
    v.extend_from_slice(&(name.len() as u16).to_be_bytes());
    v.extend_from_slice(name);
    v.push(level);
    v.push(if login.is_some() { 0xC2 } else { 0x02 });
    v.extend_from_slice(&keep_alive.to_be_bytes());
    let mut s = |t: &str| {
        v.extend_from_slice(&(t.len() as u16).to_be_bytes());
        v.extend_from_slice(t.as_bytes());
    };
    s("ka0-client");
    if let Some((u, p)) = login {
        s(u);
        s(p);
    }
    let mut f = vec![0x10, v.len() as u8];
    f.extend(v);
    f
}

async fn read_exact_within(tcp: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut b))
        .await
        .expect("answer within 5 s")
        .expect("not closed");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_is_accepted_and_the_session_outlives_rumqttds_timeout() {
    for auth in [None, Some(device_and_operator())] {
        let with_auth = auth.is_some();
        let b = broker(auth);
        let login = with_auth.then_some(("dev1", "key-1"));
        let mut tcp = TcpStream::connect(b.local_addr()).await.unwrap();
        tcp.write_all(&connect_v4(4, 0, login)).await.unwrap();
        assert_eq!(
            read_exact_within(&mut tcp, 4).await,
            [0x20, 0x02, 0x00, 0x00],
            "CONNACK accepted (auth {with_auth})"
        );
        // Silent for 3 x the stand-in keep-alive given to rumqttd (it closes after 1.5 x): the
        // client sees nothing (no PINGRESP it did not ask for), and the session is still up.
        let mut b1 = [0u8; 1];
        let quiet = tokio::time::timeout(gate::STAND_IN_KEEP_ALIVE * 3, tcp.read(&mut b1)).await;
        assert!(
            quiet.is_err(),
            "the gate sent the client something: {quiet:?}"
        );
        // QoS 1 PUBLISH pkid 9 on its own topic: PUBACK 9.
        let topic = b"devices/t/dev1/telemetry";
        let mut p = vec![0x32, (2 + topic.len() + 2 + 2) as u8];
        p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        p.extend_from_slice(topic);
        p.extend_from_slice(&9u16.to_be_bytes());
        p.extend_from_slice(b"{}");
        tcp.write_all(&p).await.unwrap();
        assert_eq!(
            read_exact_within(&mut tcp, 4).await,
            [0x40, 0x02, 0x00, 0x09]
        );
        // Its own PINGREQ is still answered, once.
        tcp.write_all(&[0xC0, 0x00]).await.unwrap();
        assert_eq!(read_exact_within(&mut tcp, 2).await, [0xD0, 0x00]);
    }

    // (mosquitto_pub refuses `-k 0`: "it must be between 5 and 65535"; the raw CONNECT
    // above is exactly what such a device stack sends.)
    let b = broker(None);
    // MQTT 5 with keep-alive 0.
    let (mut r, ack) = Raw5::connect(&b, "ka0-v5", None, 0).await;
    assert_eq!(ack.code, m5::ConnectReturnCode::Success);
    assert!(
        r.next_within(gate::STAND_IN_KEEP_ALIVE * 3).await.is_err(),
        "silent and open"
    );
    r.publish("devices/t/ka0/telemetry", None, 3, "{}").await;
    assert_eq!(r.puback().await.pkid, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_levels_it_does_not_speak_get_return_code_1() {
    let b = broker(None);
    // MQTT 3.1 ("MQIsdp", level 3) and a made-up level 6.
    for level in [3u8, 6] {
        let mut tcp = TcpStream::connect(b.local_addr()).await.unwrap();
        tcp.write_all(&connect_v4(level, 30, None)).await.unwrap();
        assert_eq!(
            read_exact_within(&mut tcp, 4).await,
            [0x20, 0x02, 0x00, 0x01],
            "level {level}"
        );
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
            .await
            .expect("closed within 5 s")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed after the refusal");
    }
}
