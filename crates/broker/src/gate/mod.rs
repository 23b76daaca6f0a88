//! The MQTT gate: fieldlab's own front door to the embedded broker.
//!
//! Why it exists: rumqttd 0.20 authenticates CONNECT but has no hook to authorise PUBLISH or
//! SUBSCRIBE, so a device holding a valid key could publish another device's telemetry or
//! read every topic; and it refuses CONNECTs that MQTT allows (keep-alive 0). The gate
//! terminates the public listeners itself (TCP, TLS, WebSocket), reads each packet's frame
//! with rumqttc's codecs (MQTT 3.1.1 here, MQTT 5 in `gate/v5.rs`), authenticates CONNECT, checks
//! every PUBLISH (and the last will) against the client's write filters and every SUBSCRIBE
//! against its read filters, and relays what is allowed, byte for byte, to rumqttd on a
//! loopback port (one per protocol) whose only accepted login is the gate's own random
//! password. With auth off every login is accepted and every topic open, so the gate only
//! relays; it is still what makes keep-alive 0 work.
//!
//! What a refused client sees (as with Mosquitto's ACLs): a PUBLISH outside its filters is
//! acknowledged (PUBACK, or PUBREC then PUBCOMP) and dropped, so the client does not retry it
//! forever; a SUBSCRIBE filter outside its read filters gets the failure code 0x80 in SUBACK,
//! the others are subscribed. A CONNECT with a bad login gets return code 4, a last will on a
//! topic it may not write return code 5; so does a login refused after too many failures
//! (back off), and one that found every password check worker busy return code 3. MQTT 5
//! clients get the MQTT 5 reason codes (`gate/v5.rs`). Refusals are counted
//! ([`EmbeddedBroker::denied`]).
//!
//! Keep-alive 0 (no keep-alive): rumqttd is told a stand-in (60 s) instead and the gate
//! pings it on the client's behalf, swallowing the answers, so the client's session lasts as
//! long as its TCP connection, as MQTT says.
//!
//! Clients with access to every topic (fieldlab itself, admins, operators) are relayed without
//! looking inside their packets past the fixed header.

use crate::{Acl, EmbeddedBroker, MqttAuth};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, SubscribeReasonCode};
use rumqttc::mqttbytes::{self, v4};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The user name the gate logs in to rumqttd with.
pub(crate) const GATE_USER: &str = "fieldlab-gate";

/// How long a new connection may take to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Gate {
    pub auth: MqttAuth,
    /// rumqttd's loopback listeners: MQTT 3.1.1 and MQTT 5.
    pub upstream: SocketAddr,
    pub upstream_v5: SocketAddr,
    pub password: String,
    pub max_packet: usize,
    pub denied: Arc<AtomicU64>,
    pub on_denied: Option<crate::OnDenied>,
    /// Page origins besides loopback ones allowed on the WebSocket listener.
    pub allowed_hosts: Arc<[String]>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn violation(what: &str) -> BoxError {
    format!("MQTT protocol violation: {what}").into()
}

/// A filter starting with a wildcard never reaches topics (or filters) starting with `$`.
fn hides_dollar(filter: &str, topic: &str) -> bool {
    topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#'))
}

