//! Data out of the store over HTTP: queries, streamed exports, online backups.
//!
//! | path | what |
//! |---|---|
//! | `GET /api/v1/query` | several series by `device_id`, `device_type`, `field`, `site`, `tag.<name>`; raw points or one row per `step` with `agg=mean,max,...`; `limit`, `order=desc` |
//! | `GET /api/v1/export` | the same selection as `format=csv|jsonl|parquet`, streamed |
//! | `GET /api/v1/backup` | a consistent tar of the whole data dir (admin), streamed |
//!
//! Exports and backups run on a blocking thread that writes into a bounded channel the
//! response body drains, so memory stays bounded whatever the size, and a client that goes
//! away stops the work (the next write fails).

use crate::fleet::{Failure, Scope};
use crate::{AppState, Problem};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use fieldlab_core::time::{format_ms, now_ms};
use fieldlab_core::Principal;
use fieldlab_export::Format;
use fieldlab_store::{QuerySpec, SeriesResult};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::Write;
use tokio::sync::mpsc;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/query", get(query))
        .route("/api/v1/export", get(export))
        .route("/api/v1/backup", get(backup))
}

type Params = Vec<(String, String)>;

fn spec(params: &Params, ignore: &[&str], need_selector: bool) -> Result<QuerySpec, Problem> {
    let q = QuerySpec::from_params(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        now_ms(),
        ignore,
    )
    .map_err(|e| Problem::bad_parameter(&e.param, e.message))?;
    if need_selector && q.selector.is_empty() {
        return Err(Problem::bad_parameter(
            "device_id",
            "select series with at least one of device_id, device_type, field, site or tag.<name>, e.g. /api/v1/query?device_id=temperature_sensor_1&from=-1h",
        ));
    }
    Ok(q)
}

/// Nothing matched: say which filter found nothing, with what exists instead.
fn nothing_found(s: &AppState, q: &QuerySpec) -> Problem {
    let sel = &q.selector;
    if !sel.device_ids.is_empty() {
        let only_devices = fieldlab_store::Selector {
            device_ids: sel.device_ids.clone(),
            ..Default::default()
        };
        let series = s.store.select(&only_devices);
        if series.is_empty() {
            return Problem::not_found(format!(
                "no data stored for device `{}`; GET /api/v1/series lists the stored series",
                sel.device_ids.join(",")
            ));
        }
        if !sel.fields.is_empty() {
            let fields: Vec<&str> = series.iter().map(|i| i.field.as_str()).collect();
            return Problem::not_found(format!(
                "device `{}` has no field `{}`; its fields: {}",
                sel.device_ids.join(","),
                sel.fields.join(","),
                fields.join(", ")
            ));
        }
    }
    Problem::not_found(
        "no stored series matches these filters; GET /api/v1/series lists the stored series with their tags",
    )
}

/// One stored value as JSON: numbers, booleans, strings; non-finite floats and gaps as null.
struct ValueJson<'a>(&'a Option<fieldlab_core::FieldValue>);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use fieldlab_core::FieldValue as V;
        match self.0 {
            Some(V::F64(v)) if v.is_finite() => ser.serialize_f64(*v),
            Some(V::I64(v)) => ser.serialize_i64(*v),
            Some(V::Bool(b)) => ser.serialize_bool(*b),
            Some(V::Str(s)) => ser.serialize_str(s),
            Some(V::F64(_)) | None => ser.serialize_unit(),
        }
    }
}

/// One row: `{ts, value}` with one column, `{ts, mean, max, ...}` with several.
struct RowJson<'a> {
    row: &'a fieldlab_store::Row,
    columns: &'a [&'static str],
}

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let (t, vals) = self.row;
        let mut m = ser.serialize_map(Some(1 + self.columns.len()))?;
        let mut buf = [0u8; 24];
        match fieldlab_core::time::rfc3339_ms(*t, &mut buf) {
            Some(ts) => m.serialize_entry("ts", ts)?,
            None => m.serialize_entry("ts", &format_ms(*t))?,
        }
        if self.columns.len() == 1 {
            m.serialize_entry("value", &ValueJson(&vals[0]))?;
        } else {
            for (c, v) in self.columns.iter().zip(vals) {
                m.serialize_entry(c, &ValueJson(v))?;
            }
        }
        m.end()
    }
}

struct RowsJson<'a> {
    rows: &'a [fieldlab_store::Row],
    columns: &'a [&'static str],
}

