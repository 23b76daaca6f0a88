//! One fleet across replicas (`scripts/cluster.sh`): three `fieldlab up` replicas on a real
//! nats-server (MQTT listener, JetStream, the subject mapping that partitions device streams by
//! device id) and a real Redis. 100 devices publish in-order sequences, each with its own MQTT
//! client; every replica answers for the whole fleet, each reading counted once, with no
//! out-of-order or duplicate verdicts and no gaps; a rate-limit rule set on one replica holds
//! on all; after SIGKILL of replica 2 the survivors answer for every reading acknowledged
//! before and after.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEVICES: usize = 100;

/// A running `scripts/cluster.sh` cluster, taken down on drop.
struct Cluster {
    dir: PathBuf,
    mqtt_port: u16,
    http: Vec<String>,
}

impl Cluster {
    fn up(dir: &Path) -> Cluster {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(dir)
            .env("FIELDLAB_BIN", env!("CARGO_BIN_EXE_fieldlab"))
            .output()
            .expect("run scripts/cluster.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "cluster.sh up failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut mqtt_port = 0;
        let mut http = Vec::new();
        for l in stdout.lines() {
            if let Some(u) = l.strip_prefix("mqtt mqtt://127.0.0.1:") {
                mqtt_port = u.trim().parse().unwrap();
            } else if let Some(u) = l.strip_prefix("http ") {
                http.push(u.trim().to_string());
            }
        }
        assert!(
            mqtt_port > 0 && http.len() == 3,
            "cluster.sh printed:\n{stdout}"
        );
        for n in 1..=3 {
            assert!(dir.join(format!("replica-{n}.pid")).exists());
        }
        Cluster {
            dir: dir.to_path_buf(),
            mqtt_port,
            http,
        }
    }

    fn pid(&self, n: usize) -> i32 {
        std::fs::read_to_string(self.dir.join(format!("replica-{n}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh");
        let _ = Command::new("bash")
            .arg(&script)
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn get(c: &reqwest::blocking::Client, url: &str) -> (u16, Value) {
    match c.get(url).send() {
        Ok(r) => {
            let st = r.status().as_u16();
            (st, r.json().unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Publish readings `from..to` of every device, QoS 1, each device with its own MQTT client
/// (client id = device id); returns once nats-server acknowledged every one.
fn publish(port: u16, from: u64, to: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for d in 0..DEVICES {
            tasks.push(tokio::spawn(async move {
                let id = format!("probe-{d:03}");
                let mut o = rumqttc::MqttOptions::new(id.clone(), "127.0.0.1", port);
                o.set_keep_alive(Duration::from_secs(30));
                let (c, mut el) = rumqttc::AsyncClient::new(o, 64);
                let topic = format!("devices/Probe/{id}/telemetry");
                let base = fieldlab_now_ms() - 3_600_000;
                let pubs = tokio::spawn(async move {
                    for seq in from..to {
                        let body = json!({
                            "device_id": id, "seq": seq, "ts": base + seq as i64 * 1000,
                            "counter": seq, "temperature": 20.0 + (seq % 5) as f64 * 0.1,
                        });
                        c.publish(
                            topic.as_str(),
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            body.to_string(),
                        )
                        .await
                        .unwrap();
                    }
                    c
                });
                let mut acked = 0;
                while acked < to - from {
                    match el.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                        Ok(_) => {}
                        Err(e) => panic!("device {d}: {e}"),
                    }
                }
                let c = pubs.await.unwrap();
                let _ = c.disconnect().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn fieldlab_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What one replica says of the fleet: devices listed, and each device's stored `counter`
/// values (raw query, every series of the field at once).
fn fleet(c: &reqwest::blocking::Client, http: &str) -> Option<(usize, BTreeMap<String, Vec<u64>>)> {
    let (st, d) = get(c, &format!("{http}/api/v1/devices"));
    if st != 200 {
        return None;
    }
    let listed = d["devices"].as_array()?.len();
    let mut counters = BTreeMap::new();
    for i in 0..DEVICES {
        let id = format!("probe-{i:03}");
        let (st, q) = get(
            c,
            &format!("{http}/api/v1/query?device_id={id}&field=counter&from=-1d&limit=100000"),
        );
        if st != 200 {
            return None;
        }
        let pts: Vec<u64> = q["series"][0]["points"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["value"].as_u64()).collect())
            .unwrap_or_default();
        counters.insert(id, pts);
    }
    Some((listed, counters))
}

/// Does `http` answer for every device, each with exactly the readings 0..n once, in order?
fn whole(c: &reqwest::blocking::Client, http: &str, n: u64) -> Result<(), String> {
    let (listed, counters) = fleet(c, http).ok_or("not answering")?;
    if listed != DEVICES {
        return Err(format!("lists {listed} devices"));
    }
    let want: Vec<u64> = (0..n).collect();
    for (id, v) in &counters {
        if *v != want {
            return Err(format!(
                "{id}: {} readings, first differences at {:?}",
                v.len(),
                v.iter().zip(&want).position(|(a, b)| a != b)
            ));
        }
    }
    Ok(())
}

/// Wait (at most `secs`) until [`whole`] holds; on timeout, fail with its last complaint.
fn wait_whole(c: &reqwest::blocking::Client, http: &str, n: u64, secs: u64) {
    let t0 = std::time::Instant::now();
    loop {
        match whole(c, http, n) {
            Ok(()) => return,
            Err(e) if t0.elapsed() > Duration::from_secs(secs) => {
                panic!("{http} does not answer for all {n} readings of {DEVICES} devices after {secs} s: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Quality verdicts of `rules` on `http` (the whole fleet).
fn violations(c: &reqwest::blocking::Client, http: &str, rules: &[&str]) -> Vec<Value> {
    let (st, q) = get(c, &format!("{http}/api/v1/quality?from=-1d&limit=10000"));
    assert_eq!(st, 200, "{q}");
    q["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| rules.contains(&e["rule"].as_str().unwrap_or("")))
        .cloned()
        .collect()
}

#[test]
fn replicas_answer_for_the_whole_fleet_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::up(dir.path());
    let c = client();

    // Every replica's view: the same three members, each partition with one owner.
    for h in &cluster.http {
        let (st, s) = get(&c, &format!("{h}/api/v1/cluster"));
        assert_eq!(st, 200, "{s}");
        assert_eq!(s["members"].as_array().unwrap().len(), 3, "{s}");
    }

    publish(cluster.mqtt_port, 0, 20);
    for h in &cluster.http {
        wait_whole(&c, h, 20, 60);
    }
    for h in &cluster.http {
        let v = violations(&c, h, &["out_of_order", "duplicate"]);
        assert!(v.is_empty(), "{h}: {v:?}");
    }

    // A rate-limit rule PUT on replica 1 holds on all: 30 of 90 checks spread over the three.
    let (st, body) =
        {
            let r = c
            .put(format!("{}/api/v1/ratelimit/config/keys/cluster-test", cluster.http[0]))
            .json(&json!({"limits": [{"algorithm": "fixed_window", "limit": 30, "period": "1h"}]}))
            .send()
            .unwrap();
            (r.status().as_u16(), r.text().unwrap())
        };
    assert_eq!(st, 200, "{body}");
    std::thread::sleep(Duration::from_millis(1000));
    let allowed = (0..90)
        .filter(|i| {
            let r = c
                .post(format!("{}/api/v1/ratelimit/check", cluster.http[i % 3]))
                .json(&json!({"key": "cluster-test"}))
                .send()
                .unwrap();
            r.status().as_u16() == 200
        })
        .count();
    assert_eq!(allowed, 30, "checks allowed over the three replicas");

    // SIGKILL replica 2, publish more: the survivors take its partitions over and answer for
    // every reading acknowledged before and after.
    unsafe {
        libc::kill(cluster.pid(2), libc::SIGKILL);
    }
    publish(cluster.mqtt_port, 20, 40);
    for h in [&cluster.http[0], &cluster.http[2]] {
        wait_whole(&c, h, 40, 90);
        let v = violations(&c, h, &["out_of_order", "duplicate"]);
        assert!(v.is_empty(), "{h}: {v:?}");
    }

    // Replica 2 comes back on its data dir: it rejoins, reads on from its offsets, gets its
    // share handed back once caught up, and every replica answers for everything again.
    let log = std::fs::File::options()
        .append(true)
        .open(cluster.dir.join("replica-2.log"))
        .unwrap();
    let mut back = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
        .arg("up")
        .env(
            "FIELDLAB_CONFIG",
            cluster.dir.join("replica-2/fieldlab.yaml"),
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(cluster.dir.join("replica-2.pid"), back.id().to_string()).unwrap();
    publish(cluster.mqtt_port, 40, 50);
    let t0 = std::time::Instant::now();
    loop {
        let (_, s) = get(&c, &format!("{}/api/v1/cluster", cluster.http[1]));
        let owned = s["partitions"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["owner"] == "replica-2").count())
            .unwrap_or(0);
        if owned > 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "replica 2 got no partitions back: {s}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for h in &cluster.http {
        wait_whole(&c, h, 50, 90);
    }
    let _ = back.kill();
    let _ = back.wait();
}
