//! The store's data out of a running lab: `fieldlab query` (read-only, next to a running
//! instance), `GET /api/v1/query` and `/api/v1/export`, online `fieldlab backup --url`, and
//! `fieldlab restore` into an empty dir that then holds the same data up to the cut.

use crate::common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn fieldlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldlab"))
        .args(args)
        .output()
        .expect("run fieldlab")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One series: device, field, and its (ts, value) points.
type Series = (String, String, Vec<(String, Value)>);

/// `fieldlab query --format json` on a data dir.
fn query_dir(dir: &Path) -> Vec<Series> {
    let out = ok(&fieldlab(&[
        "query",
        "--data-dir",
        dir.to_str().unwrap(),
        "--device-type",
        "TemperatureSensor,PressureValve",
        "--format",
        "json",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["device_id"].as_str().unwrap().to_string(),
                s["field"].as_str().unwrap().to_string(),
                s["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p["ts"].as_str().unwrap().to_string(), p["value"].clone()))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn query_export_backup_and_restore_against_a_running_lab() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut f = Fieldlab::start(&data, &[]);
    f.wait_ready(Duration::from_secs(15));
    let t0 = Instant::now();
    while f
        .get("/api/v1/query?device_id=temperature_sensor_1&field=temperature")
        .1["series"][0]["count"]
        .as_u64()
        .unwrap_or(0)
        < 3
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no data from the demo fleet"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // HTTP: several series by type, several aggregations per bucket, newest first.
    let (st, v) = f.get("/api/v1/query?device_type=TemperatureSensor,PvInverter&step=1h&agg=min,max,mean,count,stddev&order=desc&limit=1");
    assert_eq!(st, 200, "{v}");
    let series = v["series"].as_array().unwrap();
    assert!(series.iter().any(|s| s["device_id"] == "pv_inverter_1"));
    assert!(series
        .iter()
        .all(|s| s["tags"]["device_type"] != "PressureValve"));
    let p = &series[0]["points"][0];
    assert!(p["min"].as_f64().unwrap() <= p["mean"].as_f64().unwrap());
    assert!(p["mean"].as_f64().unwrap() <= p["max"].as_f64().unwrap());
    assert!(p["count"].as_u64().unwrap() >= 1);
    let (st, v) = f.get("/api/v1/query?device_id=temperature_sensor_1&colour=red");
    assert_eq!(st, 400);
    assert_eq!(v["parameter"], "colour");

    // HTTP export, streamed CSV: a header and one line per stored point.
    let (st, csv) = f.text("/api/v1/export?format=csv&device_id=pressure_valve_1&field=pressure");
    assert_eq!(st, 200);
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("ts,device_id,device_type,field,unit,") && header.ends_with(",value"),
        "{header}"
    );
    // Every row carries the catalog's unit of its field.
    assert!(lines.all(|l| l.contains(",pressure_valve_1,PressureValve,pressure,bar,")));
    let (st, v) = f.get("/api/v1/export?format=xlsx");
    assert_eq!((st, v["parameter"].as_str()), (400, Some("format")));

    // The CLI reads the data dir read-only while the lab runs.
    let table = ok(&fieldlab(&[
        "query",
        "--data-dir",
        data.to_str().unwrap(),
        "--device-id",
        "temperature_sensor_1",
        "--field",
        "temperature",
        "--limit",
        "2",
        "--desc",
    ]));
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("ts") && rows[0].contains("value"),
        "{table}"
    );
    assert!(rows[1] > rows[2], "newest first: {table}");
    assert!(rows.iter().any(|l| l.contains("cut at --limit")));

    // Offline backup of a running instance's dir is refused with what to do instead.
    let out = dir.path().join("lab.tar");
    let refused = fieldlab(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--url"));
    // Online backup while the devices keep publishing.
    ok(&fieldlab(&[
        "backup",
        "--url",
        &f.http,
        "--out",
        out.to_str().unwrap(),
    ]));
    std::thread::sleep(Duration::from_millis(1500)); // more data after the cut
    assert!(f.interrupt().success());

    let restored = dir.path().join("restored");
    let msg = ok(&fieldlab(&[
        "restore",
        out.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]));
    assert!(msg.contains("restored"), "{msg}");
    assert!(
        !fieldlab(&[
            "restore",
            out.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap()
        ])
        .status
        .success(),
        "restore refuses a non-empty dir"
    );
    assert!(restored.join("quarantine").is_dir() || !data.join("quarantine").is_dir());

    // Each restored series is exactly the start of the final one: a consistent cut.
    let before = query_dir(&data);
    let after = query_dir(&restored);
    assert_eq!(
        after.iter().map(|s| (&s.0, &s.1)).collect::<Vec<_>>(),
        before.iter().map(|s| (&s.0, &s.1)).collect::<Vec<_>>()
    );
    let mut shorter = 0;
    for (a, b) in after.iter().zip(&before) {
        assert!(!a.2.is_empty());
        assert_eq!(a.2[..], b.2[..a.2.len()], "{}/{}", a.0, a.1);
        shorter += usize::from(a.2.len() < b.2.len());
    }
    assert!(shorter > 0, "data written after the backup is not in it");

    // Export as Parquet from the restored dir and read it back with pyarrow.
    let pq = dir.path().join("t.parquet");
    ok(&fieldlab(&[
        "export",
        "--data-dir",
        restored.to_str().unwrap(),
        "--device-id",
        "temperature_sensor_1",
        "--field",
        "temperature",
        "--format",
        "parquet",
        "--out",
        pq.to_str().unwrap(),
    ]));
    let py = Command::new("python3")
        .args(["-c", "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); print(t.num_rows, sum(t.column('value').to_pylist()))"])
        .arg(&pq)
        .output()
        .expect("python3 with pyarrow (scripts/test.sh installs it)");
    let py = ok(&py);
    let temps = &after
        .iter()
        .find(|s| s.0 == "temperature_sensor_1" && s.1 == "temperature")
        .unwrap()
        .2;
    let sum: f64 = temps.iter().map(|p| p.1.as_f64().unwrap()).sum();
    let mut it = py.split_whitespace();
    assert_eq!(it.next().unwrap().parse::<usize>().unwrap(), temps.len());
    assert!((it.next().unwrap().parse::<f64>().unwrap() - sum).abs() < 1e-6);
}
