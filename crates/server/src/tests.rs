//! Handler behaviour against a real store in a temporary directory.

use super::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use fieldlab_core::{FieldValue, Point, SeriesKey, Tags};
use fieldlab_store::StoreOptions;
use serde_json::Value;
use tower::ServiceExt;

async fn state(dir: &std::path::Path) -> AppState {
    let (store, _) = Store::open(StoreOptions::new(dir)).unwrap();
    let quarantine = Arc::new(Quarantine::open(dir).unwrap());
    let http = HttpMetrics::default();
    let mut reg = Registry::default();
    http.register(&mut reg);
    store.metrics().register(&mut reg);
    let directory = DeviceDirectory::new();
    directory.register_emulated("t1", "TemperatureSensor");
    let pts: Vec<Point> = (0..120)
        .map(|i| Point {
            key: SeriesKey::new("t1", "temperature"),
            tags: Tags {
                device_type: "TemperatureSensor".into(),
                ..Default::default()
            },
            ts_ms: 1_767_225_600_000 + i * 1000,
            value: FieldValue::F64(i as f64),
        })
        .collect();
    store.write(pts).await.unwrap();
    AppState {
        directory,
        registry: Arc::new(reg),
        http,
        broker_url: "mqtt://127.0.0.1:1883".into(),
        ..AppState::bare(store, quarantine)
    }
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String, Value) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, ct, v)
}

#[tokio::test]
async fn query_returns_points_and_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(state(dir.path()).await);
    let (st, _, v) = get(&app, "/api/v1/query?device_id=t1&field=temperature").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["series"][0]["count"], 120);
    assert_eq!(
        v["series"][0]["points"][0]["ts"],
        "2026-01-01T00:00:00.000Z"
    );
    let (_, _, v) = get(&app, "/api/v1/query?device_id=t1&field=temperature&from=2026-01-01T00:00:30Z&to=2026-01-01T00:00:39Z").await;
    assert_eq!(v["series"][0]["count"], 10);
    let (_, _, v) = get(&app, "/api/v1/query?device_id=t1&step=60s&agg=max").await;
    assert_eq!(v["series"][0]["points"][0]["value"], 59.0);
    assert_eq!(v["series"][0]["points"][1]["value"], 119.0);
    let (_, _, v) = get(&app, "/api/v1/query?device_id=t1&order=desc&limit=1").await;
    assert_eq!(v["series"][0]["points"][0]["value"], 119.0);
    assert_eq!(v["series"][0]["truncated"], true);
}

#[tokio::test]
async fn bad_input_is_problem_json() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(state(dir.path()).await);
    for (uri, code, param) in [
        ("/api/v1/query", 400, Some("device_id")),
        (
            "/api/v1/query?device_id=t1&from=yesterday",
            400,
            Some("from"),
        ),
        (
            "/api/v1/query?device_id=t1&step=1m&agg=median",
            400,
            Some("agg"),
        ),
        ("/api/v1/query?device_id=t1&agg=max", 400, Some("agg")),
        ("/api/v1/query?device_id=nobody", 404, None),
        ("/api/v1/query?device_id=t1&field=pressure", 404, None),
        ("/api/v1/devices/nobody", 404, None),
        ("/no/such/route", 404, None),
    ] {
        let (st, ct, v) = get(&app, uri).await;
        assert_eq!(st.as_u16(), code, "{uri}");
        assert_eq!(ct, "application/problem+json", "{uri}");
        assert_eq!(v["status"], code, "{uri}");
        assert!(v["type"]
            .as_str()
            .unwrap()
            .starts_with("https://fieldlab.dev/problems/"));
        assert!(!v["detail"].as_str().unwrap().is_empty());
        if let Some(p) = param {
            assert_eq!(v["parameter"], p, "{uri}");
        }
    }
}

#[tokio::test]
async fn wrong_method_is_problem_json() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(state(dir.path()).await);
    let resp = app
        .oneshot(
            // A read-only route (POST /api/v1/devices creates devices since the emulator API).
            Request::delete("/api/v1/series")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn readiness_follows_parts_and_aliases_agree() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    s.readiness.require("store");
    s.readiness.require("ingest");
    s.readiness.set("store", true);
    let app = app(s.clone());
    for p in ["/ready", "/readyz", "/health/ready", "/actuator/health"] {
        let (st, _, v) = get(&app, p).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{p}");
        assert_eq!(v["components"]["ingest"]["status"], "DOWN");
    }
    s.readiness.set("ingest", true);
    assert_eq!(get(&app, "/ready").await.0, StatusCode::OK);
    for p in ["/health", "/healthz", "/health/live"] {
        assert_eq!(get(&app, p).await.0, StatusCode::OK);
    }
}

