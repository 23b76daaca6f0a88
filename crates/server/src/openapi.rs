//! One OpenAPI 3.1 document for every route `fieldlab up` serves, at `GET /openapi.json`.
//!
//! Why it exists: clients, the web UI and test tools (schemathesis) need one description of the
//! whole API, not one per part. Paths are assembled here with [`fieldlab_http::openapi`]; every
//! body schema is derived from the Rust type the handler reads or answers (utoipa's
//! `ToSchema`), so a field added to a type shows up here by itself. The emulator's fragment
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
use fieldlab_core::Role;
use fieldlab_http::openapi::{Doc, Op};
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
    let Doc {
        mut paths,
        mut schemas,
    } = native_paths();
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
    if let Some(x) = extra {
        fold(&mut paths, &mut schemas, x, "proofs");
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
    .query(
        "with",
        json!({"type": "string", "examples": ["quality", "anomaly", "quality,anomaly"]}),
        "verdict columns for raw points, comma separated (from `Verdict`'s names): `quality` (rules the reading broke, null when none) and `anomaly` (the live detector's score 0..1, null when not scored)",
    )
}

fn predict_ops(paths: &mut Doc, base: &str) {
    let tag = "detect";
    paths.put(
        &format!("POST {base}"),
        Op::new(tag, "Score rows for anomalies (the legacy /predict)")
            .json_body::<fieldlab_watch::predict::PredictRequest>()
            .json::<fieldlab_watch::predict::PredictResult>("200", "scores per row")
            .json::<crate::detect::JobAccepted>("202", "queued as a job (`async: true`)")
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
    paths.put(
        &format!("POST {base}/batch"),
        Op::new(tag, "Score several row sets as one job")
            .json_body::<crate::detect::BatchPredictRequest>()
            .json::<crate::detect::JobAccepted>("202", "the job's id and status URL")
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
    paths.put(
        &format!("GET {base}/status/{{id}}"),
        Op::new(tag, "A job's state and results")
            .path("id", "job id from the 202 answer")
            .json::<crate::detect::Job>("200", "the job")
            .problem("404", "no such job"),
    );
}

/// An endpoint that answers for the whole fleet when the server is one replica of several
/// (see [`crate::fleet`]): the scope header peers send, the 503 of a replica that did not
/// answer, and the 413 of an answer larger than its budget.
fn fleet(op: Op) -> Op {
    op.param(
        fieldlab_core::cluster::SCOPE_HEADER,
        "header",
        json!({"type": "string", "enum": [fieldlab_core::cluster::SCOPE_LOCAL]}),
        "`local`: only the devices this replica owns, without asking the other replicas (what replicas send each other); without it a replica of a cluster answers for the whole fleet",
    )
    .problem(
        "503",
        "a replica of the cluster did not answer its share (named in `detail`); see `Retry-After`",
    )
    .problem(
        "413",
        "the other replicas' shares of this answer exceed `server.fleet_answer_max_size`: narrow it, or ask each replica for its own share",
    )
}

/// The routes of [`crate::routes`], [`crate::data`], [`crate::ui`], [`crate::detect`],
/// [`crate::ratelimit`], [`crate::auth_routes`] and this module.
fn native_paths() -> Doc {
    let mut p = Doc::default();
    let health = "health";
    for path in ["/health", "/healthz", "/health/live"] {
        p.put(
            &format!("GET {path}"),
            Op::new(health, "Liveness: the process answers")
                .json::<crate::routes::Liveness>("200", "alive"),
        );
    }
    for path in ["/ready", "/readyz", "/health/ready", "/actuator/health"] {
        p.put(
            &format!("GET {path}"),
            Op::new(health, "Readiness: store, broker and ingest are up")
                .json::<crate::routes::Readiness>("200", "ready")
                .json::<crate::routes::Readiness>("503", "a component is down (see `components`)"),
        );
    }
    p.put("GET /metrics",
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
        p.put(
            &format!("GET {path}"),
            fleet(Op::new(data, "Known devices with type and last-seen time"))
                .json::<crate::routes::DeviceList>("200", "devices"),
        );
    }
    p.put(
        "GET /api/v1/devices/{id}",
        fleet(Op::new(data, "One device and its series"))
            .path("id", "device id")
            .json::<crate::routes::DeviceDetail>("200", "the device")
            .problem("404", "unknown device"),
    );
    p.put(
        "GET /api/v1/series",
        fleet(Op::new(data, "Stored series with their tags"))
            .query("device_id", string(), "only this device's series")
            .json::<crate::routes::SeriesList>("200", "series"),
    );
    p.put(
        "GET /api/v1/quarantine",
        Op::new(data, "Payloads that could not be parsed, newest first")
            .query("limit", integer(0), "at most this many (capped at 10000)")
            .query("offset", integer(0), "skip this many")
            .json::<crate::routes::Quarantine>("200", "quarantined payloads"),
    );
    p.put("GET /api/v1/query",
        selection(fleet(Op::new(data, "Query several series: raw points or buckets")))
            .describe("At least one of `device_id`, `device_type`, `field`, `site` or `tag.<name>` selects the series; `tag.<name>=value` filters by any tag.")
            .json::<crate::data::QueryJson>("200", "the series")
            .problem("404", "nothing matches the selection"),
    );
    p.put("GET /api/v1/export",
        selection(fleet(Op::new(data, "Export a selection, streamed")))
            .query(
                "format",
                json!({"type": "string", "enum": fieldlab_export::Format::ALL.map(|f| f.extension())}),
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
    p.put("GET /api/v1/backup",
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
    p.put(
        "GET /",
        Op::new(
            ui,
            "The web UI for browsers (`Accept: text/html`), the JSON index for everyone else",
        )
        .json::<crate::routes::Index>("200", "the index (or the UI's HTML page)"),
    );
    p.put(
        "GET /api/v1",
        Op::new(ui, "The JSON index").json::<crate::routes::Index>("200", "the index"),
    );
    for path in ["/ui", "/ui/"] {
        p.put(
            &format!("GET {path}"),
            Op::new(ui, "The web UI's page").resp(
                "200",
                "HTML",
                Some(json!({"text/html": {"schema": string()}})),
            ),
        );
    }
    p.put(
        "GET /ui/{path}",
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
    p.put("GET /api/v1/ui/endpoints",
        Op::new(ui, "Which routes this server has (for the UI)")
            .param("path", "query", json!({"type": "array", "items": {"type": "string", "pattern": "^/"}, "minItems": 1, "maxItems": 32}),
                "absolute paths to probe (repeat the parameter)")
            .json::<crate::ui::EndpointProbe>("200", "availability per path")
            .problem("400", "no, too many or bad paths"));
    p.put(
        "GET /openapi.json",
        Op::new(ui, "This document").resp(
            "200",
            "OpenAPI 3.1",
            Some(json!({"application/json": {"schema": {"type": "object"}}})),
        ),
    );

    predict_ops(&mut p, "/predict");
    predict_ops(&mut p, "/api/v1/predict");
    let detect = "detect";
    p.put(
        "GET /api/v1/anomalies",
        fleet(Op::new(detect, "Anomaly events, newest first"))
            .query("device_id", string(), "only this device")
            .query("from", instant(), "since (default -24h)")
            .query("to", instant(), "until (default now)")
            .query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 10000}),
                "at most (default 100)",
            )
            .json::<crate::detect::Anomalies>("200", "events"),
    );
    p.put(
        "GET /ws/events",
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
    p.put(
        "GET /api/v1/quality",
        fleet(Op::new(
            detect,
            "Quality score per device and recent quality events",
        ))
        .query("device_id", string(), "only this device")
        .query("from", instant(), "since (default -1h)")
        .query("to", instant(), "until (default now)")
        .query(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 10000}),
            "most events (default 100)",
        )
        .json::<crate::detect::Quality>("200", "scores and events"),
    );
    p.put("POST /api/v1/models/load",
        Op::new(
            detect,
            "Load an autoencoder saved by `fieldlab detect train` under the models directory (detect.models_dir, default <data_dir>/models)",
        )
        .json_body::<crate::detect::ModelLoadRequest>()
        .json::<crate::detect::ModelLoaded>("200", "loaded")
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
        p.put(
            &format!("POST {base}/check"),
            Op::new(rl, &format!("Check and take tokens for a key{seed}"))
                .json_body::<crate::ratelimit::CheckRequest>()
                .json::<fieldlab_ratelimit::CheckAnswer>("200", "allowed")
                .json::<fieldlab_ratelimit::CheckAnswer>("429", "rejected"),
        );
        p.put(
            &format!("POST {base}/release"),
            Op::new(rl, &format!("Give back a concurrency lease{seed}"))
                .json_body::<crate::ratelimit::ReleaseRequest>()
                .json::<crate::ratelimit::Released>("200", "released"),
        );
        p.put(
            &format!("GET {base}/stats"),
            Op::new(rl, &format!("Decisions per policy, backend facts{seed}"))
                .json_object("200", "statistics"),
        );
        p.put(
            &format!("GET {base}/config"),
            Op::new(
                rl,
                &format!(
                    "Every rule, where it came from, and the rules' version (also the ETag){seed}"
                ),
            )
            .json_object("200", "rules"),
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
                    .json::<crate::ratelimit::Rule>("200", "the rule")
            };
            p.put(
                &format!("GET {path}"),
                rule(Op::new(rl, &format!("Read {what}{seed}"))).problem("404", "no such rule"),
            );
            for m in ["put", "post"] {
                p.put(
                    &format!("{m} {path}"),
                    rule(Op::new(rl, &format!("Set {what}{seed}")))
                        .json_body::<crate::ratelimit::PolicyBody>()
                        .problem("409", "defined in fieldlab.yaml")
                        .problem("412", "If-Match names an old version of the rules")
                        .problem("503", "the rules are kept in Redis and it does not answer"),
                );
            }
            p.put(
                &format!("DELETE {path}"),
                Op::new(rl, &format!("Remove {what}{seed}"))
                    .path(name, &format!("the {name}"))
                    .resp("204", "removed", None)
                    .problem("404", "not set through the API")
                    .problem("412", "If-Match names an old version of the rules")
                    .problem("503", "the rules are kept in Redis and it does not answer"),
            );
        }
        let path = format!("{base}/config/default");
        p.put(
            &format!("GET {path}"),
            Op::new(rl, &format!("The default policy{seed}"))
                .json::<crate::ratelimit::Rule>("200", "the policy"),
        );
        for m in ["put", "post"] {
            p.put(
                &format!("{m} {path}"),
                Op::new(rl, &format!("Set the default policy{seed}"))
                    .json_body::<crate::ratelimit::PolicyBody>()
                    .json::<crate::ratelimit::Rule>("200", "the policy")
                    .problem("412", "If-Match names an old version of the rules")
                    .problem("503", "the rules are kept in Redis and it does not answer"),
            );
        }
    }

    let auth = "auth";
    p.put(
        "POST /api/v1/auth/token",
        Op::new(auth, "A bearer token for a user name and password")
            .body_of::<crate::auth_routes::TokenRequest>(&[
                "application/json",
                "application/x-www-form-urlencoded",
            ])
            .json::<fieldlab_auth::IssuedToken>("200", "OAuth2 token response")
            .problem("401", "wrong user name or password")
            .problem("404", "auth is disabled")
            .problem("429", "too many failed logins: wait `Retry-After` seconds")
            .problem("503", "every password check worker is busy"),
    );
    p.put(
        "GET /api/v1/auth/whoami",
        Op::new(auth, "The caller's principal")
            .json::<fieldlab_core::Principal>("200", "who is calling"),
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

#[cfg(test)]
mod tests;
