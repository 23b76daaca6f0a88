//! Fuzzing entry point of the topic ACL gate's frame handling (see `fieldlab_core::fuzzing`).
//!
//! Why it exists: the gate reads every byte a device sends before rumqttd does, and decides
//! from its own reading of a PUBLISH frame whether to relay it. `fuzz_mqtt_gate` runs the
//! gate's frame code (`next_frame`, CONNECT decoding, `client_frame`, `from_broker`) on
//! arbitrary client and broker byte streams, without sockets, and checks the gate's promise:
//! nothing it relays upstream publishes to, or subscribes within, a topic the ACL refuses — as
//! rumqttd itself will decode the frame. Not part of fieldlab's API.

use super::{from_broker, next_frame, publish_head, Gate, Session};
use crate::Acl;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// `mqtt_gate`: byte 0 picks the login's ACL and the packet size limit, bytes 1..3 (u16 LE)
/// how many of the remaining bytes the client sends; the rest is what the broker sends back.
pub fn fuzz_mqtt_gate(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let acl = match data[0] % 3 {
        0 => Acl::all(),
        1 => Acl {
            read: Some(vec!["devices/+/t1/#".into(), "$SYS/x".into()]),
            write: Some(vec!["devices/sensor/t1/telemetry".into(), "a/+/c".into()]),
        },
        _ => Acl {
            read: Some(vec!["#".into()]),
            write: Some(vec!["devices/+/t1/#".into()]),
        },
    };
    let max = if data[0] & 0x80 != 0 { 64 } else { 1 << 20 };
    let split = (u16::from_le_bytes([data[1], data[2]]) as usize).min(data.len() - 3);
    let (client, broker) = data[3..].split_at(split);
    let gate = Gate {
        auth: crate::plain_auth(|_, _, _| None),
        upstream: ([127, 0, 0, 1], 9).into(),
        upstream_v5: ([127, 0, 0, 1], 10).into(),
        password: "gate-password".into(),
        max_packet: max,
        denied: Arc::new(AtomicU64::new(0)),
        on_denied: None,
        allowed_hosts: Arc::from(Vec::<String>::new()),
    };
    let peer = ([127, 0, 0, 1], 40000).into();

    let mut cbuf = BytesMut::from(client);
    let Ok(Some(first)) = next_frame(&mut cbuf, max) else {
        return;
    };
    if super::protocol_level(&first) == Some(5) {
        return fuzz_v5(&gate, &acl, first, cbuf, broker, peer);
    }
    let Ok(Packet::Connect(connect)) = Packet::read(&mut first.clone(), max) else {
        return;
    };
    if let Some(w) = &connect.last_will {
        if !acl.may_write(&w.topic) {
            return;
        }
    }
    let everything = acl.read.is_none() && acl.write.is_none();
    let (mut to_up, mut to_client) = (BytesMut::new(), BytesMut::new());
    let mut s = Session::default();
    loop {
        let frame = match next_frame(&mut cbuf, max) {
            Ok(Some(f)) => f,
            _ => break,
        };
        if everything {
            if frame[0] >> 4 == 1 {
                break;
            }
            to_up.extend_from_slice(&frame);
        } else if gate
            .client_frame(
                frame,
                &acl,
                &mut s,
                &mut to_up,
                &mut to_client,
                peer,
                &connect.client_id,
            )
            .is_err()
        {
            break;
        }
    }
    if !everything {
        check_relayed(&acl, to_up);
    }
    let mut ubuf = BytesMut::from(broker);
    while let Ok(Some(frame)) = next_frame(&mut ubuf, usize::MAX) {
        if from_broker(frame, &mut s, &mut to_client).is_err() {
            break;
        }
    }
}

