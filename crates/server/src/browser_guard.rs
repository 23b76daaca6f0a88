//! Web pages the user visits cannot drive the lab: Host, Origin and Content-Type checks.
//!
//! Why it exists: with auth off (the default on a laptop) every request acts as the local
//! admin, and a browser sends requests to `localhost` for any page that asks. A page at
//! `http://evil.example` could stop a device with a `text/plain` POST (a "simple" request that
//! needs no CORS preflight), read the API through DNS rebinding (`evil.example` resolving to
//! 127.0.0.1, so the browser calls it same-origin and sends `Host: evil.example`), and open
//! `/ws`. This layer, in front of everything else, refuses:
//!
//! - with auth off, a `Host` that is not a loopback name (`localhost`, `*.localhost`), an IP
//!   address, or one of `server.allowed_hosts` (an IP address cannot be rebound; a name can).
//!   Liveness and readiness probes pass whatever their `Host`;
//! - a write (any method but GET, HEAD, OPTIONS) or WebSocket upgrade whose `Origin` is not
//!   the server's own (the `Host`, or `X-Forwarded-Host` set by a proxy, or an allowed host),
//!   or is `null`, or whose `Sec-Fetch-Site` says `cross-site` — with auth on too, since a
//!   browser also sends ambient credentials (a TLS client certificate) on its own;
//! - a write with a body that carries no `Authorization` or `X-API-Key` and whose body is
//!   of a type any page may send anywhere without asking (no `Content-Type`, `text/plain`,
//!   forms): 415, send `application/json` (or YAML where documented). The token endpoint
//!   keeps its OAuth2 form.
//!
//! Requests without `Origin` (curl, scripts, Telegraf) are not browsers' cross-site requests
//! and pass the Origin rule; fieldlab's own UI is same-origin and sends JSON.

use crate::Problem;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
// Paths that pass the Host rule: probes from Kubernetes and load balancers use the pod's
// address or a service name as `Host`, and answer nothing worth stealing.
use fieldlab_auth::policy::PROBES;
use std::sync::Arc;

/// What the guard needs to know about the server.
#[derive(Clone, Debug, Default)]
pub struct BrowserGuard {
    /// Auth on: the Host rule is off (credentials are not ambient: a rebinding page has none).
    pub auth_on: bool,
    /// `server.allowed_hosts`, lower case, without trailing dots.
    pub allowed_hosts: Arc<[String]>,
}