/// MQTT topic filter matching (MQTT 3.1.1 section 4.7): `+` one level, `#` the rest
/// (including the parent level itself); a filter starting with a wildcard does not match
/// topics starting with `$`.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if hides_dollar(filter, topic) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when every topic `sub` can match is matched by `allowed` (a SUBSCRIBE filter inside
/// a read filter).
pub fn filter_covers(allowed: &str, sub: &str) -> bool {
    if hides_dollar(allowed, sub) {
        return false;
    }
    let mut a = allowed.split('/');
    let mut s = sub.split('/');
    loop {
        match (a.next(), s.next()) {
            (Some("#"), _) => return true,
            // `+` covers one level of anything but a multi-level wildcard.
            (Some("+"), Some(x)) if x != "#" => {}
            (Some(x), Some(y)) if x == y && x != "+" && x != "#" => {}
            // `x/#` also matches `x`.
            (Some(x), None) => return x == "#" && a.next().is_none(),
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Acl {
    fn may_write(&self, topic: &str) -> bool {
        self.write
            .as_ref()
            .is_none_or(|fs| fs.iter().any(|f| filter_matches(f, topic)))
    }

    fn may_read(&self, filter: &str) -> bool {
        self.read
            .as_ref()
            .is_none_or(|fs| fs.iter().any(|a| filter_covers(a, filter)))
    }
}

/// What the gate remembers about one connection.
#[derive(Default)]
struct Session {
    /// QoS 2 publishes refused (PUBREC sent): their PUBREL is answered here (3.1.1 only).
    refused_qos2: HashSet<u16>,
    /// SUBSCRIBEs relayed with some filters removed: which of the original filters were kept.
    partial_subs: HashMap<u16, Vec<bool>>,
    /// MQTT 5 topic aliases the client set, and their topics' total length ([`v5`]).
    aliases: HashMap<u16, String>,
    alias_bytes: usize,
    /// PINGREQs the gate sent for a client without keep-alive, whose PINGRESP is still due.
    injected_pings: u32,
}

/// Which MQTT the client speaks (from its CONNECT's protocol level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    V4,
    V5,
}

/// A CONNECT the gate let through.
struct Admitted {
    proto: Proto,
    acl: Acl,
    client_id: String,
    /// The client asked for no keep-alive (0); rumqttd got [`STAND_IN_KEEP_ALIVE`].
    zero_keep_alive: bool,
}

/// The keep-alive rumqttd is told for a client that asked for none. rumqttd 0.20 refuses
/// keep-alive 0 (it would keep dead connections for ever), MQTT 3.1.1 (section 3.1.2.10) and 5
/// allow it; the gate keeps such a client's broker session alive itself with PINGREQs.
#[cfg(not(test))]
pub(crate) const STAND_IN_KEEP_ALIVE: Duration = Duration::from_secs(60);
/// Short in tests, so that a test sees rumqttd's timeout (1.5 x) pass without the gate's pings.
#[cfg(test)]
pub(crate) const STAND_IN_KEEP_ALIVE: Duration = Duration::from_secs(2);
const PINGREQ: [u8; 2] = [0xC0, 0x00];
const PINGRESP: [u8; 2] = [0xD0, 0x00];

/// The protocol level byte of a CONNECT frame (4 = MQTT 3.1.1, 5 = MQTT 5), if it is one.
fn protocol_level(frame: &[u8]) -> Option<u8> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    let mut i = 1;
    while *frame.get(i)? & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let name = u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]) as usize;
    frame.get(i + 2 + name).copied()
}

/// The topic, QoS and packet id of a PUBLISH frame.
fn publish_head(frame: &[u8]) -> Option<(&str, u8, u16)> {
    let qos = (frame[0] >> 1) & 3;
    let mut i = 1;
    while *frame.get(i)? & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let len = u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]) as usize;
    let topic = std::str::from_utf8(frame.get(i + 2..i + 2 + len)?).ok()?;
    let pkid = if qos > 0 {
        let j = i + 2 + len;
        u16::from_be_bytes([*frame.get(j)?, *frame.get(j + 1)?])
    } else {
        0
    };
    Some((topic, qos, pkid))
}

/// The next whole frame in `buf`, if it holds one.
fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, BoxError> {
    match mqttbytes::check(buf.iter(), max) {
        Ok(h) => Ok(Some(buf.split_to(h.frame_length()))),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(Box::new(e)),
    }
}

fn put(out: &mut BytesMut, p: Packet) -> Result<(), BoxError> {
    p.write(out, usize::MAX)?;
    Ok(())
}

fn put5(out: &mut BytesMut, p: rumqttc::v5::mqttbytes::v5::Packet) -> Result<(), BoxError> {
    p.write(out, None)?;
    Ok(())
}

impl Gate {
    /// Serve one client connection (any transport) until either side closes.
    pub(crate) async fn serve<S>(self: Arc<Self>, client: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if let Err(e) = self.relay(client, peer).await {
            tracing::debug!(%peer, error = %e, "mqtt gate: connection closed");
        }
    }

