//! The document against the router's real routes, and its security against the policy table.

use super::*;
use fieldlab_store::{Quarantine, Store, StoreOptions};
use std::sync::Arc;

fn state(dir: &std::path::Path) -> AppState {
    let (store, _) = Store::open(StoreOptions::new(dir)).unwrap();
    AppState {
        broker_url: "mqtt://127.0.0.1:1883".into(),
        ..AppState::bare(store, Arc::new(Quarantine::open(dir).unwrap()))
    }
}

/// Every path the app serves: the routes of [`crate::routes::router`] and the auth routes,
/// plus the outer router of [`crate::app`] (the UI's endpoint probe) and any merged extras.
fn served_paths(s: &AppState) -> BTreeSet<String> {
    let mut paths = route_paths(&crate::routes::router().merge(crate::auth_routes::router()));
    paths.extend(route_paths(&crate::app(s.clone())));
    if let Some(x) = &s.extra_routes {
        paths.extend(route_paths(x));
    }
    paths
}

#[tokio::test]
async fn the_document_describes_every_route_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    let paths = served_paths(&s);
    // The walk itself works (axum's Debug format did not change under us).
    for p in [
        "/health",
        "/api/v1/devices/{id}/faults/{fault}",
        "/api/ratelimit/config/keys/{key}",
        "/ui/{path}",
        "/api/v1/ui/endpoints",
        "/api/v1/auth/token",
        "/openapi.json",
        "/ws",
    ] {
        assert!(paths.contains(p), "{p} not found in {paths:?}");
    }
    assert!(paths.len() > 60, "{}", paths.len());
    let doc = document(None, true);
    let app = crate::app(s);
    let diff = undocumented(&app, &paths, &doc).await;
    assert!(diff.is_empty(), "{diff:#?}");
    // Every operation has an id, a success answer and problem answers.
    let mut ids = BTreeSet::new();
    for (m, p) in operations(&doc) {
        let op = &doc["paths"][&p][m.to_ascii_lowercase()];
        assert!(
            ids.insert(op["operationId"].as_str().unwrap().to_string()),
            "{m} {p}"
        );
        let codes: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
        assert!(
            codes
                .iter()
                .any(|c| c.starts_with('2') || c.starts_with('1')),
            "{m} {p}"
        );
        assert!(
            codes.iter().any(|c| *c == "4XX") && codes.iter().any(|c| *c == "5XX"),
            "{m} {p}"
        );
    }
}

#[tokio::test]
async fn an_undocumented_route_or_method_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path());
    let ok = || async { "ok" };
    s.extra_routes = Some(
        Router::new()
            .route("/x/things", get(ok).post(ok))
            .route("/x/other", get(ok)),
    );
    // The fragment forgets POST /x/things and all of /x/other.
    let fragment = json!({"paths": {"/x/things": {"get": {"summary": "things"}}}});
    let doc = document(Some(&fragment), true);
    let paths = served_paths(&s);
    let diff = undocumented(&crate::app(s), &paths, &doc).await;
    assert_eq!(diff.len(), 2, "{diff:#?}");
    assert!(
        diff[0].contains("/x/other") && diff[0].contains("not in the document"),
        "{diff:?}"
    );
    assert!(
        diff[1].contains("/x/things") && diff[1].contains("POST"),
        "{diff:?}"
    );
}

#[test]
fn security_comes_from_the_policy_table() {
    let doc = document(None, true);
    let op = |m: &str, p: &str| doc["paths"][p][m].clone();
    for (m, p) in [
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/openapi.json"),
        ("post", "/api/v1/auth/token"),
        ("get", "/ui/{path}"),
        ("get", "/metrics"),
    ] {
        assert_eq!(op(m, p)["security"], json!([]), "{m} {p}");
    }
    let roles = |m: &str, p: &str| op(m, p)["x-required-roles"].clone();
    assert_eq!(roles("get", "/api/v1/backup"), json!(["admin"]));
    assert_eq!(
        roles("put", "/api/ratelimit/config/default"),
        json!(["admin"])
    );
    assert_eq!(
        roles("post", "/devices/{id}/stop"),
        json!(["admin", "operator", "teacher"])
    );
    assert_eq!(
        op("get", "/api/v1/query")["security"],
        json!([{"bearerAuth": []}, {"apiKey": []}])
    );
    assert!(op("get", "/api/v1/query")["responses"]["401"].is_object());
    assert!(op("get", "/api/v1/query")["responses"]["403"].is_object());
    // Open to every role: no 403 to document.
    assert!(op("get", "/api/v1/auth/whoami")["responses"]["403"].is_null());
    // /metrics follows auth.public_metrics.
    let guarded_metrics = document(None, false);
    assert_ne!(
        guarded_metrics["paths"]["/metrics"]["get"]["security"],
        json!([])
    );
    // The legacy aliases of the emulator routes are there with their real answers.
    assert!(op("delete", "/devices/{id}")["responses"]["204"].is_object());
    assert!(op("post", "/api/v1/devices")["responses"]["201"].is_object());
    assert_eq!(
        op("delete", "/api/v1/devices/{id}/faults/{fault}")["parameters"][1]["schema"]["type"],
        "integer"
    );
}

