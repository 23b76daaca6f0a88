//! Exports read back by independent readers: the csv crate, serde_json, and pyarrow.

use super::*;
use fieldlab_core::{Point, Tags};
use fieldlab_store::{Agg, StoreOptions};
use std::process::Command;

const T0: i64 = 1_767_225_600_000;

/// The catalog's units for the test's type: `temperature` has one, `count` and `status` not.
fn units() -> Units {
    [(
        "TemperatureSensor".to_string(),
        [("temperature".to_string(), "°C".to_string())].into(),
    )]
    .into()
}

fn point(dev: &str, site: Option<&str>, field: &str, i: i64, v: FieldValue) -> Point {
    Point {
        key: SeriesKey::new(dev, field),
        tags: Tags {
            device_type: "TemperatureSensor".into(),
            extra: site
                .map(|s| [("site".to_string(), s.to_string())].into())
                .unwrap_or_default(),
        },
        ts_ms: T0 + i * 1000,
        value: v,
    }
}

/// A store with 3 series over several blocks and the head: floats (`t1`, site berlin, 150k
/// points so the Parquet export spans several row groups), integers and strings (`t2`).
async fn store(dir: &std::path::Path) -> Store {
    let (s, _) = Store::open(StoreOptions::new(dir)).unwrap();
    for part in 0..3 {
        let pts: Vec<Point> = (part * 50_000..(part + 1) * 50_000)
            .map(|i| {
                point(
                    "t1",
                    Some("berlin"),
                    "temperature",
                    i,
                    FieldValue::F64(20.0 + (i % 1000) as f64 / 100.0),
                )
            })
            .collect();
        s.write(pts).await.unwrap();
        if part < 2 {
            s.flush().await.unwrap();
        }
    }
    let mut pts = Vec::new();
    for i in 0..100 {
        pts.push(point("t2", None, "count", i, FieldValue::I64(i * 3)));
        let st = if i % 10 == 0 {
            "degraded, \"check\""
        } else {
            "operational"
        };
        pts.push(point("t2", None, "status", i, FieldValue::Str(st.into())));
    }
    s.write(pts).await.unwrap();
    s
}

