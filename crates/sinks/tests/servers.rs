//! The sinks against real servers: InfluxDB 1.x and PostgreSQL, each started here on a free
//! port in a temporary directory. Every test writes through `Sinks`, reads the server back and
//! compares; the outage tests take the server away mid-run.

use fieldlab_core::{FieldValue, Point, SeriesKey, Tags};
use fieldlab_sinks::{SinkConfig, SinkKind};
use fieldlab_sinks::{SinkMetrics, Sinks};
use fieldlab_testkit::{InfluxServer, PostgresServer};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn points(device: &str, from: i64, n: i64) -> Vec<Point> {
    let mut out = Vec::new();
    for i in from..from + n {
        let tags = Tags {
            device_type: "PvInverter".into(),
            extra: [("site".to_string(), "lab, west".to_string())].into(),
        };
        let ts = T0 + i * 1000;
        out.push(Point {
            key: SeriesKey::new(device, "ac_power"),
            tags: tags.clone(),
            ts_ms: ts,
            value: FieldValue::F64(400.0 + i as f64 * 0.125),
        });
        out.push(Point {
            key: SeriesKey::new(device, "count"),
            tags: tags.clone(),
            ts_ms: ts,
            value: FieldValue::I64(i),
        });
        out.push(Point {
            key: SeriesKey::new(device, "state"),
            tags,
            ts_ms: ts,
            value: FieldValue::Str(format!("ok \"{i}\"")),
        });
    }
    out
}

fn influx_cfg(url: &str, db: &str) -> SinkConfig {
    SinkConfig {
        kind: SinkKind::Influxdb,
        url: url.into(),
        db: Some(db.into()),
        batch_max: 200,
        flush_interval: "50ms".parse().unwrap(),
        buffer_max: 1000,
        max_backoff: "300ms".parse().unwrap(),
        timeout: "2s".parse().unwrap(),
        ..SinkConfig::default()
    }
}