/// The MQTT 5 side, as the gate runs it: every frame through `client_frame_v5` (which also
/// strips PUBLISH properties for clients with access to everything).
fn fuzz_v5(
    gate: &Gate,
    acl: &Acl,
    first: BytesMut,
    mut cbuf: BytesMut,
    broker: &[u8],
    peer: std::net::SocketAddr,
) {
    let Ok(c) = super::v5::read_connect(&first, gate.max_packet) else {
        return;
    };
    if let Some(w) = &c.will {
        match super::v5::will_topic(w) {
            Ok(t) if acl.may_write(t) => {}
            _ => return,
        }
    }
    let (mut to_up, mut to_client) = (BytesMut::new(), BytesMut::new());
    let mut s = Session::default();
    while let Ok(Some(frame)) = next_frame(&mut cbuf, gate.max_packet) {
        let id = c.connect.client_id.clone();
        if gate
            .client_frame_v5(frame, acl, &mut s, &mut to_up, &mut to_client, peer, &id)
            .is_err()
        {
            break;
        }
    }
    check_relayed_v5(acl, to_up);
    let mut ubuf = BytesMut::from(broker);
    while let Ok(Some(frame)) = next_frame(&mut ubuf, usize::MAX) {
        if super::v5::from_broker_v5(frame, &mut s, &mut to_client).is_err() {
            break;
        }
    }
}

/// Every MQTT 5 frame relayed upstream, decoded as rumqttd decodes it, is allowed by `acl`; no
/// PUBLISH carries properties (so no topic alias either: rumqttd reads the full topic, and it
/// would panic writing properties to an MQTT 3.1.1 subscriber).
fn check_relayed_v5(acl: &Acl, mut up: BytesMut) {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    while let Ok(Some(frame)) = next_frame(&mut up, usize::MAX) {
        match P5::read(&mut frame.clone(), None) {
            Ok(P5::Publish(p)) => {
                assert!(p.properties.is_none(), "relayed a PUBLISH with properties");
                let topic = String::from_utf8(p.topic.to_vec()).expect("UTF-8 topic");
                assert!(!topic.is_empty(), "relayed a PUBLISH without its topic");
                assert!(acl.may_write(&topic), "relayed a PUBLISH to {topic:?}");
            }
            Ok(P5::Subscribe(sub)) if acl.read.is_some() => {
                for f in &sub.filters {
                    assert!(acl.may_read(&f.path), "relayed a SUBSCRIBE to {:?}", f.path);
                }
            }
            _ => {}
        }
    }
}

/// Every frame relayed upstream, decoded as rumqttd decodes it, is allowed by `acl`.
fn check_relayed(acl: &Acl, mut up: BytesMut) {
    while let Ok(Some(frame)) = next_frame(&mut up, usize::MAX) {
        if frame[0] >> 4 == 3 {
            let (topic, _, _) = publish_head(&frame).expect("a relayed PUBLISH has a topic");
            assert!(acl.may_write(topic), "relayed a PUBLISH to {topic:?}");
        }
        match Packet::read(&mut frame.clone(), usize::MAX) {
            Ok(Packet::Publish(p)) => {
                let topic = &p.topic;
                assert!(
                    acl.may_write(topic),
                    "relayed a PUBLISH rumqttd reads as topic {topic:?}"
                );
            }
            Ok(Packet::Subscribe(sub)) if acl.read.is_some() => {
                for f in &sub.filters {
                    assert!(acl.may_read(&f.path), "relayed a SUBSCRIBE to {:?}", f.path);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    /// The replay of `fieldlab_core::fuzzing::replay` (this crate does not depend on core).
    #[test]
    fn mqtt_gate_corpus_replays() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut files = Vec::new();
        for sub in ["corpus", "regressions"] {
            if let Ok(rd) = std::fs::read_dir(root.join(sub).join("mqtt_gate")) {
                files.extend(rd.flatten().map(|e| e.path()));
            }
        }
        files.sort();
        assert!(files.len() >= 4, "seed inputs of mqtt_gate: {files:?}");
        let failed: Vec<_> = files
            .iter()
            .filter(|f| {
                let data = std::fs::read(f).unwrap();
                std::panic::catch_unwind(|| super::fuzz_mqtt_gate(&data)).is_err()
            })
            .collect();
        assert!(
            failed.is_empty(),
            "fuzz target mqtt_gate panicked on: {failed:?}"
        );
    }
}