fn python_available() -> bool {
    Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn parquet_reads_back_in_pyarrow_with_the_same_values() {
    assert!(
        python_available(),
        "python3 with pyarrow is needed (scripts/test.sh installs it: pip install pyarrow)"
    );
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    let file = dir.path().join("out.parquet");
    let q = QuerySpec::default();
    let f = std::fs::File::create(&file).unwrap();
    let (_, sum) = export(&s, &q, Format::Parquet, &units(), f).unwrap();
    assert_eq!(sum.rows, 150_200);
    assert_eq!(sum.series, 3);
    let script = r#"
import json, sys, pyarrow.parquet as pq
f = pq.ParquetFile(sys.argv[1])
t = f.read()
d = t.to_pydict()
out = {
  "row_groups": f.num_row_groups,
  "rows": t.num_rows,
  "columns": t.column_names,
  "ts_type": str(t.schema.field("ts").type),
  "t1_first": [d["ts"][0].isoformat(), d["device_id"][0], d["site"][0], d["value"][0]],
  "t1_sum": sum(v for v, dev, f in zip(d["value"], d["device_id"], d["field"]) if dev == "t1"),
  "t1_ts": [int(x.timestamp() * 1000) for x, dev in zip(d["ts"], d["device_id"]) if dev == "t1"][-1],
  "counts": [v for v, f in zip(d["value"], d["field"]) if f == "count"],
  "status": [v for v, f in zip(d["value_text"], d["field"]) if f == "status"],
  "t2_site": [s for s, dev in zip(d["site"], d["device_id"]) if dev == "t2"][:1],
  "units": sorted(set((f, u) for f, u in zip(d["field"], d["unit"]))),
  "meta": json.loads(f.schema_arrow.metadata[b"fieldlab.units"]),
}
print(json.dumps(out))
"#;
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["row_groups"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(v["rows"], 150_200);
    assert_eq!(
        v["columns"],
        serde_json::json!([
            "ts",
            "device_id",
            "device_type",
            "field",
            "unit",
            "site",
            "value",
            "value_text"
        ])
    );
    // Units per row from the catalog (none where it has none), and as file metadata.
    assert_eq!(
        v["units"],
        serde_json::json!([["count", null], ["status", null], ["temperature", "°C"]])
    );
    assert_eq!(
        v["meta"],
        serde_json::json!({"TemperatureSensor": {"temperature": "°C"}})
    );
    assert_eq!(v["ts_type"], "timestamp[ms, tz=UTC]");
    assert_eq!(
        v["t1_first"],
        serde_json::json!(["2026-01-01T00:00:00+00:00", "t1", "berlin", 20.0])
    );
    let expect: f64 = (0..150_000).map(|i| 20.0 + (i % 1000) as f64 / 100.0).sum();
    assert!((v["t1_sum"].as_f64().unwrap() - expect).abs() < 1e-6 * expect);
    assert_eq!(v["t1_ts"], T0 + 149_999 * 1000);
    let counts: Vec<f64> = (0..100).map(|i| (i * 3) as f64).collect();
    assert_eq!(v["counts"], serde_json::json!(counts));
    assert_eq!(v["status"][0], "degraded, \"check\"");
    assert_eq!(v["status"][1], "operational");
    assert_eq!(v["t2_site"], serde_json::json!([null]));
    s.close().await.unwrap();
}

#[tokio::test]
async fn csv_and_json_lines_carry_every_row_and_aggregates_match_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    // CSV, raw points of t2 (quoting of a string with a comma and quotes).
    let mut q = QuerySpec::default();
    q.selector.add("device_id", "t2");
    let (buf, sum) = export(&s, &q, Format::Csv, &units(), Vec::new()).unwrap();
    assert_eq!(sum.rows, 200);
    let mut r = csv::Reader::from_reader(&buf[..]);
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        vec!["ts", "device_id", "device_type", "field", "unit", "value"]
    );
    let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 200);
    assert_eq!(&recs[0][0], "2026-01-01T00:00:00.000Z");
    assert_eq!(&recs[1][4], "", "no unit for `count` in the catalog");
    assert_eq!(&recs[1][5], "3");
    assert!(recs.iter().any(|r| &r[5] == "degraded, \"check\""));

    // JSON lines with 1-minute aggregates over the block boundaries must equal the query.
    let mut q = QuerySpec::default();
    q.selector.add("device_id", "t1");
    q.step = Some(60_000);
    q.aggs = vec![Agg::Mean, Agg::Max, Agg::Count, Agg::Stddev];
    let (buf, sum) = export(&s, &q, Format::JsonLines, &units(), Vec::new()).unwrap();
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, sum.rows);
    let expect = s.query(&q).unwrap();
    assert_eq!(
        expect[0].rows.len(),
        lines.len(),
        "no bucket is split or lost"
    );
    for (row, line) in expect[0].rows.iter().zip(&lines) {
        assert_eq!(line["ts"], format_ms(row.0));
        assert_eq!(line["tags"]["site"], "berlin");
        assert_eq!(line["unit"], "°C");
        for (name, v) in ["mean", "max", "count", "stddev"].iter().zip(&row.1) {
            // serde_json parses floats to within an ulp (no float_roundtrip feature).
            let want = v.as_ref().unwrap().as_f64().unwrap();
            let got = line[*name].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-12 * want.abs(),
                "{name}: {got} vs {want}"
            );
        }
    }
    assert!("xlsx".parse::<Format>().is_err());
    s.close().await.unwrap();
}

/// A replica's share goes over the wire as JSON lines and is written again with the others:
/// read back and rewritten, every format's bytes equal the direct export's (raw and
/// aggregated), and `export_where` leaves out what `keep` refuses.
#[tokio::test]
async fn rows_read_back_from_json_lines_write_the_same_export() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    let raw = QuerySpec::default();
    let agg = QuerySpec::from_params(
        [("step", "60s"), ("agg", "mean,max,count")].into_iter(),
        0,
        &[],
    )
    .unwrap();
    for q in [raw, agg] {
        let columns: Vec<String> = q.columns().iter().map(|c| c.to_string()).collect();
        let (jsonl, _) = export(&s, &q, Format::JsonLines, &units(), Vec::new()).unwrap();
        let rows: Vec<Row> = String::from_utf8(jsonl)
            .unwrap()
            .lines()
            .map(|l| Row::from_json_line(l, &columns).unwrap())
            .collect();
        for f in [Format::Csv, Format::JsonLines] {
            let (direct, a) = export(&s, &q, f, &units(), Vec::new()).unwrap();
            let (again, b) = write_rows(&rows, &q, f, Vec::new()).unwrap();
            assert_eq!(a, b, "{f:?}");
            assert!(direct == again, "{f:?}: the rewritten export differs");
        }
        let (_, sum) = write_rows(&rows, &q, Format::Parquet, Vec::new()).unwrap();
        assert_eq!(sum.rows, rows.len() as u64);
        let (only_t2, sum) = export_where(
            &s,
            &q,
            Format::Csv,
            &units(),
            |i| i.device_id == "t2",
            Vec::new(),
        )
        .unwrap();
        assert_eq!(sum.series, 2);
        let text = String::from_utf8(only_t2).unwrap();
        assert!(!text.contains(",t1,"), "{}", &text[..200]);
        assert!(text.contains(",t2,"));
    }
}