fn pg_cfg(url: &str) -> SinkConfig {
    SinkConfig {
        kind: SinkKind::Postgres,
        url: url.into(),
        table: "lab.points".into(),
        batch_max: 200,
        flush_interval: "50ms".parse().unwrap(),
        buffer_max: 1000,
        max_backoff: "300ms".parse().unwrap(),
        timeout: "2s".parse().unwrap(),
        ..SinkConfig::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn start(name: &str, c: SinkConfig, dir: &std::path::Path, m: &SinkMetrics) -> Sinks {
    Sinks::start(&BTreeMap::from([(name.to_string(), c)]), dir, m).unwrap()
}

fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (device, field, ts, value as text) of every row InfluxDB holds.
fn influx_rows(s: &InfluxServer, db: &str) -> BTreeSet<(String, String, i64, String)> {
    let v = s
        .query(db, "SELECT * FROM telemetry GROUP BY device_id")
        .unwrap();
    let mut out = BTreeSet::new();
    for series in v["results"][0]["series"].as_array().into_iter().flatten() {
        let dev = series["tags"]["device_id"].as_str().unwrap().to_string();
        let cols: Vec<&str> = series["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        for row in series["values"].as_array().unwrap() {
            let ts = row[0].as_i64().unwrap();
            for (i, c) in cols.iter().enumerate() {
                if ["time", "device_type", "site"].contains(c) || row[i].is_null() {
                    continue;
                }
                let val = match &row[i] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.as_f64().unwrap().to_string(),
                    other => other.to_string(),
                };
                out.insert((dev.clone(), c.to_string(), ts, val));
            }
        }
    }
    out
}

fn expected(pts: &[Point]) -> BTreeSet<(String, String, i64, String)> {
    pg_expected(pts)
}

#[test]
fn influx_sink_writes_what_the_server_reads_back() {
    let server = InfluxServer::start().unwrap();
    server.create_db("lab").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let rt = rt();
    let mut all = points("pv_1", 0, 300);
    all.extend(points("pv 2", 0, 100));
    let sinks = rt.block_on(async {
        let sinks = start("influx", influx_cfg(&server.url(), "lab"), dir.path(), &m);
        for chunk in all.chunks(70) {
            sinks.send(Arc::new(chunk.to_vec())).await;
        }
        sinks.close().await;
        sinks
    });
    drop(sinks);
    let got = influx_rows(&server, "lab");
    assert_eq!(got.len(), all.len());
    assert_eq!(got, expected(&all));
    let l = vec![("sink".to_string(), "influx".to_string())];
    assert_eq!(m.points.get_or_create(&l).get(), all.len() as u64);
    // The tags arrived as tags.
    let v = server
        .query("lab", "SHOW TAG VALUES FROM telemetry WITH KEY = site")
        .unwrap();
    assert_eq!(v["results"][0]["series"][0]["values"][0][1], "lab, west");
}

#[test]
fn influx_outage_is_retried_and_nothing_is_lost() {
    let mut server = InfluxServer::start().unwrap();
    server.create_db("lab").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let l = vec![("sink".to_string(), "influx".to_string())];
    let rt = rt();
    let sinks =
        rt.block_on(async { start("influx", influx_cfg(&server.url(), "lab"), dir.path(), &m) });
    let first = points("pv_1", 0, 100);
    rt.block_on(sinks.send(Arc::new(first.clone())));
    eventually("first part written", Duration::from_secs(15), || {
        m.points.get_or_create(&l).get() == first.len() as u64
    });
    server.stop();
    // Sent while the server is down: retried with back-off.
    let second = points("pv_1", 100, 100);
    rt.block_on(sinks.send(Arc::new(second.clone())));
    eventually("retries while down", Duration::from_secs(15), || {
        m.retries.get_or_create(&l).get() >= 2
    });
    server.run().unwrap();
    rt.block_on(sinks.close());
    let mut all = first;
    all.extend(second);
    assert_eq!(influx_rows(&server, "lab"), expected(&all));
    assert_eq!(m.points.get_or_create(&l).get(), all.len() as u64);
}

#[test]
fn full_buffer_holds_the_sender_back_until_the_server_returns() {
    let mut server = InfluxServer::start().unwrap();
    server.create_db("lab").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let l = vec![("sink".to_string(), "influx".to_string())];
    let rt = rt();
    let mut c = influx_cfg(&server.url(), "lab");
    c.buffer_max = 300;
    c.batch_max = 150;
    server.stop();
    let sinks = rt.block_on(async { start("influx", c, dir.path(), &m) });
    let all = points("pv_1", 0, 400); // 1200 points: four times the buffer
    let sender = {
        let sinks = sinks.clone();
        let all = all.clone();
        rt.spawn(async move {
            for chunk in all.chunks(150) {
                sinks.send(Arc::new(chunk.to_vec())).await;
            }
        })
    };
    eventually("buffer full", Duration::from_secs(15), || {
        m.buffer.get_or_create(&l).get() == 300
    });
    // The server is down and the buffer is full: the sender must be waiting, not dropping.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !sender.is_finished(),
        "send returned although the buffer is full"
    );
    assert_eq!(m.points.get_or_create(&l).get(), 0);
    server.run().unwrap();
    rt.block_on(sender).unwrap();
    rt.block_on(sinks.close());
    assert_eq!(influx_rows(&server, "lab"), expected(&all));
    assert_eq!(m.buffer.get_or_create(&l).get(), 0);
}

#[test]
fn undelivered_points_are_spooled_at_shutdown_and_sent_at_the_next_start() {
    let mut server = InfluxServer::start().unwrap();
    server.create_db("lab").unwrap();
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let l = vec![("sink".to_string(), "influx".to_string())];
    let rt = rt();
    let mut c = influx_cfg(&server.url(), "lab");
    c.drain_timeout = "500ms".parse().unwrap();
    let all = points("pv_1", 0, 50);
    rt.block_on(async {
        let sinks = start("influx", c.clone(), dir.path(), &m);
        sinks.send(Arc::new(all.clone())).await;
        sinks.close().await;
    });
    assert_eq!(m.spooled.get_or_create(&l).get(), all.len() as u64);
    let spool_dir = dir.path().join("sinks/influx");
    let files = || {
        std::fs::read_dir(&spool_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("undelivered-"))
            .count()
    };
    assert_eq!(files(), 1);
    server.run().unwrap();
    let m2 = SinkMetrics::default();
    let sinks = rt.block_on(async { start("influx", c, dir.path(), &m2) });
    eventually("spool replayed", Duration::from_secs(15), || {
        m2.points.get_or_create(&l).get() == all.len() as u64
    });
    rt.block_on(sinks.close());
    assert_eq!(files(), 0);
    assert_eq!(influx_rows(&server, "lab"), expected(&all));
}

