//! The InfluxDB sink: points as line protocol, POSTed to a `/write` endpoint over HTTP.
//!
//! Line protocol is the lingua franca of time-series ingest: InfluxDB 1.x (`/write?db=`),
//! InfluxDB 2 and 3 (`/api/v2/write?org=&bucket=` with a token; 3 also takes the 1.x form),
//! VictoriaMetrics (both forms) and QuestDB accept it. One line carries the fields of one device
//! at one instant that share their tags:
//!
//! ```text
//! telemetry,device_id=pv_1,device_type=PvInverter,site=lab ac_power=412.5,dc_voltage=380.1 1767225600000
//! ```
//!
//! Encoding is hand-written (a few lines of escaping rules) rather than a client crate, because
//! the crates on offer either pull a second HTTP stack or model points as generic maps that
//! would cost an allocation per field.

use crate::{InfluxPrecision, SinkConfig};
use crate::{SinkError, Target};
use fieldlab_core::{FieldValue, Point};
use std::fmt::Write as _;
use std::time::Duration;

/// Writes line protocol to one InfluxDB-compatible endpoint.
pub struct Influx {
    client: reqwest::Client,
    write_url: String,
    token: Option<String>,
    /// InfluxDB 1.x user and password, sent as HTTP Basic auth (never in the URL, which ends
    /// up in error messages, logs and proxies' access logs).
    basic: Option<(String, String)>,
    measurement: String,
    precision: InfluxPrecision,
}

impl Influx {
    pub fn new(c: &SinkConfig) -> Result<Influx, SinkError> {
        let timeout = crate::duration(c.timeout);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| SinkError::Config(format!("cannot build the HTTP client: {e}")))?;
        let base = c.url.trim_end_matches('/');
        let mut url = reqwest::Url::parse(base)
            .map_err(|e| SinkError::Config(format!("`{}` is not a URL: {e}", c.url)))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(bucket) = &c.bucket {
                q.append_pair("org", c.org.as_deref().unwrap_or_default());
                q.append_pair("bucket", bucket);
            } else if let Some(db) = &c.db {
                q.append_pair("db", db);
            }
            q.append_pair("precision", c.precision.as_str());
        }
        url.set_path(&format!(
            "{}{}",
            url.path().trim_end_matches('/'),
            if c.bucket.is_some() {
                "/api/v2/write"
            } else {
                "/write"
            }
        ));
        Ok(Influx {
            client,
            write_url: url.to_string(),
            token: c.token.clone(),
            basic: match (&c.username, &c.password, &c.bucket) {
                (Some(u), Some(p), None) => Some((u.clone(), p.clone())),
                _ => None,
            },
            measurement: c.measurement.clone(),
            precision: c.precision,
        })
    }
}

impl Target for Influx {
    async fn write(&mut self, points: &[Point]) -> Result<Vec<(Point, String)>, SinkError> {
        let mut rejected = Vec::new();
        let body = encode(points, &self.measurement, self.precision, &mut rejected);
        if body.is_empty() {
            return Ok(rejected);
        }
        let mut req = self.client.post(&self.write_url).body(body);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Token {t}"));
        } else if let Some((u, p)) = &self.basic {
            req = req.basic_auth(u, Some(p));
        }
        // The error names the URL itself, redacted: reqwest's would print it whole.
        let resp = req.send().await.map_err(|e| {
            SinkError::Transient(format!(
                "InfluxDB at {} unreachable: {}",
                crate::redact(&self.write_url),
                e.without_url()
            ))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(rejected);
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = format!("InfluxDB answered {status}: {}", text.trim());
        // 4xx means this body will never be accepted (bad data, type conflict, unknown db,
        // bad credentials); retrying cannot help. Timeouts, rate limits and 5xx can pass.
        if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
            Err(SinkError::Permanent(msg))
        } else {
            Err(SinkError::Transient(msg))
        }
    }
}

/// Encode points as line protocol. Consecutive points of one device with equal time and tags
/// share a line. Points that line protocol cannot carry (NaN, infinities) go to `rejected`.
pub fn encode(
    points: &[Point],
    measurement: &str,
    precision: InfluxPrecision,
    rejected: &mut Vec<(Point, String)>,
) -> String {
    let mut out = String::with_capacity(points.len() * 48);
    let mut open: Option<&Point> = None;
    for p in points {
        if let FieldValue::F64(v) = p.value {
            if !v.is_finite() {
                rejected.push((p.clone(), format!("{v} cannot be written as line protocol")));
                continue;
            }
        }
        let same_line = open.is_some_and(|o| {
            o.ts_ms == p.ts_ms && o.key.device_id == p.key.device_id && o.tags == p.tags
        });
        if same_line {
            out.push(',');
        } else {
            if let Some(o) = open {
                end_line(&mut out, o.ts_ms, precision);
            }
            escape(&mut out, measurement, &[',', ' ']);
            out.push_str(",device_id=");
            escape(&mut out, &p.key.device_id, TAG_SPECIAL);
            if !p.tags.device_type.is_empty() {
                out.push_str(",device_type=");
                escape(&mut out, &p.tags.device_type, TAG_SPECIAL);
            }
            // Tags must be sorted by key for best performance; BTreeMap keeps them sorted.
            for (k, v) in &p.tags.extra {
                if k.is_empty() || v.is_empty() || k == "device_id" || k == "device_type" {
                    continue; // line protocol has no empty tags
                }
                out.push(',');
                escape(&mut out, k, TAG_SPECIAL);
                out.push('=');
                escape(&mut out, v, TAG_SPECIAL);
            }
            out.push(' ');
            open = Some(p);
        }
        escape(&mut out, &p.key.field, TAG_SPECIAL);
        out.push('=');
        match &p.value {
            FieldValue::F64(v) => {
                // `{:?}` prints the shortest form that reads back exactly, always with a `.`
                // or exponent, so InfluxDB types it as a float, never as an integer.
                let _ = write!(out, "{v:?}");
            }
            FieldValue::I64(v) => {
                let _ = write!(out, "{v}i");
            }
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            FieldValue::Str(s) => {
                out.push('"');
                escape(&mut out, s, &['"', '\\']);
                out.push('"');
            }
        }
    }
    if let Some(o) = open {
        end_line(&mut out, o.ts_ms, precision);
    }
    out
}

