//! Which requests need which role: one table for the whole router.
//!
//! Why a table and not per-handler checks: other parts of fieldlab add routes all the time. A
//! router-wide layer that asks [`required`] covers a new route the moment it is merged, and
//! the default for anything not listed is the safe one (authenticated; writes need an
//! operator). Pure: method and path in, requirement out.
//!
//! | requests | who |
//! |---|---|
//! | health, readiness, `/`, UI assets, `/openapi.json`, the UI's endpoint probe, `POST /api/v1/auth/token`, `/metrics` (configurable) | anyone |
//! | users, API keys, config, rate-limit configuration, backups | admin |
//! | `GET`/`HEAD` of anything else | any signed-in role except `device` |
//! | device control (`/api/v1/devices/...`, scenarios, faults, `/devices/...`) | operator, teacher, admin |
//! | lessons (`/api/v1/lessons/...`) | student, teacher, operator, admin |
//! | verification and scoring (`/verify`, `/api/v1/verify`, `/api/v1/proofs/verify`, `/predict` and its alias `/api/v1/predict`), rate-limit checks and lease releases | any signed-in role |
//! | telemetry ingest over HTTP (`/api/v1/ingest`, `/api/v1/telemetry`) | device, operator, admin |
//! | any other write | operator, admin |

use fieldlab_core::{Principal, Role};

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// No credentials needed.
    Public,
    /// Any authenticated principal holding one of these roles.
    AnyOf(&'static [Role]),
}

const HUMANS: &[Role] = &[
    Role::Admin,
    Role::Operator,
    Role::Viewer,
    Role::Teacher,
    Role::Student,
];
const EVERYONE: &[Role] = &Role::ALL;
const ADMIN: &[Role] = &[Role::Admin];
const CONTROL: &[Role] = &[Role::Admin, Role::Operator, Role::Teacher];
const LESSONS: &[Role] = &[Role::Admin, Role::Operator, Role::Teacher, Role::Student];
const INGEST: &[Role] = &[Role::Admin, Role::Operator, Role::Device];
const WRITE: &[Role] = &[Role::Admin, Role::Operator];

/// Health and readiness probes (exact paths): public, and what Kubernetes and load balancers
/// call with the pod's address or a service name as `Host`.
pub const PROBES: &[&str] = &[
    "/health",
    "/healthz",
    "/health/live",
    "/ready",
    "/readyz",
    "/health/ready",
    "/actuator/health",
];

/// Paths anyone may call (exact), besides [`PROBES`].
const PUBLIC_EXACT: &[&str] = &[
    "/",
    "/favicon.ico",
    "/openapi.json",
    "/docs",
    // The UI's page without the slash, like `/ui/`.
    "/ui",
    // Which routes exist (the UI asks before sign-in): no more than /openapi.json tells.
    "/api/v1/ui/endpoints",
];
/// Path prefixes anyone may GET: the web UI's static assets.
const PUBLIC_PREFIXES: &[&str] = &["/ui/", "/assets/", "/static/", "/docs/"];
/// Admin-only prefixes (any method).
const ADMIN_PREFIXES: &[&str] = &[
    "/api/v1/users",
    "/api/v1/auth/keys",
    "/api/v1/config",
    "/api/v1/admin",
    "/api/v1/backup",
    "/api/v1/ratelimit/config",
    "/api/v1/ratelimit/rules",
    "/api/ratelimit/config",
    "/api/ratelimit/rules",
];

