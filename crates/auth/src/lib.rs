//! fieldlab-auth: who is calling, and may they.
//!
//! Why it exists: fieldlab exposes device control, configuration and data over HTTP and MQTT.
//! This crate turns credentials into a [`Principal`] (the contract in `fieldlab-core`) and
//! says which roles a request needs ([`policy`]). It accepts, in order:
//! - an API key (`Authorization: Bearer flk_...` or `X-API-Key: flk_...`) for devices and
//!   scripts, stored hashed ([`users`]);
//! - a JWT bearer token issued by `POST /api/v1/auth/token` (HS256 with a random secret made at
//!   first start, or `JWT_SECRET`), checked against the user's current state, so revoking a user
//!   or changing a password kills their tokens at once;
//! - a JWT from an external OAuth2 issuer, verified with its JWKS (file or URL) by `kid`.
//!
//! There is no default user and no default secret: the first admin is created with
//! `fieldlab users add NAME --role admin`.
//!
//! Architecture invariant: no HTTP types here. The server's middleware maps headers in and
//! [`AuthError`]s out; the broker asks [`Authenticator::check_mqtt`].

mod config;
pub mod jwt;
pub mod login;
pub mod policy;
pub mod users;

use base64::Engine;
pub use config::{AuthConfig, LoginConfig};
use fieldlab_core::{AuthMethod, Principal, Role};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
pub use users::{UserDb, UserFile};

/// Issuer of fieldlab's own tokens.
pub const ISSUER: &str = "fieldlab";
/// The MQTT user name of fieldlab's own clients (ingest, emulated devices).
pub const INTERNAL_MQTT_USER: &str = "fieldlab-internal";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A bad request or argument (CLI, token request body): 400.
    #[error("{0}")]
    Invalid(String),
    /// Storage or key material problems: 500.
    #[error("{0}")]
    Internal(String),
    /// Too many failed logins for this user or from this address: 429 with `Retry-After`
    /// (MQTT: CONNACK 5, not authorized). No password was checked.
    #[error("too many failed logins for this user or from this address; try again in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    /// Every password check worker stayed busy for `auth.login.queue_wait`: 503 with
    /// `Retry-After` (MQTT: CONNACK 3, server unavailable). No password was checked.
    #[error("the server is busy checking other logins; try again in {} s", retry_after.as_secs().max(1))]
    Busy { retry_after: Duration },
}

impl AuthError {
    /// How long the caller should wait before trying again, for the refusals that say so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AuthError::Throttled { retry_after } | AuthError::Busy { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

/// The body of `POST /api/v1/auth/token`'s answer (OAuth2 token response shape).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct OwnClaims {
    sub: String,
    iss: String,
    iat: u64,
    exp: u64,
    roles: Vec<Role>,
    /// The user's generation when issued; a different one now means revoked or re-keyed.
    gen: u32,
}

/// The external issuer: its keys (a JWKS file or URL, re-read on an unknown `kid` at most once
/// a minute) in the one JWT verifier, [`jwt::JwtVerifier`].
struct External {
    verifier: jwt::JwtVerifier,
    file: Option<PathBuf>,
    url: Option<String>,
    last_fetch: Mutex<Option<Instant>>,
}

/// Turns credentials into principals. Cheap to share behind an `Arc`.
pub struct Authenticator {
    db: std::sync::Arc<UserDb>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
    public_metrics: bool,
    external: Option<External>,
    internal_mqtt_password: String,
    login: login::LoginGuard,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.db.path())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

