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

use crate::fleet::{Failure, Scope};
use crate::{AppState, Problem};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fieldlab_core::time::{format_ms, now_ms};
use fieldlab_store::SeriesInfo;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

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

/// The JSON index (`GET /api/v1`).
#[derive(Serialize, ToSchema)]
pub(crate) struct Index {
    name: &'static str,
    version: &'static str,
    /// The MQTT broker's URL.
    mqtt: String,
    endpoints: [&'static str; 11],
}

pub(crate) async fn index(State(s): State<AppState>) -> Json<Index> {
    Json(Index {
        name: "fieldlab",
        version: env!("CARGO_PKG_VERSION"),
        mqtt: s.broker_url.clone(),
        endpoints: [
            "/health",
            "/ready",
            "/metrics",
            "/api/v1/devices",
            "/api/v1/devices/{id}",
            "/api/v1/series",
            "/api/v1/query",
            "/api/v1/export",
            "/api/v1/backup",
            "/api/v1/quarantine",
            "/ui/",
        ],
    })
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Liveness {
    /// Always `ok`.
    status: &'static str,
    uptime_seconds: u64,
}

async fn live(State(s): State<AppState>) -> Json<Liveness> {
    let uptime_seconds = s.started.elapsed().as_secs();
    Json(Liveness {
        status: "ok",
        uptime_seconds,
    })
}

#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum UpDown {
    Up,
    Down,
}

impl UpDown {
    fn of(up: bool) -> UpDown {
        if up {
            UpDown::Up
        } else {
            UpDown::Down
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    status: UpDown,
    components: BTreeMap<&'static str, Component>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Component {
    status: UpDown,
    /// Why the part is down, when known (e.g. the store's write error).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn ready(State(s): State<AppState>) -> Response {
    let components: BTreeMap<_, _> = s
        .readiness
        .status()
        .into_iter()
        .map(|(k, p)| {
            (
                k,
                Component {
                    status: UpDown::of(p.up),
                    reason: p.reason,
                },
            )
        })
        .collect();
    let ok = components.values().all(|c| matches!(c.status, UpDown::Up));
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = UpDown::of(ok);
    (code, Json(Readiness { status, components })).into_response()
}

async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    s.http
        .active_devices
        .set(s.directory.active_since(now_ms() - 60_000) as i64);
    fieldlab_http::metrics::respond(&s.registry, &headers)
}

/// A known device (`GET /api/v1/devices`).
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct Device {
    device_id: String,
    device_type: String,
    emulated: bool,
    #[schema(format = DateTime)]
    last_seen: Option<String>,
    last_seq: Option<u64>,
    messages: u64,
    /// Field -> unit, from the emulator's device catalog (empty for types it does not know).
    units: BTreeMap<String, String>,
}

impl Device {
    fn of(e: &fieldlab_core::DeviceEntry) -> Device {
        Device {
            device_id: e.device_id.clone(),
            device_type: e.device_type.clone(),
            emulated: e.emulated,
            last_seen: e.last_seen_ms.map(format_ms),
            last_seq: e.last_seq,
            messages: e.messages,
            units: catalog_units(&e.device_type),
        }
    }
}

/// Field -> unit of a device type in the emulator's catalog (built-in and YAML types), the one
/// source of units the UI shows; empty for a type the catalog does not know (its payloads
/// may say their units themselves). Boolean fields have no unit.
fn catalog_units(device_type: &str) -> BTreeMap<String, String> {
    fieldlab_emulator::model::type_info(device_type)
        .map(|t| {
            t.units()
                .map(|(f, u)| (f.to_string(), u.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct DeviceList {
    count: usize,
    devices: Vec<Device>,
}

/// With a cluster: the devices this replica owns and each peer's, sorted by id as the
/// directory lists them.
async fn devices(State(s): State<AppState>, scope: Scope) -> Result<Json<DeviceList>, Failure> {
    let mut devices: Vec<Device> = s
        .directory
        .list()
        .iter()
        .filter(|e| scope.owns(&e.device_id))
        .map(Device::of)
        .collect();
    if scope.fans_out() {
        for share in scope.peers::<DeviceList>().await? {
            devices.extend(share.devices);
        }
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    }
    Ok(Json(DeviceList {
        count: devices.len(),
        devices,
    }))
}

/// A stored series.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct Series {
    device_id: String,
    field: String,
    tags: BTreeMap<String, String>,
    #[schema(format = DateTime)]
    first: String,
    #[schema(format = DateTime)]
    last: String,
}

impl Series {
    fn of(i: &SeriesInfo) -> Series {
        Series {
            device_id: i.device_id.clone(),
            field: i.field.clone(),
            tags: i.tags.flat(),
            first: format_ms(i.first_ts_ms),
            last: format_ms(i.last_ts_ms),
        }
    }
}

/// One device and its series (`GET /api/v1/devices/{id}`).
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct DeviceDetail {
    #[serde(flatten)]
    device: Device,
    series: Vec<Series>,
}

/// With a cluster: from this replica when it owns the device, else from the peer that does
/// (the others answer 404 for it).
async fn device(
    State(s): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let unknown = || {
        Problem::not_found(format!(
            "device `{id}` is not known; GET /api/v1/devices lists the known ones"
        ))
    };
    if !scope.owns(&id) {
        return scope.from_owner().await?.ok_or_else(|| unknown().into());
    }
    let e = s.directory.get(&id).ok_or_else(unknown)?;
    let series = s.store.series(Some(&id)).iter().map(Series::of).collect();
    Ok(Json(DeviceDetail {
        device: Device::of(&e),
        series,
    })
    .into_response())
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct SeriesList {
    count: usize,
    series: Vec<Series>,
}

/// With a cluster: the owned devices' series and each peer's, in the store's order (device,
/// then field).
async fn series(
    State(s): State<AppState>,
    scope: Scope,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<SeriesList>, Failure> {
    let mut series: Vec<Series> = s
        .store
        .series(q.get("device_id").map(String::as_str))
        .iter()
        .filter(|i| scope.owns(&i.device_id))
        .map(Series::of)
        .collect();
    if scope.fans_out() {
        for share in scope.peers::<SeriesList>().await? {
            series.extend(share.series);
        }
        series.sort_by(|a, b| (&a.device_id, &a.field).cmp(&(&b.device_id, &b.field)));
    }
    Ok(Json(SeriesList {
        count: series.len(),
        series,
    }))
}

/// A page of the quarantine, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct Quarantine {
    /// Entries held now.
    total: u64,
    /// Entries deleted to keep the quarantine within `storage.quarantine_max_bytes`.
    dropped: u64,
    /// Offset of the next page; null on the last.
    next_offset: Option<u64>,
    #[schema(value_type = Vec<Object>)]
    items: Vec<fieldlab_store::QuarantineEntry>,
}

async fn quarantine(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Quarantine>, Problem> {
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
    Ok(Json(Quarantine {
        total: page.total,
        dropped: page.dropped,
        next_offset: page.next_offset,
        items: page.items,
    }))
}
