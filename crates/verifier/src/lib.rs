//! fieldlab-verifier: the proof verifier REST API (seed `cap-verifier-api`).
//!
//! Why it exists: auditors and pipelines verify bundles and compile policies over HTTP.
//! The legacy verifier's /verify always said FAIL at ~25 requests/s, its JWT key sat in the source and a
//! literal token bypassed auth. Here every route runs the real `fieldlab-attest` code; bearer
//! JWTs are verified (RS256/EdDSA, iss/aud/exp) and each route needs its scope
//! (`verify:run`, `policy:compile`, `policy:read`, `registry:write`); TLS and mTLS use rustls
//! ([`tls`]). Mounted at the legacy paths by `fieldlab up`, or alone with its own health,
//! readiness, metrics and OpenAPI routes by `fieldlab cap serve`.
//!
//! Architecture invariant: handlers hold no lock across verification; the registry (SQLite)
//! is the only shared mutable state and sits behind one mutex.

#![allow(clippy::result_large_err)]

pub mod tls;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use fieldlab_attest::policy::{self, PolicyIr};
use fieldlab_attest::sign::PublicKeyFile;
use fieldlab_auth::jwt::JwtVerifier;
use fieldlab_core::Principal;
use fieldlab_http::openapi::schema;
use fieldlab_http::Problem;
use fieldlab_registry::{Registry, RegistryError};
use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How callers are authenticated.
pub enum Auth {
    /// Bearer JWTs checked by this verifier.
    Jwt(JwtVerifier),
    /// No authentication: every caller acts as the local admin (loopback demo only; the
    /// command line refuses this on a non-loopback address).
    Disabled,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReqLabels {
    pub route: Cow<'static, str>,
    pub result: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `fail`.
    pub result: &'static str,
}

/// `cap_verifier_*` metrics of the legacy verifier, plus the `fieldlab_attest_*` names the Grafana
/// "Proofs" dashboard queries.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<ReqLabels, Counter>,
    pub duration: Histogram,
    pub auth_failures: Counter,
    /// Every bundle verification (POST /verify and POST /proof/upload) by result.
    pub verifications: Family<ResultLabel, Counter>,
    /// Bundles that verified and were appended to the transparency log (POST /proof/upload).
    pub bundles: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let verifications = Family::<ResultLabel, Counter>::default();
        // Both series exist from the start (at 0), so `rate()` and `sum by (result)` have data.
        for result in ["ok", "fail"] {
            let _ = verifications.get_or_create(&ResultLabel { result });
        }
        Metrics {
            requests: Family::default(),
            duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            auth_failures: Counter::default(),
            verifications,
            bundles: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "cap_verifier_requests",
            "Verifier API requests by route and result (ok, fail, error)",
            self.requests.clone(),
        );
        r.register(
            "cap_verifier_request_duration_seconds",
            "Verifier API request latency",
            self.duration.clone(),
        );
        r.register(
            "cap_auth_token_validation_failures",
            "Bearer tokens refused (missing, invalid, expired, wrong issuer or audience)",
            self.auth_failures.clone(),
        );
        r.register(
            "fieldlab_attest_verifications",
            "Proof bundle verifications (POST /verify, POST /proof/upload) by result: ok or fail",
            self.verifications.clone(),
        );
        r.register(
            "fieldlab_attest_bundles",
            "Proof bundles verified and registered in the transparency log (POST /proof/upload)",
            self.bundles.clone(),
        );
    }

    /// Count one bundle verification.
    pub fn verified(&self, ok: bool) {
        let result = if ok { "ok" } else { "fail" };
        self.verifications
            .get_or_create(&ResultLabel { result })
            .inc();
    }
}

/// Everything the verifier API needs.
pub struct Verifier {
    pub auth: Auth,
    /// When not empty, bundles must be signed by one of these keys.
    pub trusted: Vec<PublicKeyFile>,
    /// Compiled policies by hash (and by id, the latest compiled).
    pub policies: RwLock<HashMap<String, PolicyIr>>,
    pub registry: Option<Mutex<Registry>>,
    pub metrics: Metrics,
}