    /// Which of a SUBSCRIBE's filters the ACL lets the client read; the others are counted
    /// and logged as refused.
    fn readable<'a>(
        &self,
        acl: &Acl,
        paths: impl Iterator<Item = &'a str>,
        peer: SocketAddr,
        client_id: &str,
    ) -> Vec<bool> {
        paths
            .map(|f| {
                let ok = acl.may_read(f);
                if !ok {
                    self.refused(peer, client_id, "subscribe", f);
                }
                ok
            })
            .collect()
    }

    fn refused(&self, peer: SocketAddr, client: &str, what: &'static str, topic: &str) {
        self.denied.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = &self.on_denied {
            f(what);
        }
        tracing::warn!(%peer, client, topic, "mqtt: {what} refused by the topic ACL");
    }

    async fn relay<S>(&self, mut client: S, peer: SocketAddr) -> Result<(), BoxError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let max = self.max_packet;
        let mut cbuf = BytesMut::with_capacity(4096);
        let first = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                if let Some(f) = next_frame(&mut cbuf, max)? {
                    return Ok::<_, BoxError>(f);
                }
                if client.read_buf(&mut cbuf).await? == 0 {
                    return Err("closed before CONNECT".into());
                }
            }
        })
        .await
        .map_err(|_| violation("no CONNECT within 10 s"))??;
        let mut out = BytesMut::new();
        let admitted = match self.admit(&first, peer, &mut out).await? {
            Ok(a) => a,
            Err(why) => {
                // `out` holds the refusing CONNACK.
                client.write_all(&out).await?;
                client.flush().await?;
                return Err(why.into());
            }
        };
        let Admitted {
            proto,
            acl,
            client_id,
            zero_keep_alive,
        } = admitted;
        let upstream = match proto {
            Proto::V4 => self.upstream,
            Proto::V5 => self.upstream_v5,
        };
        let mut up = tokio::net::TcpStream::connect(upstream).await?;
        up.set_nodelay(true)?;
        up.write_all(&out).await?;
        out.clear();

        let everything = acl.read.is_none() && acl.write.is_none();
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut ur, mut uw) = up.into_split();
        let mut ubuf = BytesMut::with_capacity(4096);
        let (mut to_up, mut to_client) = (BytesMut::new(), BytesMut::new());
        let mut s = Session::default();
        // A client without keep-alive (0) is kept alive towards rumqttd by the gate: a PINGREQ
        // every half of the stand-in interval, whose PINGRESP the client never sees.
        let mut ping = tokio::time::interval(STAND_IN_KEEP_ALIVE / 2);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        loop {
            // What is buffered first: a client may send frames right behind its CONNECT.
            while let Some(frame) = next_frame(&mut cbuf, max)? {
                // MQTT 5 frames are always looked at: PUBLISH properties are dropped ([`v5`]).
                if everything && proto == Proto::V4 {
                    if frame[0] >> 4 == 1 {
                        return Err(violation("a second CONNECT"));
                    }
                    to_up.extend_from_slice(&frame);
                } else {
                    let (acl, s, id) = (&acl, &mut s, client_id.as_str());
                    match proto {
                        Proto::V4 => {
                            self.client_frame(frame, acl, s, &mut to_up, &mut to_client, peer, id)?
                        }
                        Proto::V5 => self.client_frame_v5(
                            frame,
                            acl,
                            s,
                            &mut to_up,
                            &mut to_client,
                            peer,
                            id,
                        )?,
                    }
                }
            }
            while let Some(frame) = next_frame(&mut ubuf, usize::MAX)? {
                if frame[..] == PINGRESP && s.injected_pings > 0 {
                    s.injected_pings -= 1;
                    continue;
                }
                match proto {
                    Proto::V4 => from_broker(frame, &mut s, &mut to_client)?,
                    Proto::V5 => v5::from_broker_v5(frame, &mut s, &mut to_client)?,
                }
            }
            if !to_up.is_empty() {
                uw.write_all(&to_up).await?;
                to_up.clear();
            }
            if !to_client.is_empty() {
                cw.write_all(&to_client).await?;
                cw.flush().await?;
                to_client.clear();
            }
            cbuf.reserve(8192);
            ubuf.reserve(8192);
            tokio::select! {
                n = cr.read_buf(&mut cbuf) => if n? == 0 { break },
                n = ur.read_buf(&mut ubuf) => if n? == 0 { break },
                _ = ping.tick(), if zero_keep_alive => {
                    s.injected_pings += 1;
                    to_up.extend_from_slice(&PINGREQ);
                }
            }
        }
        let _ = cw.shutdown().await;
        Ok(())
    }

    /// Decide on a CONNECT (either protocol). Admitted: `out` holds the CONNECT to send to
    /// rumqttd (with the gate's login, and a stand-in keep-alive for 0). Refused: `out` holds
    /// the CONNACK for the client, and the error says why.
    async fn admit(
        &self,
        first: &BytesMut,
        peer: SocketAddr,
        out: &mut BytesMut,
    ) -> Result<Result<Admitted, String>, BoxError> {
        let max = self.max_packet;
        match protocol_level(first) {
            Some(4) => {
                let Packet::Connect(mut connect) = Packet::read(&mut first.clone(), max)? else {
                    return Err(violation("the first packet is not CONNECT"));
                };
                let (user, pass) = connect
                    .login
                    .as_ref()
                    .map(|l| (l.username.clone(), l.password.clone()))
                    .unwrap_or_default();
                let will = connect.last_will.as_ref().map(|w| w.topic.clone());
                let acl = match self.check(&connect.client_id, user, pass, will, peer).await {
                    Ok(acl) => acl,
                    Err((refusal, why)) => {
                        let code = match refusal {
                            crate::MqttRefusal::BadLogin => ConnectReturnCode::BadUserNamePassword,
                            crate::MqttRefusal::NotAuthorized => ConnectReturnCode::NotAuthorized,
                            crate::MqttRefusal::Unavailable => {
                                ConnectReturnCode::ServiceUnavailable
                            }
                        };
                        put(out, Packet::ConnAck(ConnAck::new(code, false)))?;
                        return Ok(Err(why));
                    }
                };
                let zero_keep_alive = connect.keep_alive == 0;
                if zero_keep_alive {
                    connect.keep_alive = STAND_IN_KEEP_ALIVE.as_secs() as u16;
                }
                let client_id = connect.client_id.clone();
                connect.login = Some(v4::Login::new(GATE_USER, self.password.as_str()));
                put(out, Packet::Connect(connect))?;
                Ok(Ok(Admitted {
                    proto: Proto::V4,
                    acl,
                    client_id,
                    zero_keep_alive,
                }))
            }
            Some(5) => {
                let v5::Connect5 {
                    mut connect,
                    mut will,
                    login,
                } = v5::read_connect(first, max)?;
                // Will properties would reach 3.1.1 subscribers as publish properties ([`v5`]).
                if let Some(w) = will.as_mut() {
                    w.properties = None;
                }
                let (user, pass) = login.map(|l| (l.username, l.password)).unwrap_or_default();
                let will_topic = will.as_ref().map(v5::will_topic).transpose()?;
                let will_topic = will_topic.map(str::to_string);
                let acl = match self
                    .check(&connect.client_id, user, pass, will_topic, peer)
                    .await
                {
                    Ok(acl) => acl,
                    Err((refusal, why)) => {
                        v5::connack(out, Some(refusal))?;
                        return Ok(Err(why));
                    }
                };
                let zero_keep_alive = connect.keep_alive == 0;
                if zero_keep_alive {
                    connect.keep_alive = STAND_IN_KEEP_ALIVE.as_secs() as u16;
                }
                let client_id = connect.client_id.clone();
                let login =
                    rumqttc::v5::mqttbytes::v5::Login::new(GATE_USER, self.password.as_str());
                put5(
                    out,
                    rumqttc::v5::mqttbytes::v5::Packet::Connect(connect, will, Some(login)),
                )?;
                Ok(Ok(Admitted {
                    proto: Proto::V5,
                    acl,
                    client_id,
                    zero_keep_alive,
                }))
            }
            Some(level) => {
                // MQTT 3.1 (level 3) and anything newer or unknown: 3.1.1's answer, return
                // code 1 "unacceptable protocol version" (section 3.2.2.3), then close.
                put(
                    out,
                    Packet::ConnAck(ConnAck::new(
                        ConnectReturnCode::RefusedProtocolVersion,
                        false,
                    )),
                )?;
                Ok(Err(format!(
                    "protocol level {level}: fieldlab's broker speaks MQTT 3.1.1 (4) and 5"
                )))
            }
            None => Err(violation("the first packet is not CONNECT")),
        }
    }

    /// The login and last will of a CONNECT, against the auth and the ACL it gives.
    async fn check(
        &self,
        client_id: &str,
        username: String,
        password: String,
        will_topic: Option<String>,
        peer: SocketAddr,
    ) -> Result<Acl, (crate::MqttRefusal, String)> {
        let login = crate::MqttConnect {
            client_id: client_id.to_string(),
            username,
            password,
            peer,
        };
        let acl = (self.auth)(login)
            .await
            .map_err(|r| (r, format!("login refused: {r:?}")))?;
        if let Some(w) = will_topic {
            if !acl.may_write(&w) {
                self.refused(peer, client_id, "will", &w);
                return Err((
                    crate::MqttRefusal::NotAuthorized,
                    "last will topic not allowed".into(),
                ));
            }
        }
        Ok(acl)
    }

    #[allow(clippy::too_many_arguments)]
    fn client_frame(
        &self,
        frame: BytesMut,
        acl: &Acl,
        s: &mut Session,
        to_up: &mut BytesMut,
        to_client: &mut BytesMut,
        peer: SocketAddr,
        client_id: &str,
    ) -> Result<(), BoxError> {
        match frame[0] >> 4 {
            1 => return Err(violation("a second CONNECT")),
            3 => {
                let (topic, qos, pkid) =
                    publish_head(&frame).ok_or_else(|| violation("malformed PUBLISH"))?;
                if acl.may_write(topic) {
                    to_up.extend_from_slice(&frame);
                    return Ok(());
                }
                self.refused(peer, client_id, "publish", topic);
                match qos {
                    1 => put(to_client, Packet::PubAck(v4::PubAck::new(pkid)))?,
                    2 => {
                        s.refused_qos2.insert(pkid);
                        put(to_client, Packet::PubRec(v4::PubRec::new(pkid)))?;
                    }
                    _ => {}
                }
            }
            6 if !s.refused_qos2.is_empty() => {
                let Packet::PubRel(rel) = Packet::read(&mut frame.clone(), usize::MAX)? else {
                    return Err(violation("malformed PUBREL"));
                };
                if s.refused_qos2.remove(&rel.pkid) {
                    put(to_client, Packet::PubComp(v4::PubComp::new(rel.pkid)))?;
                } else {
                    to_up.extend_from_slice(&frame);
                }
            }
            8 if acl.read.is_some() => {
                let Packet::Subscribe(mut sub) = Packet::read(&mut frame.clone(), usize::MAX)?
                else {
                    return Err(violation("malformed SUBSCRIBE"));
                };
                let paths = sub.filters.iter().map(|f| f.path.as_str());
                let keep = self.readable(acl, paths, peer, client_id);
                match trim_subscribe(keep, &mut sub.filters, sub.pkid, s) {
                    Trimmed::Nothing => to_up.extend_from_slice(&frame),
                    Trimmed::All(n) => {
                        let codes = vec![SubscribeReasonCode::Failure; n];
                        put(to_client, Packet::SubAck(v4::SubAck::new(sub.pkid, codes)))?;
                    }
                    Trimmed::Some => put(to_up, Packet::Subscribe(sub))?,
                }
            }
            _ => to_up.extend_from_slice(&frame),
        }
        Ok(())
    }
}