/// Body types a web page may send to any site without a CORS preflight (Fetch standard,
/// "CORS-safelisted request-header" `Content-Type`).
const SIMPLE_TYPES: &[&str] = &[
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

fn normalise(h: &str) -> String {
    h.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Host and optional port of a `Host` header value or an origin's authority.
fn split_host(authority: &str) -> (String, Option<u16>) {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        // [v6]:port
        let (h, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (normalise(h), port);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
            (normalise(h), p.parse().ok())
        }
        _ => (normalise(a), None),
    }
}

impl BrowserGuard {
    pub fn new(auth_on: bool, allowed_hosts: &[String]) -> BrowserGuard {
        BrowserGuard {
            auth_on,
            allowed_hosts: allowed_hosts.iter().map(|h| normalise(h)).collect(),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        host == "localhost"
            || host.ends_with(".localhost")
            || host.parse::<std::net::IpAddr>().is_ok()
            || self.allowed_hosts.iter().any(|a| a == host)
    }

    /// The request's problem, if it has one.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Problem> {
        let text = |name: header::HeaderName| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("\u{fffd}").to_string())
        };
        let host_header = text(header::HOST);
        if !self.auth_on && !PROBES.contains(&path) {
            if let Some(h) = &host_header {
                let (host, _) = split_host(h);
                if !self.host_allowed(&host) {
                    return Err(Problem::new(
                        StatusCode::FORBIDDEN,
                        "host-not-allowed",
                        "Host not allowed",
                        format!(
                            "this lab runs with auth off and answers only to loopback names and IP addresses, not to `Host: {host}` (a web page could reach it through DNS rebinding). If you reach fieldlab by this name on purpose, add `{host}` to server.allowed_hosts in fieldlab.yaml, or turn auth on"
                        ),
                    ));
                }
            }
        }
        let upgrade = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !(write || upgrade) {
            return Ok(());
        }
        let what = if upgrade {
            "WebSocket upgrades"
        } else {
            "writes"
        };
        let foreign = |why: String| {
            Problem::new(
                StatusCode::FORBIDDEN,
                "foreign-origin",
                "Cross-site request refused",
                format!(
                    "{why}: {what} are accepted only from fieldlab's own pages, so that no web page you visit can drive the lab. Scripts and tools send no Origin; a page served under another name needs that name in server.allowed_hosts"
                ),
            )
        };
        if let Some(origin) = text(header::ORIGIN) {
            if !self.origin_is_ours(&origin, host_header.as_deref(), headers) {
                return Err(foreign(format!(
                    "the request comes from the page origin `{origin}`"
                )));
            }
        } else if headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
        {
            return Err(foreign("the browser marks this request cross-site".into()));
        }
        if write
            && has_body(headers)
            && !headers.contains_key(header::AUTHORIZATION)
            && !headers.contains_key("x-api-key")
            && !(path == "/api/v1/auth/token" && *method == Method::POST)
        {
            let ct = text(header::CONTENT_TYPE);
            let essence = ct.as_deref().map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
            if essence
                .as_deref()
                .is_none_or(|e| e.is_empty() || SIMPLE_TYPES.contains(&e))
            {
                let got = ct.map_or("no Content-Type".to_string(), |c| format!("`{c}`"));
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Unsupported media type",
                    format!(
                        "{} {path} came with {got}: send the body as `Content-Type: application/json` (or application/yaml where the API documents it; with curl: -H 'Content-Type: application/json'). Bodies any web page can send to any site without asking (text/plain, forms) are refused so that no page you visit can drive the lab",
                        method
                    ),
                ));
            }
        }
        Ok(())
    }

    fn origin_is_ours(&self, origin: &str, host: Option<&str>, headers: &HeaderMap) -> bool {
        let Some((scheme, authority)) = origin.trim().split_once("://") else {
            // `null` (sandboxed frames, file: pages, some redirects) or garbage.
            return false;
        };
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let (o_host, o_port) = split_host(authority);
        let o_port = o_port.unwrap_or(default_port);
        if self.allowed_hosts.contains(&o_host) {
            return true;
        }
        let same = |h: &str| {
            let (h, p) = split_host(h);
            h == o_host && p.unwrap_or(default_port) == o_port
        };
        // A proxy in front tells the name the browser used; a page cannot set this header
        // on a cross-site request without a preflight fieldlab never grants.
        let forwarded = headers
            .get("x-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next());
        host.is_some_and(same) || forwarded.is_some_and(same)
    }
}

