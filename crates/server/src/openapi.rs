//! One OpenAPI 3.1 document for every route `fieldlab up` serves, at `GET /openapi.json`.
//!
//! Why it exists: clients, the web UI and test tools (schemathesis) need one description of the
//! whole API, not one per part. It is written as data (serde_json) rather than derived with
//! `utoipa`: most handlers take raw bodies (JSON or YAML) and free-form query maps, which derive
//! macros cannot describe without rewriting them. The emulator's fragment
//! ([`crate::emulator_api::openapi_doc`]) and the fragment of merged routes of other parts
//! ([`crate::AppState::extra_openapi`], the proof verifier in `fieldlab up`) are folded in.
//!
//! Security is not written by hand: every operation's `security` (and `x-required-roles`)
//! comes from [`fieldlab_auth::policy::required`], the same table the auth layer enforces, so
//! the document cannot drift from what the server does. [`route_paths`] and [`operations`] let
//! tests compare the document with the router's actual routes in both directions.

use crate::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use fieldlab_auth::policy::{required, Requirement};
use fieldlab_core::config::VariantNames;
use fieldlab_core::Role;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(serve))
}

async fn serve(State(s): State<AppState>) -> Json<Value> {
    let public_metrics = s.auth.as_ref().is_none_or(|a| a.public_metrics());
    Json(document(s.extra_openapi.as_ref(), public_metrics))
}

/// HTTP methods an OpenAPI path item can hold, lower case.
const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "options", "head"];

/// The document. `extra`: an OpenAPI fragment of routes merged from other parts (only
/// operations the main router does not describe itself are taken); `public_metrics`: whether
/// `/metrics` is public (`auth.public_metrics`).
pub fn document(extra: Option<&Value>, public_metrics: bool) -> Value {
    let mut paths = native_paths();
    let mut schemas = schemas();
    let emulator = crate::emulator_api::openapi_doc();
    fold(&mut paths, &mut schemas, &emulator, "emulator");
    // The emulator's routes are also served at the legacy paths (`/devices/...`), except the
    // history, which is native only.
    let aliases: Vec<(String, Value)> = emulator["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(p, _)| p.starts_with("/api/v1/devices") && !p.ends_with("/history"))
        .map(|(p, v)| (p.replacen("/api/v1/devices", "/devices", 1), v.clone()))
        .collect();
    fold(
        &mut paths,
        &mut schemas,
        &json!({"paths": Map::from_iter(aliases)}),
        "emulator",
    );
    emulator_responses(&mut paths);
    // Real type names, so generated requests can create devices rather than only be refused.
    if let Some(t) = schemas
        .get_mut("DeviceSpec")
        .and_then(|d| d.pointer_mut("/properties/type"))
    {
        let names: Vec<&str> = fieldlab_emulator::model::catalog()
            .iter()
            .map(|t| t.name)
            .collect();
        t["examples"] = json!(names);
        t["description"] = json!("a type of `fieldlab devices types` (built-in or custom)");
    }
    if let Some(x) = extra {
        fold(&mut paths, &mut schemas, x, "proofs");
        verifier_parameters(&mut paths);
    }
    finish(&mut paths, public_metrics);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fieldlab",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every route of `fieldlab up`: health and metrics, devices and data, the device emulator, anomaly detection, rate limiting, auth and (when merged) the proof verifier. Errors are RFC 9457 problem details (`application/problem+json`). Operations with a `security` requirement need `Authorization: Bearer <token or API key>` or `X-API-Key`, from a principal holding one of the roles in `x-required-roles`; without credentials they answer 401, with a principal lacking the role 403.",
        },
        "tags": [
            {"name": "health"}, {"name": "data"}, {"name": "ui"}, {"name": "emulator"},
            {"name": "detect"}, {"name": "ratelimit"}, {"name": "auth"}, {"name": "proofs"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A token from POST /api/v1/auth/token, a JWT of the configured external OAuth2 issuer (JWKS), or an API key (`flk_...`) as the bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                    "description": "An API key made with `fieldlab users key add`"},
            },
            "responses": {
                "Problem": {"description": "RFC 9457 problem details",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
            },
            "schemas": schemas,
        },
    })
}

/// One operation under construction.
struct Op(Value);

impl Op {
    fn new(tag: &str, summary: &str) -> Op {
        Op(json!({"tags": [tag], "summary": summary, "parameters": [], "responses": {}}))
    }

    fn describe(mut self, d: &str) -> Op {
        self.0["description"] = json!(d);
        self
    }

    fn param(mut self, name: &str, at: &str, schema: Value, d: &str) -> Op {
        let mut p = json!({"name": name, "in": at, "schema": schema, "description": d});
        if at == "path" {
            p["required"] = json!(true);
        }
        self.0["parameters"]
            .as_array_mut()
            .expect("parameters")
            .push(p);
        self
    }

    fn query(self, name: &str, schema: Value, d: &str) -> Op {
        self.param(name, "query", schema, d)
    }

    fn path(self, name: &str, d: &str) -> Op {
        self.param(name, "path", json!({"type": "string"}), d)
    }

    fn body(mut self, content: Value) -> Op {
        self.0["requestBody"] = json!({"required": true, "content": content});
        self
    }

