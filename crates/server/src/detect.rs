//! Anomaly detection and data quality over HTTP: the legacy `/predict` API (also under
//! `/api/v1/predict`), anomaly and quality events, quality scores, and loading a model.
//!
//! | path | what |
//! |---|---|
//! | `POST /predict`, `/api/v1/predict` | score rows `{data, window_size, method, threshold, async}` |
//! | `POST /predict/batch`, `/api/v1/predict/batch` | several row sets as one job: 202 + id |
//! | `GET /predict/status/{id}`, `/api/v1/predict/status/{id}` | a job's state and results |
//! | `GET /api/v1/anomalies` | anomaly events, newest first (`device_id`, `from`, `limit`) |
//! | `GET /api/v1/quality` | quality score per device over `from..to`, and recent events |
//! | `POST /api/v1/models/load` | load an autoencoder saved by `fieldlab detect train` under the models directory |
//! | `GET /ws/events` | quality and anomaly events pushed as they happen (WebSocket) |
//!
//! `/predict` is open to every signed-in role, so each request is bounded by
//! `detect.predict` (see `fieldlab_watch::predict`): the body is read up to `max_body` (413
//! beyond), rows and the estimated work (rows x window x features for robust z) are capped
//! (413), the window is capped (422), and at most `max_concurrent_jobs` requests and jobs are
//! read or scored at once (429 with `Retry-After` beyond; the slot is taken before the body
//! is read, so memory is bounded too). Jobs that fail end as `failed` with a problem object.
//!
//! Model loading reads only inside the models directory (`detect.models_dir`, default
//! `<data_dir>/models`): a caller holding the operator role must not be able to make the server
//! open arbitrary files, so `..`, and paths or symlinks leading out of that directory, are
//! refused before anything is read.

use crate::fleet::{Failure, Scope};
use crate::{AppState, Problem};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fieldlab_core::time::{format_ms, now_ms, parse_instant_ms};
use fieldlab_watch::predict::{
    self, ErrorKind, JobItem, JobStatus, Limits, Permit, PredictError, PredictRequest, Size,
};
use fieldlab_watch::{AnomalyEvent, QualityEvent, QualityScore, Watch};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/predict", post(predict_one))
        .route("/api/v1/predict", post(predict_one))
        .route("/predict/batch", post(predict_batch))
        .route("/api/v1/predict/batch", post(predict_batch))
        .route("/predict/status/{id}", get(status))
        .route("/api/v1/predict/status/{id}", get(status))
        .route("/api/v1/anomalies", get(anomalies))
        .route("/api/v1/quality", get(quality))
        .route("/api/v1/models/load", post(load_model))
        .route("/ws/events", get(ws_events))
}

fn watch(s: &AppState) -> Result<Watch, Problem> {
    s.watch.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "detection-disabled",
            "Detection is disabled",
            "anomaly detection is not running; set detect.enabled: true in fieldlab.yaml",
        )
    })
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    b.map(|Json(v)| v).map_err(|e| {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            format!("{}; expected JSON like {{\"data\": [[1.2, 3.4], [2.3, 4.5]], \"window_size\": 30, \"method\": \"ensemble\"}}", e.body_text()),
        );
        p.parameter = Some("body".into());
        p
    })
}

/// The body as JSON, kept up to `detect.predict.max_body` bytes (413 beyond; the excess is
/// read and dropped, never stored).
async fn read_json<T: serde::de::DeserializeOwned>(req: Request, limit: u64) -> Result<T, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request-too-large",
            "Request too large",
            format!("the body is larger than {limit} bytes (detect.predict.max_body); send fewer rows per request"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Far too large: answer at once (the connection is closed). Somewhat too large: read the
    // rest and drop it, so the client gets the 413 rather than a reset while still sending.
    let drain_up_to = limit.saturating_mul(8);
    if declared.is_some_and(|n| n > drain_up_to) {
        return Err(too_large());
    }
    let mut stream = req.into_body().into_data_stream();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    let mut seen = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "Invalid request body",
                format!("cannot read the body: {e}"),
            )
        })?;
        seen += chunk.len() as u64;
        if seen > drain_up_to {
            return Err(too_large());
        }
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    serde_json::from_slice(&buf).map_err(|e| {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            format!("{e}; expected JSON like {{\"data\": [[1.2, 3.4], [2.3, 4.5]], \"window_size\": 30, \"method\": \"ensemble\"}}"),
        );
        p.parameter = Some("body".into());
        p
    })
}