const TAG_SPECIAL: &[char] = &[',', '=', ' '];

fn end_line(out: &mut String, ts_ms: i64, precision: InfluxPrecision) {
    let ts = match precision {
        InfluxPrecision::S => ts_ms.div_euclid(1000),
        InfluxPrecision::Ms => ts_ms,
        InfluxPrecision::Us => ts_ms * 1_000,
        InfluxPrecision::Ns => ts_ms * 1_000_000,
    };
    let _ = writeln!(out, " {ts}");
}

fn escape(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if c == '\n' {
            out.push_str("\\n"); // a raw newline would end the line
            continue;
        }
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlab_core::{SeriesKey, Tags};

    fn pt(dev: &str, field: &str, ts: i64, v: FieldValue) -> Point {
        Point {
            key: SeriesKey::new(dev, field),
            tags: Tags {
                device_type: "PvInverter".into(),
                extra: [("site".to_string(), "lab one".to_string())].into(),
            },
            ts_ms: ts,
            value: v,
        }
    }

    #[test]
    fn fields_of_one_reading_share_a_line() {
        let pts = vec![
            pt("pv_1", "ac_power", 1000, FieldValue::F64(412.5)),
            pt("pv_1", "dc_voltage", 1000, FieldValue::F64(380.0)),
            pt("pv_1", "count", 1000, FieldValue::I64(-3)),
            pt("pv_1", "on", 2000, FieldValue::Bool(true)),
            pt("pv,2", "state", 2000, FieldValue::Str("say \"hi\"".into())),
        ];
        let mut rej = Vec::new();
        let lp = encode(&pts, "telemetry", InfluxPrecision::Ms, &mut rej);
        assert!(rej.is_empty());
        assert_eq!(
            lp,
            "telemetry,device_id=pv_1,device_type=PvInverter,site=lab\\ one ac_power=412.5,dc_voltage=380.0,count=-3i 1000\n\
             telemetry,device_id=pv_1,device_type=PvInverter,site=lab\\ one on=true 2000\n\
             telemetry,device_id=pv\\,2,device_type=PvInverter,site=lab\\ one state=\"say \\\"hi\\\"\" 2000\n"
        );
    }

    #[test]
    fn precision_and_non_finite_values() {
        let pts = vec![
            pt("d", "a", 1_500, FieldValue::F64(f64::NAN)),
            pt("d", "b", 1_500, FieldValue::F64(1e-7)),
        ];
        let mut rej = Vec::new();
        let lp = encode(&pts, "m", InfluxPrecision::Ns, &mut rej);
        assert_eq!(rej.len(), 1);
        assert!(lp.ends_with(" b=1e-7 1500000000\n"), "{lp}");
        let lp = encode(&pts[1..], "m", InfluxPrecision::S, &mut rej);
        assert!(lp.ends_with(" 1\n"), "{lp}");
    }

    #[tokio::test]
    async fn credentials_are_never_in_the_url_or_an_error() {
        let c = SinkConfig {
            url: "http://127.0.0.1:9/".into(),
            db: Some("lab".into()),
            username: Some("writer".into()),
            password: Some("s3cret-influx-pw".into()),
            timeout: "2s".parse().unwrap(),
            ..SinkConfig::default()
        };
        let mut i = Influx::new(&c).unwrap();
        assert!(!i.write_url.contains("s3cret"), "{}", i.write_url);
        let p = pt("d1", "t", 1, FieldValue::F64(1.0));
        let e = i.write(&[p]).await.unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("127.0.0.1:9"), "{e}");
    }

    #[test]
    fn write_urls_for_v1_and_v2() {
        let mut c = SinkConfig {
            url: "http://h:8086/".into(),
            db: Some("lab db".into()),
            ..SinkConfig::default()
        };
        assert_eq!(
            Influx::new(&c).unwrap().write_url,
            "http://h:8086/write?db=lab+db&precision=ms"
        );
        c.db = None;
        c.bucket = Some("b".into());
        c.org = Some("o".into());
        c.token = Some("t".into());
        assert_eq!(
            Influx::new(&c).unwrap().write_url,
            "http://h:8086/api/v2/write?org=o&bucket=b&precision=ms"
        );
    }
}
