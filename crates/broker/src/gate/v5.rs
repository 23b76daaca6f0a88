//! The gate's MQTT 5 side: CONNECT, PUBLISH (with topic aliases), SUBSCRIBE and the refusals,
//! with rumqttc's MQTT 5 codec.
//!
//! Why it exists: rumqttd serves MQTT 5 on its own listener, and the gate must hold v5
//! clients to the same login and topic ACL as 3.1.1 clients. What differs from 3.1.1, and is
//! handled here:
//! - refusals carry MQTT 5 reason codes: CONNACK 0x86 (bad login), 0x87 (not authorised),
//!   0x89 (server busy); PUBACK/PUBREC 0x87 for a refused PUBLISH (a PUBREC >= 0x80 ends a
//!   QoS 2 flow, so no PUBREL follows); SUBACK 0x87 per refused filter;
//! - a PUBLISH may name its topic by a topic alias (MQTT 5 section 3.3.2.3.4): the gate keeps
//!   the client's alias table, as the broker does, and checks the topic the alias stands for.
//!   The table is bounded: aliases 1..=4096 (what rumqttd offers in CONNACK) and at most
//!   [`ALIAS_BYTES`] of topic text per connection; beyond that the connection is closed, as
//!   rumqttd closes one that uses an alias it never offered.
//! - PUBLISH properties (topic alias, user properties, content type, expiry, ...) and last will
//!   properties are dropped: the PUBLISH goes to rumqttd under its full topic with none. rumqttd
//!   0.20 keeps a message's properties and panics writing them to an MQTT 3.1.1 subscriber
//!   (`protocol/v4/mod.rs`: "packets with Properties ... not possible in v4"), which would cut
//!   fieldlab's own ingest off. What MQTT 5 subscribers lose is what a 3.1.1 subscriber never
//!   had.

use super::{put5, trim_subscribe, violation, BoxError, Gate, Session, Trimmed};
use crate::Acl;
use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{
    self as m5, ConnAck, ConnectReturnCode, PubAck, PubAckReason, PubRec, PubRecReason, SubAck,
    SubscribeReasonCode,
};
use std::net::SocketAddr;

/// rumqttd's topic alias maximum (its CONNACK says so); an alias above it is a protocol error.
const ALIAS_MAX: u16 = 4096;
/// Topic text a connection may keep under aliases in the gate, in bytes.
pub(super) const ALIAS_BYTES: usize = 64 * 1024;

/// The CONNECT of an MQTT 5 client, decoded.
pub(super) struct Connect5 {
    pub connect: m5::Connect,
    pub will: Option<m5::LastWill>,
    pub login: Option<m5::Login>,
}

pub(super) fn read_connect(frame: &BytesMut, max: usize) -> Result<Connect5, BoxError> {
    match m5::Packet::read(&mut frame.clone(), Some(max_u32(max)))? {
        m5::Packet::Connect(connect, will, login) => Ok(Connect5 {
            connect,
            will,
            login,
        }),
        _ => Err(violation("the first packet is not CONNECT")),
    }
}

fn max_u32(max: usize) -> u32 {
    u32::try_from(max).unwrap_or(u32::MAX)
}

/// A refusing CONNACK.
pub(super) fn connack(
    out: &mut BytesMut,
    refusal: Option<crate::MqttRefusal>,
) -> Result<(), BoxError> {
    let code = match refusal {
        Some(crate::MqttRefusal::BadLogin) => ConnectReturnCode::BadUserNamePassword,
        Some(crate::MqttRefusal::Unavailable) => ConnectReturnCode::ServerBusy,
        Some(crate::MqttRefusal::NotAuthorized) | None => ConnectReturnCode::NotAuthorized,
    };
    put5(
        out,
        m5::Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: None,
        }),
    )
}

/// The will topic, as text (a will on a non-UTF-8 topic is malformed).
pub(super) fn will_topic(w: &m5::LastWill) -> Result<&str, BoxError> {
    std::str::from_utf8(&w.topic).map_err(|_| violation("a will topic that is not UTF-8"))
}