    fn json_body(self, schema: &str) -> Op {
        self.body(json!({"application/json": {"schema": schema_ref(schema)}}))
    }

    fn resp(mut self, code: &str, d: &str, content: Option<Value>) -> Op {
        let mut r = json!({"description": d});
        if let Some(c) = content {
            r["content"] = c;
        }
        self.0["responses"][code] = r;
        self
    }

    fn json(self, code: &str, d: &str, schema: &str) -> Op {
        self.resp(
            code,
            d,
            Some(json!({"application/json": {"schema": schema_ref(schema)}})),
        )
    }

    fn problem(mut self, code: &str, d: &str) -> Op {
        self.0["responses"][code] = json!({"description": d,
            "content": {"application/problem+json": {"schema": schema_ref("Problem")}}});
        self
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn integer(min: u64) -> Value {
    json!({"type": "integer", "minimum": min})
}

/// `from`/`to`: RFC 3339, epoch ms, `now` or a relative `-1h`.
fn instant() -> Value {
    json!({"type": "string", "examples": ["-1h", "now", "2026-01-01T00:00:00Z", "1767225600000"]})
}

/// The query parameters of `/api/v1/query` and `/api/v1/export`.
fn selection(op: Op) -> Op {
    op.query(
        "device_id",
        string(),
        "device ids, comma separated (or repeated)",
    )
    .query("device_type", string(), "device types, comma separated")
    .query("field", string(), "fields, comma separated")
    .query("site", string(), "the `site` tag")
    .query(
        "from",
        instant(),
        "start (inclusive); default: the first point",
    )
    .query("to", instant(), "end (exclusive); default: the last point")
    .query(
        "step",
        json!({"type": "string", "examples": ["60s", "5m", "1h"]}),
        "bucket width: one row per step",
    )
    .query(
        "agg",
        json!({"type": "string", "examples": ["mean", "mean,max", "min,max,count"]}),
        "aggregations per bucket (default `mean` when `step` is given)",
    )
    .query("limit", integer(1), "most points per series")
    .query(
        "order",
        json!({"type": "string", "enum": ["asc", "desc"]}),
        "newest first with `desc`",
    )
}

fn predict_ops(paths: &mut Map<String, Value>, base: &str) {
    let tag = "detect";
    put(
        paths,
        base,
        "post",
        Op::new(tag, "Score rows for anomalies (the legacy /predict)")
            .json_body("PredictRequest")
            .json("200", "scores per row", "PredictResult")
            .json("202", "queued as a job (`async: true`)", "JobAccepted")
            .problem("409", "the method needs a model that is not loaded")
            .problem(
                "413",
                "body, rows or rows x window x features beyond detect.predict",
            )
            .problem(
                "422",
                "input that cannot be scored (a window below the method's minimum names it)",
            )
            .problem(
                "429",
                "detect.predict.max_concurrent_jobs scorings are running; see Retry-After",
            ),
    );
    put(
        paths,
        &format!("{base}/batch"),
        "post",
        Op::new(tag, "Score several row sets as one job")
            .json_body("BatchPredictRequest")
            .json("202", "the job's id and status URL", "JobAccepted")
            .problem(
                "413",
                "body, rows or rows x window x features beyond detect.predict",
            )
            .problem("422", "an empty or invalid batch")
            .problem(
                "429",
                "detect.predict.max_concurrent_jobs scorings are running; see Retry-After",
            ),
    );
    put(
        paths,
        &format!("{base}/status/{{id}}"),
        "get",
        Op::new(tag, "A job's state and results")
            .path("id", "job id from the 202 answer")
            .json("200", "the job", "Job")
            .problem("404", "no such job"),
    );
}

fn put(paths: &mut Map<String, Value>, path: &str, method: &str, op: Op) {
    let item = paths.entry(path.to_string()).or_insert_with(|| json!({}));
    item[method] = op.0;
}

/// The routes of [`crate::routes`], [`crate::data`], [`crate::ui`], [`crate::detect`],
/// [`crate::ratelimit`], [`crate::auth_routes`] and this module.
fn native_paths() -> Map<String, Value> {
    let mut p = Map::new();
    let health = "health";
    for path in ["/health", "/healthz", "/health/live"] {
        put(
            &mut p,
            path,
            "get",
            Op::new(health, "Liveness: the process answers").json("200", "alive", "Liveness"),
        );
    }
    for path in ["/ready", "/readyz", "/health/ready", "/actuator/health"] {
        put(
            &mut p,
            path,
            "get",
            Op::new(health, "Readiness: store, broker and ingest are up")
                .json("200", "ready", "Readiness")
                .json("503", "a component is down (see `components`)", "Readiness"),
        );
    }
    put(
        &mut p,
        "/metrics",
        "get",
        Op::new(health, "Prometheus / OpenMetrics text")
            .describe("Public unless `auth.public_metrics: false`. OpenMetrics when `Accept` names `application/openmetrics-text` (as Prometheus does), Prometheus text 0.0.4 otherwise.")
            .resp(
                "200",
                "metrics",
                Some(json!({
                    "application/openmetrics-text": {"schema": string()},
                    "text/plain": {"schema": string()}
                })),
            ),
    );

    let data = "data";
    for path in ["/api/v1/devices", "/devices"] {
        put(
            &mut p,
            path,
            "get",
            Op::new(data, "Known devices with type and last-seen time").json(
                "200",
                "devices",
                "DeviceList",
            ),
        );
    }
    put(
        &mut p,
        "/api/v1/devices/{id}",
        "get",
        Op::new(data, "One device and its series")
            .path("id", "device id")
            .json("200", "the device", "DeviceDetail")
            .problem("404", "unknown device"),
    );
    put(
        &mut p,
        "/api/v1/series",
        "get",
        Op::new(data, "Stored series with their tags")
            .query("device_id", string(), "only this device's series")
            .json("200", "series", "SeriesList"),
    );
    put(
        &mut p,
        "/api/v1/quarantine",
        "get",
        Op::new(data, "Payloads that could not be parsed, newest first")
            .query("limit", integer(0), "at most this many (capped at 10000)")
            .query("offset", integer(0), "skip this many")
            .json("200", "quarantined payloads", "Quarantine"),
    );
    put(
        &mut p,
        "/api/v1/query",
        "get",
        selection(Op::new(data, "Query several series: raw points or buckets"))
            .describe("At least one of `device_id`, `device_type`, `field`, `site` or `tag.<name>` selects the series; `tag.<name>=value` filters by any tag.")
            .json("200", "the series", "QueryResult")
            .problem("404", "nothing matches the selection"),
    );
    put(
        &mut p,
        "/api/v1/export",
        "get",
        selection(Op::new(data, "Export a selection, streamed"))
            .query(
                "format",
                json!({"type": "string", "enum": ["csv", "jsonl", "parquet"]}),
                "file format (default csv)",
            )
            .resp(
                "200",
                "the file",
                Some(json!({
                    "text/csv": {"schema": string()},
                    "application/x-ndjson": {"schema": string()},
                    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                })),
            )
            .problem("404", "nothing matches the selection"),
    );
    put(
        &mut p,
        "/api/v1/backup",
        "get",
        Op::new(data, "A consistent tar of the whole data dir, streamed")
            .query(
                "include_secrets",
                json!({"type": "boolean", "default": false}),
                "also archive secrets (JWT secret, users, signing and private keys); else BACKUP.json lists them as excluded",
            )
            .resp(
                "200",
                "tar archive",
                Some(json!({"application/x-tar": {"schema": {"type": "string", "format": "binary"}}})),
            ),
    );

    let ui = "ui";
    put(
        &mut p,
        "/",
        "get",
        Op::new(
            ui,
            "The web UI for browsers (`Accept: text/html`), the JSON index for everyone else",
        )
        .json("200", "the index (or the UI's HTML page)", "Index"),
    );
    put(
        &mut p,
        "/api/v1",
        "get",
        Op::new(ui, "The JSON index").json("200", "the index", "Index"),
    );
    for path in ["/ui", "/ui/"] {
        put(
            &mut p,
            path,
            "get",
            Op::new(ui, "The web UI's page").resp(
                "200",
                "HTML",
                Some(json!({"text/html": {"schema": string()}})),
            ),
        );
    }
    put(
        &mut p,
        "/ui/{path}",
        "get",
        Op::new(ui, "A file of the web UI")
            .path("path", "file path below /ui/ (may contain `/`)")
            .resp(
                "200",
                "the file",
                Some(json!({"*/*": {"schema": {"type": "string", "format": "binary"}}})),
            )
            .resp("304", "not modified (`If-None-Match`)", None)
            .problem("404", "no such file"),
    );
    put(&mut p, "/api/v1/ui/endpoints", "get",
        Op::new(ui, "Which routes this server has (for the UI)")
            .param("path", "query", json!({"type": "array", "items": {"type": "string", "pattern": "^/"}, "minItems": 1, "maxItems": 32}),
                "absolute paths to probe (repeat the parameter)")
            .json("200", "availability per path", "EndpointProbe")
            .problem("400", "no, too many or bad paths"));
    put(
        &mut p,
        "/openapi.json",
        "get",
        Op::new(ui, "This document").resp(
            "200",
            "OpenAPI 3.1",
            Some(json!({"application/json": {"schema": {"type": "object"}}})),
        ),
    );

    predict_ops(&mut p, "/predict");
    predict_ops(&mut p, "/api/v1/predict");
    let detect = "detect";
    put(
        &mut p,
        "/api/v1/anomalies",
        "get",
        Op::new(detect, "Anomaly events, newest first")
            .query("device_id", string(), "only this device")
            .query("from", instant(), "since (default -24h)")
            .query("to", instant(), "until (default now)")
            .query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 10000}),
                "at most (default 100)",
            )
            .json("200", "events", "Anomalies"),
    );
    put(
        &mut p,
        "/ws/events",
        "get",
        Op::new(detect, "Quality and anomaly events pushed over WebSocket")
            .query(
                "device_id",
                string(),
                "only these devices (comma-separated)",
            )
            .query(
                "kind",
                json!({"type": "string", "enum": ["anomaly", "quality"]}),
                "only this kind",
            )
            .query(
                "access_token",
                string(),
                "bearer token (only here and on /ws, for browsers)",
            )
            .resp(
                "101",
                "switching to WebSocket; each text message is one event or `{lagged: n}`",
                None,
            ),
    );
    put(
        &mut p,
        "/api/v1/quality",
        "get",
        Op::new(detect, "Quality score per device and recent quality events")
            .query("device_id", string(), "only this device")
            .query("from", instant(), "since (default -1h)")
            .query("to", instant(), "until (default now)")
            .query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 10000}),
                "most events (default 100)",
            )
            .json("200", "scores and events", "Quality"),
    );
    put(
        &mut p,
        "/api/v1/models/load",
        "post",
        Op::new(
            detect,
            "Load an autoencoder saved by `fieldlab detect train` under the models directory (detect.models_dir, default <data_dir>/models)",
        )
        .json_body("ModelLoadRequest")
        .json("200", "loaded", "ModelLoaded")
        .problem("400", "empty path, or `..` in it (path traversal)")
        .problem("403", "the path leads outside the models directory (absolute path or symlink)")
        .problem("404", "no such model in the models directory")
        .problem("422", "the file is not a model"),
    );

    let rl = "ratelimit";
    for base in ["/api/ratelimit", "/api/v1/ratelimit"] {
        let seed = if base == "/api/ratelimit" {
            " (legacy path)"
        } else {
            ""
        };
        put(
            &mut p,
            &format!("{base}/check"),
            "post",
            Op::new(rl, &format!("Check and take tokens for a key{seed}"))
                .json_body("CheckRequest")
                .json("200", "allowed", "Decision")
                .json("429", "rejected", "Decision"),
        );
        put(
            &mut p,
            &format!("{base}/release"),
            "post",
            Op::new(rl, &format!("Give back a concurrency lease{seed}"))
                .json_body("ReleaseRequest")
                .json("200", "released", "Released"),
        );
        put(
            &mut p,
            &format!("{base}/stats"),
            "get",
            Op::new(rl, &format!("Decisions per policy, backend facts{seed}")).json(
                "200",
                "statistics",
                "Object",
            ),
        );
        put(
            &mut p,
            &format!("{base}/config"),
            "get",
            Op::new(rl, &format!("Every rule and where it came from{seed}"))
                .json("200", "rules", "Object"),
        );
        for (kind, name) in [("keys", "key"), ("patterns", "pattern")] {
            let path = format!("{base}/config/{kind}/{{{name}}}");
            let what = if kind == "keys" {
                "an exact-key policy"
            } else {
                "a pattern policy (`*` wildcard)"
            };
            let rule = |op: Op| {
                op.path(name, &format!("the {name}"))
                    .json("200", "the rule", "Rule")
            };
            put(
                &mut p,
                &path,
                "get",
                rule(Op::new(rl, &format!("Read {what}{seed}"))).problem("404", "no such rule"),
            );
            for m in ["put", "post"] {
                put(
                    &mut p,
                    &path,
                    m,
                    rule(Op::new(rl, &format!("Set {what}{seed}")))
                        .json_body("Policy")
                        .problem("409", "defined in fieldlab.yaml"),
                );
            }
            put(
                &mut p,
                &path,
                "delete",
                Op::new(rl, &format!("Remove {what}{seed}"))
                    .path(name, &format!("the {name}"))
                    .resp("204", "removed", None)
                    .problem("404", "not set through the API"),
            );
        }
        let path = format!("{base}/config/default");
        put(
            &mut p,
            &path,
            "get",
            Op::new(rl, &format!("The default policy{seed}")).json("200", "the policy", "Rule"),
        );
        for m in ["put", "post"] {
            put(
                &mut p,
                &path,
                m,
                Op::new(rl, &format!("Set the default policy{seed}"))
                    .json_body("Policy")
                    .json("200", "the policy", "Rule"),
            );
        }
    }

    let auth = "auth";
    put(
        &mut p,
        "/api/v1/auth/token",
        "post",
        Op::new(auth, "A bearer token for a user name and password")
            .body(json!({
                "application/json": {"schema": schema_ref("TokenRequest")},
                "application/x-www-form-urlencoded": {"schema": schema_ref("TokenRequest")},
            }))
            .json("200", "OAuth2 token response", "TokenResponse")
            .problem("401", "wrong user name or password")
            .problem("404", "auth is disabled")
            .problem("429", "too many failed logins: wait `Retry-After` seconds")
            .problem("503", "every password check worker is busy"),
    );
    put(
        &mut p,
        "/api/v1/auth/whoami",
        "get",
        Op::new(auth, "The caller's principal").json("200", "who is calling", "Principal"),
    );
    p
}

