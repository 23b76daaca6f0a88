use super::*;
use crate::AuthConfig;
use std::net::IpAddr;

async fn setup() -> (tempfile::TempDir, Authenticator) {
    let dir = tempfile::tempdir().unwrap();
    let a = Authenticator::new(&AuthConfig::default(), dir.path())
        .await
        .unwrap();
    a.users()
        .update(|f| f.add_user("ann", &[Role::Operator], "correct horse battery"))
        .unwrap();
    (dir, a)
}

#[tokio::test]
async fn token_flow_and_revocation() {
    let (dir, a) = setup().await;
    let t = a.issue_token("ann", "correct horse battery").unwrap();
    assert_eq!(t.token_type, "Bearer");
    let p = a
        .authenticate(Some(&format!("Bearer {}", t.access_token)), None)
        .await
        .unwrap();
    assert_eq!(p.subject, "ann");
    assert_eq!(p.roles, vec![Role::Operator]);
    assert_eq!(p.method, AuthMethod::Jwt);

    assert!(matches!(
        a.issue_token("ann", "wrong horse battery"),
        Err(AuthError::Unauthenticated(_))
    ));
    assert!(a.authenticate(None, None).await.is_err());
    assert!(a.authenticate(Some("Basic abc"), None).await.is_err());

    // A token signed with another secret is rejected.
    let other = tempfile::tempdir().unwrap();
    let b = Authenticator::new(&AuthConfig::default(), other.path())
        .await
        .unwrap();
    b.users()
        .update(|f| f.add_user("ann", &[Role::Admin], "correct horse battery"))
        .unwrap();
    let forged = b.issue_token("ann", "correct horse battery").unwrap();
    assert!(a
        .authenticate(Some(&format!("Bearer {}", forged.access_token)), None)
        .await
        .is_err());

    // The secret persists across restarts with mode 0600.
    let again = Authenticator::new(&AuthConfig::default(), dir.path())
        .await
        .unwrap();
    assert!(again
        .authenticate(Some(&format!("Bearer {}", t.access_token)), None)
        .await
        .is_ok());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(dir.path().join("auth/jwt.secret")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }

    // Changing the password kills old tokens; revoking kills everything.
    a.users()
        .update(|f| f.set_password("ann", "another horse battery"))
        .unwrap();
    assert!(a
        .authenticate(Some(&format!("Bearer {}", t.access_token)), None)
        .await
        .is_err());
    let t2 = a.issue_token("ann", "another horse battery").unwrap();
    a.users().update(|f| f.revoke_user("ann")).unwrap();
    let e = a
        .authenticate(Some(&format!("Bearer {}", t2.access_token)), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");
    assert!(a.issue_token("ann", "another horse battery").is_err());
}

#[tokio::test]
async fn api_keys_and_mqtt_credentials() {
    let (_dir, a) = setup().await;
    let k = a
        .users()
        .update(|f| f.add_key("sensor_7", &[Role::Device]))
        .unwrap();
    let p = a.authenticate(None, Some(&k.secret)).await.unwrap();
    assert_eq!(
        (p.subject.as_str(), p.method),
        ("sensor_7", AuthMethod::ApiKey)
    );
    let p = a
        .authenticate(Some(&format!("Bearer {}", k.secret)), None)
        .await
        .unwrap();
    assert_eq!(p.roles, vec![Role::Device]);

    // A device key binds user name and client id to the device.
    assert!(a.check_mqtt("sensor_7", "sensor_7", &k.secret));
    assert!(!a.check_mqtt("sensor_8", "sensor_7", &k.secret));
    assert!(!a.check_mqtt("sensor_7", "sensor_8", &k.secret));
    assert!(a.check_mqtt("any", "ann", "correct horse battery"));
    assert!(!a.check_mqtt("any", "ann", "correct horse batteryX"));
    let (u, pw) = a.internal_mqtt_credentials();
    assert!(a.check_mqtt("fieldlab-ingest", &u, &pw));
    assert!(!a.check_mqtt("fieldlab-ingest", &u, "guess"));

    // Topic ACLs: the device writes its own telemetry and status and reads its own commands;
    // fieldlab itself and ann (whatever roles the test user has) are checked below.
    let dev = a
        .mqtt_login("sensor_7", "sensor_7", &k.secret)
        .unwrap()
        .topics();
    assert_eq!(
        dev.write,
        Some(vec![
            "devices/+/sensor_7/telemetry".to_string(),
            "devices/+/sensor_7/status".to_string()
        ])
    );
    assert_eq!(
        dev.read,
        Some(vec!["devices/+/sensor_7/commands".to_string()])
    );
    let internal = a.mqtt_login("fieldlab-ingest", &u, &pw).unwrap();
    assert!(internal.internal);
    assert_eq!(
        internal.topics().write,
        None,
        "fieldlab itself: every topic"
    );
    let login = |roles: Vec<Role>, name: &str| crate::MqttLogin {
        name: name.into(),
        roles,
        internal: false,
    };
    assert_eq!(login(vec![Role::Operator], "o").topics().write, None);
    let viewer = login(vec![Role::Viewer], "v").topics();
    assert_eq!(viewer.write, Some(vec![]));
    assert_eq!(
        viewer.read,
        Some(vec!["devices/#".to_string(), "fieldlab/#".to_string()])
    );
    // A device name that is an MQTT filter gets nothing, not a wildcard.
    let sneaky = login(vec![Role::Device], "+").topics();
    assert_eq!((sneaky.read, sneaky.write), (Some(vec![]), Some(vec![])));

    a.users().update(|f| f.revoke_key(&k.key.id)).unwrap();
    assert!(a.authenticate(None, Some(&k.secret)).await.is_err());
    assert!(!a.check_mqtt("sensor_7", "sensor_7", &k.secret));
}

#[tokio::test]
async fn external_issuer_via_jwks_file() {
    let dir = tempfile::tempdir().unwrap();
    // An Ed25519 issuer key made at test time; its JWKS is written to a file.
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.public_key_raw());
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x,
        "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let cfg = AuthConfig {
        jwks_file: Some(jwks_path),
        oauth2_issuer: Some("https://idp.example".into()),
        oauth2_audience: Some("fieldlab".into()),
        ..AuthConfig::default()
    };
    let a = Authenticator::new(&cfg, dir.path()).await.unwrap();
    let enc = EncodingKey::from_ed_der(&kp.serialize_der());
    let sign = |claims: serde_json::Value, kid: &str| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &claims, &enc).unwrap()
    };
    let exp = now_s() + 600;
    let good = sign(
        serde_json::json!({"sub": "carol", "iss": "https://idp.example", "aud": "fieldlab",
            "exp": exp, "roles": ["teacher", "nonsense"], "scope": "verify:run policy:read"}),
        "k1",
    );
    let p = a
        .authenticate(Some(&format!("Bearer {good}")), None)
        .await
        .unwrap();
    assert_eq!(p.subject, "carol");
    assert_eq!(p.roles, vec![Role::Teacher]);
    assert!(p.has_scope("verify:run"));

    let wrong_aud = sign(
        serde_json::json!({"sub": "c", "iss": "https://idp.example", "aud": "other", "exp": exp}),
        "k1",
    );
    assert!(a
        .authenticate(Some(&format!("Bearer {wrong_aud}")), None)
        .await
        .is_err());
    let unknown_kid = sign(
        serde_json::json!({"sub": "c", "iss": "https://idp.example", "aud": "fieldlab", "exp": exp}),
        "k2",
    );
    let e = a
        .authenticate(Some(&format!("Bearer {unknown_kid}")), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("k2"), "{e}");
}