fn predict_problem(e: PredictError) -> Problem {
    let (status, slug, title) = match e.kind {
        ErrorKind::Conflict => (
            StatusCode::CONFLICT,
            "model-not-loaded",
            "Method not available",
        ),
        ErrorKind::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request-too-large",
            "Request too large",
        ),
        ErrorKind::Invalid => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
            "Invalid input",
        ),
    };
    let mut p = Problem::new(status, slug, title, e.detail);
    p.parameter = Some(e.field);
    p
}

fn problem_value(p: Problem) -> Value {
    serde_json::to_value(p).unwrap_or_default()
}

/// 429 with `Retry-After`: every slot for a scoring is taken.
fn busy(limits: &Limits) -> Response {
    let mut r = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-jobs",
        "Too many predictions running",
        format!(
            "{} scorings are running, the most allowed at once (detect.predict.max_concurrent_jobs); retry when one has finished",
            limits.max_concurrent_jobs
        ),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn run(w: &Watch, r: &PredictRequest) -> Result<predict::PredictResult, PredictError> {
    let m = w.model();
    let c = w.config();
    predict::predict(r, m.as_deref(), c.window_size, c.threshold)
}

fn validate(w: &Watch, r: &PredictRequest) -> Result<(), PredictError> {
    let m = w.model();
    let c = w.config();
    predict::validate(r, m.as_deref(), c.window_size, c.threshold)
}

/// Run a job's work on a blocking thread, holding its slot; a panic ends the job as
/// `failed` with a problem object instead of leaving it pending.
fn spawn_job(
    w: Watch,
    id: String,
    permit: Permit,
    work: impl FnOnce(&Watch) -> Vec<JobItem> + Send + 'static,
) {
    tokio::task::spawn_blocking(move || {
        let _slot = permit;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&w))) {
            Ok(items) => w.jobs().finish(&id, items),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(job = %id, panic = %msg, "a /predict job failed");
                w.jobs().fail(
                    &id,
                    problem_value(Problem::internal(format!(
                        "the job failed on the server ({msg}); this is a bug: please report it with the request"
                    ))),
                );
            }
        }
    });
}

fn item(r: Result<predict::PredictResult, PredictError>) -> JobItem {
    match r {
        Ok(r) => JobItem::Result(r),
        Err(e) => JobItem::Error(problem_value(predict_problem(e))),
    }
}

async fn predict_one(State(s): State<AppState>, req: Request) -> Result<Response, Problem> {
    let w = watch(&s)?;
    let limits = w.config().predict.clone();
    // The slot is taken before the body is read, so bodies in memory are bounded too.
    let Some(permit) = w.jobs().try_start(limits.max_concurrent_jobs) else {
        return Ok(busy(&limits));
    };
    let req: PredictRequest = read_json(req, limits.max_body.get()).await?;
    let model = w.model();
    let size = Size::of(
        &req.data,
        req.window_size,
        req.method.as_deref(),
        w.config().window_size,
        model.as_deref(),
    );
    predict::check_limits(&[size], &limits).map_err(predict_problem)?;
    if req.run_async {
        // Validate now so that a bad request fails now, not in the job.
        validate(&w, &req).map_err(predict_problem)?;
        let id = w.jobs().create(limits.max_jobs_kept);
        spawn_job(w, id.clone(), permit, move |w| vec![item(run(w, &req))]);
        return Ok(accepted(&id));
    }
    let r = tokio::task::spawn_blocking(move || {
        let _slot = permit;
        run(&w, &req)
    })
    .await
    .map_err(|e| Problem::internal(e.to_string()))?
    .map_err(predict_problem)?;
    Ok(Json(r).into_response())
}

fn accepted(id: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        [(
            axum::http::header::LOCATION,
            format!("/api/v1/predict/status/{id}"),
        )],
        Json(JobAccepted {
            id: id.to_string(),
            status: Pending::Pending,
            status_url: format!("/api/v1/predict/status/{id}"),
        }),
    )
        .into_response()
}

/// A job was queued: poll `status_url`.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobAccepted {
    id: String,
    status: Pending,
    status_url: String,
}

/// A queued job's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Pending {
    Pending,
}

/// A job and its state (`GET /api/v1/predict/status/{id}`).
#[derive(Serialize, ToSchema)]
pub(crate) struct Job {
    id: String,
    #[serde(flatten)]
    status: JobStatus,
}

