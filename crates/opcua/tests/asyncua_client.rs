//! The OPC UA server spoken to by an independent client: python-asyncua from PyPI
//! (`tests/opcua_client.py`), over the `None` endpoint and over Basic256Sha256 with a client
//! certificate. The fleet publishes into the real embedded broker; the client browses
//! Objects/DeviceEmulator, sees a value change, calls Stop, and the emulator's own API must
//! agree that the device stopped.

use fieldlab_core::DeviceDirectory;
use fieldlab_emulator::fleet::DeviceState;
use fieldlab_emulator::{DeviceSettings, DeviceSpec, ScenarioSpec};
use fieldlab_emulator::{Emulator, EmulatorMetrics, EmulatorSettings};
use fieldlab_opcua::{OpcuaSettings, Security};
use std::path::Path;
use std::time::Duration;

fn device(name: &str, ty: &str) -> DeviceSpec {
    DeviceSpec {
        name: name.into(),
        device_type: ty.into(),
        config: DeviceSettings {
            update_interval: 0.2,
            ..Default::default()
        },
        scenarios: vec![ScenarioSpec {
            name: "hot".into(),
            duration: 60.0,
            parameters: [(
                "temperature_range".to_string(),
                serde_yaml::to_value([45.0, 50.0]).unwrap(),
            )]
            .into(),
        }],
    }
}

fn fleet() -> Emulator {
    let b = fieldlab_broker::start(&fieldlab_broker::BrokerSettings {
        port: 0,
        ..Default::default()
    })
    .unwrap();
    let a = b.local_addr();
    let em = Emulator::new(
        EmulatorSettings::new(a.ip().to_string(), a.port()),
        DeviceDirectory::new(),
        None,
        EmulatorMetrics::default(),
    )
    .unwrap();
    em.add_all(
        vec![
            device("oven_1", "TemperatureSensor"),
            DeviceSpec {
                scenarios: vec![],
                ..device("valve_1", "PressureValve")
            },
        ],
        true,
    )
    .unwrap();
    em
}

fn settings(pki: &Path, security: Vec<Security>) -> OpcuaSettings {
    OpcuaSettings {
        host: "127.0.0.1".into(),
        port: 0,
        pki_dir: pki.to_path_buf(),
        security,
        trust_client_certs: true,
        max_devices: 100,
        sync_interval: Duration::from_millis(500),
        auth: None,
    }
}

/// Auth on, every other setting its default.
fn auth_on() -> fieldlab_auth::AuthConfig {
    fieldlab_auth::AuthConfig {
        enabled: true,
        ..Default::default()
    }
}

/// [`settings`] with fieldlab's users in `data` signing in, as `cfg` says.
async fn settings_with_auth(
    pki: &Path,
    security: Vec<Security>,
    cfg: &fieldlab_auth::AuthConfig,
    data: &Path,
) -> OpcuaSettings {
    let auth = fieldlab_auth::Authenticator::new(cfg, data).await.unwrap();
    OpcuaSettings {
        auth: Some(std::sync::Arc::new(auth)),
        ..settings(pki, security)
    }
}

/// The test fleet and an OPC UA server for it with these endpoints, its PKI in `pki`.
async fn serve(pki: &Path, security: Vec<Security>) -> (Emulator, fieldlab_opcua::OpcuaServer) {
    let em = fleet();
    let srv = fieldlab_opcua::start(settings(pki, security), em.clone())
        .await
        .unwrap();
    (em, srv)
}

/// Run the Python client; returns what it printed as JSON.
async fn client(url: &str, security: &str, dir: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opcua_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(script)
            .args([url, "oven_1", "temperature", security])
            .arg(dir)
            .output(),
    )
    .await
    .expect("the OPC UA client did not finish within 60 s")
    .expect("run python3 (needs `pip install asyncua`, see scripts/test.sh)");
    fieldlab_testkit::client_json(&out)
}

