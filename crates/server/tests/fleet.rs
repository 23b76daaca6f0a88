//! Three replicas over real sockets, each with its own store, answer for the whole fleet
//! (`fleet.rs`): every device once, whichever replica is asked.
//!
//! Replica A owns `a1` and `a2`, B owns `b1`, C owns `c1`. A also holds stale data, events and
//! quality state of `b1` (it owned it before): an answer that took it would count `b1` twice.

use fieldlab_core::cluster::{ClusterView, SCOPE_HEADER, SCOPE_LOCAL};
use fieldlab_core::reading::Reading;
use fieldlab_core::time::now_ms;
use fieldlab_core::{FieldValue, Point, SeriesKey, Tags};
use fieldlab_server::AppState;
use fieldlab_store::{Quarantine, Store, StoreOptions};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const T0: i64 = 1_767_225_600_000;

/// Owns a fixed set of devices; the peers are the other replicas' URLs.
#[derive(Debug)]
struct StaticView {
    me: String,
    owned: BTreeSet<String>,
    peers: Vec<String>,
}

impl ClusterView for StaticView {
    fn me(&self) -> String {
        self.me.clone()
    }
    fn owns(&self, device_id: &str) -> bool {
        self.owned.contains(device_id)
    }
    fn peers(&self) -> Vec<String> {
        self.peers.clone()
    }
}

/// What one replica holds: stored points per device (`n` points from `T0`, 1 s apart), and
/// watch state per device (readings observed, anomaly and quality events `age_s` seconds
/// old).
struct Holds {
    owned: &'static [&'static str],
    points: &'static [(&'static str, i64)],
    readings: &'static [(&'static str, usize)],
    events: &'static [(&'static str, i64)],
}

const A: Holds = Holds {
    owned: &["a1", "a2"],
    points: &[("a1", 120), ("a2", 60), ("b1", 30)],
    readings: &[("a1", 3), ("a2", 4), ("b1", 2)],
    events: &[("a1", 10), ("a2", 20), ("b1", 5)],
};
const B: Holds = Holds {
    owned: &["b1"],
    points: &[("b1", 90)],
    readings: &[("b1", 5)],
    events: &[("b1", 15)],
};
const C: Holds = Holds {
    owned: &["c1"],
    points: &[("c1", 45)],
    readings: &[("c1", 6)],
    events: &[("c1", 25)],
};
/// Points each owner holds: what the fleet must answer.
const OWNED_POINTS: i64 = 120 + 60 + 90 + 45;

struct Replica {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// `users`: a data dir whose `auth/` (users and API keys) every replica copies, turning
/// authentication on; `None`: auth off.
async fn replica(
    holds: &Holds,
    listener: tokio::net::TcpListener,
    me: &str,
    peers: Vec<String>,
    users: Option<&std::path::Path>,
    budget: usize,
) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let auth = match users {
        None => None,
        Some(from) => {
            std::fs::create_dir_all(dir.path().join("auth")).unwrap();
            for f in std::fs::read_dir(from.join("auth")).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), dir.path().join("auth").join(f.file_name())).unwrap();
            }
            let cfg = fieldlab_auth::AuthConfig {
                enabled: true,
                ..Default::default()
            };
            Some(Arc::new(
                fieldlab_auth::Authenticator::new(&cfg, dir.path())
                    .await
                    .unwrap(),
            ))
        }
    };
    let now = now_ms();
    // Events already logged when the watch opens: it reloads them.
    std::fs::create_dir_all(dir.path().join("events")).unwrap();
    let (mut anomalies, mut quality) = (String::new(), String::new());
    // Oldest first, as the watch logs them.
    let mut events = holds.events.to_vec();
    events.sort_by_key(|(_, age_s)| -age_s);
    for (dev, age_s) in events {
        let ts_ms = now - age_s * 1000;
        let a = json!({"device_id": dev, "field": "temperature", "ts_ms": ts_ms, "value": 99.0,
            "score": 0.95, "detector": "robust_z"});
        let q = json!({"device_id": dev, "ts_ms": ts_ms, "rule": "range",
            "field": "temperature", "reason": "above 85"});
        anomalies.push_str(&format!("{a}\n"));
        quality.push_str(&format!("{q}\n"));
    }
    std::fs::write(dir.path().join("events/anomalies.jsonl"), anomalies).unwrap();
    std::fs::write(dir.path().join("events/quality.jsonl"), quality).unwrap();
    let watch =
        fieldlab_watch::Watch::open(dir.path(), fieldlab_watch::WatchConfig::default()).unwrap();
    for (dev, n) in holds.readings {
        for i in 0..*n {
            let ts = now - 30_000 + i as i64 * 1000;
            let r = Reading {
                device_id: dev.to_string(),
                device_type: "TemperatureSensor".into(),
                ts_ms: ts,
                seq: Some(i as u64),
                fields: vec![("temperature".into(), FieldValue::F64(21.0))],
                units: BTreeMap::new(),
                tags: BTreeMap::new(),
                status: None,
            };
            watch.observe(&r, ts);
        }
    }
    let (store, _) = Store::open(StoreOptions::new(dir.path())).unwrap();
    let state = AppState {
        watch: Some(watch),
        auth,
        fleet_answer_max: budget,
        ..AppState::bare(store, Arc::new(Quarantine::open(dir.path()).unwrap()))
    };
    for (dev, n) in holds.points {
        state.directory.register_emulated(dev, "TemperatureSensor");
        let pts: Vec<Point> = (0..*n)
            .map(|i| Point {
                key: SeriesKey::new(*dev, "temperature"),
                tags: Tags {
                    device_type: "TemperatureSensor".into(),
                    extra: [("site".to_string(), format!("site-{dev}"))].into(),
                },
                ts_ms: T0 + i * 1000,
                value: FieldValue::F64(i as f64),
            })
            .collect();
        state.store.write(pts).await.unwrap();
    }
    let state = AppState {
        cluster: Some(Arc::new(StaticView {
            me: me.into(),
            owned: holds.owned.iter().map(|d| d.to_string()).collect(),
            peers,
        })),
        ..state
    };
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        fieldlab_server::serve(listener, state, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Replica {
        url,
        stop: Some(tx),
        task,
        _dir: dir,
    }
}

