//! Request ids: every request carries one, in its response and in every log line about it.
//!
//! Why it exists: an operator matching a client's error to the server's log needs one key on
//! both sides. The layers are tower-http's: `SetRequestId` keeps the caller's `x-request-id`
//! (a proxy in front may have set it) or makes a UUID, `PropagateRequestId` copies it onto the
//! response, and `Trace` opens a span per request carrying the id, method and path, and logs one
//! line when the response leaves, with status and milliseconds. What tower-http leaves to us:
//! an id that is not sane (empty, longer than 128 bytes, not printable ASCII) is replaced, so
//! a client cannot push arbitrary text into every log line; and probes and scrapes, which
//! arrive every few seconds, are logged at debug level only.

use axum::extract::Request;
use axum::Router;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// `router` with request ids and one log line per request.
pub fn with_request_ids<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            .map_request(drop_insane_id)
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(span_for)
                    .on_request(())
                    .on_response(log_response)
                    .on_failure(()),
            ),
    )
}

fn drop_insane_id(mut req: Request) -> Request {
    let sane = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| {
            !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())
        });
    if !sane {
        req.headers_mut().remove(REQUEST_ID);
    }
    req
}

/// Probes and scrapes get a span named `probe`: their line is logged at debug level.
fn span_for<B>(req: &axum::http::Request<B>) -> Span {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (method, path) = (req.method(), req.uri().path());
    if is_probe(path) {
        tracing::info_span!("probe", request_id = %id, %method, %path)
    } else {
        tracing::info_span!("request", request_id = %id, %method, %path)
    }
}

fn log_response<B>(resp: &axum::http::Response<B>, latency: Duration, span: &Span) {
    let status = resp.status().as_u16();
    let ms = latency.as_secs_f64() * 1000.0;
    if span.metadata().is_some_and(|m| m.name() == "probe") {
        tracing::debug!(status, ms, "http");
    } else {
        tracing::info!(status, ms, "http");
    }
}

fn is_probe(path: &str) -> bool {
    path == "/metrics" || path.starts_with("/health") || path.starts_with("/ready")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn id_of(sent: Option<&str>) -> (String, String) {
        let app = with_request_ids(Router::new().route(
            "/",
            get(|req: Request| async move {
                // What handlers (and proxies behind us) see.
                req.headers()[REQUEST_ID].to_str().unwrap().to_string()
            }),
        ));
        let mut r = axum::http::Request::get("/");
        if let Some(s) = sent {
            r = r.header(REQUEST_ID, s);
        }
        let resp = app.oneshot(r.body(Body::empty()).unwrap()).await.unwrap();
        let header = resp.headers()[REQUEST_ID].to_str().unwrap().to_string();
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        (header, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_sane_id_is_kept_and_an_insane_one_replaced() {
        let (h, seen) = id_of(Some("abc-123")).await;
        assert_eq!((h.as_str(), seen.as_str()), ("abc-123", "abc-123"));
        for bad in [String::new(), "x".repeat(129), "has space".into()] {
            let (h, seen) = id_of(Some(&bad)).await;
            assert_eq!(h, seen, "the handler and the response see the same id");
            assert_ne!(h, bad);
            assert_eq!(h.len(), 36, "a UUID: {h}");
        }
        let (h, _) = id_of(None).await;
        assert!(uuid::Uuid::parse_str(&h).is_ok(), "{h}");
    }
}
