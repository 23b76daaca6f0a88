//! The verifier API over real TLS with client certificates and real JWTs: keys and certificates
//! are generated at test time (rcgen), the server listens on a free port.

use fieldlab_attest::registry::RegistryProof;
use fieldlab_attest::{bundle, policy, proof, records};
use fieldlab_auth::jwt::JwtVerifier;
use fieldlab_registry::Registry;
use fieldlab_verifier::{standalone, tls, Auth, Verifier};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn example(n: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cap")
        .join(n)
}

fn make_bundle(dir: &Path) -> Vec<u8> {
    let ws = records::Workspace::new(dir.join("w"));
    ws.prepare(
        "suppliers",
        &example("suppliers.csv"),
        &records::Schema::suppliers(),
    )
    .unwrap();
    ws.prepare("ubos", &example("ubos.csv"), &records::Schema::ubos())
        .unwrap();
    let ir = policy::lint(&std::fs::read_to_string(example("lksg_v2.yaml")).unwrap())
        .ir
        .unwrap();
    let mut lists = BTreeMap::new();
    lists.insert(
        "sanctions".to_string(),
        proof::SortedList::from_csv("sanctions", &example("sanctions.csv")).unwrap(),
    );
    let m = proof::build_manifest(&ws, &ir, &lists).unwrap();
    let p = proof::build_proof(&ws, &ir, &m, &lists).unwrap();
    bundle::export(
        &ir,
        &m,
        &p,
        &fieldlab_attest::sign::KeyPair::generate(None).unwrap(),
    )
    .unwrap()
}

/// Send a request and read its answer's JSON body.
async fn json<T: serde::de::DeserializeOwned>(req: reqwest::RequestBuilder) -> T {
    req.send().await.unwrap().json().await.unwrap()
}

struct Pki {
    ca_pem: String,
    server: (String, String),
    client_ok: (String, String),
    client_bad: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fieldlab test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf = |cn: &str, server: bool| {
        let k = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(if server {
            vec!["localhost".to_string()]
        } else {
            vec![]
        })
        .unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name
            .push(DnType::OrganizationName, "Example");
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let c = p.signed_by(&k, &ca_cert, &ca_key).unwrap();
        (c.pem(), k.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf("localhost", true),
        client_ok: leaf("auditor", false),
        client_bad: leaf("intruder", false),
    }
}

fn token(key: &KeyPair, scope: &str) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let c = json!({"sub": "auditor-1", "iss": "https://idp.test", "aud": "cap-verifier", "exp": exp, "scope": scope});
    encode(
        &Header::new(Algorithm::EdDSA),
        &c,
        &EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap()
}

fn client(p: &Pki, cert: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(p.ca_pem.as_bytes()).unwrap());
    if let Some((c, k)) = cert {
        b = b.identity(reqwest::Identity::from_pem(format!("{c}{k}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifier_api_over_mtls_with_jwt_scopes() {
    let d = tempfile::tempdir().unwrap();
    let p = pki();
    let w = |n: &str, s: &str| {
        let f = d.path().join(n);
        std::fs::write(&f, s).unwrap();
        f
    };
    let settings = tls::TlsSettings {
        cert: w("server.crt", &p.server.0),
        key: w("server.key", &p.server.1),
        client_ca: Some(w("ca.crt", &p.ca_pem)),
        allowed_subjects: vec!["CN=auditor".into()],
    };
    let jwt_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut jv = JwtVerifier::new("https://idp.test", "cap-verifier");
    jv.add_pem(jwt_key.public_key_pem().as_bytes(), None)
        .unwrap();
    let reg = Registry::open(&d.path().join("cap")).unwrap();
    let v = Arc::new(Verifier::new(Auth::Jwt(jv), None, Some(reg)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tls::serve(listener, standalone(v), settings, async {
        let _ = stopped.await;
    }));
    let base = format!("https://localhost:{port}");
    let c = client(&p, Some(&p.client_ok));
    let zip = make_bundle(d.path());

    // Health without a token? No: every route of the API needs one, but /healthz is outside it.
    let r = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // No token: 401 problem+json.
    let r = c
        .post(format!("{base}/verify"))
        .body(zip.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // Wrong scope: 403.
    let r = c
        .post(format!("{base}/verify"))
        .bearer_auth(token(&jwt_key, "policy:read"))
        .body(zip.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // verify:run: OK for the fresh bundle, FAIL with a reason for a tampered one.
    let t = token(
        &jwt_key,
        "verify:run policy:compile policy:read registry:write",
    );
    let r: Value = json(
        c.post(format!("{base}/verify"))
            .bearer_auth(&t)
            .header("content-type", "application/zip")
            .body(zip.clone()),
    )
    .await;
    assert_eq!(r["result"], "OK", "{r}");
    let mut bad = zip.clone();
    let i = bad.len() / 2;
    bad[i] ^= 1;
    let r: Value = json(c.post(format!("{base}/verify")).bearer_auth(&t).body(bad)).await;
    assert_eq!(r["result"], "FAIL");
    assert!(r["reason"].as_str().unwrap().len() > 5);

    // Policies.
    let yaml = std::fs::read_to_string(example("lksg_v1.yaml")).unwrap();
    let r = c
        .post(format!("{base}/policy/compile"))
        .bearer_auth(&t)
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    assert_eq!(r["lint_exit_code"], 2);
    let h = r["policy_hash"].as_str().unwrap().to_string();
    let r: Value = json(c.get(format!("{base}/policy/{h}")).bearer_auth(&t)).await;
    assert_eq!(r["policy_id"], "lksg-v1-basic");
    let r = c
        .post(format!("{base}/policy/compile"))
        .bearer_auth(&t)
        .body("version: 2\nid: x\nrules: []\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // Upload registers; the inclusion proof verifies against the signed checkpoint.
    let r: Value = json(
        c.post(format!("{base}/proof/upload"))
            .bearer_auth(&t)
            .body(zip.clone()),
    )
    .await;
    assert_eq!(r["registered"], true, "{r}");
    let cp: Value = json(c.get(format!("{base}/registry/checkpoint")).bearer_auth(&t)).await;
    let pr: RegistryProof = json(
        c.get(format!("{base}/registry/proof/inclusion/0"))
            .bearer_auth(&t),
    )
    .await;
    pr.verify(&[cp["vkey"].as_str().unwrap().to_string()])
        .unwrap();
    // An entry or tree size the log does not have: 404 (RegistryError::NotFound).
    for path in ["registry/entries/99", "registry/proof/consistency?from=99"] {
        let r = c
            .get(format!("{base}/{path}"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }

    // Metrics.
    let m = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("cap_verifier_requests_total{route=\"/verify\",result=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("cap_auth_token_validation_failures_total 1"),
        "{m}"
    );
    // The dashboard names: /verify OK + FAIL, and the upload (verified OK, then registered).
    for line in [
        "fieldlab_attest_verifications_total{result=\"ok\"} 2",
        "fieldlab_attest_verifications_total{result=\"fail\"} 1",
        "fieldlab_attest_bundles_total 1",
    ] {
        assert!(m.lines().any(|l| l == line), "no `{line}` in:\n{m}");
    }

    // mTLS: a certificate with a subject not on the list, or none at all, gets no HTTP answer.
    assert!(client(&p, Some(&p.client_bad))
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err());
    assert!(client(&p, None)
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err());

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
