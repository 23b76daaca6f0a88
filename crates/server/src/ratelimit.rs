//! Rate limiting over HTTP: the service API and the layer that guards fieldlab's own API.
//!
//! Why here: the limiter (`fieldlab-ratelimit`) knows nothing of HTTP. This module maps it to
//! the legacy paths and fieldlab's native ones, and to the IETF headers:
//!
//! | path (also under `/api/v1/ratelimit/...`) | what |
//! |---|---|
//! | `POST /api/ratelimit/check` `{key, tokens}` | 200 allowed / 429 rejected, body with remaining, reset, retry_after |
//! | `POST /api/ratelimit/release` `{key, lease}` | give back a concurrency lease |
//! | `GET /api/ratelimit/config` | every rule and where it came from (admin) |
//! | `PUT\|POST\|DELETE /api/ratelimit/config/keys/{key}` | exact-key policy (admin) |
//! | `PUT\|POST\|DELETE /api/ratelimit/config/patterns/{pattern}` | pattern policy, `*` wildcard (admin) |
//! | `PUT\|POST /api/ratelimit/config/default` | the default policy (admin) |
//! | `GET /api/ratelimit/stats` | decisions per policy, backend facts |
//!
//! The rules carry a version: `GET /api/ratelimit/config` answers it as `version` and as the
//! `ETag` (`"7"`), a change answers the new one as its `ETag`, and a change sent with
//! `If-Match: "7"` is made only if 7 is still the current version (else 412). Where the rules
//! live (a file of one instance, or Redis for every replica) is the limiter's business: see
//! `fieldlab_ratelimit::shared`.
//!
//! Every limited response carries `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers-10) and, when rejected, `Retry-After`.
//! [`guard`] limits API requests per principal (or client IP, `X-Forwarded-For` believed only
//! from trusted proxies) with the `ratelimit.api` policy.

use crate::Problem;
use axum::extract::{ConnectInfo, FromRef, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use fieldlab_core::config::HumanDuration;
use fieldlab_core::{AuthMethod, Principal};
use fieldlab_ratelimit::{
    Algorithm, ConfigChangeError, Limiter, Outcome, RatelimitLimitSpec, RatelimitPolicySpec,
};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::ToSchema;

/// What the rate-limit handlers need; built from [`crate::AppState`] or alone for
/// `fieldlab ratelimit serve`.
#[derive(Clone)]
pub struct RatelimitState {
    pub limiter: Option<Limiter>,
}

impl FromRef<crate::AppState> for RatelimitState {
    fn from_ref(s: &crate::AppState) -> Self {
        RatelimitState {
            limiter: s.ratelimit.clone(),
        }
    }
}

/// The routes, for any router state that can give a [`RatelimitState`].
pub fn routes<S>() -> Router<S>
where
    RatelimitState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    let mut r = Router::new();
    for base in ["/api/ratelimit", "/api/v1/ratelimit"] {
        r = r
            .route(&format!("{base}/check"), post(check))
            .route(&format!("{base}/release"), post(release))
            .route(&format!("{base}/stats"), get(stats))
            .route(&format!("{base}/config"), get(config))
            .route(
                &format!("{base}/config/keys/{{key}}"),
                get(get_key).put(put_key).post(put_key).delete(delete_key),
            )
            .route(
                &format!("{base}/config/patterns/{{pattern}}"),
                get(get_pattern)
                    .put(put_pattern)
                    .post(put_pattern)
                    .delete(delete_pattern),
            )
            .route(
                &format!("{base}/config/default"),
                get(get_default).put(put_default).post(put_default),
            );
    }
    r
}

fn limiter(s: &RatelimitState) -> Result<&Limiter, Problem> {
    s.limiter.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ratelimit-disabled",
            "Rate limiting is not running",
            "this server was started without a rate limiter",
        )
    })
}

fn admin(p: &Principal) -> Result<(), Problem> {
    if p.is_admin() {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!(
                "`{}` may not change rate-limit configuration; it needs the admin role",
                p.subject
            ),
        ))
    }
}

fn bad_body(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-body",
        "Invalid request body",
        detail,
    )
}

/// Parse a JSON body ourselves so that errors are problem+json, not axum's plain text.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8], example: &str) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| bad_body(format!("{e}; send JSON like {example}")))
}