#[test]
fn guarded_operations_have_concrete_paths_and_roles() {
    let doc = document(None, true);
    let g = guarded(&doc);
    let fault = g
        .iter()
        .find(|o| o.template == "/api/v1/devices/{id}/faults/{fault}")
        .unwrap();
    assert_eq!(fault.path, "/api/v1/devices/t1/faults/1");
    assert_eq!(fault.lacking_role(), Some(Role::Viewer));
    assert!(g.iter().all(|o| !o.path.contains('{')));
    assert!(!g.iter().any(|o| o.path == "/health"));
    assert_eq!(concrete("/ui/{*path}", |_| "a".into()), "/ui/a");
}

#[tokio::test]
async fn axum_rejections_are_problem_json_too() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let app = crate::app(state(dir.path()));
    for (method, uri, status) in [
        ("DELETE", "/api/v1/devices/t1/faults/not-a-number", 400),
        ("GET", "/ws", 400),
        ("PROPFIND", "/api/v1/ui/endpoints", 405),
    ] {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {uri}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        if status == 405 {
            assert_eq!(resp.headers()["allow"], "GET,HEAD", "headers are kept");
        }
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], status, "{v}");
        assert!(!v["detail"].as_str().unwrap().is_empty(), "{v}");
    }
}

#[test]
fn schemas_are_derived_from_the_types_and_every_ref_resolves() {
    let doc = document(None, true);
    std::fs::write(
        std::env::temp_dir().join("fieldlab-openapi.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 50, "{}", found.len());
    for r in found {
        assert!(doc.pointer(&r[1..]).is_some(), "{r} does not resolve");
    }
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    // Lists of values come from the enums themselves.
    let kinds = fieldlab_emulator::fault::FaultKind::ALL.map(|k| k.as_str());
    assert_eq!(schema("FaultKind")["enum"], json!(kinds));
    assert_eq!(schema("Role")["enum"], json!(Role::ALL.map(|r| r.as_str())));
    assert_eq!(
        schema("Algorithm")["enum"],
        json!(fieldlab_ratelimit::Algorithm::names())
    );
    // The rate-limit policy body is the config section's type, derived.
    assert_eq!(
        schema("RatelimitPolicySpec")["properties"]["limits"]["items"]["$ref"],
        "#/components/schemas/RatelimitLimitSpec"
    );
    assert_eq!(
        schema("RatelimitLimitSpec")["properties"]["algorithm"]["$ref"],
        "#/components/schemas/Algorithm"
    );
    assert_eq!(
        schema("FailMode")["enum"],
        json!(<fieldlab_ratelimit::FailMode as fieldlab_core::config::VariantNames>::VARIANTS)
    );
    assert_eq!(schema("HumanDuration")["type"], "string");
    // So is a device's spec, the body of POST /api/devices and `config` of the device shown.
    assert_eq!(
        schema("DeviceView")["properties"]["config"]["$ref"],
        "#/components/schemas/DeviceSpec"
    );
    assert_eq!(schema("DeviceSpec")["required"], json!(["name", "type"]));
    // Fields of the response types, with their doc comments.
    assert!(schema("Readiness")["properties"]["components"].is_object());
    assert!(schema("CheckAnswer")["properties"]["tokensRequested"].is_object());
    assert!(schema("Problem")["required"]
        .as_array()
        .unwrap()
        .contains(&json!("detail")));
}