/// Whether the request carries a body (a length above 0 or a chunked one).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// The middleware: refuse as problem+json, or pass on.
pub async fn guard(State(g): State<BrowserGuard>, req: Request, next: Next) -> Response {
    if let Err(p) = g.check(req.method(), req.uri().path(), req.headers()) {
        tracing::warn!(
            method = %req.method(),
            path = %req.uri().path(),
            origin = ?req.headers().get(header::ORIGIN),
            host = ?req.headers().get(header::HOST),
            "refused: {}",
            p.title
        );
        return p.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn status(g: &BrowserGuard, m: Method, path: &str, hs: &[(&'static str, &str)]) -> u16 {
        g.check(&m, path, &h(hs)).map_or_else(|p| p.status, |_| 200)
    }

    #[test]
    fn auth_off_answers_only_local_names_and_addresses() {
        let g = BrowserGuard::new(false, &["Lab.Local.".into()]);
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "app.localhost",
            "192.168.1.20:8080",
            "lab.local:8080",
            "LAB.LOCAL",
        ] {
            assert_eq!(
                status(&g, Method::GET, "/api/v1/devices", &[("host", host)]),
                200,
                "{host}"
            );
        }
        assert_eq!(
            status(
                &g,
                Method::GET,
                "/api/v1/devices",
                &[("host", "evil.example")]
            ),
            403
        );
        assert_eq!(
            status(
                &g,
                Method::GET,
                "/",
                &[("host", "localhost.evil.example:8080")]
            ),
            403
        );
        // Probes pass; with auth on, the Host rule is off.
        assert_eq!(
            status(&g, Method::GET, "/health", &[("host", "pod-1.svc")]),
            200
        );
        let on = BrowserGuard::new(true, &[]);
        assert_eq!(
            status(
                &on,
                Method::GET,
                "/api/v1/devices",
                &[("host", "lab.example.org")]
            ),
            200
        );
    }

    #[test]
    fn foreign_origins_may_not_write_or_upgrade() {
        for g in [BrowserGuard::new(false, &[]), BrowserGuard::new(true, &[])] {
            let stop = "/api/v1/devices/d1/stop";
            let json = ("content-type", "application/json");
            let len = ("content-length", "2");
            let host = ("host", "localhost:8080");
            // A JSON stop with these headers besides.
            let stop_with = |extra: &[(&'static str, &str)]| {
                status(&g, Method::POST, stop, &[&[json, len], extra].concat())
            };
            assert_eq!(stop_with(&[host, ("origin", "http://evil.example")]), 403);
            assert_eq!(stop_with(&[host, ("origin", "null")]), 403);
            assert_eq!(
                stop_with(&[host, ("origin", "http://localhost:3000")]),
                403,
                "another port is another origin"
            );
            assert_eq!(stop_with(&[host, ("sec-fetch-site", "cross-site")]), 403);
            assert_eq!(stop_with(&[host, ("origin", "http://localhost:8080")]), 200);
            assert_eq!(stop_with(&[host]), 200, "curl sends no Origin");
            let ws = [host, ("upgrade", "websocket"), ("connection", "Upgrade")];
            let mut foreign = ws.to_vec();
            foreign.push(("origin", "http://evil.example"));
            assert_eq!(status(&g, Method::GET, "/ws", &foreign), 403);
            let mut own = ws.to_vec();
            own.push(("origin", "http://localhost:8080"));
            assert_eq!(status(&g, Method::GET, "/ws", &own), 200);
            // Reads from other origins are not writes (CORS keeps their answers from the page).
            assert_eq!(
                status(
                    &g,
                    Method::GET,
                    "/api/v1/devices",
                    &[host, ("origin", "http://evil.example")]
                ),
                200
            );
            // Behind a proxy: the name the browser used.
            assert_eq!(
                stop_with(&[
                    ("host", "127.0.0.1:8080"),
                    ("x-forwarded-host", "lab.example.org"),
                    ("origin", "https://lab.example.org")
                ]),
                200
            );
        }
    }

    #[test]
    fn writes_without_credentials_need_a_type_pages_cannot_send_freely() {
        let g = BrowserGuard::new(false, &[]);
        let host = ("host", "127.0.0.1:8080");
        let stop = "/api/v1/devices/d1/stop";
        // A request to this host with these headers besides.
        let to_host = |m: Method, path: &str, extra: &[(&'static str, &str)]| {
            status(&g, m, path, &[&[host], extra].concat())
        };
        for ct in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let typed = [("content-type", ct), ("content-length", "2")];
            assert_eq!(to_host(Method::POST, stop, &typed), 415, "{ct}");
        }
        let untyped = [("content-length", "2")];
        assert_eq!(to_host(Method::POST, stop, &untyped), 415, "no type");
        let json = [
            ("content-type", "application/json"),
            ("content-length", "2"),
        ];
        assert_eq!(to_host(Method::POST, stop, &json), 200);
        let yaml = [
            ("content-type", "application/yaml"),
            ("content-length", "9"),
        ];
        let device = "/api/v1/emulator/devices/d1";
        assert_eq!(to_host(Method::PUT, device, &yaml), 200);
        let zip = [
            ("content-type", "application/zip"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(to_host(Method::POST, "/verify", &zip), 200);
        assert_eq!(
            to_host(Method::POST, stop, &[]),
            200,
            "no body, nothing to type"
        );
        let empty = [("content-length", "0")];
        assert_eq!(to_host(Method::POST, stop, &empty), 200);
        // An explicit credential cannot come from a cross-site page without a preflight.
        let bearer = [
            ("content-type", "text/plain"),
            ("content-length", "2"),
            ("authorization", "Bearer x"),
        ];
        assert_eq!(to_host(Method::POST, stop, &bearer), 200);
        // The OAuth2 password grant is a form.
        let form = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", "9"),
        ];
        assert_eq!(to_host(Method::POST, "/api/v1/auth/token", &form), 200);
    }
}
