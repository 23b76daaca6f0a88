//! Who may use the OPC UA server when fieldlab's auth is on: fieldlab's own users, with the
//! same roles as over HTTP.
//!
//! Why it exists: with auth on, an anonymous OPC UA server would let anyone who reaches the
//! port stop devices, so it had to stay on loopback. This is async-opcua's [`AuthManager`]
//! for fieldlab:
//!
//! - **Sign-in.** Anonymous is refused. A `UserName` token is checked against the fieldlab
//!   user file through fieldlab-auth's one password check (`Authenticator::verify_password`:
//!   bounded argon2id pool, per-user failure limiter, dummy hash for unknown users; the same
//!   as `POST /api/v1/auth/token` and MQTT), after the per-connection failure cap and the
//!   per-address connection limits of [`crate::front`]. An `X509` user token is accepted when
//!   its certificate (whose private key the client proved it holds; the library checks the
//!   signature) is one of the files in `<pki>/users/trusted` (DER or PEM, exact certificate,
//!   within its validity dates), and its subject common name is an active fieldlab user (or
//!   API key holder): that user's roles apply, as for HTTPS client certificates.
//! - **Where.** User tokens are offered only on signed-and-encrypted endpoints
//!   (`Basic256Sha256` / `SignAndEncrypt`); the password inside is encrypted again with the
//!   server's key (policy `userpass_rsa_oaep`). A password never crosses the network in the
//!   clear, and a session cannot be taken over on the way (every message is signed). With
//!   auth on, [`crate::start`] leaves the `None` endpoint out.
//! - **What.** Every signed-in human role (viewer, student, operator, teacher, admin) may
//!   browse, read and subscribe; calling methods (Start, Stop, RunScenario, StopScenario) and
//!   writing need operator, teacher or admin: anyone else gets `BadUserAccessDenied`. A user
//!   with only the `device` role cannot sign in. Roles are re-read from the user file at each
//!   check, and a session is bound to the user's generation at sign-in, so `fieldlab users
//!   revoke` or `passwd` leaves open sessions of that user with no rights at once (as it
//!   kills the HTTP API's tokens).

