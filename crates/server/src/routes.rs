//! Routes. Native API under `/api/v1`; the seeds' paths are aliases of the same handlers.
//!
//! | path | what |
//! |---|---|
//! | `/health`, `/healthz`, `/health/live` | liveness: the process answers |
//! | `/ready`, `/readyz`, `/health/ready`, `/actuator/health` | readiness: 200 only when store, broker and ingest are up |
//! | `/metrics` | Prometheus / OpenMetrics text |
//! | `/api/v1/devices`, `/devices` | known devices with type and last-seen time |
//! | `/api/v1/devices/{id}` | one device and its series |
//! | `/api/v1/series` | series with tags, optional `device_id` |
//! | `/api/v1/query` | points, or one value per `step` bucket with `agg` |
//! | `/api/v1/quarantine` | payloads that could not be parsed, newest first |

use crate::{AppState, Problem};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fieldlab_core::time::{format_ms, now_ms, parse_duration_ms, parse_instant_ms};
use fieldlab_core::SeriesKey;
use fieldlab_store::{downsample, Agg, SeriesInfo};
use serde_json::{json, Value};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
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
        .route("/api/v1/query", get(query))
        .route("/api/v1/quarantine", get(quarantine))
        .merge(crate::detect::router())
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

async fn index(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "name": "fieldlab",
        "version": env!("CARGO_PKG_VERSION"),
        "mqtt": s.broker_url,
        "endpoints": ["/health", "/ready", "/metrics", "/api/v1/devices", "/api/v1/devices/{id}",
                      "/api/v1/series", "/api/v1/query", "/api/v1/quarantine"],
    }))
}

async fn live(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "uptime_seconds": s.started.elapsed().as_secs()}))
}

async fn ready(State(s): State<AppState>) -> Response {
    let parts = s.readiness.snapshot();
    let ok = parts.values().all(|v| *v);
    let components: serde_json::Map<String, Value> = parts
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!({"status": if v { "UP" } else { "DOWN" }}),
            )
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

async fn metrics(State(s): State<AppState>) -> Response {
    s.http
        .active_devices
        .set(s.directory.active_since(now_ms() - 60_000) as i64);
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        return Problem::internal(format!("encoding metrics failed: {e}")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

fn device_json(e: &fieldlab_core::DeviceEntry) -> Value {
    json!({
        "device_id": e.device_id,
        "device_type": e.device_type,
        "emulated": e.emulated,
        "last_seen": e.last_seen_ms.map(format_ms),
        "last_seq": e.last_seq,
        "messages": e.messages,
    })
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

/// `GET /api/v1/query?device_id=D[&field=F][&from=T1][&to=T2][&step=60s&agg=mean][&limit=N][&order=desc]`
///
/// Without `from`/`to` the whole stored range is returned. Without `field`, every field of the
/// device. `step` buckets are aligned to the epoch; `agg` defaults to `mean` when `step` is given.
async fn query(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    let now = now_ms();
    let device = q
        .get("device_id")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Problem::bad_parameter("device_id", "`device_id` is required, e.g. /api/v1/query?device_id=temperature_sensor_1&field=temperature&from=-1h"))?;
    let time = |name: &str, default: i64| -> Result<i64, Problem> {
        q.get(name).map_or(Ok(default), |v| {
            parse_instant_ms(v, now).map_err(|e| Problem::bad_parameter(name, e.to_string()))
        })
    };
    let from = time("from", i64::MIN)?;
    let to = time("to", i64::MAX)?;
    if from > to {
        return Err(Problem::bad_parameter("from", "`from` is after `to`"));
    }
    let step = match q.get("step") {
        None => None,
        Some(v) => {
            let ms =
                parse_duration_ms(v).map_err(|e| Problem::bad_parameter("step", e.to_string()))?;
            if ms <= 0 {
                return Err(Problem::bad_parameter(
                    "step",
                    "`step` must be positive, e.g. 60s",
                ));
            }
            Some(ms)
        }
    };
    let agg = match (q.get("agg"), step) {
        (Some(a), Some(_)) => Some(
            a.parse::<Agg>()
                .map_err(|e| Problem::bad_parameter("agg", e))?,
        ),
        (Some(_), None) => {
            return Err(Problem::bad_parameter(
                "agg",
                "`agg` needs a `step`, e.g. &step=60s&agg=mean",
            ))
        }
        (None, Some(_)) => Some(Agg::Mean),
        (None, None) => None,
    };
    let limit = match q.get("limit") {
        None => None,
        Some(v) => Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Problem::bad_parameter("limit", "`limit` must be a positive integer")
        })?),
    };
    let desc = match q.get("order").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(o) => {
            return Err(Problem::bad_parameter(
                "order",
                format!("`{o}`: use asc or desc"),
            ))
        }
    };

    let all = s.store.series(Some(device));
    if all.is_empty() {
        return Err(Problem::not_found(format!(
            "no data stored for device `{device}`; GET /api/v1/series lists the stored series"
        )));
    }
    let selected: Vec<&SeriesInfo> = match q.get("field") {
        Some(f) => {
            let wanted: Vec<&str> = f.split(',').map(str::trim).collect();
            let sel: Vec<&SeriesInfo> = all
                .iter()
                .filter(|i| wanted.contains(&i.field.as_str()))
                .collect();
            if sel.is_empty() {
                let fields: Vec<&str> = all.iter().map(|i| i.field.as_str()).collect();
                return Err(Problem::not_found(format!(
                    "device `{device}` has no field `{f}`; its fields: {}",
                    fields.join(", ")
                )));
            }
            sel
        }
        None => all.iter().collect(),
    };
    let mut out = Vec::new();
    for info in selected {
        let key = SeriesKey::new(&info.device_id, &info.field);
        let mut pts = s
            .store
            .range(&key, from, to)
            .map_err(|e| Problem::internal(e.to_string()))?;
        if let (Some(step), Some(agg)) = (step, agg) {
            pts = downsample(&pts, step, agg);
        }
        if desc {
            pts.reverse();
        }
        let truncated = limit.is_some_and(|l| pts.len() > l);
        if let Some(l) = limit {
            pts.truncate(l);
        }
        let points: Vec<Value> = pts
            .iter()
            .map(|(t, v)| json!({"ts": format_ms(*t), "value": v.to_json()}))
            .collect();
        out.push(json!({
            "device_id": info.device_id,
            "field": info.field,
            "tags": info.tags.flat(),
            "count": points.len(),
            "truncated": truncated,
            "points": points,
        }));
    }
    Ok(Json(json!({
        "from": (from != i64::MIN).then(|| format_ms(from)),
        "to": (to != i64::MAX).then(|| format_ms(to)),
        "step": q.get("step"),
        "agg": agg.map(|a| format!("{a:?}").to_lowercase()),
        "series": out,
    })))
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
    let (items, total) = tokio::task::spawn_blocking(move || qr.list(limit, offset))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(|e| Problem::internal(format!("reading the quarantine failed: {e}")))?;
    Ok(Json(json!({"total": total, "items": items})))
}