pub type Shared = Arc<Verifier>;

impl Verifier {
    pub fn new(auth: Auth, trusted: Option<PublicKeyFile>, registry: Option<Registry>) -> Verifier {
        Verifier {
            auth,
            trusted: trusted.into_iter().collect(),
            policies: RwLock::new(HashMap::new()),
            registry: registry.map(Mutex::new),
            metrics: Metrics::default(),
        }
    }

    /// Require bundles to be signed by one of `keys` (a trusted keyring; empty: any signer).
    pub fn trusting(mut self, keys: Vec<PublicKeyFile>) -> Verifier {
        self.trusted = keys;
        self
    }
}

/// The API routes at the legacy paths (no health/metrics: those belong to the host server).
pub fn api(v: Shared) -> Router {
    Router::new()
        .route("/verify", post(verify))
        .route("/policy/compile", post(compile))
        .route("/policy/{id}", get(get_policy))
        .route("/proof/upload", post(upload))
        .route("/registry/checkpoint", get(checkpoint))
        .route("/registry/entries", get(entries).post(registry_add))
        .route("/registry/entries/{index}", get(entry))
        .route("/registry/proof/inclusion/{index}", get(prove_inclusion))
        .route("/registry/proof/consistency", get(prove_consistency))
        .layer(axum::middleware::from_fn_with_state(
            v.clone(),
            authenticate,
        ))
        .with_state(v)
}

/// The API plus `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, with request ids:
/// `fieldlab cap serve`.
pub fn standalone(v: Shared) -> Router {
    let mut reg = prometheus_client::registry::Registry::default();
    v.metrics.register(&mut reg);
    let reg = Arc::new(reg);
    let ready_v = v.clone();
    let app = api(v)
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(move || {
            let v = ready_v.clone();
            async move {
                let reg_ok = v.registry.as_ref().is_none_or(|r| r.lock().size().is_ok());
                let code = if reg_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (code, Json(json!({"status": if reg_ok { "UP" } else { "DOWN" }, "registry": v.registry.is_some()})))
            }
        }))
        .route("/metrics", get(move |headers: axum::http::HeaderMap| {
            let reg = reg.clone();
            async move { fieldlab_http::metrics::respond(&reg, &headers) }
        }))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .fallback(|uri: axum::http::Uri| async move { Problem::not_found(format!("no route for {}; see /openapi.json", uri.path())) });
    // As in `fieldlab up`: request ids and one log line per request.
    fieldlab_http::request_id::with_request_ids(app)
}

fn problem(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Response {
    Problem::new(status, slug, title, detail).into_response()
}

/// Bearer JWT -> [`Principal`] in the request extensions; 401 when missing or invalid.
async fn authenticate(State(v): State<Shared>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = route_label(req.uri().path());
    let principal = match &v.auth {
        Auth::Disabled => Ok(Principal::local_admin()),
        Auth::Jwt(j) => {
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "));
            match token {
                None => Err("send `Authorization: Bearer <JWT>`".to_string()),
                Some(t) => j.verify(t.trim()),
            }
        }
    };
    let resp = match principal {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(m) => {
            v.metrics.auth_failures.inc();
            // Let the client finish sending (a bundle is a few MiB at most), so the 401 reaches
            // it instead of a stream reset.
            fieldlab_http::drain_body(req.into_body(), 16 << 20, Duration::from_secs(10)).await;
            let mut r = problem(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", m);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"fieldlab-cap\"".parse().unwrap(),
            );
            r
        }
    };
    let result: Cow<'static, str> = match resp.status().as_u16() {
        200..=299 => match resp.headers().get("x-cap-result").map(|h| h.as_bytes()) {
            None => "ok".into(),
            Some(b"ok") => "ok".into(),
            Some(b"fail") => "fail".into(),
            Some(other) => String::from_utf8_lossy(other).into_owned().into(),
        },
        400..=499 => "rejected".into(),
        _ => "error".into(),
    };
    v.metrics
        .requests
        .get_or_create(&ReqLabels { route, result })
        .inc();
    v.metrics.duration.observe(start.elapsed().as_secs_f64());
    resp
}