fn check(r: &serde_json::Value, em: &Emulator) {
    assert_eq!(
        r["devices"],
        serde_json::json!(["oven_1", "valve_1"]),
        "{r}"
    );
    let children: Vec<&str> = r["children"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    for c in [
        "temperature",
        "humidity",
        "State",
        "Seq",
        "Start",
        "Stop",
        "RunScenario",
    ] {
        assert!(children.contains(&c), "{c} missing: {r}");
    }
    assert_ne!(r["first"], r["second"], "{r}");
    assert!(r["second"].as_f64().is_some(), "{r}");
    assert_eq!(r["state_before"], "running", "{r}");
    assert_eq!(r["stop"], true, "Stop reports the change: {r}");
    assert_eq!(r["state_after"], "stopped", "{r}");
    assert_eq!(
        r["still"][0], r["still"][1],
        "a stopped device is silent: {r}"
    );
    assert_eq!(r["bad_scenario"], "BadInvalidArgument", "{r}");
    assert_eq!(r["run_scenario"], true, "{r}");
    assert_eq!(r["scenario"], "hot: hot", "{r}");
    assert_eq!(
        em.get("oven_1").unwrap().scenario.map(|s| s.name),
        Some("hot".to_string())
    );
    // The emulator itself agrees: the device is stopped, the other one is not.
    assert_eq!(em.get("oven_1").unwrap().state, DeviceState::Stopped);
    assert_eq!(em.get("valve_1").unwrap().state, DeviceState::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncua_browses_reads_live_values_and_stops_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let (em, srv) = serve(&dir.path().join("pki"), vec![Security::None]).await;
    let r = client(&srv.endpoint_url(), "none", dir.path()).await;
    check(&r, &em);
    // No secure endpoint asked for: no key material written.
    assert!(!dir.path().join("pki/private/private.pem").exists());
    srv.stop().await;
    em.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic256sha256_with_a_generated_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let (em, srv) = serve(&pki, vec![Security::None, Security::Basic256Sha256]).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pki.join("private/private.pem")), 0o600);
        assert_eq!(mode(&pki), 0o700);
    }
    assert!(pki.join("own/cert.der").exists());
    let r = client(&srv.endpoint_url(), "basic256sha256", dir.path()).await;
    check(&r, &em);
    srv.stop().await;
    em.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_created_and_deleted_later_appear_and_disappear() {
    let dir = tempfile::tempdir().unwrap();
    let (em, srv) = serve(&dir.path().join("pki"), vec![Security::None]).await;
    em.create(
        DeviceSpec {
            scenarios: vec![],
            ..device("late_1", "WindTurbine")
        },
        true,
    )
    .unwrap();
    em.delete("valve_1").unwrap();
    let script = r#"
import asyncio, json, sys
from asyncua import Client, ua
async def main():
    async with Client(url=sys.argv[1], timeout=10) as c:
        ns = await c.get_namespace_index("urn:fieldlab:emulator")
        root = await c.nodes.objects.get_child([f"{ns}:DeviceEmulator"])
        for _ in range(50):
            try:
                names = sorted([(await d.read_browse_name()).Name for d in await root.get_children()])
            except ua.UaStatusCodeError:
                # A device removed between the browse and the read (the mirror follows
                # the fleet as it changes): browse again.
                names = None
            if names == ["late_1", "oven_1"]:
                break
            await asyncio.sleep(0.2)
        power = await root.get_child([f"{ns}:late_1", f"{ns}:power"])
        print(json.dumps({"devices": names, "power_type": (await power.read_data_type_as_variant_type()).name}))
asyncio.run(main())
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &srv.endpoint_url()])
        .output()
        .await
        .unwrap();
    let r = fieldlab_testkit::client_json(&out);
    assert_eq!(r["devices"], serde_json::json!(["late_1", "oven_1"]), "{r}");
    assert_eq!(r["power_type"], "Double", "{r}");
    srv.stop().await;
    em.stop().await;
}

