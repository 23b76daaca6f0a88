//! `fieldlab up` with sinks: every point it stores also reaches a real InfluxDB 1.x and a real
//! PostgreSQL, and what they hold equals what fieldlab's own store answers.

use crate::common;

use common::*;
use fieldlab_testkit::{InfluxServer, PostgresServer};
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn up_sends_every_stored_point_to_influxdb_and_postgres() {
    let influx = InfluxServer::start().unwrap();
    influx.create_db("lab").unwrap();
    let pg = PostgresServer::start().unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("fieldlab.yaml");
    std::fs::write(
        &cfg,
        format!(
            "devices:\n  fleet: []\n\
             sinks:\n\
             \x20 influx:\n    type: influxdb\n    url: {}\n    db: lab\n    flush_interval: 100ms\n\
             \x20 pg:\n    type: postgres\n    url: {}\n    flush_interval: 100ms\n",
            influx.url(),
            pg.url()
        ),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fieldlab::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    assert!(
        f.stdout_text().contains("sinks   influx, pg"),
        "{}",
        f.stdout_text()
    );
    f.wait_ready(Duration::from_secs(15));
    let t0 = 1_767_225_600_000i64;
    let mut payloads = Vec::new();
    for seq in 0..40i64 {
        payloads.push(format!(
            "{{\"device_id\":\"sink_1\",\"device_type\":\"Boiler\",\"seq\":{seq},\"ts\":{},\"data\":{{\"water_temp\":{}.25,\"burner_on\":{}}}}}",
            t0 + seq * 1000,
            60 + seq,
            seq % 2 == 0
        ));
    }
    for p in &payloads {
        mosquitto_pub(f.mqtt_port, "devices/Boiler/sink_1/telemetry", p.as_bytes());
    }
    // What fieldlab stored: (field, ts_ms, value as text).
    let store = eventually(Duration::from_secs(20), "80 points stored", || {
        let (st, v) = f.get("/api/v1/query?device_id=sink_1");
        if st != 200 {
            return None;
        }
        let mut out = BTreeSet::new();
        for s in v["series"].as_array()? {
            for p in s["points"].as_array()? {
                let ts = fieldlab_core::time::parse_instant_ms(p["ts"].as_str()?, 0).ok()?;
                let val = match &p["value"] {
                    serde_json::Value::Number(n) => n.as_f64()?.to_string(),
                    other => other.to_string(),
                };
                out.insert((s["field"].as_str()?.to_string(), ts, val));
            }
        }
        (out.len() == 80).then_some(out)
    });
    // Both sinks get them while fieldlab runs...
    eventually(Duration::from_secs(20), "points in InfluxDB", || {
        let v = influx
            .query("lab", "SELECT count(water_temp) FROM telemetry")
            .ok()?;
        (v["results"][0]["series"][0]["values"][0][1].as_u64()? == 40).then_some(())
    });
    // ...and a clean stop leaves nothing behind in the buffers.
    assert!(f.interrupt().success());

    let v = influx
        .query(
            "lab",
            "SELECT water_temp, burner_on FROM telemetry WHERE device_id = 'sink_1'",
        )
        .unwrap();
    let mut in_influx = BTreeSet::new();
    for row in v["results"][0]["series"][0]["values"].as_array().unwrap() {
        let ts = row[0].as_i64().unwrap();
        in_influx.insert((
            "water_temp".to_string(),
            ts,
            row[1].as_f64().unwrap().to_string(),
        ));
        in_influx.insert(("burner_on".to_string(), ts, row[2].to_string()));
    }
    assert_eq!(in_influx, store);

    let url = pg.url();
    let in_pg: BTreeSet<(String, i64, String)> = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.query(
                "SELECT field, (extract(epoch from ts) * 1000)::int8, \
                 coalesce(value_f64::text, value_bool::text) FROM fieldlab_points \
                 WHERE device_id = 'sink_1' AND device_type = 'Boiler'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
        })
    })
    .join()
    .unwrap();
    assert_eq!(in_pg, store);
}
