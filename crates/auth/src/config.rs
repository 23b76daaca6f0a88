//! `auth:` of fieldlab.yaml: who may call fieldlab, and how password checks are bounded.
//!
//! Why here: the [`crate::Authenticator`] and the [`crate::login::LoginGuard`] are the only
//! readers of these keys; the server, the broker gate and the OPC UA server get their answers
//! from those, not from the keys.

use fieldlab_core::config::{validate_at, HumanDuration, Problem, Section};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Who may call fieldlab (see `fieldlab-auth`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Off: every request acts as a local admin (the demo). Then HTTP and the embedded broker
    /// must stay on loopback unless `allow_open_network` is set.
    pub enabled: bool,
    /// Lifetime of tokens from `POST /api/v1/auth/token`, e.g. `1h`.
    pub token_ttl: HumanDuration,
    /// HS256 signing secret (env JWT_SECRET), at least 32 bytes. Unset: generated at first
    /// start into `<data_dir>/auth/jwt.secret` (mode 0600).
    pub jwt_secret: Option<String>,
    /// Let Prometheus scrape `/metrics` without credentials.
    pub public_metrics: bool,
    /// Allow binding HTTP, MQTT or OPC UA to a non-loopback address with auth off (loud
    /// warning). With auth on it is not needed: every listener takes fieldlab users only.
    pub allow_open_network: bool,
    /// External OAuth2 issuer: its `iss`, the expected `aud`, and its JWKS (file or URL).
    pub oauth2_issuer: Option<String>,
    pub oauth2_audience: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// Claim of external tokens that lists fieldlab roles (array or space-separated).
    pub roles_claim: String,
    /// Password checks (token requests, MQTT and OPC UA logins): the argon2 pool and the
    /// failure limiter.
    pub login: LoginConfig,
}

/// How password checks are bounded (`auth.login`). Each argon2id check takes ~19 MiB and tens
/// of milliseconds of CPU, so at most `workers` run at once; a check that cannot start within
/// `queue_wait` is refused (HTTP 503, MQTT CONNACK 3). Failed logins are counted per user name
/// and per client address (IPv6 by /64): past `per_user` / `per_address` failures within
/// `window`, further attempts are refused without checking (HTTP 429 with `Retry-After`, MQTT
/// CONNACK 5) for `window`, doubling with each lockout up to `max_backoff`. A successful login
/// clears its user's count. 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// argon2 checks at once; 0: one per core, at most 4.
    pub workers: usize,
    pub queue_wait: HumanDuration,
    pub per_user: u32,
    pub per_address: u32,
    pub window: HumanDuration,
    pub max_backoff: HumanDuration,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            workers: 0,
            queue_wait: HumanDuration::from_secs(2),
            per_user: 5,
            per_address: 20,
            window: HumanDuration::from_secs(60),
            max_backoff: HumanDuration::from_secs(15 * 60),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            token_ttl: HumanDuration::from_secs(3600),
            jwt_secret: None,
            public_metrics: true,
            allow_open_network: false,
            oauth2_issuer: None,
            oauth2_audience: None,
            jwks_file: None,
            jwks_url: None,
            roles_claim: "roles".into(),
            login: LoginConfig::default(),
        }
    }
}

impl Section for LoginConfig {
    fn validate(&self) -> Result<(), Problem> {
        for (key, v) in [
            ("queue_wait", self.queue_wait),
            ("window", self.window),
            ("max_backoff", self.max_backoff),
        ] {
            if v.is_zero() {
                return Problem::at(key, "must be longer than 0, e.g. `1m`");
            }
        }
        Ok(())
    }
}

impl Section for AuthConfig {
    fn validate(&self) -> Result<(), Problem> {
        validate_at("login", &self.login)?;
        if let Some(s) = &self.jwt_secret {
            if s.len() < 32 {
                return Problem::at(
                    "jwt_secret",
                    "must be at least 32 bytes (e.g. `openssl rand -base64 48`); leave it unset to have one generated",
                );
            }
        }
        if self.jwks_file.is_some() && self.jwks_url.is_some() {
            return Problem::at("jwks_url", "set auth.jwks_file or auth.jwks_url, not both");
        }
        Ok(())
    }
}