/// A, B and C, each knowing the other two.
async fn fleet() -> Vec<Replica> {
    fleet_with(None).await
}

async fn fleet_with(users: Option<&std::path::Path>) -> Vec<Replica> {
    fleet_with_budget(users, 256 << 20).await
}

/// `budget`: each replica's `server.fleet_answer_max_size`, in bytes.
async fn fleet_with_budget(users: Option<&std::path::Path>, budget: usize) -> Vec<Replica> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    let others = |i: usize| -> Vec<String> {
        urls.iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, u)| u.clone())
            .collect()
    };
    let mut out = Vec::new();
    for (i, (l, (h, me))) in listeners
        .into_iter()
        .zip([(&A, "a"), (&B, "b"), (&C, "c")])
        .enumerate()
    {
        out.push(replica(h, l, me, others(i), users, budget).await);
    }
    out
}

async fn get(url: &str, local: bool) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new().get(url);
    if local {
        req = req.header(SCOPE_HEADER, SCOPE_LOCAL);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

async fn json(url: &str) -> Value {
    let (st, _, body) = get(url, false).await;
    assert_eq!(st, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Send a request and read its JSON answer.
async fn sent(r: reqwest::RequestBuilder) -> Value {
    r.send().await.unwrap().json().await.unwrap()
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_string())
        .collect()
}

fn sum_counts(v: &Value) -> i64 {
    v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_i64().unwrap())
        .sum()
}

#[tokio::test]
async fn every_replica_answers_for_the_whole_fleet_once() {
    let fleet = fleet().await;
    let all = ["a1", "a2", "b1", "c1"];
    for r in &fleet {
        let u = &r.url;
        let v = json(&format!("{u}/api/v1/devices")).await;
        assert_eq!(ids(&v, "devices"), all, "{u}: {v}");
        assert_eq!(v["count"], 4);

        let v = json(&format!("{u}/api/v1/series")).await;
        assert_eq!(ids(&v, "series"), all, "{u}: {v}");

        // b1's detail from its owner, whoever is asked: B's 90 points, not A's stale 30.
        let v = json(&format!("{u}/api/v1/devices/b1")).await;
        assert_eq!(v["device_id"], "b1");
        assert_eq!(
            v["series"][0]["last"], "2026-01-01T00:01:29.000Z",
            "{u}: {v}"
        );
        let (st, _, _) = get(&format!("{u}/api/v1/devices/nobody"), false).await;
        assert_eq!(st, 404);
        let v = json(&format!(
            "{u}/api/v1/devices/b1/history?from=2026-01-01T00:00:00Z&limit=1000"
        ))
        .await;
        assert_eq!(
            v["fields"]["temperature"].as_array().unwrap().len(),
            90,
            "{u}"
        );

        // Raw points: every device's series once, their counts the owners' sum.
        let v = json(&format!(
            "{u}/api/v1/query?device_type=TemperatureSensor&field=temperature"
        ))
        .await;
        assert_eq!(ids(&v, "series"), all, "{u}");
        assert_eq!(sum_counts(&v), OWNED_POINTS, "{u}");
        let b1 = &v["series"][2];
        assert_eq!(b1["count"], 90);
        // Aggregated: per-minute counts add up to the same.
        let v = json(&format!(
            "{u}/api/v1/query?device_type=TemperatureSensor&step=60s&agg=count,max"
        ))
        .await;
        let buckets: f64 = v["series"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["points"].as_array().unwrap())
            .map(|p| p["count"].as_f64().unwrap())
            .sum();
        assert_eq!(buckets as i64, OWNED_POINTS, "{u}: {v}");
        assert_eq!(v["series"][2]["points"][1]["max"], 89.0, "{u}");
        // A selection only a peer holds.
        let v = json(&format!("{u}/api/v1/query?device_id=c1&limit=5")).await;
        assert_eq!(sum_counts(&v), 5);
        let (st, _, _) = get(&format!("{u}/api/v1/query?device_id=nobody"), false).await;
        assert_eq!(st, 404, "{u}");

        // Anomalies, newest first, the limit applied to the merge (A's stale b1 event, the
        // newest of all, must not show).
        let v = json(&format!("{u}/api/v1/anomalies")).await;
        assert_eq!(ids(&v, "anomalies"), ["a1", "b1", "a2", "c1"], "{u}: {v}");
        let v = json(&format!("{u}/api/v1/anomalies?limit=2")).await;
        assert_eq!(ids(&v, "anomalies"), ["a1", "b1"], "{u}");
        assert_eq!(v["count"], 2);

        // Quality: one score per device (b1's from B's 5 readings), events merged.
        let v = json(&format!("{u}/api/v1/quality")).await;
        assert_eq!(ids(&v, "devices"), all, "{u}: {v}");
        assert_eq!(v["devices"][2]["readings"], 5, "{u}: {v}");
        assert_eq!(ids(&v, "events"), ["a1", "b1", "a2", "c1"], "{u}");

        // CSV: every owned row once, series in device order, with the union of tags.
        let (st, h, csv) = get(&format!("{u}/api/v1/export?format=csv"), false).await;
        assert_eq!(st, 200, "{csv}");
        assert!(h["content-type"].to_str().unwrap().starts_with("text/csv"));
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("ts,device_id,device_type,field,unit,site,value")
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len() as i64, OWNED_POINTS, "{u}");
        let keys: BTreeSet<(&str, &str)> = rows.iter().map(|r| (r[1], r[0])).collect();
        assert_eq!(keys.len(), rows.len(), "a row twice");
        let devs: Vec<&str> = rows.iter().map(|r| r[1]).collect();
        assert!(devs.windows(2).all(|w| w[0] <= w[1]), "device order");
        assert_eq!(rows.iter().filter(|r| r[1] == "b1").count(), 90);
        assert!(rows.iter().all(|r| r[5] == format!("site-{}", r[1])));
        // JSON lines and Parquet, aggregated too.
        let (st, _, jl) = get(&format!("{u}/api/v1/export?format=jsonl"), false).await;
        assert_eq!(st, 200);
        assert_eq!(jl.lines().count() as i64, OWNED_POINTS);
        let (st, _, jl) = get(
            &format!("{u}/api/v1/export?format=jsonl&step=60s&agg=count"),
            false,
        )
        .await;
        assert_eq!(st, 200);
        let n: f64 = jl
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["count"]
                    .as_f64()
                    .unwrap()
            })
            .sum();
        assert_eq!(n as i64, OWNED_POINTS);
        let r = reqwest::get(format!("{u}/api/v1/export?format=parquet"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
        let (st, _, _) = get(&format!("{u}/api/v1/export?device_id=nobody"), false).await;
        assert_eq!(st, 404, "{u}");
    }
}