/// The route template of a request path (one label value per route, not per id).
fn route_label(path: &str) -> Cow<'static, str> {
    const FIXED: [&str; 6] = [
        "/verify",
        "/policy/compile",
        "/proof/upload",
        "/registry/checkpoint",
        "/registry/entries",
        "/registry/proof/consistency",
    ];
    if let Some(f) = FIXED.iter().find(|f| **f == path) {
        (*f).into()
    } else if path.starts_with("/policy/") {
        "/policy/{id}".into()
    } else if path.starts_with("/registry/entries/") {
        "/registry/entries/{index}".into()
    } else if path.starts_with("/registry/proof/inclusion/") {
        "/registry/proof/inclusion/{index}".into()
    } else {
        path.to_string().into()
    }
}

fn need(p: &Principal, scope: &str) -> Result<(), Response> {
    if p.has_scope(scope) {
        Ok(())
    } else {
        Err(problem(
            StatusCode::FORBIDDEN,
            "insufficient-scope",
            "Insufficient scope",
            format!(
                "this route needs the scope `{scope}`; the token of `{}` has: {}",
                p.subject,
                if p.scopes.is_empty() {
                    "(none)".into()
                } else {
                    p.scopes.join(" ")
                }
            ),
        ))
    }
}

/// A bundle sent as JSON rather than as the zip itself.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct BundleJson {
    /// The bundle's zip, base64.
    bundle_base64: String,
}

/// Policy YAML sent as JSON.
#[derive(serde::Deserialize, utoipa::ToSchema)]
struct PolicyJson {
    /// The policy's YAML text.
    policy: String,
}

/// The bundle bytes: a raw zip body (not copied), or JSON `{"bundle_base64": "..."}`.
fn bundle_bytes(headers: &HeaderMap, body: &Bytes) -> Result<Bytes, Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") {
        use base64::Engine;
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            problem(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "Invalid body",
                format!("JSON body: {e}"),
            )
        })?;
        let b: BundleJson = serde_json::from_value(v).map_err(|_| {
            problem(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "Invalid body",
                "JSON body needs `bundle_base64`; or send the zip itself as application/zip",
            )
        })?;
        base64::engine::general_purpose::STANDARD
            .decode(b.bundle_base64)
            .map(Bytes::from)
            .map_err(|_| {
                problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-body",
                    "Invalid body",
                    "`bundle_base64` is not base64",
                )
            })
    } else if body.is_empty() {
        Err(problem(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "Invalid body",
            "send the bundle (zip) as the request body",
        ))
    } else {
        Ok(body.clone())
    }
}

/// The JSON answer for a verified bundle: the report, `result` (`OK`/`FAIL`) and any extra
/// members, serialised in one go (no intermediate `serde_json::Value` of the report).
#[derive(serde::Serialize)]
struct ReportBody<'a> {
    result: &'static str,
    #[serde(flatten)]
    report: &'a fieldlab_attest::bundle::Report,
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
}

