//! Hostile clients against the real binary (issue 30): a storm of wrong-password MQTT
//! CONNECTs must not grow `fieldlab up`'s memory past the argon2 pool's bound, wrong token
//! requests are throttled (429 + Retry-After), an unknown user is answered as slowly as a known
//! one, and with auth off a web page cannot drive the lab (foreign Origin, DNS rebinding Host,
//! text/plain writes, foreign-Origin WebSocket upgrades), while the UI's own same-origin calls
//! and curl without an Origin still work.

use crate::common;

use common::{add_user, Fieldlab};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Peak and current resident set of a process, in KiB, from /proc/PID/status.
fn memory_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn mqtt_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// An MQTT 3.1.1 CONNECT with user name and password.
fn connect_packet(client_id: &str, user: &str, pass: &str) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0xC2, 0, 30]);
    mqtt_str(&mut body, client_id);
    mqtt_str(&mut body, user);
    mqtt_str(&mut body, pass);
    let mut p = vec![0x10];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        p.push(b);
        if len == 0 {
            break;
        }
    }
    p.extend_from_slice(&body);
    p
}

/// The CONNACK return code a raw CONNECT gets (None: no CONNACK within 30 s).
fn connack(port: u16, client_id: &str, user: &str, pass: &str) -> Option<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(&connect_packet(client_id, user, pass)).ok()?;
    let mut b = [0u8; 4];
    s.read_exact(&mut b).ok()?;
    (b[0] == 0x20 && b[1] == 2).then_some(b[3])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
fn password_storm_throttling_and_user_enumeration_on_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    add_user(&data, "ann", "operator", "correct horse battery");
    add_user(&data, "bob", "viewer", "staple battery horse");
    let cfg = dir.path().join("fieldlab.yaml");
    // The per-address limit is off so that the whole storm reaches the argon2 pool (from one
    // address, 20 failures would lock the rest out before any hashing): this measures the
    // pool's bound. The per-user limit stays at its default (5 a minute).
    std::fs::write(
        &cfg,
        "auth:\n  enabled: true\n  login:\n    workers: 2\n    per_address: 0\n",
    )
    .unwrap();
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    f.wait_ready(Duration::from_secs(30));
    let c = reqwest::blocking::Client::new();
    let token = |user: &str, pass: &str| {
        let t = Instant::now();
        let r = c
            .post(f.url("/api/v1/auth/token"))
            .json(&json!({"username": user, "password": pass}))
            .send()
            .unwrap();
        (r, t.elapsed().as_secs_f64())
    };

    // User enumeration: a known user with a wrong password and unknown users take the same
    // argon2 check. Four each (the fifth failure of bob would lock him out).
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let (r, t) = token("bob", "wrong password here");
        assert_eq!(r.status(), 401);
        known.push(t);
        let (r, t) = token(&format!("nobody{i}"), "wrong password here");
        assert_eq!(r.status(), 401);
        let body = r.text().unwrap();
        assert!(
            body.contains("unknown user, wrong password, or revoked user"),
            "{body}"
        );
        unknown.push(t);
    }
    let (k, u) = (median(known), median(unknown));
    println!(
        "token request, wrong password: known user {:.1} ms, unknown user {:.1} ms (medians of 4)",
        k * 1e3,
        u * 1e3
    );
    assert!(
        k.max(u) / k.min(u) < 2.5,
        "known {k:.3}s vs unknown {u:.3}s: timing tells who exists"
    );

    // The storm: 150 concurrent wrong-password CONNECTs (distinct user names, so the per-user
    // limit does not stop them: every one asks for argon2).
    let pid = f.pid();
    let (hwm_before, rss_before) = memory_kib(pid);
    let port = f.mqtt_port;
    let t = Instant::now();
    let handles: Vec<_> = (0..150)
        .map(|i| {
            std::thread::spawn(move || {
                connack(
                    port,
                    &format!("storm-{i}"),
                    &format!("storm{i}"),
                    "wrong password here",
                )
            })
        })
        .collect();
    let codes: Vec<Option<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let took = t.elapsed();
    let (hwm_after, rss_after) = memory_kib(pid);
    let count = |c: u8| codes.iter().filter(|x| **x == Some(c)).count();
    println!(
        "storm: 150 wrong-password CONNECTs in {took:?}: {} bad login (4), {} busy (3), {} not authorized (5), {} without CONNACK; VmHWM {hwm_before} -> {hwm_after} KiB, VmRSS {rss_before} -> {rss_after} KiB",
        count(4),
        count(3),
        count(5),
        codes.iter().filter(|x| x.is_none()).count()
    );
    assert!(
        codes.iter().all(|c| matches!(c, Some(3..=5))),
        "every CONNECT is refused with a CONNACK: {codes:?}"
    );
    assert!(count(4) >= 2, "some were checked: {codes:?}");
    // Unbounded, 150 checks of 19 MiB each were 2.7-3.0 GB; two workers hold 38 MiB.
    let grew_mib = hwm_after.saturating_sub(hwm_before) / 1024;
    assert!(
        grew_mib < 200,
        "peak RSS grew by {grew_mib} MiB during the storm ({hwm_before} -> {hwm_after} KiB)"
    );

    // Throttling: ann's fifth failure within a minute locks her out; the sixth request is
    // refused without checking (429, Retry-After), even with the right password.
    for _ in 0..5 {
        let (r, _) = token("ann", "wrong password here");
        assert_eq!(r.status(), 401);
    }
    let (r, t) = token("ann", "correct horse battery");
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().unwrap();
    assert_eq!(p["status"], 429, "{p}");
    println!("locked-out token request answered in {:.1} ms", t * 1e3);
    // MQTT shares the limiter: CONNACK 5 (not authorized), even with the right password.
    assert_eq!(
        connack(port, "ann-1", "ann", "correct horse battery"),
        Some(5)
    );
    // Others are not affected.
    let (r, _) = token("bob", "staple battery horse");
    assert_eq!(r.status(), 200);
    // No password reached the log.
    let log = format!(
        "{}\n{}",
        f.stdout_text(),
        f.stderr.lock().unwrap().join("\n")
    );
    assert!(!log.contains("wrong password here") && !log.contains("correct horse battery"));
}