/// What [`trim_subscribe`] did to a SUBSCRIBE.
enum Trimmed {
    /// Every filter is readable: relay the frame as it came.
    Nothing,
    /// No filter is readable: answer a SUBACK of this many refusals, relay nothing.
    All(usize),
    /// Some were: relay the trimmed SUBSCRIBE (its SUBACK gets the refusals back in place).
    Some,
}

/// A SUBSCRIBE's `filters` (packet `pkid`) cut down to those `keep` marks readable. A partly
/// refused one leaves `keep` in the session, for [`merge_codes`] to restore the SUBACK.
fn trim_subscribe<F>(keep: Vec<bool>, filters: &mut Vec<F>, pkid: u16, s: &mut Session) -> Trimmed {
    if keep.iter().all(|k| *k) {
        Trimmed::Nothing
    } else if !keep.iter().any(|k| *k) {
        Trimmed::All(keep.len())
    } else {
        let mut k = keep.iter();
        filters.retain(|_| *k.next().expect("one flag per filter"));
        s.partial_subs.insert(pkid, keep);
        Trimmed::Some
    }
}

/// A frame from rumqttd to the client: relayed, except the SUBACK of a SUBSCRIBE the gate
/// trimmed, which gets the refused filters' failure codes back in their places.
fn from_broker(frame: BytesMut, s: &mut Session, to_client: &mut BytesMut) -> Result<(), BoxError> {
    if frame[0] >> 4 != 9 || s.partial_subs.is_empty() {
        to_client.extend_from_slice(&frame);
        return Ok(());
    }
    let Packet::SubAck(ack) = Packet::read(&mut frame.clone(), usize::MAX)? else {
        return Err(violation("malformed SUBACK from the broker"));
    };
    let Some(keep) = s.partial_subs.remove(&ack.pkid) else {
        to_client.extend_from_slice(&frame);
        return Ok(());
    };
    let codes = merge_codes(&keep, ack.return_codes, SubscribeReasonCode::Failure);
    put(to_client, Packet::SubAck(v4::SubAck::new(ack.pkid, codes)))
}

