//! fieldlab-server: the HTTP face of fieldlab.
//!
//! Why it exists: operators, dashboards, notebooks and Kubernetes all talk to fieldlab over
//! HTTP. This crate maps URLs to the capability crates — it owns no data of its own. Routes live
//! in [`routes`]; every error is an RFC 9457 problem ([`problem`]); every request is timed into
//! `fieldlab_http_request_duration_seconds`.
//!
//! Architecture invariant: handlers only read from the store, directory and readiness handles in
//! [`AppState`]; nothing here starts background work.

// Problems are HTTP response bodies built once per failed request; their size does not matter.
#![allow(clippy::result_large_err)]

pub mod auth_routes;
pub mod browser_guard;
mod config;
pub mod data;
pub mod detect;
pub mod emulator_api;
pub mod fleet;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod ui;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fieldlab_core::{DeviceDirectory, Principal, Readiness};
use fieldlab_store::{Quarantine, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

pub use config::ServerConfig;
pub use fieldlab_http::problem;
pub use fieldlab_http::tls;
pub use fieldlab_http::Problem;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// HTTP metrics, registered under `fieldlab_http_*`, plus `fieldlab_active_devices` (the
/// autoscaling metric; the legacy `active_devices_count` too with `legacy_names`).
#[derive(Clone)]
pub struct HttpMetrics {
    pub duration: Family<HttpLabels, Histogram>,
    pub active_devices: Gauge,
    /// Also export the gauge as `active_devices_count` (deprecated: `server.legacy_metric_names`).
    pub legacy_names: bool,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
            active_devices: Gauge::default(),
            legacy_names: false,
        }
    }
}

impl HttpMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fieldlab_http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            self.duration.clone(),
        );
        r.register(
            "fieldlab_active_devices",
            "Devices that sent telemetry in the last 60 s (the autoscaling metric)",
            self.active_devices.clone(),
        );
        if self.legacy_names {
            // The legacy name: its `_count` suffix reads as a histogram's to Prometheus tools.
            r.register(
                "active_devices_count",
                "Deprecated name of fieldlab_active_devices (server.legacy_metric_names), removed in the next release",
                self.active_devices.clone(),
            );
        }
    }
}

/// What handlers can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub quarantine: Arc<Quarantine>,
    /// Quality rules, detectors, events and `/predict` (None: detection disabled).
    pub watch: Option<fieldlab_watch::Watch>,
    pub directory: DeviceDirectory,
    pub readiness: Readiness,
    pub registry: Arc<Registry>,
    pub http: HttpMetrics,
    pub started: Instant,
    /// Where the broker is, for the index page and banner.
    pub broker_url: String,
    /// The rate limiter (service API and the guard of this API); None: not running.
    pub ratelimit: Option<fieldlab_ratelimit::Limiter>,
    /// Credentials checker; `None` = auth disabled (every request is the local admin).
    pub auth: Option<Arc<fieldlab_auth::Authenticator>>,
    /// The device emulator, when this process runs one (control API, `/ws`).
    pub emulator: Option<fieldlab_emulator::Emulator>,
    /// Ground-truth annotations of injected faults.
    pub annotations: Option<Arc<fieldlab_store::annotations::Annotations>>,
    /// Routes of other parts with their own state and auth (the proof verifier API at
    /// `/verify`, `/policy/...`, `/proof/upload`, `/registry/...`), merged as they are.
    pub extra_routes: Option<axum::Router>,
    /// The OpenAPI 3.1 fragment describing `extra_routes`, folded into `/openapi.json`.
    pub extra_openapi: Option<serde_json::Value>,
    /// `server.allowed_hosts`: names besides loopback ones this server answers with auth off
    /// (see [`browser_guard`]).
    pub allowed_hosts: Vec<String>,
    /// `server.fleet_answer_max_size` in bytes: what the peers' shares of one fleet answer
    /// may buffer here (see `fleet.rs`).
    pub fleet_answer_max: usize,
    /// The cluster this replica is part of; `None`: a single replica, answering from its own
    /// store. With a view, the fleet endpoints answer for every replica's devices (see
    /// [`fleet`]).
    pub cluster: Option<Arc<dyn fieldlab_core::cluster::ClusterView>>,
}

impl AppState {
    /// Only the store, its quarantine and fresh metrics: no broker, emulator, watch, rate
    /// limiter or auth (benchmarks set the one optional part they measure).
    pub fn bare(store: Store, quarantine: Arc<Quarantine>) -> AppState {
        AppState {
            store,
            quarantine,
            watch: None,
            directory: DeviceDirectory::new(),
            readiness: Readiness::new(),
            registry: Arc::new(Registry::default()),
            http: HttpMetrics::default(),
            started: Instant::now(),
            broker_url: String::new(),
            ratelimit: None,
            auth: None,
            emulator: None,
            annotations: None,
            extra_routes: None,
            extra_openapi: None,
            allowed_hosts: Vec::new(),
            fleet_answer_max: 256 << 20,
            cluster: None,
        }
    }
}