#[tokio::test]
async fn a_local_request_answers_for_the_owned_share_only() {
    let fleet = fleet().await;
    let a = &fleet[0].url;
    let local = |path: &str| {
        let url = format!("{a}{path}");
        async move {
            let (st, _, body) = get(&url, true).await;
            assert_eq!(st, 200, "{url}: {body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    assert_eq!(
        ids(&local("/api/v1/devices").await, "devices"),
        ["a1", "a2"]
    );
    assert_eq!(ids(&local("/api/v1/series").await, "series"), ["a1", "a2"]);
    let v = local("/api/v1/query?device_type=TemperatureSensor").await;
    assert_eq!(ids(&v, "series"), ["a1", "a2"]);
    assert_eq!(sum_counts(&v), 180);
    // A peer's share of nothing is an empty answer, not a 404.
    let v = local("/api/v1/query?device_id=c1").await;
    assert_eq!(v["series"], json!([]));
    assert_eq!(
        ids(&local("/api/v1/anomalies").await, "anomalies"),
        ["a1", "a2"]
    );
    let v = local("/api/v1/quality").await;
    assert_eq!(ids(&v, "devices"), ["a1", "a2"]);
    assert_eq!(ids(&v, "events"), ["a1", "a2"]);
    let (st, _, _) = get(&format!("{a}/api/v1/devices/b1"), true).await;
    assert_eq!(st, 404, "A does not answer for b1 in its own share");
    let (st, h, csv) = get(&format!("{a}/api/v1/export"), true).await;
    assert_eq!(st, 200);
    assert_eq!(csv.lines().count(), 1 + 180);
    assert_eq!(h["fieldlab-share-series"], "2");
}

#[tokio::test]
async fn a_replica_that_does_not_answer_makes_a_503_not_a_partial_answer() {
    let mut fleet = fleet().await;
    let c = fleet.pop().unwrap();
    let c_url = c.url.clone();
    c.stop.unwrap().send(()).unwrap();
    c.task.await.unwrap();
    let a = &fleet[0].url;
    for path in [
        "/api/v1/devices",
        "/api/v1/series",
        "/api/v1/devices/c1",
        "/api/v1/devices/c1/history",
        "/api/v1/query?device_type=TemperatureSensor",
        "/api/v1/query?device_type=TemperatureSensor&step=60s",
        "/api/v1/anomalies",
        "/api/v1/quality",
        "/api/v1/export?format=csv",
        "/api/v1/export?format=parquet",
    ] {
        let (st, h, body) = get(&format!("{a}{path}"), false).await;
        assert_eq!(st, 503, "{path}: {body}");
        assert_eq!(h["content-type"], "application/problem+json", "{path}");
        assert_eq!(h["retry-after"], "1", "{path}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], 503);
        assert!(
            v["detail"].as_str().unwrap().contains(&c_url),
            "{path}: the detail names the replica: {v}"
        );
    }
    // The devices A owns itself are still answered, and local shares need no peer.
    let (st, _, _) = get(&format!("{a}/api/v1/devices/a1"), false).await;
    assert_eq!(st, 200);
    let (st, _, _) = get(&format!("{a}/api/v1/devices"), true).await;
    assert_eq!(st, 200);
}

/// With auth on, the caller's credentials go along to the peers: an API key every replica
/// knows lists the whole fleet; without it, 401 (not a share of the fleet).
#[tokio::test]
async fn the_callers_credentials_go_to_the_peers() {
    let seed = tempfile::tempdir().unwrap();
    let cfg = fieldlab_auth::AuthConfig {
        enabled: true,
        ..Default::default()
    };
    let auth = fieldlab_auth::Authenticator::new(&cfg, seed.path())
        .await
        .unwrap();
    let key = auth
        .users()
        .update(|f| f.add_key("reader", &[fieldlab_core::Role::Viewer]))
        .unwrap()
        .secret;
    let fleet = fleet_with(Some(seed.path())).await;
    let c = reqwest::Client::new();
    for r in &fleet {
        let url = format!("{}/api/v1/devices", r.url);
        let v = sent(c.get(&url).header("x-api-key", &key)).await;
        assert_eq!(ids(&v, "devices"), ["a1", "a2", "b1", "c1"], "{url}: {v}");
        let v = sent(c.get(&url).bearer_auth(&key)).await;
        assert_eq!(v["count"], 4, "{url}: {v}");
        let st = c.get(&url).send().await.unwrap().status();
        assert_eq!(st, 401);
    }
}

#[tokio::test]
async fn a_fleet_answer_larger_than_its_budget_is_413_not_unbounded_memory() {
    // 64 bytes for the peers' shares together: an export of the fleet cannot fit.
    let fleet = fleet_with_budget(None, 64).await;
    let (st, _, body) = get(&format!("{}/api/v1/export?format=csv", fleet[0].url), false).await;
    assert_eq!(st, 413, "{body}");
    let p: Value = serde_json::from_str(&body).unwrap();
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .ends_with("fleet-answer-too-large"),
        "{p}"
    );
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("fleet_answer_max_size"),
        "{p}"
    );
    // A replica's own share is streamed, whatever the budget.
    let (st, _, body) = get(&format!("{}/api/v1/export?format=csv", fleet[0].url), true).await;
    assert_eq!(st, 200, "{body}");
}