#[tokio::test]
async fn wrong_passwords_are_throttled_per_user_and_address_and_success_clears() {
    let (_dir, a) = setup().await;
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let p = a
        .verify_password("ann", "correct horse battery", Some(ip))
        .await
        .unwrap();
    assert_eq!(
        (p.subject.as_str(), p.method),
        ("ann", AuthMethod::Password)
    );
    for _ in 0..5 {
        assert!(matches!(
            a.verify_password("ann", "wrong horse battery", Some(ip))
                .await,
            Err(AuthError::Unauthenticated(_))
        ));
    }
    // Locked out: even the right password is not checked now.
    let e = a
        .verify_password("ann", "correct horse battery", Some(ip))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Throttled { .. }), "{e:?}");
    assert!(e.retry_after().unwrap().as_secs() >= 59, "{e:?}");
    assert!(matches!(
        a.issue_token_for("ann", "correct horse battery", Some(ip))
            .await,
        Err(AuthError::Throttled { .. })
    ));
    // The MQTT path shares the limiter; API keys (no argon2) do not go through it.
    assert!(matches!(
        a.mqtt_connect("c", "ann", "correct horse battery", ip)
            .await,
        Err(AuthError::Throttled { .. })
    ));
    let k = a
        .users()
        .update(|f| f.add_key("dev1", &[Role::Device]))
        .unwrap();
    assert!(a.mqtt_connect("dev1", "dev1", &k.secret, ip).await.is_ok());
}

#[tokio::test]
async fn unknown_users_cost_what_known_ones_cost() {
    let (_dir, a) = setup().await;
    let db = a.users().current().unwrap();
    // Warm up (the dummy hash is made once).
    let _ = db.check_password("nobody", "x");
    // Interleaved, medians: other tests hash on the same cores at the same time.
    let time = |name: &str| {
        let t = std::time::Instant::now();
        assert!(db.check_password(name, "wrong horse battery").is_none());
        t.elapsed().as_secs_f64()
    };
    let (mut k, mut u) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        k.push(time("ann"));
        u.push(time("nobody-at-all"));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (known, unknown) = (median(k), median(u));
    let ratio = known.max(unknown) / known.min(unknown);
    assert!(ratio < 2.0, "known {known:.3}s, unknown {unknown:.3}s");
}
