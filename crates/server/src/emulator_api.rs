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
use fieldlab_emulator::fault::FaultSpec;
use fieldlab_emulator::{ControlError, Emulator};
use fieldlab_emulator::{DeviceSpec, ScenarioSpec};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

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
async fn fault_kinds() -> Json<Value> {
    let kinds: Vec<Value> = fieldlab_emulator::fault::FaultKind::ALL
        .iter()
        .map(|k| json!({"kind": k.as_str(), "label": k.label(), "needs_field": k.needs_field()}))
        .collect();
    Json(json!({ "kinds": kinds }))
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
) -> Result<Json<Value>, Problem> {
    let em = emulator(&s)?;
    let limit = match q.get("limit") {
        Some(v) => v
            .parse()
            .map_err(|_| Problem::bad_parameter("limit", "`limit` must be a positive integer"))?,
        None => 1000,
    };
    let v = em.list(limit);
    Ok(Json(json!({"count": em.count(), "devices": v})))
}

async fn one(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, Problem> {
    let v = emulator(&s)?.get(&id).map_err(problem)?;
    Ok(Json(json!(v)))
}

#[derive(Deserialize)]
struct CreateBody {
    #[serde(flatten)]
    device: DeviceSpec,
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
        serde_yaml::from_value::<CreateBody>(v).map(|b| vec![b.device])
    }
    .map_err(invalid_body)?;
    let mut out = Vec::new();
    for d in list {
        out.push(em.create(d, true).map_err(problem)?);
    }
    let body = if out.len() == 1 {
        json!(out[0])
    } else {
        json!({"devices": out})
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
) -> Result<Json<Value>, Problem> {
    let em = emulator(&s)?;
    let old = em.get(&id).map_err(problem)?;
    let mut v: serde_yaml::Value = parse_body(&headers, &body)?;
    if let serde_yaml::Value::Mapping(m) = &mut v {
        let key = serde_yaml::Value::from("name");
        if !m.contains_key(&key) {
            m.insert(key, serde_yaml::Value::from(id.clone()));
        }
    }
    let spec = serde_yaml::from_value::<CreateBody>(v)
        .map(|b| b.device)
        .map_err(invalid_body)?;
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
    let view = em.create(spec, running).map_err(problem)?;
    Ok(Json(json!(view)))
}

async fn remove(State(s): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, Problem> {
    emulator(&s)?.delete(&id).map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let em = emulator(&s)?;
    let changed = em.start_device(&id).map_err(problem)?;
    Ok(Json(
        json!({"device_id": id, "state": em.get(&id).map_err(problem)?.state, "changed": changed}),
    ))
}

async fn stop_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let em = emulator(&s)?;
    let changed = em.stop_device(&id).map_err(problem)?;
    Ok(Json(
        json!({"device_id": id, "state": em.get(&id).map_err(problem)?.state, "changed": changed}),
    ))
}

async fn start_all(State(s): State<AppState>) -> Result<Json<Value>, Problem> {
    let n = emulator(&s)?.start_all();
    Ok(Json(json!({"started": n})))
}

async fn stop_all(State(s): State<AppState>) -> Result<Json<Value>, Problem> {
    let n = emulator(&s)?.stop_all();
    Ok(Json(json!({"stopped": n})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScenarioBody {
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
) -> Result<Json<Value>, Problem> {
    let b: ScenarioBody = parse_body(&headers, &body)?;
    let name = b.scenario.or(b.name);
    let v = emulator(&s)?
        .start_scenario(&id, name.as_deref(), b.phases, b.looping)
        .map_err(problem)?;
    Ok(Json(json!(v)))
}

async fn scenario_stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let was = emulator(&s)?.stop_scenario(&id).map_err(problem)?;
    Ok(Json(json!({"device_id": id, "stopped": was})))
}

async fn fault_add(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let spec: FaultSpec = parse_body(&headers, &body)?;
    let f = emulator(&s)?.add_fault(&id, spec).map_err(problem)?;
    Ok((StatusCode::CREATED, Json(json!(f))).into_response())
}

async fn fault_list(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let v = emulator(&s)?.get(&id).map_err(problem)?;
    Ok(Json(json!({"device_id": id, "faults": v.faults})))
}

async fn fault_remove(
    State(s): State<AppState>,
    Path((id, fault)): Path<(String, u64)>,
) -> Result<Json<Value>, Problem> {
    let f = emulator(&s)?.remove_fault(&id, fault).map_err(problem)?;
    Ok(Json(json!(f)))
}

async fn annotations(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
    let Some(a) = s.annotations.clone() else {
        return Ok(Json(json!({"count": 0, "annotations": []})));
    };
    let dev = q.get("device_id").cloned();
    let list = tokio::task::spawn_blocking(move || a.list(dev.as_deref()))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(|e| Problem::internal(format!("reading annotations failed: {e}")))?;
    let items: Vec<Value> = list
        .iter()
        .map(|a| {
            let mut v = json!(a);
            v["start"] = json!(format_ms(a.start_ms));
            v["end"] = json!(a.end_ms.map(format_ms));
            v
        })
        .collect();
    Ok(Json(json!({"count": items.len(), "annotations": items})))
}

async fn history(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Problem> {
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
        return Err(Problem::not_found(format!(
            "no data stored for device `{id}`"
        )));
    }
    let mut out = serde_json::Map::new();
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
        let v: Vec<Value> = pts[skip..]
            .iter()
            .map(|(t, v)| json!({"ts": format_ms(*t), "value": v.to_json()}))
            .collect();
        out.insert(info.field.clone(), Value::Array(v));
    }
    Ok(Json(
        json!({"device_id": id, "from": format_ms(from), "fields": out}),
    ))
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

/// OpenAPI 3.1 of the emulator routes. Written as data rather than derived: the handlers take
/// raw bodies (JSON or YAML), which derive macros cannot describe.
async fn openapi() -> Json<Value> {
    Json(openapi_doc())
}

pub fn openapi_doc() -> Value {
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let problem = json!({"description": "RFC 9457 problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    let ok = |d: &str| json!({"description": d, "content": {"application/json": {}}});
    let op = |summary: &str, params: Vec<Value>, body: Option<&str>| {
        let mut o = json!({"summary": summary, "parameters": params, "responses": {"200": ok("OK"), "4XX": problem.clone()}});
        if let Some(schema) = body {
            o["requestBody"] = json!({"content": {
                "application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}},
                "application/yaml": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
        }
        o
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "fieldlab device emulator", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/api/v1/emulator/devices": {"get": op("List emulated devices", vec![], None)},
            "/api/v1/emulator/fault-kinds": {"get": op("The kinds of fault the emulator injects: kind, label, needs_field", vec![], None)},
            "/api/v1/emulator/devices/{id}": {"get": op("One emulated device", vec![id.clone()], None)},
            "/api/v1/devices": {"post": op("Create a device (JSON or YAML; also `devices: [...]`)", vec![], Some("DeviceSpec"))},
            "/api/v1/devices/{id}": {"delete": op("Delete a device", vec![id.clone()], None),
                "put": op("Replace a device's configuration (the same body as a create; `name` = the id or absent)", vec![id.clone()], Some("DeviceSpec"))},
            "/api/v1/devices/start": {"post": op("Start all devices", vec![], None)},
            "/api/v1/devices/stop": {"post": op("Stop all devices", vec![], None)},
            "/api/v1/devices/{id}/start": {"post": op("Start a device", vec![id.clone()], None)},
            "/api/v1/devices/{id}/stop": {"post": op("Stop a device", vec![id.clone()], None)},
            "/api/v1/devices/{id}/status": {"get": op("Device status", vec![id.clone()], None)},
            "/api/v1/devices/{id}/scenario": {
                "post": op("Run a scenario", vec![id.clone()], Some("ScenarioRequest")),
                "delete": op("Stop the scenario", vec![id.clone()], None)},
            "/api/v1/devices/{id}/faults": {
                "post": op("Inject a fault (recorded as an annotation)", vec![id.clone()], Some("FaultSpec")),
                "get": op("Active faults", vec![id.clone()], None)},
            "/api/v1/devices/{id}/faults/{fault}": {"delete": op("End a fault now", vec![id.clone(),
                json!({"name": "fault", "in": "path", "required": true, "schema": {"type": "integer"}})], None)},
            "/api/v1/annotations": {"get": op("Ground-truth annotations", vec![
                json!({"name": "device_id", "in": "query", "schema": {"type": "string"}})], None)},
            "/api/v1/devices/{id}/history": {"get": op("Stored points of a device", vec![id.clone(),
                json!({"name": "field", "in": "query", "schema": {"type": "string"}}),
                json!({"name": "from", "in": "query", "schema": {"type": "string"}}),
                json!({"name": "to", "in": "query", "schema": {"type": "string"}}),
                json!({"name": "limit", "in": "query", "schema": {"type": "integer"}})], None)},
            "/ws": {"get": op("Live telemetry over WebSocket", vec![
                json!({"name": "device_id", "in": "query", "schema": {"type": "string"}}),
                json!({"name": "device_type", "in": "query", "schema": {"type": "string"}})], None)},
        },
        "components": {"schemas": {
            "Problem": {"type": "object", "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "detail": {"type": "string"}, "parameter": {"type": "string"}}},
            "DeviceSpec": {"type": "object", "required": ["name", "type"], "properties": {
                "name": {"type": "string"}, "type": {"type": "string"},
                "config": {"type": "object", "properties": {"mqtt_topic": {"type": "string"},
                    "update_interval": {"type": "number"}, "min_value": {"type": "number"},
                    "max_value": {"type": "number"}, "tags": {"type": "object"}}},
                "scenarios": {"type": "array", "items": {"$ref": "#/components/schemas/Phase"}}}},
            "Phase": {"type": "object", "required": ["name", "duration"], "properties": {
                "name": {"type": "string"}, "duration": {"type": "number"},
                "parameters": {"type": "object", "description": "<field>_range: [lo, hi]"}}},
            "ScenarioRequest": {"type": "object", "properties": {"scenario": {"type": "string"},
                "phases": {"type": "array", "items": {"$ref": "#/components/schemas/Phase"}},
                "loop": {"type": "boolean"}}},
            "FaultSpec": {"type": "object", "required": ["kind"], "properties": {
                "kind": {"type": "string", "enum": fieldlab_emulator::fault::FaultKind::ALL.map(|k| k.as_str())},
                "field": {"type": "string"}, "duration_s": {"type": "number"}, "magnitude": {"type": "number"},
                "value": {"type": "number"}, "rate_per_s": {"type": "number"}, "offset_s": {"type": "number"},
                "factor": {"type": "number"}, "multiplier": {"type": "integer"}, "rename_to": {"type": "string"},
                "mode": {"type": "string"}}},
        }},
    })
}
