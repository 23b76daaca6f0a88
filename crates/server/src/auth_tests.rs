//! Auth, TLS and request ids against a real server on a free port, spoken to with reqwest
//! (rustls). Certificates are made at test time with rcgen.

use super::*;
use fieldlab_auth::{AuthConfig, Authenticator};
use fieldlab_core::Role;
use fieldlab_store::StoreOptions;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;

struct Running {
    base: String,
    auth: Arc<Authenticator>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(cfg: AuthConfig, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
    let auth = Arc::new(Authenticator::new(&cfg, dir.path()).await.unwrap());
    let mut reg = Registry::default();
    let http = HttpMetrics::default();
    http.register(&mut reg);
    let directory = DeviceDirectory::new();
    directory.register_emulated("t1", "TemperatureSensor");
    let state = AppState {
        store,
        quarantine: Arc::new(Quarantine::open(dir.path()).unwrap()),
        directory,
        readiness: Readiness::new(),
        registry: Arc::new(reg),
        http,
        started: Instant::now(),
        broker_url: "mqtt://127.0.0.1:1883".into(),
        auth: Some(auth.clone()),
        emulator: None,
        annotations: None,
        ratelimit: None,
        extra_routes: None,
        extra_openapi: None,
        allowed_hosts: Vec::new(),
        fleet_answer_max: 256 << 20,
        watch: None,
        cluster: None,
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async {
        let _ = rx.await;
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    match tls {
        Some(t) => tokio::spawn(serve_tls(l, t, state, stop)),
        None => tokio::spawn(serve(l, state, stop)),
    };
    Running {
        base: format!("{scheme}://localhost:{port}"),
        auth,
        stop: Some(tx),
        _dir: dir,
    }
}

fn add_user(r: &Running, name: &str, role: Role) {
    r.auth
        .users()
        .update(|f| f.add_user(name, &[role], "correct horse battery"))
        .unwrap();
}

async fn token(c: &reqwest::Client, r: &Running, name: &str) -> String {
    let resp = c
        .post(format!("{}/api/v1/auth/token", r.base))
        .json(&json!({"username": name, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    v["access_token"].as_str().unwrap().to_string()
}

/// Send a request and return its answer's status.
async fn status(req: reqwest::RequestBuilder) -> StatusCode {
    req.send().await.unwrap().status()
}

/// Send a request and read its answer's JSON body.
async fn json<T: serde::de::DeserializeOwned>(req: reqwest::RequestBuilder) -> T {
    req.send().await.unwrap().json().await.unwrap()
}

/// `GET /api/v1/devices` with this bearer token.
async fn list_devices(c: &reqwest::Client, r: &Running, token: &str) -> reqwest::Response {
    c.get(format!("{}/api/v1/devices", r.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn problem(resp: reqwest::Response) -> (StatusCode, Value) {
    let st = resp.status();
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "{st}"
    );
    (st, resp.json().await.unwrap())
}

/// `resp` is a problem+json of status `st` whose `type` is the problem page `kind`.
async fn problem_of_kind(resp: reqwest::Response, st: StatusCode, kind: &str, what: &str) {
    let (got, v) = problem(resp).await;
    assert_eq!(got, st, "{what}");
    assert_eq!(
        v["type"],
        format!("https://fieldlab.dev/problems/{kind}"),
        "{what}"
    );
}

#[tokio::test]
async fn no_token_401_wrong_role_403_token_flow_and_revocation() {
    let r = start(AuthConfig::default(), None).await;
    let c = reqwest::Client::new();
    // Public paths need nothing.
    for p in ["/health", "/ready", "/metrics", "/"] {
        let st = status(c.get(format!("{}{p}", r.base))).await;
        assert_ne!(st, StatusCode::UNAUTHORIZED, "{p}");
    }
    // The UI's endpoint probe is public and says sign-in is required.
    let v: Value = json(c.get(format!("{}/api/v1/ui/endpoints?path=/ws", r.base))).await;
    assert_eq!(v["auth"]["enabled"], true, "{v}");
    assert_eq!(v["/ws"]["available"], true, "{v}");
    // (Every guarded operation's 401 and 403: `every_guarded_operation_...` below.)
    // Garbage and forged tokens are 401 too.
    let resp = list_devices(&c, &r, "not.a.token").await;
    assert_eq!(problem(resp).await.0, StatusCode::UNAUTHORIZED);

    add_user(&r, "vera", Role::Viewer);
    // Wrong password: 401 problem.
    let resp = c
        .post(format!("{}/api/v1/auth/token", r.base))
        .form(&[
            ("grant_type", "password"),
            ("username", "vera"),
            ("password", "incorrect horse"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await.0, StatusCode::UNAUTHORIZED);

    let t = token(&c, &r, "vera").await;
    // Browsers' WebSockets carry the token in the query, on /ws only.
    let q = format!("?access_token={t}");
    let st = status(c.get(format!("{}/ws{q}", r.base))).await;
    assert_ne!(st, StatusCode::UNAUTHORIZED);
    let st = status(c.get(format!("{}/api/v1/devices{q}", r.base))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let who: Value = json(
        c.get(format!("{}/api/v1/auth/whoami", r.base))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(who["subject"], "vera");
    assert_eq!(who["roles"], json!(["viewer"]));

    // A viewer may not control devices: 403; an operator passes the guard and reaches the
    // handler (503 here: this server runs without an emulator).
    add_user(&r, "otto", Role::Operator);
    let ot = token(&c, &r, "otto").await;
    let stop = format!("{}/api/v1/devices/t1/stop", r.base);
    let resp = c.post(&stop).bearer_auth(&t).send().await.unwrap();
    let (st, v) = problem(resp).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(v["detail"].as_str().unwrap().contains("operator"), "{v}");
    let resp = c.post(&stop).bearer_auth(&ot).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Device control without credentials: 401 like every guarded route.
    let resp = c.post(&stop).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A device key cannot read the API.
    let k = r
        .auth
        .users()
        .update(|f| f.add_key("dev1", &[Role::Device]))
        .unwrap();
    let resp = c
        .get(format!("{}/api/v1/devices", r.base))
        .header("x-api-key", &k.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await.0, StatusCode::FORBIDDEN);

    // Revoked: the token stops working at the next request.
    r.auth.users().update(|f| f.revoke_user("vera")).unwrap();
    let resp = list_devices(&c, &r, &t).await;
    let (st, v) = problem(resp).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(v["detail"].as_str().unwrap().contains("revoked"), "{v}");
}

/// Generated from `/openapi.json`: every operation with a `security` requirement answers 401
/// problem+json without credentials, 403 problem+json to every role outside its
/// `x-required-roles`, and neither to a role inside it. A route added without documentation
/// fails `openapi::tests::the_document_describes_every_route_and_only_those`; one documented
/// with the wrong security fails here.
#[tokio::test]
async fn every_guarded_operation_of_the_document_answers_401_and_403() {
    let r = start(AuthConfig::default(), None).await;
    let c = reqwest::Client::new();
    let resp = c
        .get(format!("{}/openapi.json", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the document is public");
    let doc: Value = resp.json().await.unwrap();
    let ops = crate::openapi::guarded(&doc);
    assert!(ops.len() > 60, "{}", ops.len());
    // A credential for every role: tokens for people, an API key for devices.
    let mut cred = std::collections::HashMap::new();
    for role in Role::ALL {
        let name = role.as_str();
        let c2 = if role == Role::Device {
            let k = r.auth.users().update(|f| f.add_key(name, &[role])).unwrap();
            k.secret
        } else {
            add_user(&r, name, role);
            token(&c, &r, name).await
        };
        cred.insert(role, c2);
    }
    let (mut n401, mut n403, mut n_ok) = (0, 0, 0);
    for op in &ops {
        let what = format!("{} {}", op.method, op.path);
        let method = reqwest::Method::from_bytes(op.method.as_bytes()).unwrap();
        let url = format!("{}{}", r.base, op.path);
        let resp = c.request(method.clone(), &url).send().await.unwrap();
        assert!(
            resp.headers()
                .get("www-authenticate")
                .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
            "{what}"
        );
        problem_of_kind(resp, StatusCode::UNAUTHORIZED, "unauthorized", &what).await;
        n401 += 1;
        for role in Role::ALL {
            let resp = c
                .request(method.clone(), &url)
                .bearer_auth(&cred[&role])
                .send()
                .await
                .unwrap();
            if op.roles.contains(&role) {
                // Past auth: the handler answers (404 for no data, 503 for a part this
                // server does not run, 4xx for a missing body), never 401/403.
                let st = resp.status();
                assert!(
                    st != StatusCode::UNAUTHORIZED && st != StatusCode::FORBIDDEN,
                    "{what} as {role:?}: {st}"
                );
                n_ok += 1;
            } else {
                let who = format!("{what} as {role:?}");
                problem_of_kind(resp, StatusCode::FORBIDDEN, "forbidden", &who).await;
                n403 += 1;
            }
        }
    }
    assert!(n403 > 100 && n_ok > 100, "{n401} {n403} {n_ok}");
    eprintln!("{n401} operations: {n401} x 401, {n403} x 403, {n_ok} allowed");
}

#[tokio::test]
async fn metrics_can_be_guarded_and_request_ids_propagate() {
    let r = start(
        AuthConfig {
            public_metrics: false,
            ..AuthConfig::default()
        },
        None,
    )
    .await;
    let c = reqwest::Client::new();
    let resp = c.get(format!("{}/metrics", r.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let resp = c
        .get(format!("{}/health", r.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
}

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "fieldlab test CA");
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
        ca,
        ca_key,
    }
}

fn client_identity(pki: &Pki, cn: &str) -> reqwest::Identity {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.signed_by(&key, &pki.ca, &pki.ca_key).unwrap();
    reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes())
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn https_and_client_certificates() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "server.pem", &pki.server_cert);
    let key = write(dir.path(), "server.key", &pki.server_key);
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let root = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();

    // HTTPS, no client certificates.
    let r = start(
        AuthConfig::default(),
        Some(tls::server_config(&cert, &key, None).unwrap()),
    )
    .await;
    let c = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(root.clone())
        .build()
        .unwrap();
    add_user(&r, "ann", Role::Admin);
    let t = token(&c, &r, "ann").await;
    let resp = list_devices(&c, &r, &t).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // A client that does not trust the CA cannot connect.
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(untrusting
        .get(format!("{}/health", r.base))
        .send()
        .await
        .is_err());
    drop(r);

    // mTLS: a certificate from the CA is required, and its CN is the principal.
    let r = start(
        AuthConfig::default(),
        Some(tls::server_config(&cert, &key, Some(&ca)).unwrap()),
    )
    .await;
    add_user(&r, "bench-07", Role::Operator);
    let with_cert = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(root.clone())
        .identity(client_identity(&pki, "bench-07"))
        .build()
        .unwrap();
    let who: Value = json(with_cert.get(format!("{}/api/v1/auth/whoami", r.base))).await;
    assert_eq!(who["subject"], "bench-07");
    assert_eq!(who["method"], "client_cert");
    assert_eq!(who["roles"], json!(["operator"]));
    // A CA-signed certificate for nobody we know: TLS passes, HTTP says 401.
    let stranger = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(root.clone())
        .identity(client_identity(&pki, "stranger"))
        .build()
        .unwrap();
    let resp = stranger
        .get(format!("{}/api/v1/devices", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // No client certificate: the handshake fails.
    let without = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(root)
        .build()
        .unwrap();
    assert!(without
        .get(format!("{}/health", r.base))
        .send()
        .await
        .is_err());
    // Bad files give errors that name the key.
    let e = tls::server_config(&key, &key, None).unwrap_err();
    assert!(e.contains("server.tls_cert_file"), "{e}");
}
