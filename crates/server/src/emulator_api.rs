//! The emulator's control API: devices, scenarios, faults, annotations, history, live stream.
//!
//! | method & path (native) | legacy alias | what |
//! |---|---|---|
//! | `GET /api/v1/emulator/devices` | | emulated devices with state, scenario, faults |
//! | `POST /api/v1/devices` (JSON or YAML body) | `POST /devices` | create an emulated device |
//! | `GET /api/v1/emulator/devices/{id}` | | one emulated device |
//! | `DELETE /api/v1/devices/{id}` | `DELETE /devices/{id}` | remove it |
//! | `POST /api/v1/devices/{id}/start`, `/stop` | `/devices/{id}/start`, `/stop` | start / stop one |
//! | `POST /api/v1/devices/start`, `/stop` | `/devices/start`, `/stop` | all of them |
//! | `GET /api/v1/devices/{id}/status` | `/devices/{id}/status` | state, seq, messages |
//! | `POST /api/v1/devices/{id}/scenario` `{scenario?, phases?, loop?}` | `/devices/{id}/scenario` | run a scenario |
//! | `DELETE /api/v1/devices/{id}/scenario` | | back to normal operation |
//! | `POST /api/v1/devices/{id}/faults` `{kind, field?, duration_s?, ...}` | | inject a fault |
//! | `DELETE /api/v1/devices/{id}/faults/{fault_id}` | | end it now |
//! | `GET /api/v1/annotations[?device_id=]` | | ground truth of every injected fault |
//! | `GET /api/v1/devices/{id}/history[?field=&from=&to=&limit=]` | | stored points |
//! | `GET /ws[?device_id=a,b][&device_type=T]` | | live telemetry (WebSocket, one JSON text per message) |
//! | `GET /api/v1/emulator/openapi.json` | | OpenAPI 3.1 of these routes |

use crate::{AppState, Problem};
use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use fieldlab_core::time::{format_ms, now_ms, parse_instant_ms};
use fieldlab_core::SeriesKey;
use fieldlab_emulator::fault::{ActiveFault, FaultKind, FaultSpec};
use fieldlab_emulator::fleet::DeviceState;
use fieldlab_emulator::runner::DeviceView;
use fieldlab_emulator::{ControlError, Emulator};
use fieldlab_emulator::{DeviceSpec, ScenarioSpec};
use fieldlab_http::openapi::{Doc, Op};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    let mut r = Router::new()
        .route("/api/v1/emulator/devices", get(list))
        .route("/api/v1/emulator/devices/{id}", get(one))
        .route("/api/v1/annotations", get(annotations))
        .route("/api/v1/devices/{id}/history", get(history))
        .route("/api/v1/emulator/openapi.json", get(openapi))
        .route("/api/v1/emulator/fault-kinds", get(fault_kinds))
        .route("/ws", get(ws));
    // Native paths and the legacy aliases share the handlers.
    for p in ["/api/v1/devices", "/devices"] {
        r = r
            .route(p, post(create))
            .route(&format!("{p}/start"), post(start_all))
            .route(&format!("{p}/stop"), post(stop_all))
            .route(&format!("{p}/{{id}}"), delete(remove).put(update))
            .route(&format!("{p}/{{id}}/start"), post(start_one))
            .route(&format!("{p}/{{id}}/stop"), post(stop_one))
            .route(&format!("{p}/{{id}}/status"), get(one))
            .route(
                &format!("{p}/{{id}}/scenario"),
                post(scenario_start).delete(scenario_stop),
            )
            .route(
                &format!("{p}/{{id}}/faults"),
                post(fault_add).get(fault_list),
            )
            .route(
                &format!("{p}/{{id}}/faults/{{fault}}"),
                delete(fault_remove),
            );
    }
    r
}

/// Every kind of fault the emulator injects, with its label and whether it needs a field: the
/// list the UI's fault form shows (the emulator's `FaultKind` is its one source).
async fn fault_kinds() -> Json<FaultKinds> {
    let kinds = FaultKind::ALL
        .iter()
        .map(|&kind| FaultKindInfo {
            kind,
            label: kind.label(),
            needs_field: kind.needs_field(),
        })
        .collect();
    Json(FaultKinds { kinds })
}

fn emulator(s: &AppState) -> Result<&Emulator, Problem> {
    s.emulator.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "emulator-off",
            "Emulator not running",
            "this fieldlab runs without the device emulator",
        )
    })
}

