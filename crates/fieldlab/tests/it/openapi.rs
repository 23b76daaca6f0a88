//! `/openapi.json` of a real `fieldlab up` with auth on: it names every route the process
//! serves (the proof verifier's included), every guarded operation answers 401 and 403 as
//! documented, and schemathesis (PyPI, installed by scripts/test.sh) finds no 5xx and no
//! answer that contradicts the document.

use crate::common;

use common::Fieldlab;
use fieldlab_server::openapi;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn fieldlab(args: &[&str], data: &Path, stdin: Option<&str>) -> String {
    let out = common::fieldlab_cmd(args, data, stdin);
    assert!(out.status.success(), "fieldlab {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `fieldlab up` with auth on, an admin and a viewer user, and a device API key.
struct Up {
    f: Fieldlab,
    admin: String,
    viewer: String,
    device_key: String,
    _dir: tempfile::TempDir,
}

fn up() -> Up {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pw = Some("correct horse battery\n");
    fieldlab(
        &["users", "add", "ann", "--role", "admin", "--password-stdin"],
        &data,
        pw,
    );
    fieldlab(
        &[
            "users",
            "add",
            "vic",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        &data,
        pw,
    );
    let device_key = fieldlab(&["users", "key", "add", "dev9"], &data, None);
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(&cfg, "auth:\n  enabled: true\n").unwrap();
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    f.wait_ready(Duration::from_secs(30));
    let token = |user: &str| {
        let r = reqwest::blocking::Client::new()
            .post(f.url("/api/v1/auth/token"))
            .json(&json!({"username": user, "password": "correct horse battery"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    Up {
        admin: token("ann"),
        viewer: token("vic"),
        device_key,
        f,
        _dir: dir,
    }
}

fn problem_status(r: reqwest::blocking::Response, what: &str) -> u16 {
    let st = r.status().as_u16();
    assert_eq!(
        r.headers().get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "{what}: {st}"
    );
    st
}

#[test]
fn the_document_of_up_matches_its_routes_and_their_security() {
    let u = up();
    let c = reqwest::blocking::Client::new();
    let r = c.get(u.f.url("/openapi.json")).send().unwrap();
    assert_eq!(r.status(), 200, "public");
    let doc: Value = r.json().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    // Every route of the merged verifier is documented ...
    let v = fieldlab_verifier::Verifier::new(fieldlab_verifier::Auth::Disabled, None, None);
    let verifier = openapi::route_paths(&fieldlab_verifier::api(std::sync::Arc::new(v)));
    assert!(verifier.contains("/proof/upload"), "{verifier:?}");
    let documented: BTreeSet<String> = openapi::operations(&doc)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    for p in &verifier {
        assert!(documented.contains(p), "{p} is served but not documented");
    }
    // ... and every documented path serves exactly the documented methods (the `Allow`
    // header of the 405 to a method no route has; as admin, to get past auth).
    let propfind = reqwest::Method::from_bytes(b"PROPFIND").unwrap();
    for p in &documented {
        let want: BTreeSet<String> = openapi::operations(&doc)
            .into_iter()
            .filter(|(_, q)| q == p)
            .map(|(m, _)| m)
            .collect();
        let path = openapi::concrete(p, |_| "x1".into());
        let r = c
            .request(propfind.clone(), u.f.url(&path))
            .bearer_auth(&u.admin)
            .send()
            .unwrap();
        assert_eq!(r.status(), 405, "{p}");
        let served: BTreeSet<String> = r.headers()["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| m != "HEAD")
            .collect();
        assert_eq!(served, want, "{p}");
    }

    // Generated security checks: 401 without credentials, 403 for the viewer and the device
    // key where the operation does not allow them.
    let ops = openapi::guarded(&doc);
    assert!(
        ops.iter().any(|o| o.path == "/proof/upload"),
        "verifier routes are guarded in up"
    );
    let (mut n401, mut n403) = (0, 0);
    for op in &ops {
        let what = format!("{} {}", op.method, op.path);
        let m = reqwest::Method::from_bytes(op.method.as_bytes()).unwrap();
        let url = u.f.url(&op.path);
        let st = problem_status(c.request(m.clone(), &url).send().unwrap(), &what);
        assert_eq!(st, 401, "{what}");
        n401 += 1;
        for (role, cred) in [
            (fieldlab_core::Role::Viewer, &u.viewer),
            (fieldlab_core::Role::Device, &u.device_key),
        ] {
            let r = c.request(m.clone(), &url).bearer_auth(cred).send().unwrap();
            if op.roles.contains(&role) {
                let st = r.status().as_u16();
                assert!(st != 401 && st != 403, "{what} as {role:?}: {st}");
            } else {
                assert_eq!(problem_status(r, &what), 403, "{what} as {role:?}");
                n403 += 1;
            }
        }
    }
    assert!(n401 > 60 && n403 > 60, "{n401} {n403}");
}

#[test]
fn schemathesis_finds_no_server_error() {
    let u = up();
    let st = Command::new("schemathesis").arg("--version").output();
    assert!(
        st.is_ok_and(|o| o.status.success()),
        "schemathesis is not installed; run scripts/test.sh (pip install schemathesis)"
    );
    let run = || {
        let out = Command::new("schemathesis")
            .args(["run", &u.f.url("/openapi.json")])
            // No 5xx, and every answer's status, content type and body as documented.
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", "10", "--seed", "7", "--workers", "2"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--request-timeout", "30"])
            .args(["-H", &format!("Authorization: Bearer {}", u.admin)])
            // A WebSocket handshake cannot be driven over plain HTTP requests.
            .args(["--exclude-path", "/ws"])
            .env("NO_COLOR", "1")
            .current_dir(u._dir.path())
            .output()
            .unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (mut ok, mut text) = run();
    // CPython 3.11 sometimes fails inside Hypothesis while it describes a strategy ("AST
    // constructor recursion depth mismatch", a "Runtime Error" of the tool, seen on a loaded
    // machine); that says nothing about the API, so such a run is repeated. A failed check
    // (marked ❌) is never retried.
    for _ in 0..2 {
        if ok || text.contains('❌') || !text.contains("AST constructor recursion depth mismatch")
        {
            break;
        }
        eprintln!("schemathesis hit the CPython AST recursion bug; running it again");
        (ok, text) = run();
    }
    eprintln!("{text}");
    assert!(ok, "schemathesis found problems:\n{text}");
    // It did test the API, not an empty document.
    assert!(text.contains("passed"), "{text}");
}