/// Fold the paths and schemas of an OpenAPI fragment in. Operations already described win.
fn fold(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>, doc: &Value, tag: &str) {
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let target = paths.entry(path.clone()).or_insert_with(|| json!({}));
            if target.get(method).is_some() {
                continue;
            }
            let mut op = op.clone();
            if op.get("tags").is_none() {
                op["tags"] = json!([tag]);
            }
            // The fragment's own scopes are replaced by the router-wide roles in `finish`.
            if let Some(s) = op.as_object_mut().and_then(|o| o.remove("security")) {
                let scopes: Vec<String> = s
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .flat_map(|o| o.values())
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                if !scopes.is_empty() {
                    op["x-standalone-scopes"] = json!(scopes);
                }
            }
            target[method] = op;
        }
    }
    for (name, s) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        schemas.entry(name.clone()).or_insert_with(|| s.clone());
    }
}

/// The emulator fragment says "200 OK" everywhere; give each operation its real answers.
fn emulator_responses(paths: &mut Map<String, Value>) {
    let device = json!({"application/json": {"schema": schema_ref("EmulatedDevice")}});
    for base in ["/api/v1/devices", "/devices"] {
        let set = |paths: &mut Map<String, Value>,
                   p: &str,
                   m: &str,
                   code: &str,
                   d: &str,
                   c: Option<Value>| {
            if let Some(op) = paths
                .get_mut(&format!("{base}{p}"))
                .and_then(|i| i.get_mut(m))
            {
                let mut r = json!({"description": d});
                if let Some(c) = c {
                    r["content"] = c;
                }
                let responses = &mut op["responses"];
                if let Some(o) = responses.as_object_mut() {
                    o.remove("200");
                }
                responses[code] = r;
            }
        };
        set(
            paths,
            "",
            "post",
            "201",
            "the created device (or `{devices: [...]}` for several)",
            Some(json!({"application/json": {"schema": {"type": "object"}}})),
        );
        set(paths, "/{id}", "delete", "204", "deleted", None);
        set(
            paths,
            "/{id}/faults",
            "post",
            "201",
            "the active fault (its id is the annotation id)",
            Some(json!({"application/json": {"schema": schema_ref("ActiveFault")}})),
        );
        set(
            paths,
            "/{id}/status",
            "get",
            "200",
            "the device",
            Some(device.clone()),
        );
    }
    for p in ["/api/v1/emulator/devices/{id}"] {
        if let Some(op) = paths.get_mut(p).and_then(|i| i.get_mut("get")) {
            op["responses"]["200"] = json!({"description": "the device", "content": device});
        }
    }
    put(
        paths,
        "/api/v1/emulator/openapi.json",
        "get",
        Op::new("emulator", "OpenAPI 3.1 of the emulator routes alone").resp(
            "200",
            "OpenAPI 3.1",
            Some(json!({"application/json": {"schema": {"type": "object"}}})),
        ),
    );
    if let Some(op) = paths.get_mut("/ws").and_then(|i| i.get_mut("get")) {
        op["description"] = json!("A WebSocket handshake (`Upgrade: websocket`); each text message is `{topic, message}` or `{lagged: n}`. Browsers may pass the bearer token as `?access_token=`.");
        op["responses"] = json!({"101": {"description": "switching to WebSocket"}});
        if let Some(a) = op["parameters"].as_array_mut() {
            a.push(
                json!({"name": "access_token", "in": "query", "schema": {"type": "string"},
                "description": "bearer token (only here, for browsers)"}),
            );
        }
    }
}