/// Several row sets scored as one job.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchPredictRequest {
    /// Row sets, each as `data` of a single request.
    data: Vec<Vec<Vec<Option<f64>>>>,
    #[serde(default)]
    #[schema(minimum = 2)]
    window_size: Option<usize>,
    #[serde(default)]
    #[schema(schema_with = predict::method_schema)]
    method: Option<String>,
    #[serde(default)]
    threshold: Option<f64>,
}

async fn predict_batch(State(s): State<AppState>, req: Request) -> Result<Response, Problem> {
    let w = watch(&s)?;
    let limits = w.config().predict.clone();
    let Some(permit) = w.jobs().try_start(limits.max_concurrent_jobs) else {
        return Ok(busy(&limits));
    };
    let b: BatchPredictRequest = read_json(req, limits.max_body.get()).await?;
    if b.data.is_empty() {
        return Err(predict_problem(PredictError {
            field: "data".into(),
            detail: "data is an empty list; send a list of row sets".into(),
            kind: ErrorKind::Invalid,
        }));
    }
    let model = w.model();
    let sizes: Vec<Size> = b
        .data
        .iter()
        .map(|d| {
            Size::of(
                d,
                b.window_size,
                b.method.as_deref(),
                w.config().window_size,
                model.as_deref(),
            )
        })
        .collect();
    predict::check_limits(&sizes, &limits).map_err(predict_problem)?;
    let sets: Vec<PredictRequest> = b
        .data
        .into_iter()
        .map(|data| PredictRequest {
            data,
            window_size: b.window_size,
            method: b.method.clone(),
            threshold: b.threshold,
            run_async: false,
        })
        .collect();
    // Every row set is checked before the job is accepted: a bad one is a 422 now.
    for (i, r) in sets.iter().enumerate() {
        validate(&w, r).map_err(|e| {
            predict_problem(PredictError {
                field: format!("data[{i}]"),
                detail: format!("row set {i}: {}", e.detail),
                kind: e.kind,
            })
        })?;
    }
    let id = w.jobs().create(limits.max_jobs_kept);
    spawn_job(w, id.clone(), permit, move |w| {
        sets.iter().map(|r| item(run(w, r))).collect()
    });
    Ok(accepted(&id))
}

async fn status(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Job>, Problem> {
    let w = watch(&s)?;
    let st = w.jobs().get(&id).ok_or_else(|| {
        Problem::not_found(format!(
            "no job `{id}` (finished jobs are kept for the last {} requests)",
            w.config().predict.max_jobs_kept
        ))
    })?;
    Ok(Json(Job { id, status: st }))
}

fn window(q: &HashMap<String, String>, default_from: &str) -> Result<(i64, i64), Problem> {
    let now = now_ms();
    let t = |name: &str, d: &str| -> Result<i64, Problem> {
        let v = q.get(name).map(String::as_str).unwrap_or(d);
        parse_instant_ms(v, now).map_err(|e| Problem::bad_parameter(name, e.to_string()))
    };
    let (from, to) = (t("from", default_from)?, t("to", "now")?);
    if from > to {
        return Err(Problem::bad_parameter("from", "`from` is after `to`"));
    }
    Ok((from, to))
}

fn limit(q: &HashMap<String, String>) -> Result<usize, Problem> {
    match q.get("limit") {
        None => Ok(100),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                Problem::bad_parameter(
                    "limit",
                    format!("`limit={v}`: use a number from 1 to 10000"),
                )
            }),
    }
}

/// Anomaly events, newest first.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct Anomalies {
    count: usize,
    anomalies: Vec<Anomaly>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct Anomaly {
    #[serde(flatten)]
    event: AnomalyEvent,
    /// `ts_ms` as RFC 3339.
    time: String,
}

/// With a cluster: the owned devices' events and each peer's, newest first, `limit` applied
/// after the merge.
async fn anomalies(
    State(s): State<AppState>,
    scope: Scope,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Anomalies>, Failure> {
    let w = watch(&s)?;
    let (from, _) = window(&q, "-24h")?;
    let limit = limit(&q)?;
    let dev = q.get("device_id").map(String::as_str);
    // In a cluster, events of devices this replica no longer owns are left out before the
    // limit is applied, not after.
    let list = w.anomalies(
        dev,
        from,
        if scope.clustered() { usize::MAX } else { limit },
    );
    let mut anomalies: Vec<Anomaly> = list
        .into_iter()
        .filter(|e| scope.owns(&e.device_id))
        .take(limit)
        .map(|event| Anomaly {
            time: format_ms(event.ts_ms),
            event,
        })
        .collect();
    if scope.fans_out() {
        for share in scope.peers::<Anomalies>().await? {
            anomalies.extend(share.anomalies);
        }
        // Stable: a replica's own order is kept among events of the same instant.
        anomalies.sort_by_key(|a| std::cmp::Reverse(a.event.ts_ms));
        anomalies.truncate(limit);
    }
    let count = anomalies.len();
    Ok(Json(Anomalies { count, anomalies }))
}

/// Quality scores per device and recent quality events.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct Quality {
    from: String,
    to: String,
    devices: Vec<QualityScore>,
    events: Vec<QualityEvent>,
}