/// Time every request by its route template (not the raw path, to bound label cardinality).
pub async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    m.duration
        .get_or_create(&HttpLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// Establish who is calling and put a [`Principal`] into the request's extensions, so every
/// handler can extract `Extension<Principal>`; or answer 401 (no or bad credentials) / 403
/// (credentials without the role [`fieldlab_auth::policy`] asks for) as problem+json. Public
/// paths (health, readiness, `/`, UI assets, the token endpoint, `/metrics` unless configured
/// otherwise) pass with the caller's principal if valid credentials came along, else an
/// anonymous one. With auth disabled every request is the local admin.
pub async fn authenticate(
    State(auth_routes::AuthState(auth)): State<auth_routes::AuthState>,
    mut req: Request,
    next: Next,
) -> Response {
    use fieldlab_auth::policy::{allows, required, Requirement};
    let Some(auth) = auth else {
        req.extensions_mut().insert(Principal::local_admin());
        return next.run(req).await;
    };
    let need = required(
        req.method().as_str(),
        req.uri().path(),
        auth.public_metrics(),
    );
    // Owned copies: a `&Request` must not live across an await (the body is not `Sync`).
    let (authorization, api_key) = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut authorization = header("authorization");
        // Browsers cannot set headers on a WebSocket handshake: /ws also takes the token as
        // `?access_token=` (RFC 6750 section 2.3), and only there (and on /ws/events).
        if authorization.is_none() && matches!(req.uri().path(), "/ws" | "/ws/events") {
            authorization = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("access_token="))
                    .map(|t| format!("Bearer {t}"))
            });
        }
        (authorization, header("x-api-key"))
    };
    let cert_cn = req
        .extensions()
        .get::<axum::extract::ConnectInfo<tls::PeerInfo>>()
        .and_then(|c| c.0.cert_common_name.clone());
    let result = if authorization.is_none() && api_key.is_none() {
        match &cert_cn {
            Some(cn) => auth.principal_for_cert(cn),
            None => auth.authenticate(None, None).await,
        }
    } else {
        auth.authenticate(authorization.as_deref(), api_key.as_deref())
            .await
    };
    let principal = match (result, &need) {
        (Ok(p), _) => p,
        (Err(_), Requirement::Public) => Principal::anonymous(),
        (Err(fieldlab_auth::AuthError::Internal(e)), _) => {
            tracing::error!(error = %e, "authentication failed on our side");
            return Problem::internal("cannot check credentials; see the server log")
                .into_response();
        }
        (Err(e), _) => {
            // The refusal must reach the client, not a reset of the stream it is still
            // sending on (HTTP/2): read a bounded body first.
            fieldlab_http::drain_body(
                req.into_body(),
                16 << 20,
                std::time::Duration::from_secs(10),
            )
            .await;
            let mut resp = Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
                e.to_string(),
            )
            .into_response();
            let challenge = if authorization.is_some() || api_key.is_some() {
                r#"Bearer realm="fieldlab", error="invalid_token""#
            } else {
                r#"Bearer realm="fieldlab""#
            };
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            return resp;
        }
    };
    if !allows(&need, &principal) {
        let Requirement::AnyOf(roles) = need else {
            unreachable!("public requests are always allowed")
        };
        let want: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let have: Vec<&str> = principal.roles.iter().map(|r| r.as_str()).collect();
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!(
                "{} {} needs one of the roles [{}]; `{}` has [{}]",
                req.method(),
                req.uri().path(),
                want.join(", "),
                principal.subject,
                have.join(", ")
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

pub use fieldlab_http::request_id::{with_request_ids, REQUEST_ID};

/// The full router with state, metrics, authentication and request-id middleware.
pub fn app(state: AppState) -> axum::Router {
    guarded(routes::router().merge(auth_routes::router()), state)
}

/// `routes` with metrics, authentication, fallbacks and request ids, as [`app`] serves them.
pub fn guarded(routes: axum::Router<AppState>, state: AppState) -> axum::Router {
    let m = state.http.clone();
    let rl = ratelimit::RatelimitState {
        limiter: state.ratelimit.clone(),
    };
    let extra = state.extra_routes.clone();
    let browser = browser_guard::BrowserGuard::new(state.auth.is_some(), &state.allowed_hosts);
    let state_for_extra = state.clone();
    let app = routes
        .route_layer(axum::middleware::from_fn_with_state(m.clone(), track))
        .layer(axum::middleware::from_fn_with_state(
            rl.clone(),
            ratelimit::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed);
    let app = with_request_ids(app).with_state(state);
    // Merged routes of other parts pass the same metrics, rate limit, authentication and
    // request ids (they used to be merged bare, open to anyone whatever their own auth said).
    let app = match extra {
        Some(r) => app.merge(with_request_ids(
            r.route_layer(axum::middleware::from_fn_with_state(m, track))
                .layer(axum::middleware::from_fn_with_state(rl, ratelimit::guard))
                .layer(axum::middleware::from_fn_with_state(
                    state_for_extra,
                    authenticate,
                )),
        )),
        None => app,
    };
    // Outside everything: a page on another site is refused before any handler runs.
    ui::with_endpoint_probe(app)
        .layer(axum::middleware::from_fn_with_state(
            browser,
            browser_guard::guard,
        ))
        .layer(axum::middleware::from_fn(problem_errors))
}

/// axum's own rejections (a path segment that is not a number, a query string that does not
/// parse, a missing WebSocket upgrade) answer `text/plain`; every error of this API is
/// problem+json, so such answers are rewritten here, keeping their status, text and headers.
pub async fn problem_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let title = status.canonical_reason().unwrap_or("Error");
    let slug = title.to_ascii_lowercase().replace(' ', "-");
    let detail = if text.is_empty() {
        title.to_string()
    } else {
        text
    };
    let mut out = Problem::new(status, &slug, title, detail).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // With the peer address (for per-IP rate limits and auth).
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<tls::PeerInfo>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serve HTTPS until `shutdown` resolves (see [`tls`]).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        tls::TlsListener::new(listener, tls)?,
        app(state).into_make_service_with_connect_info::<tls::PeerInfo>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod auth_tests;