pub(crate) fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The HS256 secret: `auth.jwt_secret` / `JWT_SECRET` if set, else `<data_dir>/auth/jwt.secret`,
/// created with 32 random bytes (mode 0600) on first start. Deleting the file signs everyone out.
pub fn load_or_create_secret(cfg: &AuthConfig, data_dir: &Path) -> Result<Vec<u8>, AuthError> {
    if let Some(s) = &cfg.jwt_secret {
        if s.len() < 32 {
            return Err(AuthError::Invalid(
                "auth.jwt_secret (JWT_SECRET) is shorter than 32 bytes; use e.g. `openssl rand -base64 48`, or leave it unset to let fieldlab generate one".into(),
            ));
        }
        return Ok(s.as_bytes().to_vec());
    }
    let dir = data_dir.join("auth");
    let path = dir.join("jwt.secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {
            return Err(AuthError::Internal(format!(
                "{} is shorter than 32 bytes; delete it to have a new one generated",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(AuthError::Internal(format!("{}: {e}", path.display()))),
    }
    let io = |e: std::io::Error| AuthError::Internal(format!("{}: {e}", path.display()));
    users::create_private_dir(&dir).map_err(io)?;
    let secret = random_b64(32);
    users::write_private(&path, secret.as_bytes()).map_err(io)?;
    tracing::info!(path = %path.display(), "generated a new JWT signing secret");
    Ok(secret.into_bytes())
}

impl Authenticator {
    /// Set up from config. Reads (or creates) the signing secret and loads the external
    /// issuer's JWKS if one is configured.
    pub async fn new(cfg: &AuthConfig, data_dir: &Path) -> Result<Authenticator, AuthError> {
        let secret = load_or_create_secret(cfg, data_dir)?;
        let external = if cfg.jwks_file.is_some() || cfg.jwks_url.is_some() {
            if cfg.oauth2_issuer.is_none() || cfg.oauth2_audience.is_none() {
                let missing: Vec<&str> = [
                    cfg.oauth2_issuer
                        .is_none()
                        .then_some("auth.oauth2_issuer (`iss`)"),
                    cfg.oauth2_audience
                        .is_none()
                        .then_some("auth.oauth2_audience (`aud`)"),
                ]
                .into_iter()
                .flatten()
                .collect();
                tracing::warn!(
                    "an external token issuer is configured without {}: any token its keys signed is accepted, also one issued for another application; set them to the issuer's `iss` and to the audience it issues fieldlab's tokens for",
                    missing.join(" and ")
                );
            }
            Some(External {
                verifier: jwt::JwtVerifier::with(
                    cfg.oauth2_issuer.clone(),
                    cfg.oauth2_audience.clone(),
                )
                .roles_from(&cfg.roles_claim),
                file: cfg.jwks_file.clone(),
                url: cfg.jwks_url.clone(),
                last_fetch: Mutex::new(None),
            })
        } else {
            None
        };
        let a = Authenticator {
            db: std::sync::Arc::new(UserDb::open(data_dir)),
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            ttl: cfg.token_ttl.get().max(Duration::from_secs(1)),
            public_metrics: cfg.public_metrics,
            external,
            internal_mqtt_password: random_b64(32),
            login: login::LoginGuard::from_config(&cfg.login),
        };
        // The dummy hash of unknown users is made once; make it now, not in the first login.
        std::thread::spawn(|| {
            let _ = login::check_password_uniform(&UserFile::default(), "", "");
        });
        if let Some(x) = &a.external {
            x.refresh().await?;
        }
        a.db.current()?;
        Ok(a)
    }

    pub fn users(&self) -> &UserDb {
        &self.db
    }

    pub fn public_metrics(&self) -> bool {
        self.public_metrics
    }

    /// Credentials fieldlab's own MQTT clients use on the embedded broker (random per start).
    pub fn internal_mqtt_credentials(&self) -> (String, String) {
        (
            INTERNAL_MQTT_USER.to_string(),
            self.internal_mqtt_password.clone(),
        )
    }

    /// The password pool and failure limiter every password check goes through.
    pub fn login_guard(&self) -> &login::LoginGuard {
        &self.login
    }

    /// Check a user's password from `client` through the bounded argon2 pool and the failure
    /// limiter (see [`login`]): the one password check for every protocol (the token endpoint,
    /// MQTT CONNECT, OPC UA user logins). Errors: [`AuthError::Unauthenticated`] (unknown
    /// user, wrong password, revoked user: one answer, one timing), [`AuthError::Throttled`],
    /// [`AuthError::Busy`], [`AuthError::Internal`].
    pub async fn verify_password(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let u = self.checked_user(username, password, client).await?;
        Ok(Principal {
            subject: u.name,
            roles: u.roles,
            scopes: vec![],
            method: AuthMethod::Password,
        })
    }

    async fn checked_user(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<users::User, AuthError> {
        let db = self.db.clone();
        self.login
            .check(username, password, client, move || db.current())
            .await
    }

    /// `POST /api/v1/auth/token`: check a user name and password from `client` (pool and
    /// limiter, see [`Authenticator::verify_password`]) and issue a token.
    pub async fn issue_token_for(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<IssuedToken, AuthError> {
        let u = self.checked_user(username, password, client).await?;
        self.token_for(&u)
    }

    /// Check a user name and password and issue a token, on the calling thread and without the
    /// pool or the failure limiter (the CLI, tests); servers use
    /// [`Authenticator::issue_token_for`].
    pub fn issue_token(&self, username: &str, password: &str) -> Result<IssuedToken, AuthError> {
        let db = self.db.current()?;
        let u = db.check_password(username, password).ok_or_else(|| {
            AuthError::Unauthenticated("unknown user, wrong password, or revoked user".into())
        })?;
        self.token_for(u)
    }

    fn token_for(&self, u: &users::User) -> Result<IssuedToken, AuthError> {
        let iat = now_s();
        let claims = OwnClaims {
            sub: u.name.clone(),
            iss: ISSUER.into(),
            iat,
            exp: iat + self.ttl.as_secs(),
            roles: u.roles.clone(),
            gen: u.generation,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(IssuedToken {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Authenticate a request from its `Authorization` and `X-API-Key` header values.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let bearer = match authorization {
            Some(h) => Some(
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
                    .map(str::trim)
                    .ok_or_else(|| {
                        AuthError::Unauthenticated(
                            "the Authorization header must be `Bearer <token or API key>`".into(),
                        )
                    })?,
            ),
            None => None,
        };
        let cred = bearer.or(api_key).ok_or_else(|| {
            AuthError::Unauthenticated(
                "authentication required: send `Authorization: Bearer <token>` (get one from POST /api/v1/auth/token) or an API key".into(),
            )
        })?;
        if cred.starts_with(users::KEY_PREFIX) {
            let db = self.db.current()?;
            let k = db
                .check_key(cred)
                .ok_or_else(|| AuthError::Unauthenticated("unknown or revoked API key".into()))?;
            return Ok(Principal {
                subject: k.name.clone(),
                roles: k.roles.clone(),
                scopes: vec![],
                method: AuthMethod::ApiKey,
            });
        }
        let header = jsonwebtoken::decode_header(cred)
            .map_err(|e| AuthError::Unauthenticated(format!("not a valid bearer token: {e}")))?;
        if header.alg == Algorithm::HS256 {
            self.own_token(cred)
        } else if let Some(x) = &self.external {
            x.verify(cred).await
        } else {
            Err(AuthError::Unauthenticated(format!(
                "tokens signed with {:?} are not accepted: no external issuer (auth.jwks_file / auth.jwks_url) is configured",
                header.alg
            )))
        }
    }

    fn own_token(&self, token: &str) -> Result<Principal, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.validate_aud = false;
        v.leeway = 5;
        let data = jsonwebtoken::decode::<OwnClaims>(token, &self.decoding, &v)
            .map_err(|e| AuthError::Unauthenticated(format!("bearer token rejected: {e}")))?;
        let c = data.claims;
        let db = self.db.current()?;
        let u = db
            .user(&c.sub)
            .filter(|u| !u.revoked && u.generation == c.gen)
            .ok_or_else(|| {
                AuthError::Unauthenticated(
                    "this token's user was revoked or changed password; get a new token".into(),
                )
            })?;
        Ok(Principal {
            subject: u.name.clone(),
            roles: u.roles.clone(),
            scopes: vec![],
            method: AuthMethod::Jwt,
        })
    }

    /// The principal of a verified TLS client certificate: the user (or API key holder)
    /// named by its common name, with that user's roles.
    pub fn principal_for_cert(&self, common_name: &str) -> Result<Principal, AuthError> {
        let db = self.db.current()?;
        let roles = db
            .user(common_name)
            .filter(|u| !u.revoked)
            .map(|u| u.roles.clone())
            .or_else(|| {
                db.keys
                    .iter()
                    .find(|k| k.name == common_name && !k.revoked)
                    .map(|k| k.roles.clone())
            })
            .ok_or_else(|| {
                AuthError::Unauthenticated(format!(
                    "client certificate CN={common_name} names no active user or key; add one with `fieldlab users add {common_name} --role ...`"
                ))
            })?;
        Ok(Principal {
            subject: common_name.to_string(),
            roles,
            scopes: vec![],
            method: AuthMethod::ClientCert,
        })
    }

    /// MQTT CONNECT check for the embedded broker. Accepts fieldlab's internal credentials,
    /// an API key as password (user name = the key's name; a key that only has the `device`
    /// role must also use its name as client id, so one device cannot pose as another), or a
    /// user's password. CPU-heavy for passwords (argon2): call it off the async executor.
    pub fn check_mqtt(&self, client_id: &str, username: &str, password: &str) -> bool {
        self.mqtt_login(client_id, username, password).is_some()
    }

    /// The MQTT CONNECT check of the embedded broker's gate: [`Authenticator::mqtt_login`]
    /// with passwords checked through the pool and the failure limiter, keyed by the client's
    /// address. API keys (SHA-256, not argon2) and fieldlab's own login need neither.
    pub async fn mqtt_connect(
        &self,
        client_id: &str,
        username: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<MqttLogin, AuthError> {
        let refused =
            || AuthError::Unauthenticated("bad user name, password or API key".to_string());
        if username == INTERNAL_MQTT_USER || password.starts_with(users::KEY_PREFIX) {
            return self
                .mqtt_login(client_id, username, password)
                .ok_or_else(refused);
        }
        let u = self.checked_user(username, password, Some(client)).await?;
        Ok(MqttLogin {
            name: u.name,
            roles: u.roles,
            internal: false,
        })
    }

    /// [`Authenticator::check_mqtt`], saying who logged in: what the broker's topic ACL
    /// ([`MqttLogin::topics`]) is made from. On the calling thread, without the pool or the
    /// failure limiter (tests); the broker uses [`Authenticator::mqtt_connect`].
    pub fn mqtt_login(&self, client_id: &str, username: &str, password: &str) -> Option<MqttLogin> {
        if username == INTERNAL_MQTT_USER {
            return bool::from(
                password
                    .as_bytes()
                    .ct_eq(self.internal_mqtt_password.as_bytes()),
            )
            .then(|| MqttLogin {
                name: username.to_string(),
                roles: vec![Role::Admin],
                internal: true,
            });
        }
        let db = self.db.current().ok()?;
        if password.starts_with(users::KEY_PREFIX) {
            return db
                .check_key(password)
                .filter(|k| {
                    k.name == username
                        && (k.roles.iter().any(|r| *r != Role::Device) || k.name == client_id)
                })
                .map(|k| MqttLogin {
                    name: k.name.clone(),
                    roles: k.roles.clone(),
                    internal: false,
                });
        }
        db.check_password(username, password).map(|u| MqttLogin {
            name: u.name.clone(),
            roles: u.roles.clone(),
            internal: false,
        })
    }
}

/// Who an MQTT CONNECT authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttLogin {
    pub name: String,
    pub roles: Vec<Role>,
    /// fieldlab's own ingest, emulator and event publisher.
    pub internal: bool,
}

/// Topic filters one login may use: `None` means any topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTopics {
    pub read: Option<Vec<String>>,
    pub write: Option<Vec<String>>,
}

impl MqttLogin {
    /// The topic ACL of this login, the same rules as `deploy/compose/mosquitto/acl`:
    /// - fieldlab itself, admins, operators and teachers: every topic;
    /// - viewers and students: read every device topic and fieldlab's events, write nothing;
    /// - a device (a key with only the `device` role, whose name is the device id): write its
    ///   own `devices/+/<id>/telemetry` and `devices/+/<id>/status`, read its own
    ///   `devices/+/<id>/commands`. An id with MQTT wildcard or level characters gets nothing.
    pub fn topics(&self) -> MqttTopics {
        let all = MqttTopics {
            read: None,
            write: None,
        };
        if self.internal
            || self
                .roles
                .iter()
                .any(|r| matches!(r, Role::Admin | Role::Operator | Role::Teacher))
        {
            return all;
        }
        if self
            .roles
            .iter()
            .any(|r| matches!(r, Role::Viewer | Role::Student))
        {
            return MqttTopics {
                read: Some(vec!["devices/#".into(), "fieldlab/#".into()]),
                write: Some(vec![]),
            };
        }
        let id = &self.name;
        if id.is_empty() || id.contains(['+', '#', '/']) || id.starts_with('$') {
            return MqttTopics {
                read: Some(vec![]),
                write: Some(vec![]),
            };
        }
        MqttTopics {
            read: Some(vec![format!("devices/+/{id}/commands")]),
            write: Some(vec![
                format!("devices/+/{id}/telemetry"),
                format!("devices/+/{id}/status"),
            ]),
        }
    }
}

impl External {
    async fn refresh(&self) -> Result<(), AuthError> {
        let set: JwkSet = if let Some(f) = &self.file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| AuthError::Internal(format!("auth.jwks_file {}: {e}", f.display())))?;
            serde_json::from_str(&text)
                .map_err(|e| AuthError::Internal(format!("auth.jwks_file {}: {e}", f.display())))?
        } else if let Some(u) = &self.url {
            let get = async {
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()?
                    .get(u)
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<JwkSet>()
                    .await
            };
            get.await
                .map_err(|e| AuthError::Internal(format!("auth.jwks_url {u}: {e}")))?
        } else {
            return Ok(());
        };
        self.verifier
            .replace_jwks(&set)
            .map_err(|e| AuthError::Internal(format!("the issuer's JWKS: {e}")))?;
        *self.last_fetch.lock() = Some(Instant::now());
        Ok(())
    }

    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if !self.verifier.has_key_for(token) {
            // Key rotation: re-read the set, at most once a minute.
            let stale = self
                .last_fetch
                .lock()
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60));
            if stale {
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "cannot refresh the JWKS");
                }
            }
        }
        self.verifier
            .verify(token)
            .map_err(|e| AuthError::Unauthenticated(format!("bearer token rejected: {e}")))
    }
}

#[cfg(test)]
mod tests;