impl Gate {
    /// One frame from an MQTT 5 client whose ACL restricts it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn client_frame_v5(
        &self,
        frame: BytesMut,
        acl: &Acl,
        s: &mut Session,
        to_up: &mut BytesMut,
        to_client: &mut BytesMut,
        peer: SocketAddr,
        client_id: &str,
    ) -> Result<(), BoxError> {
        let max = max_u32(self.max_packet);
        match frame[0] >> 4 {
            1 => return Err(violation("a second CONNECT")),
            3 => {
                let m5::Packet::Publish(p) = m5::Packet::read(&mut frame.clone(), Some(max))?
                else {
                    return Err(violation("malformed PUBLISH"));
                };
                let topic = resolve_alias(s, &p)?;
                if acl.may_write(&topic) {
                    if p.properties.is_none() {
                        to_up.extend_from_slice(&frame);
                    } else {
                        let mut p = p;
                        p.topic = topic.into_bytes().into();
                        p.properties = None;
                        put5(to_up, m5::Packet::Publish(p))?;
                    }
                    return Ok(());
                }
                self.refused(peer, client_id, "publish", &topic);
                match p.qos {
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce => {
                        let mut ack = PubAck::new(p.pkid, None);
                        ack.reason = PubAckReason::NotAuthorized;
                        put5(to_client, m5::Packet::PubAck(ack))?;
                    }
                    rumqttc::v5::mqttbytes::QoS::ExactlyOnce => {
                        let mut rec = PubRec::new(p.pkid, None);
                        rec.reason = PubRecReason::NotAuthorized;
                        put5(to_client, m5::Packet::PubRec(rec))?;
                    }
                    rumqttc::v5::mqttbytes::QoS::AtMostOnce => {}
                }
            }
            8 if acl.read.is_some() => {
                let m5::Packet::Subscribe(mut sub) =
                    m5::Packet::read(&mut frame.clone(), Some(max))?
                else {
                    return Err(violation("malformed SUBSCRIBE"));
                };
                let paths = sub.filters.iter().map(|f| f.path.as_str());
                let keep = self.readable(acl, paths, peer, client_id);
                match trim_subscribe(keep, &mut sub.filters, sub.pkid, s) {
                    Trimmed::Nothing => to_up.extend_from_slice(&frame),
                    Trimmed::All(n) => put5(
                        to_client,
                        m5::Packet::SubAck(SubAck {
                            pkid: sub.pkid,
                            return_codes: vec![SubscribeReasonCode::NotAuthorized; n],
                            properties: None,
                        }),
                    )?,
                    Trimmed::Some => put5(to_up, m5::Packet::Subscribe(sub))?,
                }
            }
            _ => to_up.extend_from_slice(&frame),
        }
        Ok(())
    }
}

/// The topic a PUBLISH is for: its own, or the one its alias stands for. A PUBLISH that names
/// both sets the alias (MQTT 5 section 3.3.2.3.4).
fn resolve_alias(s: &mut Session, p: &m5::Publish) -> Result<String, BoxError> {
    let topic = std::str::from_utf8(&p.topic)
        .map_err(|_| violation("a PUBLISH topic that is not UTF-8"))?;
    let Some(alias) = p.properties.as_ref().and_then(|pr| pr.topic_alias) else {
        if topic.is_empty() {
            return Err(violation("a PUBLISH with neither topic nor topic alias"));
        }
        return Ok(topic.to_string());
    };
    if alias == 0 || alias > ALIAS_MAX {
        return Err(violation("a topic alias outside 1..=4096"));
    }
    if topic.is_empty() {
        return s
            .aliases
            .get(&alias)
            .cloned()
            .ok_or_else(|| violation("a topic alias that was never set"));
    }
    let old = s.aliases.insert(alias, topic.to_string());
    s.alias_bytes = s.alias_bytes + topic.len() - old.map_or(0, |o| o.len());
    if s.alias_bytes > ALIAS_BYTES {
        return Err(violation("more than 64 KiB of topics under topic aliases"));
    }
    Ok(topic.to_string())
}

/// A frame from rumqttd to an MQTT 5 client: the SUBACK of a trimmed SUBSCRIBE gets the refused
/// filters' reason codes (0x87) back in their places.
pub(super) fn from_broker_v5(
    frame: BytesMut,
    s: &mut Session,
    to_client: &mut BytesMut,
) -> Result<(), BoxError> {
    if frame[0] >> 4 != 9 || s.partial_subs.is_empty() {
        to_client.extend_from_slice(&frame);
        return Ok(());
    }
    let m5::Packet::SubAck(ack) = m5::Packet::read(&mut frame.clone(), None)? else {
        return Err(violation("malformed SUBACK from the broker"));
    };
    let Some(keep) = s.partial_subs.remove(&ack.pkid) else {
        to_client.extend_from_slice(&frame);
        return Ok(());
    };
    let codes = super::merge_codes(&keep, ack.return_codes, SubscribeReasonCode::NotAuthorized);
    put5(
        to_client,
        m5::Packet::SubAck(SubAck {
            pkid: ack.pkid,
            return_codes: codes,
            properties: ack.properties,
        }),
    )
}
