//! Wiring of the watch stage: build it from `detect:` config (every detector spec checked, the
//! model loaded), hook it into ingest as an observer, and forward its events to MQTT
//! (`fieldlab/anomalies/<id>`, `fieldlab/quality/<id>`) and the optional webhook.

use anyhow::Context;
use fieldlab_ingest::Observers;
use fieldlab_quality::Rules;
use fieldlab_watch::DetectConfig;
use fieldlab_watch::{Event, Watch, WatchConfig};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The watch settings from config; a bad detector spec names its key.
pub fn watch_config(d: &DetectConfig) -> anyhow::Result<WatchConfig> {
    fieldlab_detect::build(&d.default_detector)
        .map_err(|e| anyhow::anyhow!("config key `detect.default_detector`: {e}"))?;
    for (k, spec) in &d.series {
        fieldlab_detect::build(spec)
            .map_err(|e| anyhow::anyhow!("config key `detect.series.{k}`: {e}"))?;
    }
    let mut rules = Rules::default();
    for (k, [lo, hi]) in &d.ranges {
        rules.ranges.insert(k.clone(), (*lo, *hi));
    }
    for (k, v) in &d.max_rate_per_s {
        rules.max_rate_per_s.insert(k.clone(), *v);
    }
    for (t, f) in &d.required {
        let e = rules.required.entry(t.clone()).or_default();
        for x in f {
            if !e.contains(x) {
                e.push(x.clone());
            }
        }
    }
    rules.physics = d.physics;
    // The units of the physics rules' messages: the device catalog's, the UI's one source.
    for t in fieldlab_emulator::catalog() {
        rules.units.insert(
            t.name.to_string(),
            t.units()
                .map(|(f, u)| (f.to_string(), u.to_string()))
                .collect(),
        );
    }
    rules.stale_after_ms = i64::try_from(d.stale_after.as_millis()).unwrap_or(i64::MAX);
    Ok(WatchConfig {
        enabled: d.enabled,
        default_detector: d.default_detector.clone(),
        series: d.series.clone(),
        threshold: d.threshold,
        window_size: d.window_size,
        rules,
        models_dir: d.models_dir.clone(),
        predict: d.predict.clone(),
        events_max_bytes: d.events_max_size.get(),
        ..WatchConfig::default()
    })
}

/// Open the watch (None when `detect.enabled` is false) and load the configured model; its
/// per-series state is kept within `state_budget_bytes` (`ingest.state_memory_mb`).
pub fn open(
    d: &DetectConfig,
    data_dir: &Path,
    state_budget_bytes: usize,
) -> anyhow::Result<Option<Watch>> {
    if !d.enabled {
        return Ok(None);
    }
    // A running lab trains its series' autoencoders off the ingest path: about a second of
    // CPU each, one series after another on one thread.
    fieldlab_detect::autoencoder::train_in_background(1, 256);
    let cfg = WatchConfig {
        state_budget_bytes,
        ..watch_config(d)?
    };
    let w = Watch::open(data_dir, cfg).context("cannot open the event logs")?;
    if let Some(p) = &d.model_path {
        let m = fieldlab_detect::autoencoder::Autoencoder::load(p).with_context(|| {
            format!(
                "config key `detect.model_path`: cannot load {}",
                p.display()
            )
        })?;
        tracing::info!(path = %p.display(), sha256 = %m.meta.sha256, "autoencoder loaded");
        w.set_model(m);
    }
    Ok(Some(w))
}

/// The ingest hook that feeds every parsed reading to the watch.
pub fn observers(w: &Option<Watch>) -> Observers {
    match w {
        Some(w) => {
            let w = w.clone();
            Observers(vec![Arc::new(move |r, now| {
                w.observe_with_verdicts(r, now).1
            })])
        }
        None => Observers::default(),
    }
}

/// Forward events to MQTT and the webhook, and check for stale devices every few seconds.
/// Returns the task; abort it at shutdown.
pub fn spawn_publisher(
    w: Watch,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    tls: Option<rumqttc::TlsConfiguration>,
    webhook: Option<String>,
) -> tokio::task::JoinHandle<()> {
    let mut opts = MqttOptions::new(
        format!("fieldlab-events-{}", std::process::id()),
        host,
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = credentials {
        opts.set_credentials(u, p);
    }
    if let Some(t) = tls {
        opts.set_transport(rumqttc::Transport::Tls(t));
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let mut rx = w.subscribe();
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        let driver = tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(e) => publish(&client, &http, webhook.as_deref(), &e).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "event publisher fell behind; events still logged");
                    }
                    Err(_) => break,
                },
                _ = tick.tick() => {
                    w.check_stale(fieldlab_core::time::now_ms());
                }
            }
        }
        driver.abort();
    })
}

async fn publish(client: &AsyncClient, http: &reqwest::Client, webhook: Option<&str>, e: &Event) {
    let body = serde_json::to_vec(e).unwrap_or_default();
    if let Err(err) = client
        .publish(e.topic(), QoS::AtLeastOnce, false, body.clone())
        .await
    {
        tracing::debug!(error = %err, "event not published on MQTT");
    }
    if let (Some(url), Event::Anomaly(_)) = (webhook, e) {
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(5))
            .body(body)
            .send()
            .await;
        if let Err(err) = r {
            // Webhook URLs carry their secret in the path (Slack, Teams): log only the host.
            let host = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            tracing::warn!(error = %err.without_url(), webhook_host = %host, "webhook failed");
        }
    }
}

#[cfg(test)]
#[path = "clean_day_tests.rs"]
mod clean_day_tests;