fn apply_headers(h: &mut HeaderMap, o: &Outcome) {
    for (k, v) in o.headers() {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckRequest {
    #[schema(min_length = 1, max_length = 512, examples("user:42"))]
    key: String,
    #[serde(default = "one")]
    #[schema(default = 1)]
    tokens: u64,
}

fn one() -> u64 {
    1
}

const CHECK_EXAMPLE: &str = r#"{"key": "user:42", "tokens": 1}"#;

fn check_key(key: &str) -> Result<(), Problem> {
    if key.is_empty() || key.len() > 512 {
        return Err(Problem::bad_parameter(
            "key",
            "`key` must be 1 to 512 bytes, e.g. user:42",
        ));
    }
    Ok(())
}

async fn check(State(s): State<RatelimitState>, body: axum::body::Bytes) -> Response {
    let run = async {
        let l = limiter(&s)?;
        let b: CheckRequest = parse(&body, CHECK_EXAMPLE)?;
        check_key(&b.key)?;
        let o = l.check(&b.key, b.tokens).await;
        let v = o.answer(&b.key, b.tokens);
        let status = if o.allowed {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        let mut resp = (status, Json(v)).into_response();
        apply_headers(resp.headers_mut(), &o);
        Ok::<Response, Problem>(resp)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseRequest {
    key: String,
    /// The lease /check returned.
    lease: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Released {
    key: String,
    lease: String,
    released: bool,
}

async fn release(
    State(s): State<RatelimitState>,
    body: axum::body::Bytes,
) -> Result<Json<Released>, Problem> {
    let l = limiter(&s)?;
    let b: ReleaseRequest = parse(
        &body,
        r#"{"key": "user:42", "lease": "<lease from /check>"}"#,
    )?;
    let lease: u64 = b
        .lease
        .parse()
        .map_err(|_| Problem::bad_parameter("lease", "`lease` is the string /check returned"))?;
    let released = l.release(&b.key, lease).await.map_err(|e| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend-unavailable",
            "Rate-limit backend unavailable",
            e,
        )
    })?;
    Ok(Json(Released {
        key: b.key,
        lease: b.lease,
        released,
    }))
}

async fn stats(State(s): State<RatelimitState>) -> Result<Json<Value>, Problem> {
    Ok(Json(limiter(&s)?.stats_json()))
}

async fn config(
    State(s): State<RatelimitState>,
    Extension(p): Extension<Principal>,
) -> Result<Response, Problem> {
    admin(&p)?;
    let c = limiter(&s)?.config_json();
    let v = c["version"].as_u64().unwrap_or_default();
    Ok(with_version(v, Json(c)))
}

/// A policy body: fieldlab's shape `{limits: [...], shadow, fail}`, or the legacy
/// `{capacity, refillRate[, algorithm]}` (a token bucket refilled `refillRate` per second).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum PolicyBody {
    /// fieldlab's policy shape: limits that must all pass.
    Native(RatelimitPolicySpec),
    Legacy(LegacyPolicy),
}

/// The legacy shape: a token bucket refilled `refillRate` per second.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LegacyPolicy {
    capacity: u64,
    refill_rate: u64,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    cleanup_interval_ms: Option<u64>,
}

const POLICY_EXAMPLE: &str = r#"{"limits": [{"algorithm": "token_bucket", "limit": 10, "period": "1s", "burst": 20}], "shadow": false, "fail": "open"} (or the legacy {"capacity": 20, "refillRate": 10})"#;

fn policy_body(body: &[u8]) -> Result<RatelimitPolicySpec, Problem> {
    // Native first with its exact error, since it is the documented shape.
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if v.get("limits").is_some() {
            // With the path of a bad field (`limits[0].algorithm`) as the problem's parameter.
            let de = &mut serde_json::Deserializer::from_slice(body);
            return serde_path_to_error::deserialize(de).map_err(|e| {
                let field = e.path().to_string();
                let mut p = bad_body(format!(
                    "`{field}`: {}; send JSON like {POLICY_EXAMPLE}",
                    e.inner()
                ));
                p.parameter = Some(field);
                p
            });
        }
    }
    match parse::<PolicyBody>(body, POLICY_EXAMPLE)? {
        PolicyBody::Native(p) => Ok(p),
        PolicyBody::Legacy(s) => {
            let _ = s.cleanup_interval_ms;
            let algorithm = match s.algorithm.as_deref().map(str::to_ascii_lowercase) {
                None => Algorithm::TokenBucket,
                Some(a) => Algorithm::parse_word(&a).map_err(|message| {
                    change_error(ConfigChangeError::Invalid {
                        field: "algorithm".into(),
                        message,
                    })
                })?,
            };
            Ok(RatelimitPolicySpec {
                limits: vec![RatelimitLimitSpec {
                    burst: Some(s.capacity),
                    ..RatelimitLimitSpec::new(algorithm, s.refill_rate, HumanDuration::from_secs(1))
                }],
                ..RatelimitPolicySpec::default()
            })
        }
    }
}

fn change_error(e: ConfigChangeError) -> Problem {
    match e {
        ConfigChangeError::Invalid { field, message } => {
            let mut p = bad_body(format!("`{field}`: {message}"));
            p.parameter = Some(field);
            p
        }
        ConfigChangeError::DefinedInFile(key) => Problem::new(
            StatusCode::CONFLICT,
            "defined-in-config-file",
            "Defined in fieldlab.yaml",
            format!("`{key}` comes from fieldlab.yaml; change it there and restart"),
        ),
        ConfigChangeError::Persist(e) => Problem::internal(e),
        ConfigChangeError::Conflict { current } => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "version-mismatch",
            "The rules have changed",
            format!(
                "If-Match does not name the current version of the rules, \"{current}\"; \
                 GET /api/ratelimit/config and make the change again on what it shows"
            ),
        ),
        ConfigChangeError::Unavailable(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "rules-unavailable",
            "Rate-limit rules cannot be changed now",
            e,
        ),
    }
}