/// Parameters the proof verifier's fragment leaves out.
fn verifier_parameters(paths: &mut Map<String, Value>) {
    let add = |paths: &mut Map<String, Value>, p: &str, m: &str, params: Value| {
        if let Some(op) = paths.get_mut(p).and_then(|i| i.get_mut(m)) {
            if op.get("parameters").is_none() {
                op["parameters"] = params;
            }
        }
    };
    let index = json!([{"name": "index", "in": "path", "required": true, "schema": integer(0)}]);
    add(paths, "/registry/entries/{index}", "get", index.clone());
    add(paths, "/registry/proof/inclusion/{index}", "get", index);
    add(
        paths,
        "/registry/entries",
        "get",
        json!([
            {"name": "offset", "in": "query", "schema": integer(0)},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}},
        ]),
    );
    add(
        paths,
        "/registry/entries",
        "post",
        json!([{"name": "name", "in": "query", "schema": string()}]),
    );
    add(
        paths,
        "/registry/proof/consistency",
        "get",
        json!([{"name": "from", "in": "query", "required": true, "schema": integer(0)}]),
    );
    if let Some(op) = paths
        .get_mut("/registry/entries")
        .and_then(|i| i.get_mut("post"))
    {
        if op.get("requestBody").is_none() {
            op["requestBody"] = json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
        }
    }
}