use fieldlab_auth::Authenticator;
use fieldlab_core::Role;
use opcua::crypto::{SecurityPolicy, Thumbprint, X509};
use opcua::server::address_space::AccessLevel;
use opcua::server::authenticator::{
    user_pass_security_policy_id, AuthManager, CoreServerPermissions, Password, UserToken,
};
use opcua::server::ServerEndpoint;
use opcua::types::{
    Error, MessageSecurityMode, NodeId, StatusCode, UAString, UserTokenPolicy, UserTokenType,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Roles that may sign in, browse and read (the HTTP API's readers).
const READ: &[Role] = &[
    Role::Admin,
    Role::Operator,
    Role::Viewer,
    Role::Teacher,
    Role::Student,
];
/// Roles that may call methods and write (the HTTP API's device control).
const CONTROL: &[Role] = &[Role::Admin, Role::Operator, Role::Teacher];

/// Most files looked at in the trusted user certificate directory, and the largest one read.
const MAX_USER_CERTS: usize = 1000;
const MAX_CERT_BYTES: u64 = 64 * 1024;

/// The policy id async-opcua requires of X.509 user tokens.
const POLICY_ID_X509: &str = "x509";

/// fieldlab users as OPC UA users (see the module docs).
pub(crate) struct FieldlabUsers {
    /// Failed sign-ins per connection (see [`crate::front`]).
    failures: crate::front::ConnectionFailures,
    /// The client behind each connection the front door relays.
    relayed: Arc<crate::front::Relayed>,
    auth: Arc<Authenticator>,
    /// `<pki>/users/trusted`: the user certificates accepted for X.509 sign-in.
    trusted_user_certs: PathBuf,
}

fn refused(code: StatusCode, message: impl Into<String>) -> Error {
    Error::new(code, message.into())
}

fn any_of(roles: &[Role], allowed: &[Role]) -> bool {
    roles.iter().any(|r| allowed.contains(r))
}

fn secure(endpoint: &ServerEndpoint) -> bool {
    endpoint.security_policy() != SecurityPolicy::None
        && MessageSecurityMode::from(endpoint.security_mode.as_str())
            == MessageSecurityMode::SignAndEncrypt
}

/// The certificate in `dir` with this thumbprint, if any (DER or PEM files).
fn find_cert(dir: &Path, thumbprint: &Thumbprint) -> Option<X509> {
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten().take(MAX_USER_CERTS) {
        let path = e.path();
        if !e
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= MAX_CERT_BYTES)
        {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let cert = if bytes.starts_with(b"-----BEGIN") {
            X509::from_pem(&bytes)
        } else {
            X509::from_der(&bytes)
        };
        match cert {
            Ok(c) if &c.thumbprint() == thumbprint => return Some(c),
            Ok(_) => {}
            Err(_) => tracing::debug!(path = %path.display(), "not a certificate; skipped"),
        }
    }
    None
}

impl FieldlabUsers {
    pub(crate) fn new(
        auth: Arc<Authenticator>,
        trusted_user_certs: PathBuf,
        relayed: Arc<crate::front::Relayed>,
    ) -> FieldlabUsers {
        FieldlabUsers {
            failures: Default::default(),
            relayed,
            auth,
            trusted_user_certs,
        }
    }

    /// The current roles of a session's user: `None` once the user was revoked or changed
    /// password since signing in (like the HTTP API's tokens), or the file is unreadable.
    fn roles(&self, token: &UserToken) -> Option<Vec<Role>> {
        let db = self.auth.users().current().ok()?;
        match Identity::parse(token)? {
            Identity::User { name, generation } => db
                .user(name)
                .filter(|u| !u.revoked && u.generation == generation)
                .map(|u| u.roles.clone()),
            Identity::Key { name } => db
                .keys
                .iter()
                .find(|k| k.name == name && !k.revoked)
                .map(|k| k.roles.clone()),
        }
    }

    fn signed_in(&self, who: Identity<'_>, roles: &[Role], how: &str) -> Result<UserToken, Error> {
        let name = who.name();
        if !any_of(roles, READ) {
            tracing::info!(user = %name, how, "OPC UA sign-in refused: no role that may read (device keys cannot sign in)");
            return Err(refused(
                StatusCode::BadUserAccessDenied,
                format!("`{name}` has no role that may use OPC UA (viewer, student, operator, teacher or admin)"),
            ));
        }
        tracing::info!(user = %name, how, "OPC UA sign-in");
        Ok(who.token())
    }
}

/// Who a session belongs to, kept in its [`UserToken`] as `user/<generation>/<name>` or
/// `key//<name>` (names cannot hold `/`).
#[derive(Debug, PartialEq)]
enum Identity<'a> {
    /// A user, as of its generation at sign-in.
    User { name: &'a str, generation: u32 },
    /// An API key holder (X.509 only: the CN names the key).
    Key { name: &'a str },
}

impl<'a> Identity<'a> {
    fn name(&self) -> &'a str {
        match self {
            Identity::User { name, .. } | Identity::Key { name } => name,
        }
    }

    fn token(&self) -> UserToken {
        UserToken(match self {
            Identity::User { name, generation } => format!("user/{generation}/{name}"),
            Identity::Key { name } => format!("key//{name}"),
        })
    }

    fn parse(t: &'a UserToken) -> Option<Identity<'a>> {
        let (kind, rest) = t.0.split_once('/')?;
        let (generation, name) = rest.split_once('/')?;
        match kind {
            "user" => Some(Identity::User {
                name,
                generation: generation.parse().ok()?,
            }),
            "key" => Some(Identity::Key { name }),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl AuthManager for FieldlabUsers {
    async fn authenticate_anonymous_token(&self, _endpoint: &ServerEndpoint) -> Result<(), Error> {
        Err(refused(
            StatusCode::BadIdentityTokenRejected,
            "anonymous access is off because fieldlab auth is on: sign in with a fieldlab user name and password, or an X.509 user certificate",
        ))
    }

    async fn authenticate_username_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        username: &str,
        password: &Password,
    ) -> Result<UserToken, Error> {
        if !secure(endpoint) {
            // Not offered there (see user_token_policies); refuse anyway, in depth.
            return Err(refused(
                StatusCode::BadIdentityTokenRejected,
                "user names and passwords are accepted only on the Basic256Sha256 SignAndEncrypt endpoint",
            ));
        }
        let db_err = |e: fieldlab_auth::AuthError| {
            tracing::error!(error = %e, "OPC UA sign-in: cannot read the user file");
            refused(StatusCode::BadInternalError, "cannot read the user file")
        };
        // The generation before the check: a password changed meanwhile leaves the session
        // with no rights rather than binding it to the new password's generation.
        let generation = |db: &fieldlab_auth::UserFile| db.user(username).map(|u| u.generation);
        let before = generation(&*self.auth.users().current().map_err(db_err)?);
        // A connection that has used up its failed sign-ins is refused without a check;
        // crate::front limits the connections per address, and the client address (from the
        // patched async-opcua's CONNECTION_PEER through the front door's relay map) feeds
        // fieldlab-auth's per-address failure limiter beside the per-user one.
        let client = opcua::server::CONNECTION_PEER
            .try_with(|peer| self.relayed.client_of(*peer))
            .ok();
        if self.failures.exhausted() {
            tracing::info!(user = %username, "OPC UA sign-in refused: too many failed sign-ins on this connection");
            return Err(refused(
                StatusCode::BadUserAccessDenied,
                format!(
                    "too many failed sign-ins on this connection ({}); reconnect to try again",
                    crate::front::MAX_FAILURES_PER_CONNECTION
                ),
            ));
        }
        match self
            .auth
            .verify_password(username, password.get(), client)
            .await
        {
            Ok(p) => {
                let generation = match before {
                    Some(g) => g,
                    None => generation(&*self.auth.users().current().map_err(db_err)?)
                        .unwrap_or_default(),
                };
                self.signed_in(
                    Identity::User {
                        name: username,
                        generation,
                    },
                    &p.roles,
                    "password",
                )
            }
            Err(e) => {
                tracing::info!(user = %username, error = %e, "OPC UA sign-in refused");
                if !matches!(e, fieldlab_auth::AuthError::Internal(_)) {
                    self.failures.record_failure();
                }
                Err(match e {
                    fieldlab_auth::AuthError::Busy { .. } => {
                        refused(StatusCode::BadTooManyOperations, format!("{e}"))
                    }
                    fieldlab_auth::AuthError::Internal(_) => db_err(e),
                    // Unknown user, wrong password, revoked, or locked out after failures.
                    _ => refused(StatusCode::BadUserAccessDenied, format!("{e}")),
                })
            }
        }
    }

    async fn authenticate_x509_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        signing_thumbprint: &Thumbprint,
    ) -> Result<UserToken, Error> {
        if !secure(endpoint) {
            return Err(refused(
                StatusCode::BadIdentityTokenRejected,
                "user certificates are accepted only on the Basic256Sha256 SignAndEncrypt endpoint",
            ));
        }
        let dir = self.trusted_user_certs.clone();
        let tp = signing_thumbprint.clone();
        let cert = tokio::task::spawn_blocking(move || find_cert(&dir, &tp))
            .await
            .map_err(|e| refused(StatusCode::BadInternalError, e.to_string()))?;
        let Some(cert) = cert else {
            tracing::info!(
                thumbprint = %signing_thumbprint.as_hex_string(),
                dir = %self.trusted_user_certs.display(),
                "OPC UA sign-in refused: the user certificate is not in the trusted user certificates"
            );
            return Err(refused(
                StatusCode::BadIdentityTokenRejected,
                "this user certificate is not trusted: an admin copies it into <data_dir>/opcua/pki/users/trusted",
            ));
        };
        cert.is_time_valid(&chrono::Utc::now()).inspect_err(|e| {
            tracing::info!(error = %e, "OPC UA sign-in refused: user certificate out of its validity dates");
        })?;
        let cn = cert.common_name().map_err(|_| {
            refused(
                StatusCode::BadIdentityTokenRejected,
                "the user certificate has no subject common name (CN = the fieldlab user name)",
            )
        })?;
        // The library gives the attribute as RFC 4514 text, `CN=<value>`.
        let cn = cn
            .split_once('=')
            .map_or(cn.as_str(), |(_, v)| v)
            .to_string();
        // The CN names a user or, failing that, an API key (as for HTTPS client certificates).
        let db = self.auth.users().current().map_err(|e| {
            tracing::error!(error = %e, "OPC UA sign-in: cannot read the user file");
            refused(StatusCode::BadInternalError, "cannot read the user file")
        })?;
        let found = match db.user(&cn).filter(|u| !u.revoked) {
            Some(u) => Some((
                Identity::User {
                    name: &cn,
                    generation: u.generation,
                },
                u.roles.clone(),
            )),
            None => db
                .keys
                .iter()
                .find(|k| k.name == cn && !k.revoked)
                .map(|k| (Identity::Key { name: &cn }, k.roles.clone())),
        };
        match found {
            Some((who, roles)) => self.signed_in(who, &roles, "certificate"),
            None => {
                tracing::info!(user = %cn, "OPC UA sign-in refused: the user certificate's CN names no active user or key");
                Err(refused(
                    StatusCode::BadUserAccessDenied,
                    format!("the user certificate's CN={cn} names no active fieldlab user; add one with `fieldlab users add {cn} --role ...`"),
                ))
            }
        }
    }

    fn effective_user_access_level(
        &self,
        token: &UserToken,
        user_access_level: AccessLevel,
        _node_id: &NodeId,
    ) -> AccessLevel {
        match self.roles(token) {
            None => AccessLevel::empty(),
            Some(r) if any_of(&r, CONTROL) => user_access_level,
            Some(r) if any_of(&r, READ) => {
                user_access_level & (AccessLevel::CURRENT_READ | AccessLevel::HISTORY_READ)
            }
            Some(_) => AccessLevel::empty(),
        }
    }

    fn is_user_executable(&self, token: &UserToken, _method_id: &NodeId) -> bool {
        self.roles(token).is_some_and(|r| any_of(&r, CONTROL))
    }

    fn user_token_policies(&self, endpoint: &ServerEndpoint) -> Vec<UserTokenPolicy> {
        if !secure(endpoint) {
            return Vec::new();
        }
        vec![
            UserTokenPolicy {
                // userpass_rsa_oaep: the password is encrypted with the server's key as well.
                policy_id: user_pass_security_policy_id(endpoint),
                token_type: UserTokenType::UserName,
                issued_token_type: UAString::null(),
                issuer_endpoint_url: UAString::null(),
                security_policy_uri: UAString::null(),
            },
            UserTokenPolicy {
                policy_id: UAString::from(POLICY_ID_X509),
                token_type: UserTokenType::Certificate,
                issued_token_type: UAString::null(),
                issuer_endpoint_url: UAString::null(),
                security_policy_uri: UAString::from(endpoint.security_policy().to_uri()),
            },
        ]
    }

    fn core_permissions(&self, token: &UserToken) -> CoreServerPermissions {
        CoreServerPermissions {
            read_diagnostics: self.roles(token).is_some_and(|r| r.contains(&Role::Admin)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_and_control_roles() {
        assert!(any_of(&[Role::Viewer], READ) && !any_of(&[Role::Viewer], CONTROL));
        assert!(any_of(&[Role::Student], READ) && !any_of(&[Role::Student], CONTROL));
        for r in [Role::Operator, Role::Teacher, Role::Admin] {
            assert!(any_of(&[r], READ) && any_of(&[r], CONTROL), "{r:?}");
        }
        assert!(!any_of(&[Role::Device], READ));
    }

    #[test]
    fn identities_round_trip_through_the_session_token() {
        for who in [
            Identity::User {
                name: "ann@lab",
                generation: 3,
            },
            Identity::Key { name: "dev-1" },
        ] {
            let t = who.token();
            assert_eq!(Identity::parse(&t), Some(who));
        }
        for bad in [
            "ann",
            "user/x/ann",
            "other//ann",
            opcua::server::ANONYMOUS_USER_TOKEN_ID,
        ] {
            assert_eq!(Identity::parse(&UserToken(bad.into())), None, "{bad}");
        }
    }
}
