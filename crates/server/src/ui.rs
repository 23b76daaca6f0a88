//! The web UI over HTTP: the embedded files of `fieldlab-ui`, and the endpoint probe the UI uses
//! to know which parts of the API this server has.
//!
//! Why it exists: the browser gets the dashboard from the same port as the API, with no CDN and
//! nothing to install. `GET /` answers HTML to a browser (`Accept: text/html`) and the JSON index
//! to everyone else, so `curl localhost:8080/` keeps working; the JSON index is also at
//! `/api/v1`. Assets live under `/ui/`.
//!
//! Pages for parts that a server may not have (device control, anomalies, proofs...) must show
//! "not available on this server" instead of mock data, and must not fill the browser console
//! with 404s while finding out. [`with_endpoint_probe`] answers
//! `GET /api/v1/ui/endpoints?path=/ws&path=/verify` by routing an `OPTIONS` request for each path
//! through the real router: 404 means no such route; anything else (405 for a route without
//! OPTIONS, 401/403 when auth guards it) means the route exists. OPTIONS runs no handler.
//! The answer also says whether sign-in is required (`"auth": {"enabled": true}`, found by
//! routing an anonymous `GET /api/v1/auth/whoami`, a read without side effects, is
//! refused with 401 only when auth is on; OPTIONS would not do, it is answered 405 before the
//! auth layer), so the UI goes to its sign-in page before it makes a request that would fail.

use crate::{AppState, Problem};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fieldlab_ui::Asset;
use serde::Serialize;
use std::collections::BTreeMap;
use tower::ServiceExt;
use utoipa::ToSchema;

/// Scripts, styles and connections only from this origin: the UI works with no network beyond
/// the fieldlab server, and an injected `<script>` from elsewhere would not run.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

/// Most paths one probe request may ask about (the UI asks about a dozen).
const MAX_PROBES: usize = 32;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/api/v1", get(crate::routes::index))
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/{*path}", get(asset))
}

/// `GET /`: the UI for browsers, the JSON index for API clients.
async fn root(state: State<AppState>, headers: HeaderMap) -> Response {
    if wants_html(&headers) {
        serve(fieldlab_ui::index(), &headers)
    } else {
        crate::routes::index(state).await.into_response()
    }
}

/// True when the client prefers HTML, as browsers say in their navigation requests.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|m| {
                let mut parts = m.split(';').map(str::trim);
                parts.next() == Some("text/html")
                    && !parts.any(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                            .is_some_and(|q| q == 0.0)
                    })
            })
        })
}

async fn page(headers: HeaderMap) -> Response {
    serve(fieldlab_ui::index(), &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match fieldlab_ui::get(&path) {
        Some(a) => serve(a, &headers),
        None => Problem::not_found(format!(
            "the UI has no file `{path}`; open / in a browser for the dashboard"
        ))
        .into_response(),
    }
}

/// One embedded file with its type, a validator, and the UI's security headers. `no-cache`
/// means "revalidate": an upgraded binary never serves a stale module, and an unchanged one costs
/// a 304.
fn serve(a: Asset, req: &HeaderMap) -> Response {
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if a.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    (h, a.body).into_response()
}

/// Wrap the finished application router so that `GET /api/v1/ui/endpoints` can route probe
/// requests through it (see the module docs). Everything else goes to `app` unchanged.
pub fn with_endpoint_probe(app: Router) -> Router {
    let inner = app.clone();
    Router::new()
        .route(
            "/api/v1/ui/endpoints",
            get(move |q: Query<Vec<(String, String)>>, h: HeaderMap| probe(inner.clone(), q, h)),
        )
        .fallback_service(app)
}

async fn probe(
    app: Router,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let paths: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "path")
        .map(|(_, v)| v.as_str())
        .collect();
    if paths.is_empty() || paths.len() > MAX_PROBES {
        return Problem::bad_parameter(
            "path",
            format!("give 1 to {MAX_PROBES} `path` parameters, e.g. /api/v1/ui/endpoints?path=/ws&path=/verify"),
        )
        .into_response();
    }
    if let Some(bad) = paths
        .iter()
        .find(|p| !p.starts_with('/') || p.starts_with("//"))
    {
        return Problem::bad_parameter(
            "path",
            format!("`{bad}` is not an absolute path on this server; start it with one `/`"),
        )
        .into_response();
    }
    let mut out = BTreeMap::new();
    for p in paths {
        let mut req = Request::builder().method(Method::OPTIONS).uri(p);
        // The caller's credentials, so a guarded route answers 401/403 or 405 as it would to
        // the caller, never 404.
        for name in [header::AUTHORIZATION, header::COOKIE] {
            if let Some(v) = headers.get(&name) {
                req = req.header(name, v);
            }
        }
        let Ok(req) = req.body(Body::empty()) else {
            return Problem::bad_parameter("path", format!("`{p}` is not a valid URI path"))
                .into_response();
        };
        let status = match app.clone().oneshot(req).await {
            Ok(r) => r.status(),
            Err(never) => match never {},
        };
        let available = status != StatusCode::NOT_FOUND;
        let status = status.as_u16();
        out.insert(p.to_string(), Availability { available, status });
    }
    let anonymous = Request::builder()
        .method(Method::GET)
        .uri("/api/v1/auth/whoami")
        .body(Body::empty())
        .expect("static request");
    let status = match app.oneshot(anonymous).await {
        Ok(r) => r.status(),
        Err(never) => match never {},
    };
    let auth = AuthProbe {
        enabled: status == StatusCode::UNAUTHORIZED,
    };
    Json(EndpointProbe { auth, paths: out }).into_response()
}

/// Per probed path whether this server has it, and whether auth is on.
#[derive(Serialize, ToSchema)]
pub(crate) struct EndpointProbe {
    auth: AuthProbe,
    #[serde(flatten)]
    paths: BTreeMap<String, Availability>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AuthProbe {
    enabled: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Availability {
    available: bool,
    /// The status an `OPTIONS` request got.
    status: u16,
}

#[cfg(test)]
mod tests {
    use super::wants_html;
    use axum::http::{header, HeaderMap, HeaderValue};

    fn accept(v: &'static str) -> bool {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(v));
        wants_html(&h)
    }

    #[test]
    fn html_only_when_the_client_accepts_it() {
        assert!(accept("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert!(accept("application/json;q=0.5, text/html;q=0.9"));
        assert!(!accept("text/html;q=0"));
        assert!(!accept("application/json"));
        assert!(!accept("*/*"), "curl's default gets JSON");
        assert!(!wants_html(&HeaderMap::new()));
    }
}