/// Raw WebSocket handshake on /ws; the status code of the answer.
fn ws_status(http: &str, host: &str, origin: Option<&str>) -> u16 {
    let addr = http.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"))
}

#[test]
fn with_auth_off_web_pages_cannot_drive_the_lab() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fieldlab::start(&dir.path().join("data"), &[]);
    f.wait_ready(Duration::from_secs(30));
    let c = reqwest::blocking::Client::new();
    let id = common::eventually(Duration::from_secs(20), "an emulated device", || {
        let (_, v) = f.get("/api/v1/emulator/devices");
        v["devices"]
            .as_array()
            .or_else(|| v.as_array())?
            .iter()
            .find(|d| d["state"] == "running")
            .and_then(|d| d["id"].as_str().or_else(|| d["device_id"].as_str()))
            .map(str::to_string)
    });
    let state = || f.get(&format!("/api/v1/devices/{id}/status")).1["state"].clone();
    assert_eq!(state(), "running");
    let own = f.http.clone();
    let host = own.trim_start_matches("http://").to_string();
    let stop = f.url(&format!("/api/v1/devices/{id}/stop"));
    let start = f.url(&format!("/api/v1/devices/{id}/start"));
    let problem = |r: reqwest::blocking::Response, want: u16| {
        assert_eq!(r.status().as_u16(), want);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().unwrap();
        assert_eq!(p["status"], want, "{p}");
        p
    };

    // The page's text/plain POST with its foreign Origin (no preflight needed): refused.
    let r = c
        .post(&stop)
        .header("content-type", "text/plain")
        .header("origin", "http://evil.example")
        .body("{}")
        .send()
        .unwrap();
    let p = problem(r, 403);
    assert!(
        p["detail"].as_str().unwrap().contains("evil.example"),
        "{p}"
    );
    // The same without Origin (an old browser, a privacy extension): still not text/plain.
    let r = c
        .post(&stop)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .unwrap();
    let p = problem(r, 415);
    assert!(
        p["detail"].as_str().unwrap().contains("application/json"),
        "{p}"
    );
    // A form, and JSON from a foreign origin: refused too.
    let r = c
        .post(&stop)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=b")
        .send()
        .unwrap();
    problem(r, 415);
    let r = c
        .post(&stop)
        .header("origin", "http://evil.example")
        .json(&json!({}))
        .send()
        .unwrap();
    problem(r, 403);
    // DNS rebinding: evil.example resolving to 127.0.0.1 sends its own name as Host.
    let r = c
        .post(&stop)
        .header("host", "evil.example")
        .json(&json!({}))
        .send()
        .unwrap();
    let p = problem(r, 403);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("server.allowed_hosts"),
        "{p}"
    );
    let r = c
        .get(f.url("/api/v1/devices"))
        .header("host", "evil.example:8080")
        .send()
        .unwrap();
    problem(r, 403);
    assert_eq!(state(), "running", "the device still runs");
    // Probes answer whatever the Host.
    let r = c
        .get(f.url("/health"))
        .header("host", "pod-7.fieldlab.svc")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // /ws: a foreign page may not open it; the UI's own page and tools without Origin may.
    assert_eq!(ws_status(&own, &host, Some("http://evil.example")), 403);
    assert_eq!(ws_status(&own, "evil.example", None), 403);
    assert_eq!(ws_status(&own, &host, Some(&own)), 101);
    assert_eq!(ws_status(&own, &host, None), 101);

    // The UI page loads; its same-origin JSON call works (what api.js sends), and so does curl
    // without an Origin.
    let r = c
        .get(f.url("/"))
        .header("accept", "text/html")
        .header(
            "host",
            format!("localhost:{}", host.rsplit(':').next().unwrap()),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(&stop)
        .header("origin", &own)
        .header("accept", "application/json")
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text());
    assert_eq!(state(), "stopped");
    let r = c.post(&start).json(&json!({})).send().unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text());
    assert_eq!(state(), "running");
    // A POST without a body needs no type (the UI's start/stop buttons send none).
    let r = c.post(&stop).header("origin", &own).send().unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text());
    assert_eq!(state(), "stopped");
}
