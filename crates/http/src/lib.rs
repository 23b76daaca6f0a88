//! fieldlab-http: what fieldlab's two HTTP services share.
//!
//! Why it exists: the lab API (`fieldlab-server`) and the proof verifier
//! (`fieldlab-verifier`, `fieldlab cap serve`) both answer errors as RFC 9457 problems, both
//! serve HTTPS with rustls and optional client certificates, both tag requests with ids, and
//! both export metrics.
//! Written once here, the verifier needs nothing of the lab (no detectors, broker, emulator or
//! Parquet), and a fix to TLS serving reaches both.
//!
//! - [`problem`]: the `application/problem+json` error type;
//! - [`tls`]: rustls server configuration from PEM files, and a listener that hands finished
//!   TLS streams (with the client certificate's name) to `axum::serve`;
//! - [`request_id`]: the `x-request-id` middleware with one log line per request;
//! - [`metrics`]: `/metrics` as OpenMetrics or Prometheus text 0.0.4, as the scraper asks.

pub mod metrics;
pub mod problem;
pub mod request_id;
pub mod tls;

pub use problem::Problem;

/// Reads and discards what is left of a request body (at most `limit` bytes, for at most
/// `within`) before an early refusal goes out.
///
/// Why: a server that answers 401 or 413 while the client is still sending its body closes the
/// stream under it: over HTTP/2 the client sees a stream reset instead of the answer (curl exit
/// 92), and over HTTP/1.1 a reset connection. Reading a bounded body first lets the refusal
/// arrive; a body beyond the bound is left unread (the client then sees the reset, which is
/// the lesser evil than reading gigabytes for a refusal).
pub async fn drain_body(body: axum::body::Body, limit: usize, within: std::time::Duration) {
    let _ = tokio::time::timeout(within, axum::body::to_bytes(body, limit)).await;
}
