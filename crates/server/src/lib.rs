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

pub mod detect;
pub mod problem;
pub mod routes;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use fieldlab_core::{DeviceDirectory, Principal, Readiness};
use fieldlab_store::{Quarantine, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

pub use problem::Problem;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// HTTP metrics, registered under `fieldlab_http_*`, plus the seed's `active_devices_count`.
#[derive(Clone)]
pub struct HttpMetrics {
    pub duration: Family<HttpLabels, Histogram>,
    pub active_devices: Gauge,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
            active_devices: Gauge::default(),
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
            "active_devices_count",
            "Devices that sent telemetry in the last 60 s (the seed's autoscaling metric)",
            self.active_devices.clone(),
        );
    }
}

/// What handlers can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub quarantine: Arc<Quarantine>,
    pub directory: DeviceDirectory,
    pub readiness: Readiness,
    pub registry: Arc<Registry>,
    pub http: HttpMetrics,
    pub started: Instant,
    /// Where the broker is, for the index page and banner.
    pub broker_url: String,
    /// Quality rules, detectors, events and `/predict` (None: detection disabled).
    pub watch: Option<fieldlab_watch::Watch>,
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
/// handler can extract `Extension<Principal>`. Auth is not implemented yet (issue 9): every
/// request acts as the local admin, which is why `fieldlab up` binds to 127.0.0.1 by default.
/// The auth layer replaces this function's body; handlers do not change.
pub async fn authenticate(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Principal::local_admin());
    next.run(req).await
}

/// The full router with state, metrics and authentication middleware.
pub fn app(state: AppState) -> axum::Router {
    let m = state.http.clone();
    routes::router()
        .route_layer(axum::middleware::from_fn_with_state(m.clone(), track))
        .layer(axum::middleware::from_fn(authenticate))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests;