/// The path with every `{param}` filled in, as a request would name it.
pub fn concrete(path: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').map_or(rest.len(), |e| i + e);
        out.push_str(&value(rest[i + 1..end].trim_start_matches('*')));
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// Security, operation ids, missing path parameters and the problem answers of every operation.
fn finish(paths: &mut Map<String, Value>, public_metrics: bool) {
    for (path, item) in paths.iter_mut() {
        let names: Vec<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|s| s.trim_start_matches('*').to_string())
            .collect();
        for method in METHODS {
            let Some(op) = item.get_mut(*method) else {
                continue;
            };
            op["operationId"] = json!(operation_id(method, path));
            if op.get("parameters").is_none() {
                op["parameters"] = json!([]);
            }
            let params = op["parameters"].as_array_mut().expect("parameters");
            for n in &names {
                if !params.iter().any(|p| p["in"] == "path" && p["name"] == *n) {
                    params.push(
                        json!({"name": n, "in": "path", "required": true, "schema": string()}),
                    );
                }
            }
            if op.get("responses").is_none_or(|r| {
                !r.as_object()
                    .is_some_and(|o| o.keys().any(|k| k.starts_with('2') || k.starts_with('1')))
            }) {
                op["responses"]["200"] =
                    json!({"description": "OK", "content": {"application/json": {"schema": {}}}});
            }
            let responses = op["responses"].as_object_mut().expect("responses");
            let problem = json!({"$ref": "#/components/responses/Problem"});
            for code in ["4XX", "5XX"] {
                responses.entry(code).or_insert_with(|| problem.clone());
            }
            match required(
                &method.to_ascii_uppercase(),
                &concrete(path, |_| "x".into()),
                public_metrics,
            ) {
                Requirement::Public => {
                    op["security"] = json!([]);
                }
                Requirement::AnyOf(roles) => {
                    op["security"] = json!([{"bearerAuth": []}, {"apiKey": []}]);
                    op["x-required-roles"] =
                        json!(roles.iter().map(|r| r.as_str()).collect::<Vec<_>>());
                    let responses = op["responses"].as_object_mut().expect("responses");
                    responses.insert("401".into(), problem.clone());
                    if Role::ALL.iter().any(|r| !roles.contains(r)) {
                        responses.insert("403".into(), problem.clone());
                    }
                }
            }
        }
    }
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(
            seg.trim_matches(|c| c == '{' || c == '}' || c == '*')
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    if path == "/" {
        id.push_str("_root");
    } else if path.ends_with('/') {
        id.push_str("_slash");
    }
    id
}

/// `(METHOD, path template)` of every operation in `doc`.
pub fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for m in METHODS {
            if item.get(*m).is_some() {
                out.insert((m.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// An operation that needs credentials, as the security tests call it.
#[derive(Debug, Clone)]
pub struct Guarded {
    pub method: String,
    /// The path with its parameters filled in (`1` for integers, `t1` otherwise).
    pub path: String,
    pub template: String,
    /// The roles of `x-required-roles`.
    pub roles: Vec<Role>,
}

impl Guarded {
    /// A role that may not call this operation, if there is one.
    pub fn lacking_role(&self) -> Option<Role> {
        Role::ALL.into_iter().find(|r| !self.roles.contains(r))
    }
}

/// Every operation of `doc` with a non-empty `security`.
pub fn guarded(doc: &Value) -> Vec<Guarded> {
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().into_iter().flatten() {
        for m in METHODS {
            let Some(op) = item.get(*m) else { continue };
            if op["security"].as_array().is_none_or(|s| s.is_empty()) {
                continue;
            }
            let integer = |name: &str| {
                op["parameters"].as_array().into_iter().flatten().any(|p| {
                    p["in"] == "path" && p["name"] == name && p["schema"]["type"] == "integer"
                })
            };
            let roles = op["x-required-roles"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    Role::ALL
                        .into_iter()
                        .find(|x| Some(x.as_str()) == r.as_str())
                })
                .collect();
            out.push(Guarded {
                method: m.to_ascii_uppercase(),
                path: concrete(template, |n| {
                    if integer(n) { "1" } else { "t1" }.to_string()
                }),
                template: template.clone(),
                roles,
            });
        }
    }
    out
}

/// The path templates of a router's routes, read from its `Debug` output: axum has no public
/// way to list routes, and its `Debug` prints each route's path (`RouteId(n): "/path"`).
/// Wildcards are written the OpenAPI way (`{*path}` becomes `{path}`); axum's internal
/// fallback and nest paths are left out. Tests assert that known routes are found, so a
/// change of that format fails loudly rather than silently finding nothing.
pub fn route_paths<S>(router: &Router<S>) -> BTreeSet<String> {
    let text = format!("{router:?}");
    let mut out = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("RouteId(") {
        rest = &rest[i + 8..];
        let Some(j) = rest.find("): \"") else { break };
        if !rest[..j].bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        rest = &rest[j + 4..];
        let Some(end) = rest.find('"') else { break };
        let path = &rest[..end];
        if !path.contains("__private__axum") {
            out.insert(path.replace("{*", "{"));
        }
        rest = &rest[end..];
    }
    out
}

/// The methods a running router serves on `path` (a concrete path), from the `Allow` header
/// of its 405 answer to a method no route has. `HEAD` (implied by `GET`) is left out.
pub async fn served_methods(app: &Router, path: &str) -> BTreeSet<String> {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(axum::http::Method::from_bytes(b"PROPFIND").expect("method"))
        .uri(path)
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    resp.headers()
        .get(axum::http::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty() && m != "HEAD")
        .collect()
}

/// Differences between the operations of `doc` and what `app` serves on `paths` (templates
/// found with [`route_paths`]), as readable lines; empty when they agree.
pub async fn undocumented(app: &Router, paths: &BTreeSet<String>, doc: &Value) -> Vec<String> {
    let documented = operations(doc);
    let mut by_path: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (m, p) in &documented {
        by_path.entry(p).or_default().insert(m.clone());
    }
    let mut out = Vec::new();
    for p in paths {
        if !by_path.contains_key(p.as_str()) {
            out.push(format!("{p}: served but not in the document"));
        }
    }
    for (p, methods) in by_path {
        let served = served_methods(app, &concrete(p, |_| "x1".into())).await;
        if served != methods {
            out.push(format!(
                "{p}: document has {methods:?}, the router serves {served:?}"
            ));
        }
    }
    out
}

/// Schemas of the native routes.
fn schemas() -> Map<String, Value> {
    let obj = |props: Value, req: &[&str]| json!({"type": "object", "properties": props, "required": req});
    let s = json!({
        "Problem": obj(json!({
            "type": {"type": "string", "format": "uri"}, "title": {"type": "string"},
            "status": {"type": "integer"}, "detail": {"type": "string"},
            "instance": {"type": "string"}, "parameter": {"type": "string", "description": "the bad parameter or field"}}),
            &["type", "title", "status", "detail"]),
        "Object": {"type": "object"},
        "Liveness": obj(json!({"status": {"const": "ok"}, "uptime_seconds": {"type": "integer"}}), &["status"]),
        "Readiness": obj(json!({"status": {"enum": ["UP", "DOWN"]},
            "components": {"type": "object", "additionalProperties": obj(json!({"status": {"enum": ["UP", "DOWN"]},
                "reason": {"type": "string", "description": "why the part is down, when known (e.g. the store's write error)"}}), &["status"])}}),
            &["status", "components"]),
        "DeviceEntry": obj(json!({"device_id": {"type": "string"}, "device_type": {"type": "string"},
            "emulated": {"type": "boolean"}, "last_seen": {"type": ["string", "null"], "format": "date-time"},
            "last_seq": {"type": ["integer", "null"]}, "messages": {"type": "integer"},
            "units": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "field -> unit, from the emulator's device catalog (empty for types it does not know)"}}), &["device_id"]),
        "DeviceList": obj(json!({"count": {"type": "integer"}, "devices": {"type": "array", "items": schema_ref("DeviceEntry")}}), &["count", "devices"]),
        "SeriesInfo": obj(json!({"device_id": {"type": "string"}, "field": {"type": "string"},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "first": {"type": "string", "format": "date-time"}, "last": {"type": "string", "format": "date-time"}}),
            &["device_id", "field"]),
        "DeviceDetail": {"allOf": [schema_ref("DeviceEntry"),
            obj(json!({"series": {"type": "array", "items": schema_ref("SeriesInfo")}}), &["series"])]},
        "SeriesList": obj(json!({"count": {"type": "integer"}, "series": {"type": "array", "items": schema_ref("SeriesInfo")}}), &["count", "series"]),
        "Quarantine": obj(json!({"total": {"type": "integer", "description": "entries held now"}, "dropped": {"type": "integer", "description": "entries deleted to keep the quarantine within storage.quarantine_max_bytes"}, "next_offset": {"type": ["integer", "null"], "description": "offset of the next page; null on the last"}, "items": {"type": "array", "items": {"type": "object"}}}), &["total", "items"]),
        "QueryResult": obj(json!({"from": {"type": ["string", "null"]}, "to": {"type": ["string", "null"]},
            "step": {"type": ["string", "null"]}, "agg": {},
            "series": {"type": "array", "items": obj(json!({"device_id": {"type": "string"}, "field": {"type": "string"},
                "tags": {"type": "object"}, "count": {"type": "integer"}, "truncated": {"type": "boolean"},
                "points": {"type": "array", "items": {"type": "object", "description": "`{ts, value}` or `{ts, <agg>...}`"}}}),
                &["device_id", "field", "points"])}}), &["series"]),
        "Index": obj(json!({"name": {"type": "string"}, "version": {"type": "string"}, "mqtt": {"type": "string"},
            "endpoints": {"type": "array", "items": {"type": "string"}}}), &["name", "version"]),
        "EndpointProbe": {"type": "object",
            "properties": {"auth": obj(json!({"enabled": {"type": "boolean"}}), &["enabled"])},
            "required": ["auth"],
            "additionalProperties":
            obj(json!({"available": {"type": "boolean"}, "status": {"type": "integer"}}), &["available", "status"])},
    });
    let s2 = json!({
        "PredictRequest": {"type": "object", "required": ["data"], "additionalProperties": false, "properties": {
            "data": {"type": "array", "description": "rows of feature values (null = missing)",
                "items": {"type": "array", "items": {"type": ["number", "null"]}}},
            "window_size": {"type": "integer", "minimum": 2, "description": "at least 3 for robust_z and ensemble, 2 for the others; at most detect.predict.max_window"}, "method": {"type": "string", "examples": ["ensemble", "robust_z", "autoencoder"]},
            "threshold": {"type": "number"}, "async": {"type": "boolean"}}},
        "BatchPredictRequest": {"type": "object", "required": ["data"], "additionalProperties": false, "properties": {
            "data": {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": ["number", "null"]}}}},
            "window_size": {"type": "integer", "minimum": 2}, "method": {"type": "string"}, "threshold": {"type": "number"}}},
        "PredictResult": {"type": "object"},
        "JobAccepted": obj(json!({"id": {"type": "string"}, "status": {"const": "pending"}, "status_url": {"type": "string"}}), &["id", "status", "status_url"]),
        "Job": obj(json!({"id": {"type": "string"}, "status": {"enum": ["pending", "done", "failed"]},
            "results": {"type": "array", "description": "when done, one per row set: {\"result\": PredictResult} or {\"error\": problem details}",
                "items": {"type": "object"}},
            "error": {"type": "object", "description": "when failed: problem details"}}), &["id", "status"]),
        "Anomalies": obj(json!({"count": {"type": "integer"}, "anomalies": {"type": "array", "items": {"type": "object"}}}), &["count", "anomalies"]),
        "Quality": obj(json!({"from": {"type": "string"}, "to": {"type": "string"}, "devices": {}, "events": {}}), &["from", "to"]),
        "ModelLoadRequest": {"type": "object", "required": ["path"], "additionalProperties": false,
            "properties": {"path": {"type": "string", "description": "a model directory relative to the models directory (detect.models_dir, default <data_dir>/models), or an absolute path inside it"}}},
        "ModelLoaded": obj(json!({"loaded": {"type": "string"}, "model": {"type": "object"}}), &["loaded"]),
    });
    let s3 = json!({
        "CheckRequest": {"type": "object", "required": ["key"], "additionalProperties": false, "properties": {
            "key": {"type": "string", "minLength": 1, "maxLength": 512, "examples": ["user:42"]},
            "tokens": {"type": "integer", "minimum": 0, "default": 1}}},
        "Decision": obj(json!({"allowed": {"type": "boolean"}, "remaining": {"type": "integer"}}), &["allowed"]),
        "ReleaseRequest": {"type": "object", "required": ["key", "lease"], "additionalProperties": false, "properties": {
            "key": {"type": "string"}, "lease": {"type": "string", "description": "the lease /check returned"}}},
        "Released": obj(json!({"key": {"type": "string"}, "lease": {"type": "string"}, "released": {"type": "boolean"}}), &["released"]),
        "Rule": obj(json!({"key": {"type": "string"}, "pattern": {"type": "string"}, "policy": {"type": "object"}}), &["policy"]),
        "Policy": {"anyOf": [
            {"type": "object", "required": ["limits"], "additionalProperties": false, "properties": {
                "limits": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["algorithm", "limit", "period"], "properties": {
                    "algorithm": {"enum": <fieldlab_ratelimit::Algorithm as VariantNames>::VARIANTS},
                    "limit": {"type": "integer", "minimum": 0}, "period": {"type": "string", "examples": ["1s", "1m"]},
                    "burst": {"type": "integer", "minimum": 0}, "max_delay": {"type": "string"}}}},
                "shadow": {"type": "boolean"}, "fail": {"enum": <fieldlab_ratelimit::FailMode as VariantNames>::VARIANTS}}},
            {"type": "object", "description": "the legacy shape", "required": ["capacity", "refillRate"], "additionalProperties": false, "properties": {
                "capacity": {"type": "integer", "minimum": 0}, "refillRate": {"type": "integer", "minimum": 0},
                "algorithm": {"type": "string"}, "cleanupIntervalMs": {"type": "integer", "minimum": 0}}}]},
    });
    let s4 = json!({
        "TokenRequest": {"type": "object", "required": ["username", "password"], "properties": {
            "grant_type": {"const": "password"}, "username": {"type": "string"}, "password": {"type": "string", "format": "password"}}},
        "TokenResponse": obj(json!({"access_token": {"type": "string"}, "token_type": {"const": "Bearer"}, "expires_in": {"type": "integer"}}),
            &["access_token", "token_type", "expires_in"]),
        "Principal": obj(json!({"subject": {"type": "string"},
            "roles": {"type": "array", "items": {"enum": Role::ALL.map(|r| r.as_str())}},
            "scopes": {"type": "array", "items": {"type": "string"}}, "method": {"type": "string"}}), &["subject", "roles"]),
        "EmulatedDevice": obj(json!({"device_id": {"type": "string"}, "device_type": {"type": "string"},
            "state": {"type": "string"}, "update_interval": {"type": "number"}, "topic": {"type": "string"},
            "seq": {"type": "integer"}, "messages_published": {"type": "integer"},
            "scenario": {"type": ["object", "null"]}, "faults": {"type": "array", "items": schema_ref("ActiveFault")},
            "config": {"type": "object"}}), &["device_id", "device_type", "state"]),
        "ActiveFault": obj(json!({"id": {"type": "integer"}, "kind": {"type": "string"}, "field": {"type": ["string", "null"]},
            "start_ms": {"type": "integer"}, "end_ms": {"type": ["integer", "null"]}, "spec": {"type": "object"}}), &["id", "kind"]),
    });
    let mut out = Map::new();
    for part in [s, s2, s3, s4] {
        if let Value::Object(m) = part {
            out.extend(m);
        }
    }
    out
}

#[cfg(test)]
mod tests;