/// A store that cannot write (a full disk) makes `/ready` 503 with the store's reason and the
/// write-error metric count it; once writes work again, `/ready` is 200 by itself.
#[tokio::test]
async fn ready_reports_a_failing_store_with_its_reason() {
    use fieldlab_store::fs::{Fault, FaultyFs, OpKind};
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let mut o = StoreOptions::new(dir.path());
    o.fs = fs.handle();
    let (store, _) = Store::open(o).unwrap();
    let mut reg = Registry::default();
    store.metrics().register(&mut reg);
    let s = AppState {
        registry: Arc::new(reg),
        ..AppState::bare(
            store.clone(),
            Arc::new(Quarantine::open(dir.path()).unwrap()),
        )
    };
    s.readiness.set("store", true);
    let st = store.clone();
    s.readiness.check("store", move || st.health());
    let app = app(s);
    assert_eq!(get(&app, "/ready").await.0, StatusCode::OK);
    let pt = |i: i64| Point {
        key: SeriesKey::new("t1", "temperature"),
        tags: Tags::default(),
        ts_ms: 1_767_225_600_000 + i,
        value: FieldValue::F64(1.0),
    };
    fs.fail_all(&[OpKind::Write], Fault::NoSpace);
    assert!(store.write(vec![pt(0)]).await.is_err());
    let (st, _, v) = get(&app, "/ready").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["components"]["store"]["status"], "DOWN");
    let reason = v["components"]["store"]["reason"].as_str().unwrap();
    assert!(reason.contains("No space left on device"), "{reason}");
    let (_, _, m) = get(&app, "/metrics").await;
    assert!(m
        .as_str()
        .unwrap()
        .contains("fieldlab_store_write_errors_total{part=\"wal\"} 1"));
    fs.heal();
    store.write(vec![pt(1)]).await.unwrap();
    let (st, _, v) = get(&app, "/ready").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["components"]["store"].get("reason").is_none());
    store.close().await.unwrap();
}

#[tokio::test]
async fn metrics_include_request_timings_and_active_devices() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(state(dir.path()).await);
    get(&app, "/api/v1/devices").await;
    let (st, _, v) = get(&app, "/metrics").await;
    assert_eq!(st, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(text.contains("fieldlab_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/devices\",status=\"200\"} 1"), "{text}");
    assert!(text.contains("fieldlab_active_devices 0"), "{text}");
    assert!(
        !text.contains("active_devices_count"),
        "the deprecated name is opt-in"
    );
    assert!(text.contains("fieldlab_store_points_total 120"));
}

/// One request with headers; status, headers and body bytes.
async fn send(
    app: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap();
    (parts.status, parts.headers, bytes.to_vec())
}

#[tokio::test]
async fn root_is_the_ui_for_browsers_and_the_json_index_for_clients() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(state(dir.path()).await);
    let (st, ct, v) = get(&app, "/").await;
    assert_eq!((st, ct.as_str()), (StatusCode::OK, "application/json"));
    assert_eq!(v["name"], "fieldlab");
    let (_, _, v) = get(&app, "/api/v1").await;
    assert_eq!(v["name"], "fieldlab");

    let browser = [(
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    )];
    let (st, h, body) = send(&app, "/", &browser).await;
    assert_eq!(st, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("/ui/js/app.js"), "{html}");
    // No asset is fetched from another origin.
    assert!(!html.contains("http://") && !html.contains("https://"));
}

#[tokio::test]
async fn ui_assets_have_types_and_revalidate_with_etags() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(state(dir.path()).await);
    let (st, h, body) = send(&app, "/ui/js/app.js", &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert!(!body.is_empty());
    let etag = h["etag"].to_str().unwrap().to_string();
    let (st, _, body) = send(&app, "/ui/js/app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let (st, ct, v) = get(&app, "/ui/js/nope.js").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(ct, "application/problem+json");
    assert!(v["detail"].as_str().unwrap().contains("nope.js"));
}

#[tokio::test]
async fn endpoint_probe_tells_existing_routes_from_missing_ones_without_running_them() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(state(dir.path()).await);
    let (st, _, v) = get(
        &app,
        "/api/v1/ui/endpoints?path=/api/v1/devices&path=/api/v1/devices/x&path=/no/such/route",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["/api/v1/devices"]["available"], true);
    assert_eq!(
        v["/api/v1/devices"]["status"], 405,
        "OPTIONS runs no handler"
    );
    assert_eq!(v["/api/v1/devices/x"]["available"], true);
    assert_eq!(v["/no/such/route"]["available"], false);
    assert_eq!(
        v["auth"]["enabled"], false,
        "auth is off in this state: {v}"
    );

    for uri in [
        "/api/v1/ui/endpoints",
        "/api/v1/ui/endpoints?path=relative",
        "/api/v1/ui/endpoints?path=//evil.example/x",
    ] {
        let (st, ct, v) = get(&app, uri).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(ct, "application/problem+json");
        assert_eq!(v["parameter"], "path");
    }
}

#[tokio::test]
async fn quarantine_pages_newest_first_and_counts_what_its_budget_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = tempfile::tempdir().unwrap();
    let q = Arc::new(Quarantine::open_with(qdir.path(), 64 << 10).unwrap());
    for i in 0..40u8 {
        let reason = format!("bad field {}", "x".repeat(5000));
        q.append(
            &[("devices/a/b/telemetry".into(), vec![i; 10_000], reason)],
            "now",
        )
        .unwrap();
    }
    let app = app(AppState {
        quarantine: q,
        ..state(dir.path()).await
    });
    let (st, _, v) = get(&app, "/api/v1/quarantine?limit=2").await;
    assert_eq!(st, StatusCode::OK);
    let (total, dropped) = (v["total"].as_u64().unwrap(), v["dropped"].as_u64().unwrap());
    assert!(dropped > 0, "{v}");
    assert_eq!(total + dropped, 40);
    assert_eq!(v["next_offset"], 2);
    assert_eq!(v["items"][0]["id"], 40);
    assert_eq!(v["items"][1]["id"], 39);
    assert_eq!(v["items"][0]["topic"], "devices/a/b/telemetry");
    assert_eq!(v["items"][0]["payload_size"], 10_000);
    assert_eq!(
        v["items"][0]["reason"].as_str().unwrap().chars().count(),
        200
    );
    let (_, _, v) = get(&app, &format!("/api/v1/quarantine?offset={}", total - 1)).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["id"], dropped + 1);
    assert_eq!(v["next_offset"], Value::Null);
}
