//! Rate limiting across real processes: three `fieldlab ratelimit serve` instances share one
//! real Redis (Debian `redis-server`) and together never allow more than the limit; when Redis
//! stops mid-run, a fail-open policy lets traffic through (counted) and a fail-closed one
//! rejects it, and both recover when Redis is back. A rule PUT to one instance holds on all
//! three (the rules too live in Redis). Also `fieldlab up` guarding its own API.

use crate::common;

use common::{eventually, free_port, mosquitto_pub_lines, Fieldlab};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed; run scripts/test.sh");
        self.child = Some(child);
        eventually(Duration::from_secs(10), "redis-server listens", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .ok()
                .map(|_| ())
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `fieldlab ratelimit serve`, with an API key of each kind made by the real CLI.
struct Service {
    child: Child,
    http: String,
    /// Role viewer: may check, may not configure.
    viewer_key: String,
    /// Role admin.
    admin_key: String,
    _dir: tempfile::TempDir,
}

/// `fieldlab <args> --data-dir <data>` with `stdin`; panics unless it succeeds; its stdout.
fn cli(args: &[&str], data: &std::path::Path, stdin: &str) -> String {
    use std::io::Write;
    let mut c = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "fieldlab {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Service {
    fn start(config: &str) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let key = |name: &str, role: &str| {
            cli(
                &["users", "key", "add", name, "--role", role],
                dir.path(),
                "",
            )
        };
        let (viewer_key, admin_key) = (key("client", "viewer"), key("ops", "admin"));
        let cfg = dir.path().join("fieldlab.yaml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
            .args(["ratelimit", "serve", "--http-port", "0", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let out = child.stdout.take().unwrap();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(l);
            }
        });
        let http = eventually(Duration::from_secs(30), "the service banner", || {
            lines.lock().unwrap().iter().find_map(|l| {
                l.trim()
                    .strip_prefix("HTTP")
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_string)
            })
        });
        Service {
            child,
            http,
            viewer_key,
            admin_key,
            _dir: dir,
        }
    }

    /// A client that sends `key` with every request.
    fn client(key: &str) -> reqwest::blocking::Client {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-api-key", key.parse().unwrap());
        reqwest::blocking::Client::builder()
            .default_headers(h)
            .build()
            .unwrap()
    }

    /// Check one unit of `key` with the viewer's API key.
    fn check(&self, c: &reqwest::blocking::Client, key: &str) -> (u16, Value) {
        let r = c
            .post(format!("{}/api/ratelimit/check", self.http))
            .header("x-api-key", &self.viewer_key)
            .json(&json!({"key": key, "tokens": 1}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_config(url: &str, fail: &str, limit: u64) -> String {
    redis_config_refilled(url, fail, limit, 1)
}

/// A token bucket of `limit` refilled by `refill` per hour: within the test, the exact number of
/// grants is `limit` (+ `refill` if the test ran for an hour). One token per hour is a whole
/// number of ms per token, so Redis keeps the state as the key's expiry; 7 per hour is not
/// (514285.7 ms), so the state is a string, with the clock read by TIME.
fn redis_config_refilled(url: &str, fail: &str, limit: u64, refill: u64) -> String {
    format!(
        "ratelimit:\n  backend: redis\n  redis_url: \"{url}\"\n  redis_timeout: 300ms\n  default:\n    fail: {fail}\n    limits:\n      - algorithm: token_bucket\n        limit: {refill}\n        period: 1h\n        burst: {limit}\n"
    )
}

#[test]
fn three_instances_share_one_limit_through_redis() {
    let redis = Redis::start();
    // Both forms of a token bucket's state in Redis: the key's expiry, a string. One Redis
    // database each: the rules live in Redis too, and the first instances' would be the
    // second round's (`ratelimit:` in the file only seeds an empty Redis).
    for refill in [1, 7] {
        let url = format!("{}/{refill}", redis.url());
        three_instances_hammer_one_key(&redis_config_refilled(&url, "closed", 100, refill));
    }
}

/// The case: a rule PUT to one of three instances on one Redis is in use on the other
/// two within a second; 90 checks spread over the three allow exactly its 30 (with the rule on
/// the first alone, the others' default of 1000 would allow 60 more).
#[test]
fn a_rule_put_to_one_instance_holds_on_all_three() {
    let redis = Redis::start();
    let cfg = redis_config(&redis.url(), "closed", 1000);
    let services: Vec<Service> = (0..3).map(|_| Service::start(&cfg)).collect();
    let admin: Vec<reqwest::blocking::Client> = services
        .iter()
        .map(|s| Service::client(&s.admin_key))
        .collect();
    let version = |i: usize| -> u64 {
        let r = admin[i]
            .get(format!("{}/api/ratelimit/config", services[i].http))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let etag: u64 = r.headers()["etag"]
            .to_str()
            .unwrap()
            .trim_matches('"')
            .parse()
            .unwrap();
        let body: Value = r.json().unwrap();
        assert_eq!(body["version"], etag, "{body}");
        assert_eq!(body["store"]["kind"], "redis", "{body}");
        etag
    };
    let v0 = version(0);
    let r = admin[0]
        .put(format!(
            "{}/api/ratelimit/config/keys/tenant:7",
            services[0].http
        ))
        .header("if-match", format!("\"{v0}\""))
        .json(&json!({"limits": [{"algorithm": "token_bucket", "limit": 30, "period": "1h"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: u64 = r.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap();
    assert!(v > v0, "{v} > {v0}");
    let t0 = Instant::now();
    while !(1..3).all(|i| version(i) == v) {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "the rule did not reach the other instances within a second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = reqwest::blocking::Client::new();
    let allowed = (0..90)
        .filter(|i| {
            let (st, body) = services[i % 3].check(&c, "tenant:7");
            assert_eq!(body["policy"], "key:tenant:7", "{body}");
            st == 200
        })
        .count();
    assert_eq!(allowed, 30);
    // A change on an old version is refused.
    let r = admin[2]
        .put(format!(
            "{}/api/ratelimit/config/keys/tenant:7",
            services[2].http
        ))
        .header("if-match", format!("\"{v0}\""))
        .json(&json!({"limits": [{"algorithm": "token_bucket", "limit": 1, "period": "1h"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 412);
}

fn three_instances_hammer_one_key(cfg: &str) {
    let services: Vec<Service> = (0..3).map(|_| Service::start(cfg)).collect();
    let services = Arc::new(services);
    // 6 clients (2 per instance) hammer one key: 600 requests for a limit of 100.
    let allowed: Vec<(usize, u64, u64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                let services = services.clone();
                s.spawn(move || {
                    let c = reqwest::blocking::Client::new();
                    let svc = &services[i % 3];
                    let (mut ok, mut limited) = (0, 0);
                    for _ in 0..100 {
                        let (st, body) = svc.check(&c, "shared-key");
                        assert!(body["degraded"].is_null(), "redis is up: {body}");
                        match st {
                            200 => ok += 1,
                            429 => {
                                assert!(body["retry_after"].as_u64().unwrap() >= 1, "{body}");
                                limited += 1
                            }
                            other => panic!("unexpected {other}: {body}"),
                        }
                    }
                    (i % 3, ok, limited)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: u64 = allowed.iter().map(|a| a.1).sum();
    let per_instance: Vec<u64> = (0..3)
        .map(|k| allowed.iter().filter(|a| a.0 == k).map(|a| a.1).sum())
        .collect();
    eprintln!("allowed per instance {per_instance:?}, total {total}");
    assert!(total <= 101, "3 instances allowed {total} > limit 100");
    assert!(total >= 100, "only {total} of the limit 100 were granted");
    assert!(
        per_instance.iter().filter(|n| **n > 0).count() >= 2,
        "the grants should be shared among instances: {per_instance:?}"
    );
}

#[test]
fn redis_stopping_mid_run_fails_open_or_closed_and_recovers() {
    let mut redis = Redis::start();
    // Two databases of one Redis: instances on one database share its rules, and these two
    // must differ in their fail mode.
    let open = Service::start(&redis_config(&format!("{}/1", redis.url()), "open", 5));
    let closed = Service::start(&redis_config(&format!("{}/2", redis.url()), "closed", 5));
    let c = reqwest::blocking::Client::new();
    // Use up the limit of two keys while Redis runs.
    for (svc, key) in [(&open, "o"), (&closed, "c")] {
        let codes: Vec<u16> = (0..7).map(|_| svc.check(&c, key).0).collect();
        assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429], "{key}");
    }
    redis.stop();
    // Fail open: allowed, marked degraded, counted. Fail closed: rejected.
    let (st, body) = open.check(&c, "o");
    assert_eq!(st, 200, "{body}");
    assert!(body["degraded"].is_string(), "{body}");
    let (st, body) = closed.check(&c, "c");
    assert_eq!(st, 429, "{body}");
    assert!(body["degraded"].is_string(), "{body}");
    let metrics = c
        .get(format!("{}/metrics", open.http))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let fail_open = metrics
        .lines()
        .find(|l| l.starts_with("fieldlab_ratelimit_fail_open_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("fail-open counter exported");
    assert!(fail_open >= 1.0, "{metrics}");
    assert!(metrics.contains("fieldlab_ratelimit_redis_errors_total"));

    // Redis is back (empty: no persistence): both reconnect and enforce again.
    redis.restart();
    for (svc, probe) in [(&open, "probe-open"), (&closed, "probe-closed")] {
        eventually(Duration::from_secs(15), "reconnected to redis", || {
            let (st, body) = svc.check(&c, probe);
            (st == 200 && body["degraded"].is_null()).then_some(())
        });
    }
    let t0 = Instant::now();
    let codes: Vec<u16> = (0..6).map(|_| closed.check(&c, "fresh").0).collect();
    assert_eq!(
        codes,
        [200, 200, 200, 200, 200, 429],
        "after {:?}",
        t0.elapsed()
    );
}

#[test]
fn up_guards_its_own_api_with_ietf_headers_and_admin_only_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(
        &cfg,
        "devices:\n  fleet: []\nratelimit:\n  api:\n    limits:\n      - algorithm: fixed_window\n        limit: 5\n        period: 1h\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    let c = reqwest::blocking::Client::new();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..7 {
        let r = c.get(f.url("/api/v1/devices")).send().unwrap();
        statuses.push(r.status().as_u16());
        last = Some(r);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    let r = last.unwrap();
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(h("ratelimit-policy").as_deref(), Some("\"api\";q=5;w=3600"));
    let state = h("ratelimit").unwrap();
    assert!(state.starts_with("\"api\";r=0;t="), "{state}");
    let retry: u64 = h("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    assert_eq!(
        h("content-type").as_deref(),
        Some("application/problem+json")
    );
    // Probes are never limited.
    assert_eq!(f.text("/health").0, 200);

    drop(f);
}

#[test]
fn service_config_crud_precedence_and_persistence() {
    let svc = Service::start("ratelimit:\n  default:\n    limits:\n      - {algorithm: fixed_window, limit: 3, period: 1h}\n");
    let c = Service::client(&svc.admin_key);
    let put = |path: &str, body: Value| {
        let r = c
            .put(format!("{}{path}", svc.http))
            .json(&body)
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let one = |limit: u64| json!({"limits": [{"algorithm": "fixed_window", "limit": limit, "period": "1h"}]});
    assert_eq!(put("/api/ratelimit/config/patterns/user:*", one(2)).0, 200);
    assert_eq!(put("/api/ratelimit/config/patterns/user:a*", one(4)).0, 200);
    assert_eq!(put("/api/ratelimit/config/keys/user:alice", one(1)).0, 200);
    // The legacy body shape.
    assert_eq!(
        put(
            "/api/ratelimit/config/keys/legacy",
            json!({"capacity": 6, "refillRate": 1})
        )
        .0,
        200
    );
    let (st, body) = put(
        "/api/ratelimit/config/keys/bad",
        json!({"limits": [{"algorithm": "magic", "limit": 1, "period": "1s"}]}),
    );
    assert_eq!(st, 400);
    assert_eq!(body["parameter"], "limits[0].algorithm", "{body}");

    let granted = |key: &str| (0..8).filter(|_| svc.check(&c, key).0 == 200).count();
    assert_eq!(granted("user:alice"), 1, "exact key wins");
    assert_eq!(granted("user:anna"), 4, "longest pattern");
    assert_eq!(granted("user:bob"), 2, "shorter pattern");
    assert_eq!(granted("device:1"), 3, "default");
    assert_eq!(granted("legacy"), 6, "legacy-shaped policy");

    let (st, body) = svc.check(&c, "user:alice");
    assert_eq!(st, 429);
    assert_eq!(body["policy"], "key:user:alice");
    assert_eq!(body["remaining"], 0);
    assert!(body["reset"].as_u64().unwrap() >= 1 && body["retry_after"].as_u64().unwrap() >= 1);

    let stats: Value = c
        .get(format!("{}/api/ratelimit/stats", svc.http))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stats["policies"]["key:user:alice"]["allowed"], 1, "{stats}");
    assert_eq!(
        stats["policies"]["key:user:alice"]["rejected"], 8,
        "{stats}"
    );

    let del = c
        .delete(format!("{}/api/ratelimit/config/keys/user:alice", svc.http))
        .send()
        .unwrap();
    assert_eq!(del.status().as_u16(), 204);
    let del = c
        .delete(format!("{}/api/ratelimit/config/keys/user:alice", svc.http))
        .send()
        .unwrap();
    assert_eq!(del.status().as_u16(), 404);
    assert_eq!(del.headers()["content-type"], "application/problem+json");
    // Persisted in the data dir.
    let rules = std::fs::read_to_string(svc._dir.path().join("ratelimit/rules.json")).unwrap();
    let rules: Value = serde_json::from_str(&rules).unwrap();
    assert!(
        rules["patterns"]["user:a*"].is_object() && rules["keys"]["user:alice"].is_null(),
        "{rules}"
    );
    let bad = c
        .post(format!("{}/api/ratelimit/check", svc.http))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
}

#[test]
fn ingest_quarantines_messages_over_the_device_limit_and_drops_none() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fieldlab.yaml");
    // 5 at once, then 1 per hour: within the test, exactly 5 messages of a device pass.
    std::fs::write(
        &cfg,
        "devices:\n  fleet: []\nratelimit:\n  ingest:\n    limits:\n      - {algorithm: token_bucket, limit: 1, period: 1h, burst: 5}\n",
    )
    .unwrap();
    let f = Fieldlab::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    f.wait_ready(Duration::from_secs(20));
    let published = 40u64;
    let msg = |dev: &str, i: u64| {
        json!({"device_id": dev, "device_type": "TemperatureSensor", "seq": i,
               "ts": format!("2026-01-01T00:00:{i:02}.000Z"), "data": {"temperature": 20.0 + i as f64}})
        .to_string()
    };
    let flood: Vec<String> = (0..published).map(|i| msg("flood_1", i)).collect();
    mosquitto_pub_lines(
        f.mqtt_port,
        "devices/TemperatureSensor/flood_1/telemetry",
        &flood,
    );
    // Another device has its own limit.
    let calm: Vec<String> = (0..3).map(|i| msg("calm_1", i)).collect();
    mosquitto_pub_lines(
        f.mqtt_port,
        "devices/TemperatureSensor/calm_1/telemetry",
        &calm,
    );

    let stored = |dev: &str| {
        let (st, v) = f.get(&format!("/api/v1/query?device_id={dev}&field=temperature"));
        if st != 200 {
            return 0;
        }
        v["series"][0]["points"]
            .as_array()
            .map_or(0, |p| p.len() as u64)
    };
    let limited = || {
        let (_, v) = f.get("/api/v1/quarantine?limit=1000");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["reason"] == "rate limited")
            .inspect(|i| assert_eq!(i["topic"], "devices/TemperatureSensor/flood_1/telemetry"))
            .count() as u64
    };
    let (s, q) = eventually(
        Duration::from_secs(15),
        "every message stored or quarantined",
        || {
            let (s, q) = (stored("flood_1"), limited());
            (s + q == published && stored("calm_1") == 3).then_some((s, q))
        },
    );
    assert!(q > 0, "nothing was rate limited");
    assert_eq!((s, q), (5, published - 5), "burst 5, refill 1/h");
    // Nothing is counted twice: a little later the sums still hold.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!((stored("flood_1"), limited()), (5, published - 5));

    let (_, text) = f.text("/metrics");
    let metric = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert_eq!(
        metric("fieldlab_ingest_rate_limited_total"),
        (published - 5) as f64
    );
    assert_eq!(
        metric("fieldlab_ingest_quarantined_total"),
        (published - 5) as f64
    );
    let stats: Value = reqwest::blocking::get(f.url("/api/ratelimit/stats"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        stats["policies"]["ingest"]["rejected"],
        published - 5,
        "{stats}"
    );
}

#[test]
fn service_needs_credentials_to_check_and_admin_to_configure() {
    let svc = Service::start("ratelimit:\n  default:\n    limits:\n      - {algorithm: fixed_window, limit: 3, period: 1h}\n");
    let url = |p: &str| format!("{}{p}", svc.http);
    let anon = reqwest::blocking::Client::new();
    let check_body = json!({"key": "k", "tokens": 1});
    // No credentials: 401 problem+json with a Bearer challenge, and the limit is not touched.
    let r = anon
        .post(url("/api/ratelimit/check"))
        .json(&check_body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"fieldlab\"");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = anon
        .post(url("/api/ratelimit/check"))
        .header("x-api-key", "flk_000000000000_not-a-real-key")
        .json(&check_body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Probes stay open.
    assert_eq!(
        anon.get(url("/health")).send().unwrap().status().as_u16(),
        200
    );

    let viewer = Service::client(&svc.viewer_key);
    let r = viewer
        .post(url("/api/ratelimit/check"))
        .json(&check_body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.json::<Value>().unwrap()["remaining"],
        2,
        "the 401s used nothing"
    );
    // A viewer may not read or change the configuration.
    let policy = json!({"limits": [{"algorithm": "gcra", "limit": 1, "period": "1s"}]});
    for (st, what) in [
        (
            viewer
                .put(url("/api/ratelimit/config/keys/x"))
                .json(&policy)
                .send()
                .unwrap()
                .status(),
            "PUT key",
        ),
        (
            viewer
                .get(url("/api/v1/ratelimit/config"))
                .send()
                .unwrap()
                .status(),
            "GET config",
        ),
        (
            viewer
                .delete(url("/api/ratelimit/config/patterns/a*"))
                .send()
                .unwrap()
                .status(),
            "DELETE pattern",
        ),
        (
            anon.put(url("/api/ratelimit/config/default"))
                .json(&policy)
                .send()
                .unwrap()
                .status(),
            "anonymous PUT",
        ),
    ] {
        let want = if what.starts_with("anonymous") {
            401
        } else {
            403
        };
        assert_eq!(st.as_u16(), want, "{what}");
    }
    let admin = Service::client(&svc.admin_key);
    let r = admin
        .put(url("/api/ratelimit/config/keys/x"))
        .json(&policy)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A user signs in for a JWT (same token endpoint as `fieldlab up`) and checks with it.
    cli(
        &[
            "users",
            "add",
            "ann",
            "--role",
            "operator",
            "--password-stdin",
        ],
        svc._dir.path(),
        "correct horse battery\n",
    );
    let tok: Value = anon
        .post(url("/api/v1/auth/token"))
        .json(&json!({"username": "ann", "password": "correct horse battery"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let jwt = tok["access_token"].as_str().expect("a token").to_string();
    let r = anon
        .post(url("/api/ratelimit/check"))
        .bearer_auth(&jwt)
        .json(&check_body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = anon
        .put(url("/api/ratelimit/config/keys/y"))
        .bearer_auth(&jwt)
        .json(&policy)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "an operator is not an admin");
}