/// Fieldlab users with auth on, through `tests/opcua_auth_client.py`: anonymous and bad
/// passwords refused, a viewer browses and reads but may not call Stop, an operator stops
/// and starts, a teacher too until revoked, an X.509 user certificate signs in only once an
/// admin trusted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_on_signs_in_fieldlab_users_and_checks_their_roles() {
    use fieldlab_core::Role;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pki = dir.path().join("pki");
    fieldlab_auth::UserDb::open(&data)
        .update(|f| {
            f.add_user("vera", &[Role::Viewer], "viewer password one")?;
            f.add_user("otto", &[Role::Operator], "operator password one")?;
            f.add_user("tina", &[Role::Teacher], "teacher password one")?;
            f.add_user("lola", &[Role::Viewer], "viewer password one")?;
            f.add_key("oven_1", &[Role::Device]).map(|_| ())
        })
        .unwrap();
    let s = settings_with_auth(
        &pki,
        vec![Security::None, Security::Basic256Sha256],
        &auth_on(),
        &data,
    )
    .await;
    let em = fleet();
    let srv = fieldlab_opcua::start(s, em.clone()).await.unwrap();
    let trusted = pki.join("users/trusted");
    assert!(trusted.is_dir());
    let mut plan = serde_json::json!([
        {"label": "anonymous"},
        {"label": "anonymous_forced", "anonymous_policy": "anonymous"},
        {"label": "anonymous_none", "security": "none"},
        {"label": "plain_password", "security": "none", "user": "otto", "password": "operator password one"},
        {"label": "wrong_password", "user": "vera", "password": "viewer password two"},
        {"label": "unknown_user", "user": "nobody", "password": "viewer password one"},
        {"label": "viewer", "user": "vera", "password": "viewer password one",
         "actions": ["browse", "read", "stop"]},
        {"label": "operator", "user": "otto", "password": "operator password one",
         "actions": ["stop", "start"]},
        {"label": "teacher", "user": "tina", "password": "teacher password one",
         "users_file": data.join("auth/users.json"), "device": "valve_1",
         "actions": ["stop", "start", "revoke", "stop", "read"]},
        {"label": "teacher_revoked", "user": "tina", "password": "teacher password one"},
        {"label": "cert_untrusted", "user_cert": "otto"},
        {"label": "cert_trusted", "user_cert": "otto", "trust_into": trusted, "actions": ["stop"]},
        {"label": "cert_device_key", "user_cert": "oven_1", "trust_into": trusted},
    ]);
    // fieldlab-auth's failure limiter (auth.login.per_user, 5 by default) covers OPC UA too:
    // after five wrong passwords even the right one is refused for a while.
    for i in 1..=5 {
        plan.as_array_mut().unwrap().push(serde_json::json!(
            {"label": format!("guess_{i}"), "user": "lola", "password": format!("guess number {i}")}
        ));
    }
    plan.as_array_mut().unwrap().push(serde_json::json!(
        {"label": "locked_out", "user": "lola", "password": "viewer password one"}
    ));
    let t0 = std::time::Instant::now();
    let r = run_auth_plan(&srv.endpoint_url(), dir.path(), &plan).await;
    eprintln!(
        "{} sign-in attempts in {:?}",
        plan.as_array().unwrap().len(),
        t0.elapsed()
    );
    // Only the signed-and-encrypted endpoint, with user names and certificates, no anonymous.
    assert_eq!(
        r["endpoints"],
        serde_json::json!([[
            "SignAndEncrypt",
            "Basic256Sha256",
            ["Certificate", "UserName"]
        ]]),
        "{r}"
    );
    // No anonymous token policy is offered, so the client's token has none that fits; one
    // with the library's anonymous policy id reaches fieldlab's check and is refused there.
    assert_eq!(r["anonymous"]["connect"], "BadIdentityTokenInvalid", "{r}");
    assert_eq!(
        r["anonymous_forced"]["connect"], "BadIdentityTokenRejected",
        "{r}"
    );
    // No `None` endpoint: neither anonymous nor a password gets a session over a plain channel.
    assert_ne!(r["anonymous_none"]["connect"], "ok", "{r}");
    assert_ne!(r["plain_password"]["connect"], "ok", "{r}");
    assert_eq!(r["wrong_password"]["connect"], "BadUserAccessDenied", "{r}");
    assert_eq!(r["unknown_user"]["connect"], "BadUserAccessDenied", "{r}");
    let v = &r["viewer"];
    assert_eq!(v["connect"], "ok", "{r}");
    assert_eq!(v["browse"], serde_json::json!(["oven_1", "valve_1"]), "{r}");
    assert_eq!(v["read"], "running", "{r}");
    assert_eq!(v["stop_executable"], false, "{r}");
    assert_eq!(v["stop"], "BadUserAccessDenied", "{r}");
    let o = &r["operator"];
    assert_eq!(o["connect"], "ok", "{r}");
    assert_eq!(o["stop_executable"], true, "{r}");
    // `true`: the device was running, so the viewer's call changed nothing.
    assert_eq!(o["stop"], true, "{r}");
    assert_eq!(o["stop_state"], "stopped", "{r}");
    assert_eq!(o["start"], true, "{r}");
    assert_eq!(o["start_state"], "running", "{r}");
    // A teacher controls devices too, until revoked: then the open session may do nothing
    // more, and a new sign-in is refused.
    let t = &r["teacher"];
    assert_eq!(t["connect"], "ok", "{r}");
    assert_eq!(
        (&t["stop"], &t["start"]),
        (&true.into(), &true.into()),
        "{r}"
    );
    assert_eq!(t["revoke"], true, "{r}");
    assert_eq!(t["stop2"], "BadUserAccessDenied", "{r}");
    assert_eq!(t["read"], "BadUserAccessDenied", "{r}");
    assert_eq!(
        r["teacher_revoked"]["connect"], "BadUserAccessDenied",
        "{r}"
    );
    assert_eq!(
        r["cert_untrusted"]["connect"], "BadIdentityTokenRejected",
        "{r}"
    );
    assert_eq!(r["cert_trusted"]["connect"], "ok", "{r}");
    assert_eq!(r["cert_trusted"]["stop"], true, "{r}");
    // A device key's name as CN: the `device` role may not use OPC UA.
    assert_eq!(
        r["cert_device_key"]["connect"], "BadUserAccessDenied",
        "{r}"
    );
    for i in 1..=5 {
        assert_eq!(
            r[format!("guess_{i}")]["connect"],
            "BadUserAccessDenied",
            "{r}"
        );
    }
    assert_eq!(r["locked_out"]["connect"], "BadUserAccessDenied", "{r}");
    // The emulator agrees: the certificate user's Stop stopped the device.
    assert_eq!(em.get("oven_1").unwrap().state, DeviceState::Stopped);
    assert_eq!(em.get("valve_1").unwrap().state, DeviceState::Running);
    srv.stop().await;
    em.stop().await;
}

