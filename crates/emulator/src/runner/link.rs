//! A device's (or a shared) MQTT connection: MQTT 3.1.1 or 5, TLS, credentials, the
//! retained `online`/`offline` status with its last will, and the event loop driven with
//! reconnect back-off until the device goes.

use super::*;
use fieldlab_core::reconnect::{self, Polled};

/// A device connection's client, MQTT 3.1.1 or 5 (rumqttc has one client type per version).
#[derive(Clone)]
pub(super) enum Client {
    V4(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub(super) fn qos5(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl Client {
    pub(super) fn try_publish(
        &self,
        topic: String,
        q: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), ()> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, q, retain, payload.into())
                .map_err(|_| ()),
            Client::V5(c) => c
                .try_publish(topic, qos5(q), retain, payload.into())
                .map_err(|_| ()),
        }
    }
    pub(super) fn try_disconnect(&self) -> Result<(), ()> {
        match self {
            Client::V4(c) => c.try_disconnect().map_err(|_| ()),
            Client::V5(c) => c.try_disconnect().map_err(|_| ()),
        }
    }
}

pub(super) struct Link {
    pub(super) client: Client,
    pub(super) paused: Arc<AtomicBool>,
    pub(super) task: JoinHandle<()>,
}

pub(super) fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub(super) fn status_payload(name: &str, ty: &str, state: &str) -> String {
    serde_json::json!({"device_id": name, "device_type": ty, "status": state}).to_string()
}

/// Open one MQTT connection and drive it in a task (reconnecting with back-off).
pub(super) fn connect(
    s: &EmulatorSettings,
    client_id: String,
    will: Option<(String, String, String)>,
    cap: usize,
    cancel: CancellationToken,
) -> Link {
    let online = will
        .as_ref()
        .map(|(topic, _, online)| (topic.clone(), online.clone()));
    let paused = Arc::new(AtomicBool::new(false));
    let p2 = paused.clone();
    if s.protocol == MqttProtocol::V5 {
        use rumqttc::v5;
        let mut opts = v5::MqttOptions::new(client_id, s.host.clone(), s.port);
        opts.set_keep_alive(s.keep_alive)
            .set_outgoing_inflight_upper_limit(1000);
        if let Some(t) = &s.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(t.clone()));
        }
        if let (Some(u), Some(p)) = (&s.username, &s.password) {
            opts.set_credentials(u.clone(), p.clone());
        }
        if let Some((topic, offline, _)) = &will {
            opts.set_last_will(v5::mqttbytes::v5::LastWill::new(
                topic.clone(),
                offline.clone(),
                v5::mqttbytes::QoS::AtLeastOnce,
                true,
                None,
            ));
        }
        let (client, mut el) = v5::AsyncClient::new(opts, cap);
        let c2 = Client::V5(client.clone());
        let task = tokio::spawn(async move {
            drive(&mut el, &p2, &cancel, |ev| {
                if matches!(ev, v5::Event::Incoming(v5::Incoming::ConnAck(_))) {
                    if let Some((t, m)) = &online {
                        let _ = c2.try_publish(t.clone(), QoS::AtLeastOnce, true, m.clone());
                    }
                }
            })
            .await;
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Ok(ev) = el.poll().await {
                    if matches!(ev, v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        });
        return Link {
            client: Client::V5(client),
            paused,
            task,
        };
    }
    let mut opts = MqttOptions::new(client_id, s.host.clone(), s.port);
    opts.set_keep_alive(s.keep_alive).set_inflight(1000);
    if let Some(t) = &s.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(t.clone()));
    }
    if let (Some(u), Some(p)) = (&s.username, &s.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    if let Some((topic, offline, _)) = &will {
        opts.set_last_will(LastWill::new(
            topic.clone(),
            offline.clone(),
            QoS::AtLeastOnce,
            true,
        ));
    }
    let (client, mut el) = AsyncClient::new(opts, cap);
    let c2 = Client::V4(client.clone());
    let task = tokio::spawn(async move {
        drive(&mut el, &p2, &cancel, |ev| {
            if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                if let Some((t, m)) = &online {
                    let _ = c2.try_publish(t.clone(), QoS::AtLeastOnce, true, m.clone());
                }
            }
        })
        .await;
        // Drain: let the offline status and DISCONNECT go out.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(ev) = el.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    });
    Link {
        client: Client::V4(client),
        paused,
        task,
    }
}

/// The one thing `drive` needs of rumqttc's two event loop types.
pub(super) trait PollLoop {
    type Ev;
    async fn next_event(&mut self) -> Result<Self::Ev, String>;
}

impl PollLoop for rumqttc::EventLoop {
    type Ev = Event;
    async fn next_event(&mut self) -> Result<Event, String> {
        self.poll().await.map_err(|e| e.to_string())
    }
}

impl PollLoop for rumqttc::v5::EventLoop {
    type Ev = rumqttc::v5::Event;
    async fn next_event(&mut self) -> Result<rumqttc::v5::Event, String> {
        self.poll().await.map_err(|e| e.to_string())
    }
}

/// Poll an event loop until cancelled: pause while a disconnect fault holds the link down,
/// reconnect with back-off after errors ([`reconnect::poll`]).
pub(super) async fn drive<L: PollLoop>(
    el: &mut L,
    paused: &AtomicBool,
    cancel: &CancellationToken,
    mut on_event: impl FnMut(&L::Ev),
) {
    let mut backoff = Backoff::jittered(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        if paused.load(Ordering::Relaxed) {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        }
        let lost = |e: String, _wait: Duration| {
            if !paused.load(Ordering::Relaxed) {
                tracing::debug!(error = %e, "device connection lost; reconnecting");
            }
        };
        match reconnect::poll(cancel, &mut backoff, el.next_event(), lost).await {
            Polled::Event(ev) => {
                backoff.reset();
                on_event(&ev);
            }
            Polled::Reconnect => {}
            Polled::Cancelled => break,
        }
    }
}
