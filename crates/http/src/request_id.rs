//! Request ids: every request carries one, in its response and in every log line about it.
//!
//! Why it exists: an operator matching a client's error to the server's log needs one key on
//! both sides. The caller's `x-request-id` is kept if it is sane (a proxy in front may have
//! set it), else a new UUID is made.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

/// Give every request an id: the caller's `x-request-id` if it is sane, else a new UUID. The
/// id is set on the request (for handlers and proxies behind us), on the response, and on the
/// tracing span around the request, so every log line of the request carries it.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let value = HeaderValue::from_str(&id).expect("checked ASCII");
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("request", request_id = %id);
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    resp.headers_mut().insert(REQUEST_ID, value);
    let status = resp.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        // Probes and scrapes arrive every few seconds; keep them out of the info log.
        if routes_probe(&path) {
            tracing::debug!(%method, %path, status, ms, "http");
        } else {
            tracing::info!(%method, %path, status, ms, "http");
        }
    });
    resp
}

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

fn routes_probe(path: &str) -> bool {
    path == "/metrics" || path.starts_with("/health") || path.starts_with("/ready")
}