/// The SUBACK codes for the client's original filters: the broker's codes (`theirs`, one per
/// filter the gate relayed) in the kept places, `refused` in the others (and for any code
/// the broker left out).
fn merge_codes<C: Clone>(keep: &[bool], theirs: Vec<C>, refused: C) -> Vec<C> {
    let mut theirs = theirs.into_iter();
    keep.iter()
        .map(|k| {
            if *k {
                theirs.next().unwrap_or_else(|| refused.clone())
            } else {
                refused.clone()
            }
        })
        .collect()
}

/// Which transport a gate listener speaks.
#[derive(Clone)]
pub(crate) enum Transport {
    Tcp,
    Tls(tokio_rustls::TlsAcceptor),
    /// WebSocket (subprotocol `mqtt`), over TLS when an acceptor is given.
    Ws(Option<tokio_rustls::TlsAcceptor>),
}

/// The rustls acceptor of the gate's TLS listeners, from PEM files.
pub(crate) fn tls_acceptor(t: &crate::BrokerTls) -> Result<tokio_rustls::TlsAcceptor, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
        .and_then(|i| i.collect())
        .map_err(|e| format!("mqtt.server_cert_file {}: {e}", t.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&t.key)
        .map_err(|e| format!("mqtt.server_key_file {}: {e}", t.key.display()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("mqtt.server_cert_file / mqtt.server_key_file: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Accept connections on `listener` for ever, one task each.
pub(crate) async fn accept(gate: Arc<Gate>, listener: std::net::TcpListener, t: Transport) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "mqtt gate: cannot listen");
            return;
        }
    };
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "mqtt gate: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (gate, t) = (gate.clone(), t.clone());
        tokio::spawn(async move {
            match t {
                Transport::Tcp => gate.serve(tcp, peer).await,
                Transport::Tls(a) => match a.accept(tcp).await {
                    Ok(s) => gate.serve(s, peer).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "mqtt gate: TLS handshake failed"),
                },
                Transport::Ws(None) => match websocket(tcp, &gate.allowed_hosts).await {
                    Ok(s) => gate.serve(s, peer).await,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "mqtt gate: WebSocket handshake failed")
                    }
                },
                Transport::Ws(Some(a)) => match a.accept(tcp).await {
                    Ok(s) => match websocket(s, &gate.allowed_hosts).await {
                        Ok(s) => gate.serve(s, peer).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "mqtt gate: WebSocket handshake failed")
                        }
                    },
                    Err(e) => tracing::debug!(%peer, error = %e, "mqtt gate: TLS handshake failed"),
                },
            }
        });
    }
}