fn problem(e: ControlError) -> Problem {
    match e {
        ControlError::NotFound(m) => Problem::not_found(m),
        ControlError::Conflict(m) => Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", m),
        ControlError::Invalid { key, message } => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Invalid request body",
                format!("{key}: {message}"),
            );
            p.parameter = Some(key);
            p
        }
    }
}

/// Parse a body as JSON, or as YAML when the content type says so (or JSON fails).
fn parse_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let bad = |m: String| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "Invalid request body",
            m,
        )
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_str("{}").map_err(|e| bad(format!("a body is required: {e}")));
    }
    if ct.contains("yaml") {
        return serde_yaml::from_slice(body).map_err(|e| bad(format!("YAML body: {e}")));
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(je) if !ct.contains("json") => serde_yaml::from_slice(body)
            .map_err(|_| bad(format!("body is neither JSON nor YAML: {je}"))),
        Err(e) => Err(bad(format!("JSON body: {e}"))),
    }
}

async fn list(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<EmulatedDevices>, Problem> {
    let em = emulator(&s)?;
    let limit = match q.get("limit") {
        Some(v) => v
            .parse()
            .map_err(|_| Problem::bad_parameter("limit", "`limit` must be a positive integer"))?,
        None => 1000,
    };
    let devices = em.list(limit);
    Ok(Json(EmulatedDevices {
        count: em.count(),
        devices,
    }))
}

async fn one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, Problem> {
    Ok(Json(emulator(&s)?.get(&id).map_err(problem)?))
}

/// Emulated devices with state, scenario and faults.
#[derive(Serialize, ToSchema)]
pub(crate) struct EmulatedDevices {
    /// Devices in the fleet (`devices` holds at most `limit`).
    count: usize,
    devices: Vec<DeviceView>,
}

/// The created device, or `{devices: [...]}` when the body held several.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Created {
    One(Box<DeviceView>),
    Many { devices: Vec<DeviceView> },
}

/// A device started or stopped.
#[derive(Serialize, ToSchema)]
pub(crate) struct StateChange {
    device_id: String,
    state: DeviceState,
    /// Whether the call changed its state.
    changed: bool,
}