impl Serialize for RowsJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(self.rows.iter().map(|row| RowJson {
            row,
            columns: self.columns,
        }))
    }
}

struct SeriesJson<'a> {
    r: &'a SeriesResult,
    columns: &'a [&'static str],
}

impl Serialize for SeriesJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let r = self.r;
        let mut m = ser.serialize_map(Some(6))?;
        m.serialize_entry("device_id", &r.info.device_id)?;
        m.serialize_entry("field", &r.info.field)?;
        m.serialize_entry("tags", &r.info.tags.flat())?;
        m.serialize_entry("count", &r.rows.len())?;
        m.serialize_entry("truncated", &r.truncated)?;
        m.serialize_entry(
            "points",
            &RowsJson {
                rows: &r.rows,
                columns: self.columns,
            },
        )?;
        m.end()
    }
}

/// The answer of a query, serialised straight from the store's rows (no intermediate
/// `serde_json::Value` tree: a 1440-row answer built one was ~6 allocations per row).
pub struct QueryJson<'a> {
    q: &'a QuerySpec,
    step: Option<&'a str>,
    res: &'a [SeriesResult],
    columns: Vec<&'static str>,
}

impl<'a> QueryJson<'a> {
    pub fn new(q: &'a QuerySpec, step: Option<&'a str>, res: &'a [SeriesResult]) -> Self {
        QueryJson {
            q,
            step,
            res,
            columns: q.columns(),
        }
    }
}

impl Serialize for QueryJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let q = self.q;
        let mut m = ser.serialize_map(Some(5))?;
        m.serialize_entry("from", &(q.from != i64::MIN).then(|| format_ms(q.from)))?;
        m.serialize_entry("to", &(q.to != i64::MAX).then(|| format_ms(q.to)))?;
        m.serialize_entry("step", &self.step)?;
        let aggs: Vec<&str> = q.effective_aggs().iter().map(|a| a.name()).collect();
        match (q.step, aggs.len()) {
            (None, _) => m.serialize_entry("agg", &())?,
            (Some(_), 1) => m.serialize_entry("agg", aggs[0])?,
            (Some(_), _) => m.serialize_entry("agg", &aggs)?,
        }
        m.serialize_entry(
            "series",
            &self
                .res
                .iter()
                .map(|r| SeriesJson {
                    r,
                    columns: &self.columns,
                })
                .collect::<Vec<_>>(),
        )?;
        m.end()
    }
}

/// The schema of [`QueryJson`], written beside its hand-written serialiser (which no derive
/// can follow).
impl utoipa::PartialSchema for QueryJson<'_> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        let nullable = json!({"type": ["string", "null"]});
        let series = json!({"type": "object", "required": ["device_id", "field", "tags", "count", "truncated", "points"], "properties": {
            "device_id": {"type": "string"}, "field": {"type": "string"},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "count": {"type": "integer", "minimum": 0}, "truncated": {"type": "boolean"},
            "points": {"type": "array", "items": {"type": "object", "required": ["ts"],
                "description": "`{ts, value}` with one column, `{ts, <agg>...}` with several"}}}});
        let v = json!({"type": "object", "required": ["from", "to", "step", "agg", "series"], "properties": {
            "from": nullable, "to": nullable, "step": nullable,
            "agg": {"type": ["string", "array", "null"], "items": {"type": "string"},
                "description": "null for raw points, the aggregation, or several"},
            "series": {"type": "array", "items": series}}});
        utoipa::openapi::RefOr::T(serde_json::from_value(v).expect("a schema"))
    }
}

impl utoipa::ToSchema for QueryJson<'_> {
    fn name() -> std::borrow::Cow<'static, str> {
        "QueryResult".into()
    }
}