/// The version an `If-Match` header names (`"7"`, `W/"7"`); None when absent or `*`.
fn if_match(h: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(v) = h.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            Problem::bad_parameter(
                "If-Match",
                format!("`{text}` is not a version of the rules; send the ETag GET /api/ratelimit/config answered, like \"7\""),
            )
        })
}

/// `body` with the rules' version as its `ETag`.
fn with_version(version: u64, body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(axum::http::header::ETAG, v);
    }
    r
}

/// A rule: the policy of an exact key, of a pattern, or the default (neither).
#[derive(Serialize, ToSchema, Default)]
pub(crate) struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pattern: Option<String>,
    policy: RatelimitPolicySpec,
}

impl Rule {
    fn key(key: String, policy: RatelimitPolicySpec) -> Rule {
        let key = Some(key);
        Rule {
            key,
            policy,
            ..Rule::default()
        }
    }

    fn pattern(pattern: String, policy: RatelimitPolicySpec) -> Rule {
        let pattern = Some(pattern);
        Rule {
            pattern,
            policy,
            ..Rule::default()
        }
    }

    fn fallback(policy: RatelimitPolicySpec) -> Rule {
        Rule {
            policy,
            ..Rule::default()
        }
    }
}

fn rule_json(
    rule: fn(String, RatelimitPolicySpec) -> Rule,
    kind: &str,
    name: &str,
    p: Option<&Arc<fieldlab_ratelimit::Policy>>,
) -> Result<Json<Rule>, Problem> {
    let p = p.ok_or_else(|| {
        Problem::not_found(format!(
            "no {kind} `{name}`; GET /api/ratelimit/config lists them"
        ))
    })?;
    Ok(Json(rule(name.to_string(), p.spec.clone())))
}

async fn get_key(
    State(s): State<RatelimitState>,
    Extension(p): Extension<Principal>,
    Path(key): Path<String>,
) -> Result<Json<Rule>, Problem> {
    admin(&p)?;
    let rules = limiter(&s)?.rules();
    rule_json(Rule::key, "key", &key, rules.keys.get(&key))
}

async fn put_key(
    State(s): State<RatelimitState>,
    Extension(p): Extension<Principal>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    admin(&p)?;
    let l = limiter(&s)?;
    check_key(&key)?;
    let spec = policy_body(&body)?;
    let v = l
        .set_key(&key, spec.clone(), if_match(&headers)?)
        .await
        .map_err(change_error)?;
    Ok(with_version(v, Json(Rule::key(key, spec))))
}

async fn delete_key(
    State(s): State<RatelimitState>,
    Extension(p): Extension<Principal>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    admin(&p)?;
    let l = limiter(&s)?;
    match l
        .delete_key(&key, if_match(&headers)?)
        .await
        .map_err(change_error)?
    {
        Some(v) => Ok(with_version(v, StatusCode::NO_CONTENT)),
        None => Err(Problem::not_found(format!(
            "no key `{key}` was set through the API"
        ))),
    }
}

