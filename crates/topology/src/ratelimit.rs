//! Rate limiting, wired: the limiter of `fieldlab up`, and `fieldlab ratelimit serve` (the
//! service alone, for teams that only need that). Its benchmark is `fieldlab_bench::ratelimit`.

use crate::Config;
use anyhow::Context;
use fieldlab_ratelimit::RatelimitBackend;
use fieldlab_ratelimit::{Limiter, LimiterSettings, RatelimitMetrics};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// The limiter for `cfg`, its metrics registered; admin changes persist in the data dir
/// (memory backend) or in Redis beside the counters (redis and hybrid: shared by all replicas).
pub fn limiter(cfg: &Config, registry: &mut Registry) -> anyhow::Result<Limiter> {
    let metrics = RatelimitMetrics::default();
    metrics.register(registry);
    Limiter::new(
        LimiterSettings {
            config: cfg.ratelimit.clone(),
            state_dir: Some(cfg.storage.data_dir.clone()),
        },
        metrics,
    )
    .map_err(|e| anyhow::anyhow!("rate limiting: {e}"))
}

/// The ingest hook of `ratelimit.ingest` (None when not configured): one unit per message per
/// device; a refusal quarantines the message as "rate limited".
pub fn ingest_admit(limiter: &Limiter) -> Option<fieldlab_ingest::Admit> {
    let guard = limiter.ingest_guard()?;
    Some(fieldlab_ingest::Admit(Arc::new(move |device: String| {
        let g = guard.clone();
        Box::pin(async move { g.admit(&device).await })
    })))
}

/// `fieldlab ratelimit serve`: the service API, health and metrics on `server.host:port`.
pub async fn serve(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let limiter = limiter(&cfg, &mut registry)?;
    // Always authenticated (whatever `auth.enabled` says): the service is for other teams'
    // services, over a network. Same users file, secrets and OAuth2 settings as `fieldlab up`.
    let auth = fieldlab_auth::Authenticator::new(&cfg.auth, &cfg.storage.data_dir)
        .await
        .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    let (users, keys) = auth
        .users()
        .current()
        .map_or((0, 0), |f| (f.users.len(), f.keys.len()));
    let data = cfg.storage.data_dir.display();
    let auth_line = if users + keys == 0 {
        format!(
            "on — no users or API keys yet: `fieldlab users add NAME --role admin --data-dir {data}` \
             (config), `fieldlab users key add NAME --role viewer --data-dir {data}` (checks)"
        )
    } else {
        format!(
            "on ({users} users, {keys} API keys); checks need a token or key, config needs admin"
        )
    };
    let bind = format!("{}:{}", cfg.server.host, cfg.server.port);
    let listener = tokio::net::TcpListener::bind(&bind).await.with_context(|| {
        format!("cannot listen for HTTP on {bind}; pick another port with --http-port N (0 = any free port)")
    })?;
    let addr = fieldlab_broker::connectable(listener.local_addr()?);
    let (backend, rules) = match cfg.ratelimit.backend {
        RatelimitBackend::Memory => (
            "in-process".to_string(),
            format!("{data}/ratelimit/rules.json (changes made through the API)"),
        ),
        b => (
            format!("{} at {}", b.as_str(), cfg.ratelimit.redis_url),
            format!(
                "in redis ({}, version {}), shared by every instance on it",
                fieldlab_ratelimit::shared::RULES_KEY,
                limiter.rules_version()
            ),
        ),
    };
    println!(
        "fieldlab ratelimit is up\n\
         \x20 HTTP    http://{addr}  (POST /api/ratelimit/check, /api/ratelimit/config, /api/ratelimit/stats, /metrics)\n\
         \x20 backend {backend}\n\
         \x20 rules   {rules}\n\
         \x20 auth    {auth_line}\n\
         Press Ctrl-C to stop."
    );
    on_ready(addr);
    let app = fieldlab_server::ratelimit::standalone(limiter, Arc::new(registry), Arc::new(auth))
        .into_make_service_with_connect_info::<SocketAddr>();
    axum_serve(listener, app, shutdown).await?;
    println!("fieldlab ratelimit: stopped");
    Ok(())
}

async fn axum_serve(
    listener: tokio::net::TcpListener,
    app: axum::extract::connect_info::IntoMakeServiceWithConnectInfo<axum::Router, SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
