//! Routes. Native API under `/api/v1`; the legacy tools' paths are aliases of the same handlers.
//!
//! | path | what |
//! |---|---|
//! | `/health`, `/healthz`, `/health/live` | liveness: the process answers |
//! | `/ready`, `/readyz`, `/health/ready`, `/actuator/health` | readiness: 200 only when store, broker and ingest are up; 503 names each part that is down and, when known, why (`components.<part>.reason`, e.g. the store's write error) |
//! | `/metrics` | Prometheus / OpenMetrics text |
//! | `/api/v1/devices`, `/devices` | known devices with type and last-seen time |
//! | `/api/v1/devices/{id}` | one device and its series |
//! | `/api/v1/series` | series with tags, optional `device_id` |
//! | `/api/v1/query`, `/api/v1/export`, `/api/v1/backup` | see [`crate::data`] |
//! | `/api/v1/quarantine` | payloads that could not be parsed, newest first |
//! | `/` (browsers), `/ui/...`, `/api/v1` (JSON index) | the web UI, see [`crate::ui`] |
//! | `/openapi.json` | OpenAPI 3.1 of every route, see [`crate::openapi`] |

use crate::{AppState, Problem};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fieldlab_core::time::{format_ms, now_ms};
use fieldlab_store::SeriesInfo;
use serde_json::{json, Value};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(live))
        .route("/healthz", get(live))
        .route("/health/live", get(live))
        .route("/ready", get(ready))
        .route("/readyz", get(ready))
        .route("/health/ready", get(ready))
        .route("/actuator/health", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/devices", get(devices))
        .route("/devices", get(devices))
        .route("/api/v1/devices/{id}", get(device))
        .route("/api/v1/series", get(series))
        .route("/api/v1/quarantine", get(quarantine))
        .merge(crate::data::router())
        .merge(crate::ui::router())
        .merge(crate::detect::router())
        .merge(crate::ratelimit::routes())
        .merge(crate::emulator_api::router())
        .merge(crate::openapi::router())
}

pub async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!(
        "no route for {}; see GET / for the list of endpoints",
        uri.path()
    ))
}

pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!(
            "{method} is not supported on {}; this endpoint is read-only (GET)",
            uri.path()
        ),
    )
}

pub(crate) async fn index(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "name": "fieldlab",
        "version": env!("CARGO_PKG_VERSION"),
        "mqtt": s.broker_url,
        "endpoints": ["/health", "/ready", "/metrics", "/api/v1/devices", "/api/v1/devices/{id}",
                      "/api/v1/series", "/api/v1/query", "/api/v1/export", "/api/v1/backup",
                      "/api/v1/quarantine", "/ui/"],
    }))
}

async fn live(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "uptime_seconds": s.started.elapsed().as_secs()}))
}

async fn ready(State(s): State<AppState>) -> Response {
    let parts = s.readiness.status();
    let ok = parts.values().all(|p| p.up);
    let components: serde_json::Map<String, Value> = parts
        .into_iter()
        .map(|(k, p)| {
            let mut c = json!({"status": if p.up { "UP" } else { "DOWN" }});
            if let Some(r) = p.reason {
                c["reason"] = json!(r);
            }
            (k.to_string(), c)
        })
        .collect();
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"status": if ok { "UP" } else { "DOWN" }, "components": components})),
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    s.http
        .active_devices
        .set(s.directory.active_since(now_ms() - 60_000) as i64);
    fieldlab_http::metrics::respond(&s.registry, &headers)
}

fn device_json(e: &fieldlab_core::DeviceEntry) -> Value {
    json!({
        "device_id": e.device_id,
        "device_type": e.device_type,
        "emulated": e.emulated,
        "last_seen": e.last_seen_ms.map(format_ms),
        "last_seq": e.last_seq,
        "messages": e.messages,
        "units": catalog_units(&e.device_type),
    })
}

/// Field -> unit of a device type in the emulator's catalog (built-in and YAML types), the one
/// source of units the UI shows; empty for a type the catalog does not know (its payloads
/// may say their units themselves). Boolean fields have no unit.
pub(crate) fn catalog_units(device_type: &str) -> serde_json::Map<String, Value> {
    fieldlab_emulator::model::type_info(device_type)
        .map(|t| t.units().map(|(f, u)| (f.to_string(), json!(u))).collect())
        .unwrap_or_default()
}

async fn devices(State(s): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = s.directory.list().iter().map(device_json).collect();
    Json(json!({"count": list.len(), "devices": list}))
}

fn series_json(i: &SeriesInfo) -> Value {
    json!({
        "device_id": i.device_id,
        "field": i.field,
        "tags": i.tags.flat(),
        "first": format_ms(i.first_ts_ms),
        "last": format_ms(i.last_ts_ms),
    })
}

async fn device(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, Problem> {
    let e = s.directory.get(&id).ok_or_else(|| {
        Problem::not_found(format!(
            "device `{id}` is not known; GET /api/v1/devices lists the known ones"
        ))
    })?;
    let mut v = device_json(&e);
    v["series"] = s.store.series(Some(&id)).iter().map(series_json).collect();
    Ok(Json(v))
}

async fn series(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let list: Vec<Value> = s
        .store
        .series(q.get("device_id").map(String::as_str))
        .iter()
        .map(series_json)
        .collect();
    Json(json!({"count": list.len(), "series": list}))
}

async fn quarantine(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    let num = |name: &str, default: usize| -> Result<usize, Problem> {
        q.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| {
                Problem::bad_parameter(name, format!("`{name}` must be a non-negative integer"))
            })
        })
    };
    let limit = num("limit", 100)?.min(10_000);
    let offset = num("offset", 0)?;
    let qr = s.quarantine.clone();
    let page = tokio::task::spawn_blocking(move || qr.list(limit, offset))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(|e| Problem::internal(format!("reading the quarantine failed: {e}")))?;
    Ok(Json(json!({
        "total": page.total,
        "dropped": page.dropped,
        "next_offset": page.next_offset,
        "items": page.items,
    })))
}