async fn get_pattern(
    State(s): State<RatelimitState>,
    Extension(p): Extension<Principal>,
    Path(pat): Path<String>,
) -> Result<Json<Rule>, Problem> {
    admin(&p)?;
    let rules = limiter(&s)?.rules();
    let found = rules.patterns().find(|(k, _)| **k == pat).map(|(_, p)| p);
    rule_json(Rule::pattern, "pattern", &pat, found)
}

async fn put_pattern(
    State(s): State<RatelimitState>,
    Extension(p): Extension<Principal>,
    Path(pat): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    admin(&p)?;
    let l = limiter(&s)?;
    check_key(&pat)?;
    let spec = policy_body(&body)?;
    let v = l
        .set_pattern(&pat, spec.clone(), if_match(&headers)?)
        .await
        .map_err(change_error)?;
    Ok(with_version(v, Json(Rule::pattern(pat, spec))))
}

async fn delete_pattern(
    State(s): State<RatelimitState>,
    Extension(p): Extension<Principal>,
    Path(pat): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    admin(&p)?;
    let l = limiter(&s)?;
    match l
        .delete_pattern(&pat, if_match(&headers)?)
        .await
        .map_err(change_error)?
    {
        Some(v) => Ok(with_version(v, StatusCode::NO_CONTENT)),
        None => Err(Problem::not_found(format!(
            "no pattern `{pat}` was set through the API"
        ))),
    }
}

async fn get_default(
    State(s): State<RatelimitState>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Rule>, Problem> {
    admin(&p)?;
    Ok(Json(Rule::fallback(
        limiter(&s)?.rules().default.spec.clone(),
    )))
}

async fn put_default(
    State(s): State<RatelimitState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    admin(&p)?;
    let spec = policy_body(&body)?;
    let v = limiter(&s)?
        .set_default(spec.clone(), if_match(&headers)?)
        .await
        .map_err(change_error)?;
    Ok(with_version(v, Json(Rule::fallback(spec))))
}

/// Paths never limited: probes and scrapes must see the truth even under load.
fn exempt(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/healthz" | "/ready" | "/readyz" | "/metrics" | "/actuator/health"
    ) || path.starts_with("/health/")
}

/// Who a request counts against: the authenticated subject, else the client IP.
pub fn identity(limiter: &Limiter, req: &Request) -> String {
    if let Some(p) = req.extensions().get::<Principal>() {
        if !matches!(p.method, AuthMethod::Disabled | AuthMethod::Anonymous) {
            return format!("sub:{}", p.subject);
        }
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .or_else(|| {
            req.extensions()
                .get::<ConnectInfo<crate::tls::PeerInfo>>()
                .map(|c| c.0.addr.ip())
        })
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    format!("ip:{}", forwarded_client(limiter, peer, req))
}

/// The client a request comes from: `peer`, or the client its `X-Forwarded-For` names where
/// the limiter's trusted proxies stand between.
pub(crate) fn forwarded_client(
    limiter: &Limiter,
    peer: std::net::IpAddr,
    req: &Request,
) -> std::net::IpAddr {
    let xff: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    limiter.trusted_proxies().client_ip(peer, &xff)
}

/// Tower layer (as axum middleware): limit every API request with the `ratelimit.api` policy.
/// Runs inside `authenticate`, so the principal is known.
pub async fn guard(State(s): State<RatelimitState>, req: Request, next: Next) -> Response {
    let Some(l) = s.limiter.as_ref().filter(|l| l.api_policy().is_some()) else {
        return next.run(req).await;
    };
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let who = identity(l, &req);
    let Some(o) = l.check_api(&who).await else {
        return next.run(req).await;
    };
    if !o.allowed {
        let mut resp = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            match o.retry_after_ms() {
                Some(ms) => format!(
                    "`{who}` is over the `{}` limit; retry in {} s",
                    o.policy.name,
                    fieldlab_ratelimit::Decision::secs(ms).max(1)
                ),
                None => format!("`{who}` is over the `{}` limit", o.policy.name),
            },
        )
        .into_response();
        apply_headers(resp.headers_mut(), &o);
        return resp;
    }
    if o.delay_ms() > 0 {
        // Leaky bucket: the request was queued; it proceeds once its slot comes.
        tokio::time::sleep(std::time::Duration::from_millis(o.delay_ms())).await;
    }
    let mut resp = next.run(req).await;
    apply_headers(resp.headers_mut(), &o);
    if o.policy.has_concurrency() {
        let _ = l.release_lease(&o.policy, &who, o.lease).await;
    }
    resp
}

