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
//! - [`metrics`]: `/metrics` as OpenMetrics or Prometheus text 0.0.4, as the scraper asks;
//! - [`openapi`]: OpenAPI operations whose schemas are derived from the Rust types.

pub mod metrics;
pub mod openapi;
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
/// arrive; a body beyond the bound is left unread (the client then sees the reset, the lesser
/// evil than reading gigabytes for a refusal). Frames are dropped as they arrive, so memory
/// stays one frame per request however many refused uploads run at once.
pub async fn drain_body(body: axum::body::Body, limit: usize, within: std::time::Duration) {
    use http_body_util::BodyExt;
    let mut body = body;
    let deadline = tokio::time::Instant::now() + within;
    let mut read = 0usize;
    // The deadline is checked between frames too: a body whose frames are always ready would
    // otherwise never let the timeout run.
    while read < limit && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => read += f.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

#[cfg(test)]
mod drain_tests {
    use super::drain_body;
    use axum::body::{Body, Bytes};
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_drain_stops_at_its_limit_and_its_time() {
        // A finite body larger than the limit: stops at the limit.
        let t = Instant::now();
        drain_body(Body::from(vec![0u8; 4 << 20]), 1024, Duration::from_secs(5)).await;
        assert!(t.elapsed() < Duration::from_secs(2));
        // An endless body: stops at the time bound, holding one frame at a time.
        let endless = futures::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from_static(&[0u8; 1024]))
        });
        let t = Instant::now();
        drain_body(
            Body::from_stream(endless),
            usize::MAX,
            Duration::from_millis(300),
        )
        .await;
        let e = t.elapsed();
        assert!(
            e >= Duration::from_millis(300) && e < Duration::from_secs(3),
            "{e:?}"
        );
    }
}