/// The server side of a WebSocket handshake (answering subprotocol `mqtt`, as rumqttd does),
/// as a byte stream of binary messages. A handshake from a browser page of a foreign origin
/// gets 403 (see [`crate::origin_allowed`]).
async fn websocket<S>(
    s: S,
    allowed_hosts: &[String],
) -> Result<impl AsyncRead + AsyncWrite + Unpin + Send + 'static, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use async_tungstenite::tungstenite::http::HeaderValue;
    // The signature is tungstenite's `Callback`; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if let Some(origin) = req.headers().get("origin") {
            let origin = origin.to_str().unwrap_or("\u{fffd}");
            if !crate::origin_allowed(origin, allowed_hosts) {
                tracing::warn!(
                    origin,
                    "mqtt: WebSocket handshake from a foreign page origin refused (add its host to server.allowed_hosts if it is yours)"
                );
                let mut e = ErrorResponse::new(Some(format!(
                    "MQTT over WebSocket is accepted only from pages on this machine or in server.allowed_hosts, not from {origin}"
                )));
                *e.status_mut() = async_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
                return Err(e);
            }
        }
        resp.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        Ok(resp)
    };
    let ws = async_tungstenite::tokio::accept_hdr_async(s, callback).await?;
    Ok(ws_stream_tungstenite::WsStream::new(ws))
}

