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

/// A sink of `kind` at `url` with small batches, short pauses and a short timeout (tests).
fn quick_cfg(kind: SinkKind, url: &str) -> SinkConfig {
    SinkConfig {
        kind,
        url: url.into(),
        batch_max: 200,
        flush_interval: "50ms".parse().unwrap(),
        buffer_max: 1000,
        max_backoff: "300ms".parse().unwrap(),
        timeout: "2s".parse().unwrap(),
        ..SinkConfig::default()
    }
}

fn influx_cfg(url: &str, db: &str) -> SinkConfig {
    SinkConfig {
        db: Some(db.into()),
        ..quick_cfg(SinkKind::Influxdb, url)
    }
}

fn pg_cfg(url: &str) -> SinkConfig {
    SinkConfig {
        table: "lab.points".into(),
        ..quick_cfg(SinkKind::Postgres, url)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What a test of one sink needs besides its server: a data dir, the metrics, their labels
/// for the sink `kind`, a runtime.
struct Setup {
    dir: tempfile::TempDir,
    m: SinkMetrics,
    l: Vec<(String, String)>,
    rt: tokio::runtime::Runtime,
}

fn setup(kind: &str) -> Setup {
    Setup {
        dir: tempfile::tempdir().unwrap(),
        m: SinkMetrics::default(),
        l: vec![("sink".to_string(), kind.to_string())],
        rt: rt(),
    }
}

/// A throw-away InfluxDB with the database `db`.
fn influx_with_db(db: &str) -> InfluxServer {
    let server = InfluxServer::start().unwrap();
    server.create_db(db).unwrap();
    server
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

/// 100 points sent and written; the server stopped (`server(false)`) and 100 more sent while
/// it is down, retried with back-off; the server back (`server(true)`) and the sinks closed.
/// Every point sent.
fn across_an_outage(
    rt: &tokio::runtime::Runtime,
    sinks: &Sinks,
    m: &SinkMetrics,
    l: &[(String, String)],
    mut server: impl FnMut(bool),
) -> Vec<Point> {
    let l = l.to_vec();
    let first = points("pv_1", 0, 100);
    rt.block_on(sinks.send(Arc::new(first.clone())));
    eventually("first part written", Duration::from_secs(15), || {
        m.points.get_or_create(&l).get() == first.len() as u64
    });
    server(false);
    let second = points("pv_1", 100, 100);
    rt.block_on(sinks.send(Arc::new(second.clone())));
    eventually("retries while down", Duration::from_secs(15), || {
        m.retries.get_or_create(&l).get() >= 2
    });
    server(true);
    rt.block_on(sinks.close());
    let mut all = first;
    all.extend(second);
    all
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
    let server = influx_with_db("lab");
    let Setup { dir, m, l, rt } = setup("influx");
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
    assert_eq!(m.points.get_or_create(&l).get(), all.len() as u64);
    // The tags arrived as tags.
    let v = server
        .query("lab", "SHOW TAG VALUES FROM telemetry WITH KEY = site")
        .unwrap();
    assert_eq!(v["results"][0]["series"][0]["values"][0][1], "lab, west");
}

#[test]
fn influx_outage_is_retried_and_nothing_is_lost() {
    let mut server = influx_with_db("lab");
    let Setup { dir, m, l, rt } = setup("influx");
    let sinks =
        rt.block_on(async { start("influx", influx_cfg(&server.url(), "lab"), dir.path(), &m) });
    let all = across_an_outage(&rt, &sinks, &m, &l, |up| {
        if up {
            server.run().unwrap()
        } else {
            server.stop()
        }
    });
    assert_eq!(influx_rows(&server, "lab"), expected(&all));
    assert_eq!(m.points.get_or_create(&l).get(), all.len() as u64);
}

#[test]
fn full_buffer_holds_the_sender_back_until_the_server_returns() {
    let mut server = influx_with_db("lab");
    let Setup { dir, m, l, rt } = setup("influx");
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
    let mut server = influx_with_db("lab");
    server.stop();
    let Setup { dir, m, l, rt } = setup("influx");
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
    let Setup { dir, m, l, rt } = setup("influx");
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
    on_pg(url, async |c| {
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
}

/// `f` on a connection to the PostgreSQL at `url`, in a runtime on a thread of its own (the
/// caller may be in one already).
fn on_pg<T: Send + 'static>(
    url: &str,
    f: impl AsyncFnOnce(tokio_postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_string();
    std::thread::spawn(move || {
        rt().block_on(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            f(c).await
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
    on_pg(url, async |c| {
        c.batch_execute("CREATE SCHEMA lab").await.unwrap();
    });
}

#[test]
fn postgres_sink_creates_the_table_writes_and_is_idempotent() {
    let server = PostgresServer::start().unwrap();
    create_schema(&server.url());
    let Setup { dir, m, rt, .. } = setup("pg");
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
    let Setup { dir, m, l, rt } = setup("pg");
    let sinks = rt.block_on(async { start("pg", pg_cfg(&server.url()), dir.path(), &m) });
    let all = across_an_outage(&rt, &sinks, &m, &l, |up| {
        if up {
            server.run().unwrap()
        } else {
            server.stop()
        }
    });
    assert_eq!(pg_rows(&server.url()), pg_expected(&all));
    assert_eq!(m.points.get_or_create(&l).get(), all.len() as u64);
}
