//! The topic ACL gate: fieldlab's own front door to the embedded broker when auth is on.
//!
//! Why it exists: rumqttd 0.20 authenticates CONNECT but has no hook to authorise PUBLISH or
//! SUBSCRIBE, so a device holding a valid key could publish another device's telemetry or
//! read every topic. The gate terminates the public listeners itself (TCP, TLS, WebSocket),
//! reads each MQTT 3.1.1 packet's frame with rumqttc's codec, authenticates CONNECT, checks
//! every PUBLISH (and the last will) against the client's write filters and every SUBSCRIBE
//! against its read filters, and relays what is allowed, byte for byte, to rumqttd on a
//! loopback port whose only accepted login is the gate's own random password.
//!
//! What a refused client sees (as with Mosquitto's ACLs): a PUBLISH outside its filters is
//! acknowledged (PUBACK, or PUBREC then PUBCOMP) and dropped, so the client does not retry it
//! forever; a SUBSCRIBE filter outside its read filters gets the failure code 0x80 in SUBACK,
//! the others are subscribed. A CONNECT with a bad login gets return code 4, a last will on a
//! topic it may not write return code 5; so does a login refused after too many failures
//! (back off), and one that found every password check worker busy return code 3. Refusals are counted ([`EmbeddedBroker::denied`]).
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
    /// rumqttd's loopback listener.
    pub upstream: SocketAddr,
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

/// What the gate remembers about one connection's refusals.
#[derive(Default)]
struct Session {
    /// QoS 2 publishes refused (PUBREC sent): their PUBREL is answered here.
    refused_qos2: HashSet<u16>,
    /// SUBSCRIBEs relayed with some filters removed: which of the original filters were kept.
    partial_subs: HashMap<u16, Vec<bool>>,
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
        let Packet::Connect(mut connect) = Packet::read(&mut first.clone(), max)? else {
            return Err(violation("the first packet is not CONNECT"));
        };
        let (user, pass) = connect
            .login
            .as_ref()
            .map(|l| (l.username.clone(), l.password.clone()))
            .unwrap_or_default();
        let login = crate::MqttConnect {
            client_id: connect.client_id.clone(),
            username: user,
            password: pass,
            peer,
        };
        let mut out = BytesMut::new();
        let acl = match (self.auth)(login).await {
            Ok(acl) => acl,
            Err(refusal) => {
                let code = match refusal {
                    crate::MqttRefusal::BadLogin => ConnectReturnCode::BadUserNamePassword,
                    crate::MqttRefusal::NotAuthorized => ConnectReturnCode::NotAuthorized,
                    crate::MqttRefusal::Unavailable => ConnectReturnCode::ServiceUnavailable,
                };
                put(&mut out, Packet::ConnAck(ConnAck::new(code, false)))?;
                client.write_all(&out).await?;
                client.flush().await?;
                return Err(format!("login refused: {refusal:?}").into());
            }
        };
        if let Some(w) = &connect.last_will {
            if !acl.may_write(&w.topic) {
                self.refused(peer, &connect.client_id, "will", &w.topic);
                put(
                    &mut out,
                    Packet::ConnAck(ConnAck::new(ConnectReturnCode::NotAuthorized, false)),
                )?;
                client.write_all(&out).await?;
                client.flush().await?;
                return Err("last will topic not allowed".into());
            }
        }
        let client_id = connect.client_id.clone();
        let mut up = tokio::net::TcpStream::connect(self.upstream).await?;
        up.set_nodelay(true)?;
        connect.login = Some(v4::Login::new(GATE_USER, self.password.as_str()));
        put(&mut out, Packet::Connect(connect))?;
        up.write_all(&out).await?;
        out.clear();

        let everything = acl.read.is_none() && acl.write.is_none();
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut ur, mut uw) = up.into_split();
        let mut ubuf = BytesMut::with_capacity(4096);
        let (mut to_up, mut to_client) = (BytesMut::new(), BytesMut::new());
        let mut s = Session::default();
        loop {
            // What is buffered first: a client may send frames right behind its CONNECT.
            while let Some(frame) = next_frame(&mut cbuf, max)? {
                if everything {
                    if frame[0] >> 4 == 1 {
                        return Err(violation("a second CONNECT"));
                    }
                    to_up.extend_from_slice(&frame);
                } else {
                    self.client_frame(
                        frame,
                        &acl,
                        &mut s,
                        &mut to_up,
                        &mut to_client,
                        peer,
                        &client_id,
                    )?;
                }
            }
            while let Some(frame) = next_frame(&mut ubuf, usize::MAX)? {
                from_broker(frame, &mut s, &mut to_client)?;
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
            }
        }
        let _ = cw.shutdown().await;
        Ok(())
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
                let keep: Vec<bool> = sub.filters.iter().map(|f| acl.may_read(&f.path)).collect();
                for (f, k) in sub.filters.iter().zip(&keep) {
                    if !k {
                        self.refused(peer, client_id, "subscribe", &f.path);
                    }
                }
                if keep.iter().all(|k| *k) {
                    to_up.extend_from_slice(&frame);
                } else if !keep.iter().any(|k| *k) {
                    let codes = vec![SubscribeReasonCode::Failure; keep.len()];
                    put(to_client, Packet::SubAck(v4::SubAck::new(sub.pkid, codes)))?;
                } else {
                    let mut k = keep.iter();
                    sub.filters
                        .retain(|_| *k.next().expect("one flag per filter"));
                    s.partial_subs.insert(sub.pkid, keep);
                    put(to_up, Packet::Subscribe(sub))?;
                }
            }
            _ => to_up.extend_from_slice(&frame),
        }
        Ok(())
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
    let mut theirs = ack.return_codes.into_iter();
    let codes = keep
        .iter()
        .map(|k| {
            if *k {
                theirs.next().unwrap_or(SubscribeReasonCode::Failure)
            } else {
                SubscribeReasonCode::Failure
            }
        })
        .collect();
    put(to_client, Packet::SubAck(v4::SubAck::new(ack.pkid, codes)))
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