/// How many devices a start or stop of all changed.
#[derive(Serialize, ToSchema)]
pub(crate) struct Changed {
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ScenarioStopped {
    device_id: String,
    /// Whether a scenario was running.
    stopped: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Faults {
    device_id: String,
    faults: Vec<ActiveFault>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct FaultKinds {
    kinds: Vec<FaultKindInfo>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct FaultKindInfo {
    kind: FaultKind,
    label: &'static str,
    /// Whether the kind acts on one field (and so needs `field`).
    needs_field: bool,
}

/// Ground truth of every injected fault.
#[derive(Serialize, ToSchema)]
pub(crate) struct Annotations {
    count: usize,
    #[schema(value_type = Vec<Object>)]
    annotations: Vec<Value>,
}

/// A device's stored points per field.
#[derive(Serialize, ToSchema)]
pub(crate) struct History {
    device_id: String,
    from: String,
    fields: BTreeMap<String, Vec<Point>>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Point {
    ts: String,
    /// A number, boolean or string; null for a gap.
    value: Value,
}

/// A device body that does not read as a device spec: 422 with serde's reason.
fn invalid_body(e: serde_yaml::Error) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-body",
        "Invalid request body",
        e.to_string(),
    )
}

async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let em = emulator(&s)?;
    // The legacy emulator's devices.yaml shape is accepted too: `devices: [ {name, type, ...} ]`.
    let v: serde_yaml::Value = parse_body(&headers, &body)?;
    let list: Vec<DeviceSpec> = if let Some(arr) = v.get("devices") {
        serde_yaml::from_value(arr.clone())
    } else {
        serde_yaml::from_value::<DeviceSpec>(v).map(|d| vec![d])
    }
    .map_err(invalid_body)?;
    let mut out = Vec::new();
    for d in list {
        out.push(em.create(d, true).map_err(problem)?);
    }
    let body = if out.len() == 1 {
        Created::One(Box::new(out.remove(0)))
    } else {
        Created::Many { devices: out }
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Replace a device's configuration (`PUT`, the same body as a create). The body's `name` must
/// be the path's id (or absent). The new configuration is checked before the old one goes, and
/// the device keeps running if it was; its sequence numbers start again.
async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DeviceView>, Problem> {
    let em = emulator(&s)?;
    let old = em.get(&id).map_err(problem)?;
    let mut v: serde_yaml::Value = parse_body(&headers, &body)?;
    if let serde_yaml::Value::Mapping(m) = &mut v {
        let key = serde_yaml::Value::from("name");
        if !m.contains_key(&key) {
            m.insert(key, serde_yaml::Value::from(id.clone()));
        }
    }
    let spec = serde_yaml::from_value::<DeviceSpec>(v).map_err(invalid_body)?;
    if spec.name != id {
        return Err(Problem::bad_parameter(
            "name",
            format!(
                "the body names device `{}`, the path `{id}`; a device is renamed by deleting it and creating the new one",
                spec.name
            ),
        ));
    }
    fieldlab_emulator::runner::validate_device(&spec).map_err(|(k, m)| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-device",
            "Invalid device",
            format!("{k}: {m}"),
        )
    })?;
    let running = !matches!(old.state, fieldlab_emulator::fleet::DeviceState::Stopped);
    em.delete(&id).map_err(problem)?;
    Ok(Json(em.create(spec, running).map_err(problem)?))
}

async fn remove(State(s): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, Problem> {
    emulator(&s)?.delete(&id).map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StateChange>, Problem> {
    let em = emulator(&s)?;
    let changed = em.start_device(&id).map_err(problem)?;
    let state = em.get(&id).map_err(problem)?.state;
    Ok(Json(StateChange {
        device_id: id,
        state,
        changed,
    }))
}

async fn stop_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StateChange>, Problem> {
    let em = emulator(&s)?;
    let changed = em.stop_device(&id).map_err(problem)?;
    let state = em.get(&id).map_err(problem)?.state;
    Ok(Json(StateChange {
        device_id: id,
        state,
        changed,
    }))
}

async fn start_all(State(s): State<AppState>) -> Result<Json<Changed>, Problem> {
    let started = Some(emulator(&s)?.start_all());
    Ok(Json(Changed {
        started,
        stopped: None,
    }))
}

async fn stop_all(State(s): State<AppState>) -> Result<Json<Changed>, Problem> {
    let stopped = Some(emulator(&s)?.stop_all());
    Ok(Json(Changed {
        started: None,
        stopped,
    }))
}

/// Run a named scenario or a timeline of phases.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioBody {
    scenario: Option<String>,
    /// Alias of `scenario`.
    name: Option<String>,
    phases: Option<Vec<ScenarioSpec>>,
    #[serde(default, rename = "loop")]
    looping: bool,
}

async fn scenario_start(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DeviceView>, Problem> {
    let b: ScenarioBody = parse_body(&headers, &body)?;
    let name = b.scenario.or(b.name);
    let v = emulator(&s)?
        .start_scenario(&id, name.as_deref(), b.phases, b.looping)
        .map_err(problem)?;
    Ok(Json(v))
}

async fn scenario_stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ScenarioStopped>, Problem> {
    let stopped = emulator(&s)?.stop_scenario(&id).map_err(problem)?;
    Ok(Json(ScenarioStopped {
        device_id: id,
        stopped,
    }))
}

async fn fault_add(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let spec: FaultSpec = parse_body(&headers, &body)?;
    let f = emulator(&s)?.add_fault(&id, spec).map_err(problem)?;
    Ok((StatusCode::CREATED, Json(f)).into_response())
}

async fn fault_list(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Faults>, Problem> {
    let faults = emulator(&s)?.get(&id).map_err(problem)?.faults;
    Ok(Json(Faults {
        device_id: id,
        faults,
    }))
}

async fn fault_remove(
    State(s): State<AppState>,
    Path((id, fault)): Path<(String, u64)>,
) -> Result<Json<ActiveFault>, Problem> {
    Ok(Json(
        emulator(&s)?.remove_fault(&id, fault).map_err(problem)?,
    ))
}

async fn annotations(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Annotations>, Problem> {
    let Some(a) = s.annotations.clone() else {
        let annotations = Vec::new();
        return Ok(Json(Annotations {
            count: 0,
            annotations,
        }));
    };
    let dev = q.get("device_id").cloned();
    let list = tokio::task::spawn_blocking(move || a.list(dev.as_deref()))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(|e| Problem::internal(format!("reading annotations failed: {e}")))?;
    let annotations: Vec<Value> = list
        .iter()
        .map(|a| {
            let mut v = json!(a);
            v["start"] = json!(format_ms(a.start_ms));
            v["end"] = json!(a.end_ms.map(format_ms));
            v
        })
        .collect();
    let count = annotations.len();
    Ok(Json(Annotations { count, annotations }))
}

/// In a cluster, a device this replica does not own is answered by its owner.
async fn history(
    State(s): State<AppState>,
    scope: crate::fleet::Scope,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, crate::fleet::Failure> {
    if !scope.owns(&id) {
        return scope
            .from_owner()
            .await?
            .ok_or_else(|| Problem::not_found(format!("no data stored for device `{id}`")).into());
    }
    let now = now_ms();
    let time = |name: &str, default: i64| -> Result<i64, Problem> {
        q.get(name).map_or(Ok(default), |v| {
            parse_instant_ms(v, now).map_err(|e| Problem::bad_parameter(name, e.to_string()))
        })
    };
    let from = time("from", now - 3_600_000)?;
    let to = time("to", i64::MAX)?;
    let limit: usize = match q.get("limit") {
        Some(v) => v
            .parse()
            .map_err(|_| Problem::bad_parameter("limit", "`limit` must be a positive integer"))?,
        None => 1000,
    };
    let series = s.store.series(Some(&id));
    if series.is_empty() {
        return Err(Problem::not_found(format!("no data stored for device `{id}`")).into());
    }
    let mut fields = BTreeMap::new();
    for info in series {
        if q.get("field")
            .is_some_and(|f| !f.split(',').any(|x| x == info.field))
        {
            continue;
        }
        let pts = s
            .store
            .range(&SeriesKey::new(&id, &info.field), from, to)
            .map_err(|e| Problem::internal(e.to_string()))?;
        let skip = pts.len().saturating_sub(limit);
        let points = pts[skip..]
            .iter()
            .map(|(t, v)| Point {
                ts: format_ms(*t),
                value: v.to_json(),
            })
            .collect();
        fields.insert(info.field.clone(), points);
    }
    let from = format_ms(from);
    Ok(Json(History {
        device_id: id,
        from,
        fields,
    })
    .into_response())
}

async fn ws(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    up: WebSocketUpgrade,
) -> Result<Response, Problem> {
    let rx = emulator(&s)?.subscribe();
    let split = |k: &str| -> Vec<String> {
        q.get(k)
            .map(|v| {
                v.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (ids, types) = (split("device_id"), split("device_type"));
    Ok(up.on_upgrade(move |sock| live(sock, rx, ids, types)))
}

/// Forward matching telemetry until the client goes away. A client too slow for the stream
/// loses messages (and is told how many), rather than slowing the emulator down.
async fn live(
    mut sock: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<fieldlab_emulator::runner::LiveMessage>,
    ids: Vec<String>,
    types: Vec<String>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(m) => {
                    // topic: devices/<type>/<id>/telemetry (or a device's own topic)
                    let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else { continue };
                    let id = v["device_id"].as_str().unwrap_or("");
                    let ty = v["device_type"].as_str().unwrap_or("");
                    if (!ids.is_empty() && !ids.iter().any(|x| x == id))
                        || (!types.is_empty() && !types.iter().any(|x| x == ty)) {
                        continue;
                    }
                    let msg = json!({"topic": m.topic, "message": v}).to_string();
                    if sock.send(WsMessage::Text(msg.into())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let msg = json!({"lagged": n}).to_string();
                    if sock.send(WsMessage::Text(msg.into())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            r = sock.recv() => match r {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
        }
    }
}

/// OpenAPI 3.1 of the emulator routes (native paths; [`crate::openapi`] adds the legacy aliases).
async fn openapi() -> Json<Value> {
    Json(openapi_doc())
}

pub fn openapi_doc() -> Value {
    let t = "emulator";
    let id = |op: Op| op.path("id", "device id");
    let json_or_yaml = ["application/json", "application/yaml"];
    let mut d = Doc::default();
    let base = "/api/v1/devices";
    d.put(
        "GET /api/v1/emulator/devices",
        Op::new(t, "List emulated devices")
            .query(
                "limit",
                json!({"type": "integer", "minimum": 0}),
                "at most this many (default 1000)",
            )
            .json::<EmulatedDevices>("200", "the devices"),
    );
    d.put(
        "GET /api/v1/emulator/fault-kinds",
        Op::new(t, "The kinds of fault the emulator injects")
            .json::<FaultKinds>("200", "every kind, with its label"),
    );
    d.put(
        "GET /api/v1/emulator/devices/{id}",
        id(Op::new(t, "One emulated device")).json::<DeviceView>("200", "the device"),
    );
    d.put(
        "GET /api/v1/emulator/openapi.json",
        Op::new(t, "OpenAPI 3.1 of the emulator routes alone").json_object("200", "OpenAPI 3.1"),
    );
    d.put(
        &format!("POST {base}"),
        Op::new(t, "Create a device (JSON or YAML; also `devices: [...]`)")
            .body_of::<DeviceSpec>(&json_or_yaml)
            .json::<Created>(
                "201",
                "the created device (or `{devices: [...]}` for several)",
            ),
    );
    d.put(
        &format!("DELETE {base}/{{id}}"),
        id(Op::new(t, "Delete a device")).resp("204", "deleted", None),
    );
    d.put(&format!("PUT {base}/{{id}}"), id(Op::new(t, "Replace a device's configuration (the same body as a create; `name` = the id or absent)"))
        .body_of::<DeviceSpec>(&json_or_yaml)
        .json::<DeviceView>("200", "the device"));
    for (verb, what) in [("start", "Start"), ("stop", "Stop")] {
        d.put(
            &format!("POST {base}/{verb}"),
            Op::new(t, &format!("{what} all devices")).json::<Changed>("200", "how many changed"),
        );
        d.put(
            &format!("POST {base}/{{id}}/{verb}"),
            id(Op::new(t, &format!("{what} a device"))).json::<StateChange>("200", "its state"),
        );
    }
    d.put(
        &format!("GET {base}/{{id}}/status"),
        id(Op::new(t, "Device status")).json::<DeviceView>("200", "the device"),
    );
    d.put(
        &format!("POST {base}/{{id}}/scenario"),
        id(Op::new(t, "Run a scenario"))
            .body_of::<ScenarioBody>(&json_or_yaml)
            .json::<DeviceView>("200", "the device"),
    );
    d.put(
        &format!("DELETE {base}/{{id}}/scenario"),
        id(Op::new(t, "Stop the scenario")).json::<ScenarioStopped>("200", "whether one ran"),
    );
    d.put(
        &format!("POST {base}/{{id}}/faults"),
        id(Op::new(t, "Inject a fault (recorded as an annotation)"))
            .body_of::<FaultSpec>(&json_or_yaml)
            .json::<ActiveFault>("201", "the active fault (its id is the annotation id)"),
    );
    d.put(
        &format!("GET {base}/{{id}}/faults"),
        id(Op::new(t, "Active faults")).json::<Faults>("200", "the faults"),
    );
    d.put(
        &format!("DELETE {base}/{{id}}/faults/{{fault}}"),
        id(Op::new(t, "End a fault now"))
            .param(
                "fault",
                "path",
                json!({"type": "integer", "minimum": 0}),
                "the fault's id",
            )
            .json::<ActiveFault>("200", "the ended fault"),
    );
    d.put(
        "GET /api/v1/annotations",
        Op::new(t, "Ground-truth annotations")
            .query("device_id", json!({"type": "string"}), "only this device")
            .json::<Annotations>("200", "the annotations"),
    );
    let instant = json!({"type": "string", "examples": ["-1h", "now", "2026-01-01T00:00:00Z"]});
    d.put(
        &format!("GET {base}/{{id}}/history"),
        id(Op::new(t, "Stored points of a device"))
            .query(
                "field",
                json!({"type": "string"}),
                "fields, comma separated",
            )
            .query("from", instant.clone(), "since (default -1h)")
            .query("to", instant, "until (default: the last point)")
            .query(
                "limit",
                json!({"type": "integer", "minimum": 0}),
                "most points per field (default 1000)",
            )
            .json::<History>("200", "points per field"),
    );
    d.put("GET /ws", Op::new(t, "Live telemetry over WebSocket")
        .describe("A WebSocket handshake (`Upgrade: websocket`); each text message is `{topic, message}` or `{lagged: n}`. Browsers may pass the bearer token as `?access_token=`.")
        .query("device_id", json!({"type": "string"}), "only these devices (comma-separated)")
        .query("device_type", json!({"type": "string"}), "only this type")
        .query("access_token", json!({"type": "string"}), "bearer token (only here, for browsers)")
        .resp("101", "switching to WebSocket", None));
    let info = json!({"title": "fieldlab device emulator", "version": env!("CARGO_PKG_VERSION")});
    d.into_document(info)
}