/// Runs `tests/opcua_auth_client.py` with this plan of sign-in attempts against `url`, and
/// returns its per-label results.
async fn run_auth_plan(url: &str, dir: &Path, plan: &serde_json::Value) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opcua_auth_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(url)
            .arg(dir)
            .arg(plan.to_string())
            .output(),
    )
    .await
    .expect("the OPC UA client did not finish within 120 s")
    .expect("run python3 (needs `pip install asyncua`, see scripts/test.sh)");
    fieldlab_testkit::client_json(&out)
}

/// A password spray from one client address (a wrong password for each of many user names,
/// each on a new connection, so neither the per-user nor the per-connection limit is reached)
/// is stopped by the per-address failure limiter: the client address reaches fieldlab-auth
/// through the front door's relay map and the patched async-opcua (vendor/README.md). Where
/// the machine has a non-loopback address, the spray comes from it, and a client on
/// loopback is not locked out with it: every relayed connection arrives from loopback, so
/// this is what shows the relay map names the real client.
#[tokio::test]
async fn a_password_spray_from_one_address_is_locked_out_across_user_names() {
    use fieldlab_core::Role;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fieldlab_auth::UserDb::open(&data)
        .update(|f| f.add_user("vera", &[Role::Viewer], "viewer password one"))
        .unwrap();
    let mut cfg = auth_on();
    cfg.login.per_address = 4;
    let pki = dir.path().join("pki");
    let mut s = settings_with_auth(&pki, vec![Security::Basic256Sha256], &cfg, &data).await;
    let em = fleet();
    // A non-loopback address of this machine, if it has one (the route a UDP socket would
    // take; nothing is sent).
    let outward = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|u| u.connect("192.0.2.1:9").map(|_| u))
        .and_then(|u| u.local_addr())
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    if outward.is_some() {
        s.host = "0.0.0.0".into();
    } else {
        eprintln!("no non-loopback address: the spray and the check share 127.0.0.1");
    }
    let srv = fieldlab_opcua::start(s, em.clone()).await.unwrap();
    let spray_host = outward.map(|ip| ip.to_string());
    let mut plan = vec![serde_json::json!(
        {"label": "before", "user": "vera", "password": "viewer password one"}
    )];
    for i in 1..=4 {
        let mut a = serde_json::json!(
            {"label": format!("spray_{i}"), "user": format!("user{i}"), "password": "summer2026"}
        );
        if let Some(h) = &spray_host {
            a["host"] = h.clone().into();
        }
        plan.push(a);
    }
    let mut after = serde_json::json!(
        {"label": "after", "user": "vera", "password": "viewer password one"}
    );
    if let Some(h) = &spray_host {
        after["host"] = h.clone().into();
    }
    plan.push(after);
    plan.push(serde_json::json!(
        {"label": "after_loopback", "user": "vera", "password": "viewer password one"}
    ));
    let r = run_auth_plan(&srv.endpoint_url(), dir.path(), &serde_json::json!(plan)).await;
    assert_eq!(r["before"]["connect"], "ok", "{r}");
    for i in 1..=4 {
        assert_eq!(
            r[format!("spray_{i}")]["connect"],
            "BadUserAccessDenied",
            "{r}"
        );
    }
    // vera made no failed attempt herself; the sprayer's address did.
    assert_eq!(r["after"]["connect"], "BadUserAccessDenied", "{r}");
    if spray_host.is_some() {
        // Another client address is not locked out with it.
        assert_eq!(r["after_loopback"]["connect"], "ok", "{r}");
    }
    srv.stop().await;
    em.stop().await;
}

/// With auth on, a server that would offer only the `None` endpoint refuses to start, saying
/// what to change.
#[tokio::test]
async fn auth_on_needs_an_encrypted_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pki = dir.path().join("pki");
    let s = settings_with_auth(&pki, vec![Security::None], &auth_on(), &data).await;
    let em = fleet();
    let e = fieldlab_opcua::start(s, em.clone())
        .await
        .err()
        .expect("no encrypted endpoint: refused")
        .to_string();
    assert!(e.contains("basic256sha256"), "{e}");
    em.stop().await;
}