fn report_response(r: &fieldlab_attest::bundle::Report, extra: Value) -> Response {
    let extra = match extra {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let body = ReportBody {
        result: if r.ok { "OK" } else { "FAIL" },
        report: r,
        extra,
    };
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(
        "x-cap-result",
        if r.ok { "ok" } else { "fail" }.parse().unwrap(),
    );
    resp
}

/// What `verify` and `upload` begin with: the caller's `scope`, the bundle out of the body, and
/// its verification against the trusted keys (counted).
fn verified_bundle(
    v: &Verifier,
    p: &Principal,
    scope: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Bytes, fieldlab_attest::bundle::Report), Response> {
    need(p, scope)?;
    let bytes = bundle_bytes(headers, body)?;
    let r = fieldlab_attest::bundle::verify_trusting(&bytes, &v.trusted);
    v.metrics.verified(r.ok);
    Ok((bytes, r))
}

async fn verify(
    State(v): State<Shared>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match verified_bundle(&v, &p, "verify:run", &headers, &body) {
        Ok((_, r)) => report_response(&r, Value::Null),
        Err(r) => r,
    }
}

async fn upload(
    State(v): State<Shared>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (bytes, r) = match verified_bundle(&v, &p, "registry:write", &headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !r.ok {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bundle-invalid",
            "Bundle does not verify",
            r.reason.clone().unwrap_or_default(),
        );
        p.parameter = Some("body".into());
        return p.into_response();
    }
    let Some(reg) = &v.registry else {
        return report_response(&r, json!({"registered": false}));
    };
    let meta = json!({"type": "bundle", "policy_id": r.policy_id, "manifest_hash": r.manifest_hash, "signer": r.signer_kid, "uploaded_by": p.subject});
    let name = format!("{}.zip", r.manifest_hash.clone().unwrap_or_default());
    let added = reg.lock().add(&name, &bytes, meta);
    match added {
        Ok((e, note)) => {
            v.metrics.bundles.inc();
            report_response(
                &r,
                json!({"registered": true, "entry": e, "checkpoint": note}),
            )
        }
        Err(m) => Problem::internal(m.to_string()).into_response(),
    }
}

async fn compile(
    State(v): State<Shared>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = need(&p, "policy:compile") {
        return r;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let text = if ct.starts_with("application/json") {
        match serde_json::from_slice::<PolicyJson>(&body) {
            Ok(p) => p.policy,
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-body",
                    "Invalid body",
                    "JSON body needs `policy` (the YAML text); or send the YAML itself",
                )
            }
        }
    } else {
        String::from_utf8_lossy(&body).to_string()
    };
    let l = policy::lint(&text);
    let findings = serde_json::to_value(&l.findings).unwrap_or(Value::Null);
    let code = l.exit_code();
    match l.ir {
        Some(ir) => {
            let h = ir.hash();
            let out = json!({"policy_id": ir.id, "policy_hash": h, "lint_exit_code": code, "findings": findings, "ir": ir});
            let mut m = v.policies.write();
            m.insert(ir.id.clone(), ir.clone());
            m.insert(h, ir);
            Json(out).into_response()
        }
        None => {
            let body = json!({"type": "https://fieldlab.dev/problems/policy-invalid", "title": "Policy has errors", "status": 422,
                "detail": "the policy has lint errors; see `findings`", "findings": findings});
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                [(header::CONTENT_TYPE, "application/problem+json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

async fn get_policy(
    State(v): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = need(&p, "policy:read") {
        return r;
    }
    match v.policies.read().get(&id) {
        Some(ir) => {
            Json(json!({"policy_id": ir.id, "policy_hash": ir.hash(), "ir": ir})).into_response()
        }
        None => Problem::not_found(format!(
            "no compiled policy `{id}` (by id or hash); POST /policy/compile first"
        ))
        .into_response(),
    }
}

fn with_registry<T: serde::Serialize>(
    v: &Verifier,
    f: impl FnOnce(&mut Registry) -> Result<T, RegistryError>,
) -> Response {
    let Some(reg) = &v.registry else {
        return problem(
            StatusCode::NOT_FOUND,
            "no-registry",
            "No registry",
            "this verifier runs without a registry (start it with --data DIR)",
        );
    };
    let r = f(&mut reg.lock());
    match r {
        Ok(x) => Json(x).into_response(),
        Err(RegistryError::NotFound(m)) => Problem::not_found(m).into_response(),
        Err(RegistryError::Failed(m)) => Problem::internal(m).into_response(),
    }
}

async fn checkpoint(State(v): State<Shared>) -> Response {
    with_registry(&v, |r| {
        Ok(json!({"checkpoint": r.latest_checkpoint()?, "vkey": r.vkey(), "size": r.size()?}))
    })
}

async fn entries(State(v): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let n = |k: &str, d: u64| q.get(k).and_then(|x| x.parse().ok()).unwrap_or(d);
    let (off, lim) = (n("offset", 0), n("limit", 100).min(1000));
    with_registry(&v, |r| {
        Ok(json!({"size": r.size()?, "entries": r.list(off, lim)?}))
    })
}

async fn entry(State(v): State<Shared>, Path(i): Path<u64>) -> Response {
    with_registry(&v, |r| r.get(i))
}

async fn prove_inclusion(State(v): State<Shared>, Path(i): Path<u64>) -> Response {
    with_registry(&v, |r| r.prove_inclusion(i))
}

async fn prove_consistency(
    State(v): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(from) = q.get("from").and_then(|x| x.parse::<u64>().ok()) else {
        return Problem::bad_parameter(
            "from",
            "`from` (the earlier tree size) is required, e.g. ?from=3",
        )
        .into_response();
    };
    with_registry(&v, |r| r.prove_consistency(from))
}

async fn registry_add(
    State(v): State<Shared>,
    Extension(p): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(r) = need(&p, "registry:write") {
        return r;
    }
    let name = q.get("name").cloned().unwrap_or_else(|| "upload".into());
    let sub = p.subject.clone();
    with_registry(&v, move |r| {
        r.add(&name, &body, json!({"type": "file", "uploaded_by": sub}))
            .map(|(e, n)| json!({"entry": e, "checkpoint": n}))
    })
}

/// OpenAPI 3.1 description of the verifier API; JSON bodies have the schemas of the types the
/// handlers read them into.
pub fn openapi() -> Value {
    let mut schemas = serde_json::Map::new();
    let (bundle_json, policy_json) = (
        schema::<BundleJson>(&mut schemas),
        schema::<PolicyJson>(&mut schemas),
    );
    let sec = |s: &str| json!([{"bearer": [s]}]);
    let zip = json!({"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": bundle_json}}});
    let object = json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}});
    let int = |name: &str, at: &str| json!({"name": name, "in": at, "required": at == "path", "schema": {"type": "integer", "minimum": 0}});
    let op = |summary: &str, params: Vec<Value>| json!({"summary": summary, "parameters": params, "responses": object});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "fieldlab proof verifier API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (RS256 or EdDSA)"}}, "schemas": schemas},
        "paths": {
            "/verify": {"post": {"summary": "Verify a proof bundle offline-equivalently; result OK or FAIL with reason", "security": sec("verify:run"), "requestBody": zip, "responses": object}},
            "/proof/upload": {"post": {"summary": "Verify a bundle and register it in the transparency log", "security": sec("registry:write"), "requestBody": zip, "responses": object}},
            "/policy/compile": {"post": {"summary": "Lint and compile policy YAML; returns IR, hash and findings", "security": sec("policy:compile"), "responses": object,
                "requestBody": {"content": {"application/yaml": {"schema": {"type": "string"}}, "application/json": {"schema": policy_json}}}}},
            "/policy/{id}": {"get": {"summary": "A compiled policy by id or hash", "security": sec("policy:read"), "responses": object}},
            "/registry/checkpoint": {"get": op("Latest signed checkpoint (C2SP signed note) and verifier key", vec![])},
            "/registry/entries": {"get": op("Entries", vec![int("offset", "query"), json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}})]),
                "post": {"summary": "Register a raw file", "security": sec("registry:write"), "responses": object,
                    "parameters": [{"name": "name", "in": "query", "schema": {"type": "string"}}],
                    "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}},
            "/registry/entries/{index}": {"get": op("One entry", vec![int("index", "path")])},
            "/registry/proof/inclusion/{index}": {"get": op("Inclusion proof of an entry against the latest checkpoint", vec![int("index", "path")])},
            "/registry/proof/consistency": {"get": op("Consistency proof from tree size `from` to the latest", vec![json!({"name": "from", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 0}})])},
            "/healthz": {"get": {"summary": "Liveness"}}, "/readyz": {"get": {"summary": "Readiness"}}, "/metrics": {"get": {"summary": "Prometheus metrics"}}
        }
    })
}
