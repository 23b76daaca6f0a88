//! `POST /api/v1/auth/token` (user name + password in, bearer token out) and
//! `GET /api/v1/auth/whoami`.
//!
//! The token request takes JSON (`{"username": ..., "password": ...}`) or the OAuth2 password
//! grant as a form (`grant_type=password&username=...&password=...`), and answers in the
//! OAuth2 token response shape, so both scripts and OAuth2 client libraries can use it.

use crate::{AppState, Problem};
use axum::extract::{FromRef, FromRequest, Request, State};
use axum::http::{header, StatusCode};
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
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/v1/auth/token", post(token))
        .route("/api/v1/auth/whoami", get(whoami))
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    username: String,
    password: String,
}

async fn token(State(AuthState(auth)): State<AuthState>, req: Request) -> Response {
    let Some(auth) = auth else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "auth-disabled",
            "Authentication is disabled",
            "auth.enabled is false: every request already acts as the local admin; no token is needed",
        )
        .into_response();
    };
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
    // argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let issued =
        tokio::task::spawn_blocking(move || auth.issue_token(&body.username, &body.password)).await;
    match issued {
        Ok(Ok(t)) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::to_value(t).expect("token serialises")),
        )
            .into_response(),
        Ok(Err(fieldlab_auth::AuthError::Internal(e))) => {
            tracing::error!(error = %e, "token issue failed");
            Problem::internal("cannot issue a token; see the server log").into_response()
        }
        Ok(Err(e)) => Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "Invalid credentials",
            e.to_string(),
        )
        .into_response(),
        Err(e) => Problem::internal(e.to_string()).into_response(),
    }
}

async fn whoami(Extension(p): Extension<Principal>) -> Json<Principal> {
    Json(p)
}