/// `GET /api/v1/query?device_id=D[,D2][&device_type=T][&site=S][&tag.line=3][&field=F]
/// [&from=T1][&to=T2][&step=60s&agg=mean,max][&limit=N][&order=desc]`
///
/// Without `from`/`to` the whole stored range. `step` buckets are aligned to the epoch; `agg`
/// defaults to `mean` when `step` is given. With one column a point is `{ts, value}`, with
/// several aggregations `{ts, mean, max, ...}`.
///
/// In a cluster the series of owned devices only, merged with each peer's share: every
/// series lives on one replica and `limit`, `step` and `agg` apply per series, so the merge
/// is their union in the store's order (device, then field). A peer's share of nothing is an
/// empty list, not a 404.
async fn query(
    State(s): State<AppState>,
    scope: Scope,
    Query(params): Query<Params>,
) -> Result<Response, Failure> {
    let q = spec(&params, &[], true)?;
    let store = s.store.clone();
    let q2 = q.clone();
    let mut res = tokio::task::spawn_blocking(move || store.query(&q2))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(|e| Problem::internal(e.to_string()))?;
    res.retain(|r| scope.owns(&r.info.device_id));
    let step = params
        .iter()
        .find(|(k, _)| k == "step")
        .map(|(_, v)| v.as_str());
    let answer = QueryJson::new(&q, step, &res);
    let body = if scope.fans_out() {
        let mut v = serde_json::to_value(&answer).map_err(|e| Problem::internal(e.to_string()))?;
        let mut series = std::mem::take(&mut v["series"]);
        let all = series.as_array_mut().expect("series is a list");
        for mut share in scope.peers::<Value>().await? {
            if let Value::Array(more) = share["series"].take() {
                all.extend(more);
            }
        }
        if all.is_empty() {
            return Err(nothing_found(&s, &q).into());
        }
        let key = |v: &Value| {
            let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (text("device_id"), text("field"))
        };
        all.sort_by_key(key);
        v["series"] = series;
        serde_json::to_vec(&v)
    } else {
        if res.is_empty() && !scope.clustered() {
            return Err(nothing_found(&s, &q).into());
        }
        serde_json::to_vec(&answer)
    }
    .map_err(|e| Problem::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The JSON answer of a query as a value (`fieldlab query --format json` prints it).
pub fn query_json(q: &QuerySpec, step: Option<&str>, res: &[SeriesResult]) -> Value {
    serde_json::to_value(QueryJson::new(q, step, res)).unwrap_or(Value::Null)
}

/// A `Write` that hands 64 KiB pieces to an HTTP response body through a bounded channel.
/// Blocks when the client reads slowly; fails once the client is gone.
struct BodyWriter {
    buf: Vec<u8>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl BodyWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(1 << 16),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for BodyWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 1 << 16 {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Run `job` on a blocking thread writing into the response body; it hands the writer back.
fn stream_body<F>(job: F) -> Body
where
    F: FnOnce(BodyWriter) -> Result<BodyWriter, String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let w = BodyWriter {
            buf: Vec::with_capacity(1 << 16),
            tx: tx.clone(),
        };
        let r = job(w).and_then(|mut w| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = r {
            tracing::warn!(error = %e, "streamed response aborted");
            // Ends the body with an error, so the client sees a broken transfer rather than
            // a silently short file.
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Response header of a replica's share of an export: how many series it selected (a share
/// of no rows may still have series, and the fleet's export is a 404 only when none has).
const SHARE_SERIES: &str = "fieldlab-share-series";

/// `GET /api/v1/export?format=csv|jsonl|parquet&<query parameters>`
///
/// In a cluster: the series of owned devices only, merged with each peer's share, which is
/// fetched as JSON lines and written again in the asked format (Parquet is encoded once,
/// here), in the order a single replica writes (series by device and field, then time). The
/// merged export is assembled in memory, unlike a single replica's, which streams.
async fn export(
    State(s): State<AppState>,
    scope: Scope,
    Query(params): Query<Params>,
) -> Result<Response, Failure> {
    let format: Format = params
        .iter()
        .find(|(k, _)| k == "format")
        .map_or(Ok(Format::Csv), |(_, v)| v.parse())
        .map_err(|e| Problem::bad_parameter("format", e))?;
    // Without filters an export is everything (a notebook's "give me the lot").
    let q = spec(&params, &["format"], false)?;
    let owns = scope.owner();
    let selected = s
        .store
        .select(&q.selector)
        .iter()
        .filter(|i| owns(&i.device_id))
        .count();
    if scope.fans_out() {
        return fleet_export(&s, &scope, &params, q, format, selected).await;
    }
    if selected == 0 && !scope.clustered() {
        return Err(nothing_found(&s, &q).into());
    }
    let store = s.store.clone();
    let body = stream_body(move |w| {
        let units = fieldlab_emulator::model::catalog_units();
        fieldlab_export::export_where(&store, &q, format, &units, |i| owns(&i.device_id), w)
            .map(|(w, _)| w)
            .map_err(|e| e.to_string())
    });
    let mut resp = attachment(format, body);
    if scope.clustered() {
        resp.headers_mut()
            .insert(SHARE_SERIES, axum::http::HeaderValue::from(selected));
    }
    Ok(resp)
}

/// The fleet's export: this replica's share and every peer's as JSON lines, merged into
/// one file of `format`.
async fn fleet_export(
    s: &AppState,
    scope: &Scope,
    params: &Params,
    q: QuerySpec,
    format: Format,
    selected: usize,
) -> Result<Response, Failure> {
    let mut as_jsonl: Params = params
        .iter()
        .filter(|(k, _)| k != "format")
        .cloned()
        .collect();
    as_jsonl.push(("format".into(), "jsonl".into()));
    let shares = scope.shares(Some(&as_jsonl)).await?;
    let columns: Vec<String> = q.columns().iter().map(|c| c.to_string()).collect();
    let mut series = selected;
    let mut texts = Vec::with_capacity(shares.len() + 1);
    for share in shares {
        if !share.status.is_success() {
            return Err(share.passed_on());
        }
        series += share
            .headers
            .get(SHARE_SERIES)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .unwrap_or(0);
        let text = String::from_utf8(share.body.to_vec()).map_err(|_| {
            crate::fleet::unavailable(&share.peer, "its export share is not UTF-8 JSON lines")
        })?;
        texts.push((share.peer, text));
    }
    if series == 0 {
        return Err(nothing_found(s, &q).into());
    }
    // This replica's share counts against the same budget as the peers' (it is merged in
    // memory with them).
    let store = s.store.clone();
    let owns = scope.owner();
    let q2 = q.clone();
    let mine = tokio::task::spawn_blocking(move || {
        let units = fieldlab_emulator::model::catalog_units();
        fieldlab_export::export_where(
            &store,
            &q2,
            Format::JsonLines,
            &units,
            |i| owns(&i.device_id),
            Vec::new(),
        )
        .map(|(w, _)| w)
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| Problem::internal(e.to_string()))?
    .map_err(Problem::internal)?;
    let peers: usize = texts.iter().map(|(_, t)| t.len()).sum();
    if mine.len() + peers > s.fleet_answer_max {
        return Err(crate::fleet::too_large(s.fleet_answer_max));
    }
    let body = stream_body(move |w| {
        let mine = String::from_utf8(mine).map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        for (who, text) in std::iter::once(("this replica".to_string(), mine)).chain(texts) {
            for line in text.lines().filter(|l| !l.is_empty()) {
                rows.push(
                    fieldlab_export::Row::from_json_line(line, &columns)
                        .map_err(|e| format!("the export share of {who}: {e}"))?,
                );
            }
        }
        // Stable: within a series the rows stay in time order, as each share wrote them.
        rows.sort_by(|a, b| {
            (&a.info.device_id, &a.info.field).cmp(&(&b.info.device_id, &b.info.field))
        });
        fieldlab_export::write_rows(&rows, &q, format, w)
            .map(|(w, _)| w)
            .map_err(|e| e.to_string())
    });
    Ok(attachment(format, body))
}

/// An export's response: its content type and file name.
fn attachment(format: Format, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"fieldlab-export.{}\"",
                    format.extension()
                ),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/v1/backup`: a tar of the data dir at one consistent cut (see the store's
/// `backup.rs`); `fieldlab backup --url` calls this. Admin only (the auth policy and this
/// handler both check). Secrets only with `include_secrets=true`.
async fn backup(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(params): Query<Params>,
) -> Result<Response, Problem> {
    if !who.is_admin() {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "backups contain all data; only an admin may take one",
        ));
    }
    let mut opts = fieldlab_store::backup::Options::default();
    for (k, v) in &params {
        match (k.as_str(), v.as_str()) {
            ("include_secrets", "true" | "1") => opts.include_secrets = true,
            ("include_secrets", "false" | "0") => opts.include_secrets = false,
            ("include_secrets", _) => {
                return Err(Problem::bad_parameter(
                    "include_secrets",
                    format!("`include_secrets={v}`: use true or false"),
                ))
            }
            _ => {
                return Err(Problem::bad_parameter(
                    k,
                    format!("unknown parameter `{k}`; /api/v1/backup takes only include_secrets"),
                ))
            }
        }
    }
    tracing::info!(by = %who.subject, include_secrets = opts.include_secrets, "backup requested");
    let store = s.store.clone();
    let handle = tokio::runtime::Handle::current();
    let body = stream_body(move |w| {
        handle
            .block_on(store.backup_with(opts, w))
            .map(|(w, _)| w)
            .map_err(|e| e.to_string())
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"fieldlab-backup-{}.tar\"",
                    now_ms() / 1000
                ),
            ),
        ],
        body,
    )
        .into_response())
}