impl EmbeddedBroker {
    /// PUBLISH, SUBSCRIBE filters and last wills refused by the topic ACL since start.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }
}

/// Fuzzing entry point of the frame handling above (cargo-fuzz target `mqtt_gate`).
#[doc(hidden)]
pub mod fuzzing;
mod v5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_topics_as_mqtt_says() {
        assert!(filter_matches(
            "devices/+/d1/telemetry",
            "devices/t/d1/telemetry"
        ));
        assert!(!filter_matches(
            "devices/+/d1/telemetry",
            "devices/t/d2/telemetry"
        ));
        assert!(!filter_matches(
            "devices/+/d1/telemetry",
            "devices/t/d1/telemetry/x"
        ));
        assert!(!filter_matches(
            "devices/+/d1/telemetry",
            "devices/d1/telemetry"
        ));
        assert!(filter_matches("devices/#", "devices"));
        assert!(filter_matches("devices/#", "devices/a/b"));
        assert!(filter_matches("#", "anything/at/all"));
        assert!(!filter_matches("#", "$SYS/broker"));
        assert!(!filter_matches("devices/+", "devices/a/b"));
    }

    #[test]
    fn a_read_filter_covers_only_subscriptions_inside_it() {
        let own = "devices/+/d1/commands";
        assert!(filter_covers(own, "devices/t/d1/commands"));
        assert!(filter_covers(own, "devices/+/d1/commands"));
        assert!(!filter_covers(own, "devices/+/+/commands"));
        assert!(!filter_covers(own, "devices/#"));
        assert!(!filter_covers(own, "#"));
        assert!(!filter_covers(own, "devices/t/d2/commands"));
        assert!(filter_covers("devices/#", "devices/+/d2/telemetry"));
        assert!(filter_covers("devices/#", "devices/#"));
        assert!(filter_covers("devices/#", "devices"));
        assert!(!filter_covers("devices/#", "#"));
        assert!(!filter_covers("devices/#", "fieldlab/events"));
        assert!(!filter_covers("#", "$SYS/#"));
    }

    #[test]
    fn the_topic_of_a_publish_frame_is_read_without_decoding_it() {
        let mut out = BytesMut::new();
        let mut p = v4::Publish::new("devices/t/d1/telemetry", rumqttc::QoS::AtLeastOnce, "{}");
        p.pkid = 513;
        put(&mut out, Packet::Publish(p)).unwrap();
        assert_eq!(publish_head(&out), Some(("devices/t/d1/telemetry", 1, 513)));
        assert_eq!(publish_head(&out[..5]), None, "truncated");
    }
}