/// With a cluster: the owned devices' scores and each peer's, by device id (scores are per
/// device: nothing is aggregated across devices), and the events newest first, `limit`
/// applied after the merge.
async fn quality(
    State(s): State<AppState>,
    scope: Scope,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Quality>, Failure> {
    let w = watch(&s)?;
    let (from, to) = window(&q, "-1h")?;
    let dev = q.get("device_id").map(String::as_str);
    let limit = limit(&q)?;
    let mut scores = w.quality_scores(from, to, dev);
    scores.retain(|sc| scope.owns(&sc.device_id));
    let mut events: Vec<QualityEvent> = w
        .quality_events(
            dev,
            from,
            if scope.clustered() { usize::MAX } else { limit },
        )
        .into_iter()
        .filter(|e| scope.owns(&e.device_id))
        .take(limit)
        .collect();
    if scope.fans_out() {
        for share in scope.peers::<Quality>().await? {
            scores.extend(share.devices);
            events.extend(share.events);
        }
        scores.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        events.sort_by_key(|e| std::cmp::Reverse(e.ts_ms));
        events.truncate(limit);
    }
    Ok(Json(Quality {
        from: format_ms(from),
        to: format_ms(to),
        devices: scores,
        events,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelLoadRequest {
    /// A model directory relative to the models directory (`detect.models_dir`, default
    /// `<data_dir>/models`), or an absolute path inside it.
    path: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ModelLoaded {
    /// The path as the request named it.
    loaded: String,
    /// The model's metadata.
    #[schema(value_type = Object)]
    model: Value,
}

async fn load_model(
    State(s): State<AppState>,
    b: Result<Json<ModelLoadRequest>, JsonRejection>,
) -> Result<Json<ModelLoaded>, Problem> {
    let w = watch(&s)?;
    let b = body(b)?;
    let dir = w
        .config()
        .models_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("models"));
    let path = model_path(&dir, &b.path)?;
    let m =
        tokio::task::spawn_blocking(move || fieldlab_detect::autoencoder::Autoencoder::load(&path))
            .await
            .map_err(|e| Problem::internal(e.to_string()))?
            .map_err(|e| {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-model",
                    "Model cannot be loaded",
                    e.to_string(),
                );
                p.parameter = Some("path".into());
                p
            })?;
    let meta = serde_json::to_value(&m.meta).unwrap_or_default();
    w.set_model(m);
    Ok(Json(ModelLoaded {
        loaded: b.path,
        model: meta,
    }))
}

fn path_problem(status: StatusCode, slug: &str, title: &str, detail: String) -> Problem {
    let mut p = Problem::new(status, slug, title, detail);
    p.parameter = Some("path".into());
    p
}

/// Resolve `requested` (relative to `dir`, or absolute inside it) to a model directory that
/// really lies in `dir`: 400 for `..` or an unusable path, 403 for anything (an absolute path,
/// a symlink) that leads outside, 404 when it does not exist. The files the loader reads are
/// checked too, so a symlinked `model.json` cannot point elsewhere.
pub(crate) fn model_path(
    dir: &std::path::Path,
    requested: &str,
) -> Result<std::path::PathBuf, Problem> {
    use std::path::{Component, Path};
    let hint = format!(
        "name a model directory inside {} (detect.models_dir), e.g. {{\"path\": \"my-model\"}} after `fieldlab detect train --out {}/my-model`",
        dir.display(),
        dir.display()
    );
    if requested.trim().is_empty() || requested.chars().any(char::is_control) {
        return Err(path_problem(
            StatusCode::BAD_REQUEST,
            "invalid-path",
            "Invalid model path",
            format!("`path` must be a non-empty path without control characters; {hint}"),
        ));
    }
    let req = Path::new(requested);
    if req.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(path_problem(
            StatusCode::BAD_REQUEST,
            "path-traversal",
            "Path traversal refused",
            format!("`{requested}` contains `..`; {hint}"),
        ));
    }
    let root = std::fs::canonicalize(dir).map_err(|e| {
        path_problem(
            StatusCode::NOT_FOUND,
            "model-not-found",
            "Model not found",
            format!("the models directory {} cannot be opened ({e}); create it and save models there with `fieldlab detect train --out {}/NAME`", dir.display(), dir.display()),
        )
    })?;
    let outside = || {
        path_problem(
            StatusCode::FORBIDDEN,
            "path-outside-models-dir",
            "Path outside the models directory",
            format!("`{requested}` is outside the models directory; {hint}"),
        )
    };
    // An absolute path must already point inside; `join` would otherwise replace the root.
    if req.is_absolute() && !req.starts_with(dir) && !req.starts_with(&root) {
        return Err(outside());
    }
    let target = std::fs::canonicalize(dir.join(req)).map_err(|e| {
        path_problem(
            StatusCode::NOT_FOUND,
            "model-not-found",
            "Model not found",
            format!("`{requested}` does not exist in the models directory ({e}); {hint}"),
        )
    })?;
    if !target.starts_with(&root) {
        return Err(outside());
    }
    for f in ["model.json", "model.safetensors"] {
        if let Ok(real) = std::fs::canonicalize(target.join(f)) {
            if !real.starts_with(&root) {
                return Err(outside());
            }
        }
    }
    Ok(target)
}

/// `GET /ws/events?device_id=a,b&kind=anomaly|quality`: every watch event as it happens, as a
/// JSON text message (`{"kind": "anomaly", ...}`); a client too slow for the stream is told
/// how many it missed (`{"lagged": n}`) instead of slowing ingest down.
async fn ws_events(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    up: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, Problem> {
    let w = watch(&s)?;
    let ids: Vec<String> = q
        .get("device_id")
        .map(|v| {
            v.split(',')
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let kind = match q.get("kind").map(String::as_str) {
        None | Some("") => None,
        Some(k @ ("anomaly" | "quality")) => Some(k.to_string()),
        Some(other) => {
            return Err(Problem::bad_parameter(
                "kind",
                format!("kind `{other}`: expected anomaly or quality"),
            ))
        }
    };
    let rx = w.subscribe();
    Ok(up.on_upgrade(move |sock| push_events(sock, rx, ids, kind)))
}

async fn push_events(
    mut sock: axum::extract::ws::WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<fieldlab_watch::Event>,
    ids: Vec<String>,
    kind: Option<String>,
) {
    use axum::extract::ws::Message;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        tokio::select! {
            e = rx.recv() => {
                let text = match e {
                    Ok(e) => {
                        if !ids.is_empty() && !ids.iter().any(|x| x == e.device_id()) {
                            continue;
                        }
                        let v = serde_json::to_value(&e).unwrap_or(Value::Null);
                        if kind.as_deref().is_some_and(|k| v["kind"] != k) {
                            continue;
                        }
                        v.to_string()
                    }
                    Err(RecvError::Lagged(n)) => json!({"lagged": n}).to_string(),
                    Err(RecvError::Closed) => break,
                };
                if sock.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            r = sock.recv() => match r {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod model_path_tests {
    use super::model_path;

    /// A configured models directory (detect.models_dir) anywhere, not only under the data dir.
    #[test]
    fn only_paths_inside_the_configured_directory_resolve() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("conf-models");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::create_dir_all(t.path().join("secret")).unwrap();
        let root = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(model_path(&dir, "a/b").unwrap(), root.join("a/b"));
        assert_eq!(model_path(&dir, "./a").unwrap(), root.join("a"));
        let abs = dir.join("a");
        assert_eq!(
            model_path(&dir, abs.to_str().unwrap()).unwrap(),
            root.join("a")
        );
        let code = |p: &str| model_path(&dir, p).unwrap_err().status;
        assert_eq!(code("../secret"), 400);
        assert_eq!(code("a/../../secret"), 400);
        assert_eq!(code(" "), 400);
        assert_eq!(code("a\u{0}b"), 400);
        assert_eq!(code(t.path().join("secret").to_str().unwrap()), 403);
        std::os::unix::fs::symlink(t.path().join("secret"), dir.join("link")).unwrap();
        assert_eq!(code("link"), 403);
        assert_eq!(code("missing"), 404);
        // No models directory at all: 404 that says how to make one.
        let e = model_path(&t.path().join("none"), "m").unwrap_err();
        assert_eq!(e.status, 404);
        assert!(
            e.detail.contains("fieldlab detect train --out"),
            "{}",
            e.detail
        );
    }
}