/// State of the standalone service: the limiter and the credentials checker.
#[derive(Clone)]
struct Standalone {
    rl: RatelimitState,
    auth: crate::auth_routes::AuthState,
}

impl FromRef<Standalone> for RatelimitState {
    fn from_ref(s: &Standalone) -> Self {
        s.rl.clone()
    }
}

impl FromRef<Standalone> for crate::auth_routes::AuthState {
    fn from_ref(s: &Standalone) -> Self {
        s.auth.clone()
    }
}

/// The rate-limit service alone (`fieldlab ratelimit serve`): the routes above, `/health`,
/// `/ready`, `/actuator/health`, `/metrics` and `POST /api/v1/auth/token`, behind the same
/// authentication as `fieldlab up` ([`crate::authenticate`] with [`fieldlab_auth::policy`]): a
/// check needs any valid token or API key, configuration needs the admin role. Always
/// authenticated: this service is meant to be reached by other teams' services over a network.
pub fn standalone(
    limiter: Limiter,
    registry: Arc<Registry>,
    auth: Arc<fieldlab_auth::Authenticator>,
) -> Router {
    let st = Standalone {
        rl: RatelimitState {
            limiter: Some(limiter),
        },
        auth: crate::auth_routes::AuthState(Some(auth)),
    };
    let metrics = move |headers: axum::http::HeaderMap| {
        let reg = registry.clone();
        async move { fieldlab_http::metrics::respond(&reg, &headers) }
    };
    let up = || async { Json(json!({"status": "UP"})) };
    routes::<Standalone>()
        .merge(crate::auth_routes::router::<Standalone>())
        .route("/health", get(up))
        .route("/ready", get(up))
        .route("/actuator/health", get(up))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(st.rl.clone(), guard))
        .layer(axum::middleware::from_fn_with_state(
            st.auth.clone(),
            crate::authenticate,
        ))
        .fallback(crate::routes::not_found)
        .with_state(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use fieldlab_core::Role;
    use fieldlab_ratelimit::{RatelimitConfig, RatelimitPolicySpec};
    use tower::ServiceExt;

    fn limiter(api: Option<RatelimitPolicySpec>, trusted: &[&str]) -> Limiter {
        let cfg = RatelimitConfig {
            api,
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
            ..RatelimitConfig::default()
        };
        Limiter::of_config(cfg).unwrap()
    }

    /// The routes with a fixed principal and peer address (what auth and connect-info give).
    fn app(l: Limiter, principal: Principal, peer: &str) -> Router {
        let st = RatelimitState { limiter: Some(l) };
        let peer: SocketAddr = peer.parse().unwrap();
        routes::<RatelimitState>()
            .route("/x", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(st.clone(), guard))
            .layer(axum::middleware::from_fn(
                move |mut req: Request, next: Next| {
                    let p = principal.clone();
                    async move {
                        req.extensions_mut().insert(p);
                        req.extensions_mut().insert(ConnectInfo(peer));
                        next.run(req).await
                    }
                },
            ))
            .with_state(st)
    }

    async fn send(app: &Router, req: axum::http::Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn viewer() -> Principal {
        Principal {
            subject: "ann".into(),
            roles: vec![Role::Viewer],
            scopes: vec![],
            method: AuthMethod::Jwt,
        }
    }

    #[tokio::test]
    async fn config_routes_are_admin_only() {
        let a = app(limiter(None, &[]), viewer(), "127.0.0.1:1");
        let req = axum::http::Request::put("/api/ratelimit/config/keys/k")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"capacity": 1, "refillRate": 1}"#))
            .unwrap();
        let (st, h, body) = send(&a, req).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        assert_eq!(h["content-type"], "application/problem+json");
        assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");
        let (st, _, _) = send(
            &a,
            axum::http::Request::get("/api/v1/ratelimit/config")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        // Checking is open to everyone.
        let req = axum::http::Request::post("/api/ratelimit/check")
            .body(Body::from(r#"{"key": "k"}"#))
            .unwrap();
        let (st, h, body) = send(&a, req).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert_eq!(h["ratelimit-policy"], "\"default\";q=100;w=60");
        assert_eq!(body["remaining"], 99);
    }

    /// The config listing answers the rules' version as `version` and `ETag`; a change answers
    /// the new one; a change with `If-Match` on an old version is refused with 412 and changes
    /// nothing, on the current one it is made.
    #[tokio::test]
    async fn changes_carry_the_rules_version_and_honour_if_match() {
        let a = app(limiter(None, &[]), Principal::local_admin(), "127.0.0.1:1");
        let get = || {
            axum::http::Request::get("/api/ratelimit/config")
                .body(Body::empty())
                .unwrap()
        };
        let put = |key: &str, if_match: Option<&str>| {
            let mut r = axum::http::Request::put(format!("/api/ratelimit/config/keys/{key}"))
                .header("content-type", "application/json");
            if let Some(m) = if_match {
                r = r.header("if-match", m);
            }
            r.body(Body::from(r#"{"capacity": 1, "refillRate": 1}"#))
                .unwrap()
        };
        let (st, h, body) = send(&a, get()).await;
        assert_eq!(st, StatusCode::OK);
        let v0 = body["version"].as_u64().unwrap();
        assert_eq!(h["etag"], format!("\"{v0}\""));
        let (st, h, _) = send(&a, put("a", None)).await;
        assert_eq!(st, StatusCode::OK);
        let v1 = format!("\"{}\"", v0 + 1);
        assert_eq!(h["etag"], v1.as_str());
        // On the old version: refused, nothing changed.
        let (st, _, body) = send(&a, put("b", Some(&format!("\"{v0}\"")))).await;
        assert_eq!(st, StatusCode::PRECONDITION_FAILED, "{body}");
        assert!(body["detail"].as_str().unwrap().contains(&v1), "{body}");
        let (_, h, body) = send(&a, get()).await;
        assert_eq!(h["etag"], v1.as_str());
        assert!(body["keys"]["b"].is_null(), "{body}");
        // On the current one (and with `*`): made.
        let (st, h, _) = send(&a, put("b", Some(&v1))).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h["etag"], format!("\"{}\"", v0 + 2));
        assert_eq!(send(&a, put("c", Some("*"))).await.0, StatusCode::OK);
        let (st, _, body) = send(&a, put("d", Some("yesterday"))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
        let del = axum::http::Request::delete("/api/ratelimit/config/keys/a")
            .header("if-match", format!("\"{}\"", v0 + 3))
            .body(Body::empty())
            .unwrap();
        let (st, h, _) = send(&a, del).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
        assert_eq!(h["etag"], format!("\"{}\"", v0 + 4));
    }

    fn api_policy() -> Option<RatelimitPolicySpec> {
        let mut p = RatelimitPolicySpec::default();
        p.limits[0].algorithm = fieldlab_ratelimit::Algorithm::FixedWindow;
        p.limits[0].limit = 1;
        p.limits[0].period = fieldlab_core::config::HumanDuration::from_secs(3600);
        Some(p)
    }

    async fn status_from(a: &Router, xff: &str) -> StatusCode {
        let req = axum::http::Request::get("/x")
            .header("x-forwarded-for", xff)
            .body(Body::empty())
            .unwrap();
        send(a, req).await.0
    }

    #[tokio::test]
    async fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let local = Principal::local_admin();
        // Untrusted peer: a fresh X-Forwarded-For per request does not buy a fresh limit.
        let a = app(limiter(api_policy(), &[]), local.clone(), "203.0.113.5:9");
        assert_eq!(status_from(&a, "1.1.1.1").await, StatusCode::OK);
        assert_eq!(
            status_from(&a, "2.2.2.2").await,
            StatusCode::TOO_MANY_REQUESTS
        );
        // Behind a trusted proxy: each client has its own limit.
        let a = app(limiter(api_policy(), &["10.0.0.0/8"]), local, "10.0.0.1:9");
        assert_eq!(status_from(&a, "1.1.1.1").await, StatusCode::OK);
        assert_eq!(status_from(&a, "2.2.2.2").await, StatusCode::OK);
        assert_eq!(
            status_from(&a, "1.1.1.1").await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn authenticated_principals_are_limited_by_subject() {
        let a = app(limiter(api_policy(), &[]), viewer(), "127.0.0.1:1");
        assert_eq!(status_from(&a, "").await, StatusCode::OK);
        let (st, h, body) = send(
            &a,
            axum::http::Request::get("/x").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            body["detail"].as_str().unwrap().contains("sub:ann"),
            "{body}"
        );
        assert!(h.contains_key("retry-after"));
        // Probes are exempt even when over the limit.
        let (st, _, _) = send(
            &a,
            axum::http::Request::get("/api/ratelimit/stats")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "only probes are exempt");
        assert!(exempt("/health/live") && exempt("/metrics") && !exempt("/api/v1/devices"));
    }
}
