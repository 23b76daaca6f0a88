//! Who is making a request: the one type the auth layer produces and every guarded handler reads.
//!
//! Why it lives in core: the HTTP server, the rate limiter (client identity for per-token
//! limits, admin-only config) and the proof verifier API all need to ask "who is this and what
//! may they do" without depending on the crate that authenticates. The auth middleware inserts a
//! [`Principal`] into every request's extensions; handlers extract it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A role. The lab roles (teacher, student) sit beside the operations roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::EnumCount, utoipa::ToSchema)]
#[strum(serialize_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Viewer,
    Teacher,
    Student,
    /// A device or script holding an API key.
    Device,
}

impl Role {
    pub const ALL: [Role; <Role as strum::EnumCount>::COUNT] = [
        Role::Admin,
        Role::Operator,
        Role::Viewer,
        Role::Teacher,
        Role::Student,
        Role::Device,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Role> {
        s.parse().ok()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the principal was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Auth is disabled (the local demo): every request acts as a local admin.
    Disabled,
    /// A bearer JWT.
    Jwt,
    /// An API key.
    ApiKey,
    /// A TLS client certificate.
    ClientCert,
    /// A user name and password checked at login (OPC UA user sessions).
    Password,
    /// No (valid) credentials, on a public path: no roles, no scopes.
    Anonymous,
}

/// Who is calling (`GET /api/v1/auth/whoami`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Principal {
    /// User name, key id or certificate subject. Used as the rate-limit identity.
    pub subject: String,
    pub roles: Vec<Role>,
    /// OAuth2-style scopes (e.g. `verify:run`), empty when not applicable.
    pub scopes: Vec<String>,
    pub method: AuthMethod,
}

impl Principal {
    /// The principal of every request when auth is disabled.
    pub fn local_admin() -> Self {
        Principal {
            subject: "local".into(),
            roles: vec![Role::Admin],
            scopes: Vec::new(),
            method: AuthMethod::Disabled,
        }
    }

    /// The principal of an unauthenticated request to a public path (health, token endpoint).
    pub fn anonymous() -> Self {
        Principal {
            subject: "anonymous".into(),
            roles: Vec::new(),
            scopes: Vec::new(),
            method: AuthMethod::Anonymous,
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(Role::Admin)
    }

    /// Auth disabled grants every scope; otherwise the scope must be listed (or the principal is admin).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.method == AuthMethod::Disabled
            || self.is_admin()
            || self.scopes.iter().any(|s| s == scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_local_admin_is_admin() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
        let p = Principal::local_admin();
        assert!(p.is_admin() && p.has_scope("verify:run"));
        let v = Principal {
            subject: "ann".into(),
            roles: vec![Role::Viewer],
            scopes: vec!["policy:read".into()],
            method: AuthMethod::Jwt,
        };
        assert!(!v.is_admin() && v.has_scope("policy:read") && !v.has_scope("verify:run"));
    }
}