#[test]
fn influx_refusal_is_rejected_with_its_reason() {
    let server = InfluxServer::start().unwrap();
    // No CREATE DATABASE: InfluxDB answers 404 "database not found" for good.
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let l = vec![("sink".to_string(), "influx".to_string())];
    let rt = rt();
    let pts = points("pv_1", 0, 5);
    rt.block_on(async {
        let sinks = start("influx", influx_cfg(&server.url(), "nope"), dir.path(), &m);
        sinks.send(Arc::new(pts.clone())).await;
        sinks.close().await;
    });
    assert_eq!(m.rejected.get_or_create(&l).get(), pts.len() as u64);
    let text = std::fs::read_to_string(dir.path().join("sinks/influx/rejected.jsonl")).unwrap();
    assert_eq!(text.lines().count(), pts.len());
    assert!(text.contains("database not found"), "{text}");
}

/// (device, field, ts, value as text) of every row in the table.
fn pg_rows(url: &str) -> BTreeSet<(String, String, i64, String)> {
    let url = url.to_string();
    std::thread::spawn(move || {
        rt().block_on(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let rows = c
                .query(
                    "SELECT device_id, field, (extract(epoch from ts) * 1000)::int8, \
                     coalesce(value_f64::text, value_i64::text, value_bool::text, value_str), \
                     device_type, tags->>'site' FROM lab.points",
                    &[],
                )
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    assert_eq!(r.get::<_, String>(4), "PvInverter");
                    assert_eq!(r.get::<_, String>(5), "lab, west");
                    (r.get(0), r.get(1), r.get(2), r.get(3))
                })
                .collect()
        })
    })
    .join()
    .unwrap()
}

fn pg_expected(pts: &[Point]) -> BTreeSet<(String, String, i64, String)> {
    pts.iter()
        .map(|p| {
            let v = match &p.value {
                FieldValue::F64(v) => v.to_string(),
                FieldValue::I64(v) => v.to_string(),
                FieldValue::Bool(b) => b.to_string(),
                FieldValue::Str(s) => s.clone(),
            };
            (
                p.key.device_id.to_string(),
                p.key.field.to_string(),
                p.ts_ms,
                v,
            )
        })
        .collect()
}

fn create_schema(url: &str) {
    let url = url.to_string();
    std::thread::spawn(move || {
        rt().block_on(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute("CREATE SCHEMA lab").await.unwrap();
        })
    })
    .join()
    .unwrap();
}

#[test]
fn postgres_sink_creates_the_table_writes_and_is_idempotent() {
    let server = PostgresServer::start().unwrap();
    create_schema(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let rt = rt();
    let mut all = points("pv_1", 0, 300);
    all.extend(points("pv 2", 0, 100));
    rt.block_on(async {
        let sinks = start("pg", pg_cfg(&server.url()), dir.path(), &m);
        for chunk in all.chunks(70) {
            sinks.send(Arc::new(chunk.to_vec())).await;
        }
        // The same points again (a retry, or a second ingest instance): stored once.
        sinks.send(Arc::new(all[..500].to_vec())).await;
        sinks.close().await;
    });
    let got = pg_rows(&server.url());
    assert_eq!(got.len(), all.len());
    assert_eq!(got, pg_expected(&all));
}

#[test]
fn postgres_outage_is_retried_and_nothing_is_lost() {
    let mut server = PostgresServer::start().unwrap();
    create_schema(&server.url());
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let l = vec![("sink".to_string(), "pg".to_string())];
    let rt = rt();
    let sinks = rt.block_on(async { start("pg", pg_cfg(&server.url()), dir.path(), &m) });
    let first = points("pv_1", 0, 100);
    rt.block_on(sinks.send(Arc::new(first.clone())));
    eventually("first part written", Duration::from_secs(15), || {
        m.points.get_or_create(&l).get() == first.len() as u64
    });
    server.stop();
    let second = points("pv_1", 100, 100);
    rt.block_on(sinks.send(Arc::new(second.clone())));
    eventually("retries while down", Duration::from_secs(15), || {
        m.retries.get_or_create(&l).get() >= 2
    });
    server.run().unwrap();
    rt.block_on(sinks.close());
    let mut all = first;
    all.extend(second);
    assert_eq!(pg_rows(&server.url()), pg_expected(&all));
    assert_eq!(m.points.get_or_create(&l).get(), all.len() as u64);
}
