//! `POST /api/v1/auth/token` (user name + password in, bearer token out) and
//! `GET /api/v1/auth/whoami`.
//!
//! The token request takes JSON (`{"username": ..., "password": ...}`) or the OAuth2 password
//! grant as a form (`grant_type=password&username=...&password=...`), and answers in the
//! OAuth2 token response shape, so both scripts and OAuth2 client libraries can use it.
//!
//! Password checks go through the authenticator's bounded argon2 pool and failure limiter
//! (`fieldlab_auth::login`), keyed by user name and client address (the peer, or the
//! `X-Forwarded-For` client named by a trusted proxy, `ratelimit.trusted_proxies`): too many
//! failures answer 429, a pool that stays busy 503, both with `Retry-After`.

use crate::{AppState, Problem};
use axum::extract::{ConnectInfo, FromRef, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use fieldlab_core::Principal;
use serde::Deserialize;

/// The credentials checker, for any router state that has one (`fieldlab up`'s [`AppState`],
/// `fieldlab ratelimit serve`). None: auth disabled.
#[derive(Clone)]
pub struct AuthState(pub Option<std::sync::Arc<fieldlab_auth::Authenticator>>);

impl FromRef<AppState> for AuthState {
    fn from_ref(s: &AppState) -> Self {
        AuthState(s.auth.clone())
    }
}

pub fn router<S>() -> Router<S>
where
    AuthState: FromRef<S>,
    crate::ratelimit::RatelimitState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/v1/auth/token", post(token))
        .route("/api/v1/auth/whoami", get(whoami))
}

/// An OAuth2 password grant (JSON or a form).
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct TokenRequest {
    /// `password` when given.
    #[schema(examples("password"))]
    grant_type: Option<String>,
    username: String,
    #[schema(format = Password)]
    password: String,
}

/// The client's address: the peer, or the client a trusted proxy names.
fn client_ip(rl: &crate::ratelimit::RatelimitState, req: &Request) -> Option<std::net::IpAddr> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<crate::tls::PeerInfo>>()
        .map(|c| c.0.addr.ip())
        .or_else(|| {
            req.extensions()
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip())
        })?;
    let Some(l) = &rl.limiter else {
        return Some(peer);
    };
    Some(crate::ratelimit::forwarded_client(l, peer, req))
}

async fn token(
    State(AuthState(auth)): State<AuthState>,
    State(rl): State<crate::ratelimit::RatelimitState>,
    req: Request,
) -> Response {
    let Some(auth) = auth else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "auth-disabled",
            "Authentication is disabled",
            "auth.enabled is false: every request already acts as the local admin; no token is needed",
        )
        .into_response();
    };
    let client = client_ip(&rl, &req);
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let body = if form {
        Form::<TokenRequest>::from_request(req, &())
            .await
            .map(|f| f.0)
            .map_err(|e| e.body_text())
    } else {
        Json::<TokenRequest>::from_request(req, &())
            .await
            .map(|j| j.0)
            .map_err(|e| e.body_text())
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "Invalid token request",
                format!("send JSON {{\"username\": ..., \"password\": ...}} or an OAuth2 password-grant form: {e}"),
            )
            .into_response()
        }
    };
    if body.grant_type.as_deref().is_some_and(|g| g != "password") {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "unsupported-grant-type",
            "Unsupported grant type",
            "only grant_type=password is supported; devices and scripts use API keys",
        )
        .into_response();
    }
    // argon2 runs in the authenticator's bounded pool, off the async workers.
    use fieldlab_auth::AuthError;
    match auth
        .issue_token_for(&body.username, &body.password, client)
        .await
    {
        Ok(t) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::to_value(t).expect("token serialises")),
        )
            .into_response(),
        Err(AuthError::Internal(e)) => {
            tracing::error!(error = %e, "token issue failed");
            Problem::internal("cannot issue a token; see the server log").into_response()
        }
        Err(e @ (AuthError::Throttled { .. } | AuthError::Busy { .. })) => {
            let wait = e.retry_after().unwrap_or_default();
            let (status, slug, title) = if matches!(e, AuthError::Busy { .. }) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "login-busy",
                    "Too many logins at once",
                )
            } else {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-failed-logins",
                    "Too many failed logins",
                )
            };
            let mut resp = Problem::new(status, slug, title, e.to_string()).into_response();
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64),
            );
            resp
        }
        Err(e) => Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "Invalid credentials",
            e.to_string(),
        )
        .into_response(),
    }
}

async fn whoami(Extension(p): Extension<Principal>) -> Json<Principal> {
    Json(p)
}