/// The requirement of a request. `public_metrics` makes `/metrics` public (Prometheus
/// scrapes without credentials by default; turn it off when the port is reachable from
/// outside the cluster).
pub fn required(method: &str, path: &str, public_metrics: bool) -> Requirement {
    let read = matches!(method, "GET" | "HEAD" | "OPTIONS");
    if PUBLIC_EXACT.contains(&path)
        || PROBES.contains(&path)
        || (read && PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p)))
        || (method == "POST" && path == "/api/v1/auth/token")
        || (public_metrics && path == "/metrics")
    {
        return Requirement::Public;
    }
    if ADMIN_PREFIXES.iter().any(|p| under(path, p)) {
        return Requirement::AnyOf(ADMIN);
    }
    if path == "/api/v1/auth/whoami" {
        return Requirement::AnyOf(EVERYONE);
    }
    if read {
        return Requirement::AnyOf(HUMANS);
    }
    if [
        "/verify",
        "/api/v1/verify",
        "/api/v1/proofs/verify",
        "/predict",
        "/api/v1/predict",
    ]
    .iter()
    .any(|p| under(path, p))
        || path.ends_with("/ratelimit/check")
        || under(path, "/api/ratelimit/check")
        || path.ends_with("/ratelimit/release")
    {
        return Requirement::AnyOf(EVERYONE);
    }
    if under(path, "/api/v1/ingest") || under(path, "/api/v1/telemetry") {
        return Requirement::AnyOf(INGEST);
    }
    if under(path, "/api/v1/lessons") {
        return Requirement::AnyOf(LESSONS);
    }
    if under(path, "/api/v1/devices")
        || under(path, "/devices")
        || under(path, "/api/v1/scenarios")
        || under(path, "/api/v1/faults")
        || under(path, "/api/v1/fleet")
    {
        return Requirement::AnyOf(CONTROL);
    }
    Requirement::AnyOf(WRITE)
}

/// `path` is `prefix` or below it (`/api/v1/users` covers `/api/v1/users/ann`, not `/api/v1/usersx`).
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `p` satisfies `req`.
pub fn allows(req: &Requirement, p: &Principal) -> bool {
    match req {
        Requirement::Public => true,
        Requirement::AnyOf(roles) => p.roles.iter().any(|r| roles.contains(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlab_core::AuthMethod;

    fn who(role: Role) -> Principal {
        Principal {
            subject: "x".into(),
            roles: vec![role],
            scopes: vec![],
            method: AuthMethod::Jwt,
        }
    }

    #[test]
    fn public_paths_are_public_and_nothing_else() {
        for p in ["/health", "/readyz", "/actuator/health", "/", "/ui/app.js"] {
            assert_eq!(required("GET", p, false), Requirement::Public, "{p}");
        }
        assert_eq!(
            required("POST", "/api/v1/auth/token", false),
            Requirement::Public
        );
        assert_eq!(required("GET", "/metrics", true), Requirement::Public);
        assert_ne!(required("GET", "/metrics", false), Requirement::Public);
        // Writes under asset prefixes and lookalike paths are not public.
        assert_ne!(required("POST", "/ui/x", false), Requirement::Public);
        assert_ne!(required("GET", "/healthx", false), Requirement::Public);
        assert_ne!(
            required("GET", "/api/v1/devices", false),
            Requirement::Public
        );
    }

    #[test]
    fn roles_by_kind_of_request() {
        let ok = |m: &str, p: &str, r: Role| allows(&required(m, p, false), &who(r));
        assert!(ok("GET", "/api/v1/query", Role::Viewer));
        assert!(!ok("GET", "/api/v1/query", Role::Device));
        assert!(!ok("POST", "/api/v1/devices/d1/stop", Role::Viewer));
        assert!(ok("POST", "/api/v1/devices/d1/stop", Role::Operator));
        assert!(ok("POST", "/api/v1/devices/d1/stop", Role::Teacher));
        assert!(!ok("POST", "/api/v1/devices/d1/stop", Role::Student));
        assert!(ok("POST", "/api/v1/lessons/1/answer", Role::Student));
        assert!(!ok("GET", "/api/v1/users", Role::Operator));
        assert!(ok("GET", "/api/v1/users", Role::Admin));
        assert!(!ok("PUT", "/api/ratelimit/config", Role::Operator));
        assert!(ok("POST", "/api/v1/ingest", Role::Device));
        assert!(!ok("POST", "/api/v1/ingest", Role::Viewer));
        assert!(ok("POST", "/verify", Role::Viewer));
        assert!(ok("POST", "/api/v1/ratelimit/release", Role::Device));
        assert!(!ok("DELETE", "/api/v1/whatever", Role::Teacher));
        assert!(ok("DELETE", "/api/v1/whatever", Role::Operator));
        assert!(!ok("POST", "/api/v1/usersx", Role::Viewer));
        // An alias shares its route's policy.
        for r in [Role::Viewer, Role::Student, Role::Device, Role::Operator] {
            for sub in ["", "/batch"] {
                assert_eq!(
                    ok("POST", &format!("/predict{sub}"), r),
                    ok("POST", &format!("/api/v1/predict{sub}"), r),
                    "{r:?} {sub}"
                );
            }
        }
    }
}
