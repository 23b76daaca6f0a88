//! Payload formats fieldlab accepts, and the reasons it gives for those it does not.
//!
//! - fieldlab JSON: `{"device_id","device_type","seq","ts","data":{field: value},"status"}`, with
//!   optional `"tags": {"site": ".."}` stored as series tags
//! - the legacy emulator payload: `{"device":"..","timestamp":"..","data":{"p":{"unit":"..","value":1}}}`
//! - flat JSON objects: `{"device_id":"t1","temperature":21.5}` (every non-reserved key a field)
//! - InfluxDB line protocol: `measurement,device_id=t1 temperature=21.5,ok=true 1767225600000000000`,
//!   one or many lines per message
//! - a JSON array of any of the object shapes above (a gateway's batch), stored all or nothing
//!
//! Device id and type come from the payload, else from the topic
//! `devices/<type>/<device_id>/telemetry`. Parsing does not decide whether the payload may name
//! that device: [`crate::identity`] does, after parsing (a payload id must be the topic's, or
//! one a gateway may speak for, and valid). The time comes from `ts` / `timestamp` / `time`
//! (RFC 3339 or epoch s/ms/us/ns by magnitude), else the time of receipt. JSON `null` is kept as
//! a missing value (NaN), since "the sensor sent null" is itself data worth seeing.

use fieldlab_core::{FieldValue, Reading};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const RESERVED: &[&str] = &[
    "device_id",
    "device",
    "device_type",
    "type",
    "ts",
    "timestamp",
    "time",
    "seq",
    "status",
    "tags",
];

/// Parse one MQTT message. `Err` carries a reason meant for a human.
pub fn parse(topic: &str, payload: &[u8], received_ms: i64) -> Result<Vec<Reading>, String> {
    let (topic_type, topic_id) = topic_parts(topic);
    let text = std::str::from_utf8(payload).map_err(|e| {
        format!(
            "payload is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        )
    })?;
    let t = text.trim();
    if t.is_empty() {
        return Err("empty payload".into());
    }
    if t.starts_with('{') || t.starts_with('[') || t.starts_with('"') {
        let v: Value = serde_json::from_str(t).map_err(|e| format!("invalid JSON: {e}"))?;
        return match v {
            Value::Object(o) => parse_json(o, topic_type, topic_id, received_ms).map(|r| vec![r]),
            // A gateway's batch: an array of readings, each in any of the object shapes above.
            // All or nothing: one bad element quarantines the message, naming the element.
            Value::Array(items) => {
                if items.is_empty() {
                    return Err("JSON batch is an empty array".into());
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::Object(o) => out.push(
                            parse_json(o, topic_type, topic_id, received_ms)
                                .map_err(|e| format!("batch element {i}: {e}"))?,
                        ),
                        other => {
                            return Err(format!(
                                "batch element {i} must be an object, got {}",
                                json_kind(&other)
                            ))
                        }
                    }
                }
                Ok(out)
            }
            other => Err(format!(
                "JSON payload must be an object or an array of objects, got {}",
                json_kind(&other)
            )),
        };
    }
    parse_line_protocol(t, topic_type, topic_id, received_ms)
}

fn topic_parts(topic: &str) -> (Option<&str>, Option<&str>) {
    let parts: Vec<&str> = topic.split('/').collect();
    match parts.as_slice() {
        ["devices", ty, id, "telemetry"] if !ty.is_empty() && !id.is_empty() => {
            (Some(ty), Some(id))
        }
        _ => (None, None),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn str_field<'a>(o: &'a Map<String, Value>, keys: &[&str]) -> Result<Option<&'a str>, String> {
    for k in keys {
        match o.get(*k) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if !s.is_empty() => return Ok(Some(s)),
            Some(other) => {
                return Err(format!(
                    "`{k}` must be a non-empty string, got {}",
                    json_kind(other)
                ))
            }
        }
    }
    Ok(None)
}

fn parse_json(
    o: Map<String, Value>,
    topic_type: Option<&str>,
    topic_id: Option<&str>,
    received_ms: i64,
) -> Result<Reading, String> {
    let device_id = str_field(&o, &["device_id", "device"])?
        .or(topic_id)
        .ok_or("no device id: put `device_id` in the payload or publish to devices/<type>/<device_id>/telemetry")?
        .to_string();
    let device_type = str_field(&o, &["device_type", "type"])?
        .or(topic_type)
        .unwrap_or("unknown")
        .to_string();
    let mut ts_ms = received_ms;
    for k in ["ts", "timestamp", "time"] {
        match o.get(k) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                ts_ms = json_time(v).map_err(|e| format!("`{k}`: {e}"))?;
                break;
            }
        }
    }
    let seq = match o.get("seq") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| format!("`seq` must be a non-negative integer, got {v}"))?,
        ),
    };
    let status = str_field(&o, &["status"])?.map(str::to_string);
    let mut tags = BTreeMap::new();
    match o.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(t)) => {
            for (k, v) in t {
                match v {
                    Value::String(s) => tags.insert(k.clone(), s.clone()),
                    other => {
                        return Err(format!(
                            "tag `{k}` must be a string, got {}",
                            json_kind(other)
                        ))
                    }
                };
            }
        }
        Some(other) => {
            return Err(format!(
                "`tags` must be an object of strings, got {}",
                json_kind(other)
            ))
        }
    }

    let mut fields = Vec::new();
    let mut units = BTreeMap::new();
    match o.get("data") {
        Some(Value::Object(data)) => {
            for (k, v) in data {
                match v {
                    Value::Object(inner) if inner.contains_key("value") => {
                        fields.push((k.clone(), scalar(k, &inner["value"])?));
                        if let Some(Value::String(u)) = inner.get("unit") {
                            units.insert(k.clone(), u.clone());
                        }
                    }
                    _ => fields.push((k.clone(), scalar(k, v)?)),
                }
            }
        }
        Some(other) => {
            return Err(format!(
                "`data` must be an object of fields, got {}",
                json_kind(other)
            ))
        }
        None => {
            for (k, v) in &o {
                if !RESERVED.contains(&k.as_str()) {
                    fields.push((k.clone(), scalar(k, v)?));
                }
            }
        }
    }
    if fields.is_empty() {
        return Err("no data fields: send e.g. {\"data\": {\"temperature\": 21.5}}".into());
    }
    Ok(Reading {
        device_id,
        device_type,
        ts_ms,
        seq,
        fields,
        units,
        tags,
        status,
    })
}

fn scalar(name: &str, v: &Value) -> Result<FieldValue, String> {
    if name.is_empty() {
        return Err("a field has an empty name".into());
    }
    Ok(match v {
        Value::Null => FieldValue::F64(f64::NAN),
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => FieldValue::Str(s.clone()),
        other => {
            return Err(format!(
                "field `{name}` is {}; send a number, boolean or string (or {{\"value\": .., \"unit\": ..}})",
                json_kind(other)
            ))
        }
    })
}

fn json_time(v: &Value) -> Result<i64, String> {
    match v {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .map_err(|_| format!("`{s}` is not an RFC 3339 time (e.g. 2026-01-01T00:00:00.000Z)")),
        Value::Number(n) => n
            .as_f64()
            .map(epoch_to_ms)
            .ok_or_else(|| format!("{n} is not a time")),
        other => Err(format!(
            "a time must be an RFC 3339 string or epoch number, got {}",
            json_kind(other)
        )),
    }
}

/// Epoch number of unknown unit to milliseconds, by magnitude (s, ms, us, ns).
fn epoch_to_ms(x: f64) -> i64 {
    let a = x.abs();
    if a < 1e11 {
        (x * 1000.0) as i64
    } else if a < 1e14 {
        x as i64
    } else if a < 1e17 {
        (x / 1e3) as i64
    } else {
        (x / 1e6) as i64
    }
}

/// InfluxDB line protocol. The measurement becomes the device type; the `device_id` (or
/// `device`) tag names the device, else the topic does; other tags become series tags. Timestamps are
/// nanoseconds as in InfluxDB's default precision.
///
/// Written by hand: the line-protocol crates on crates.io either serialise only or pull in an
/// InfluxDB client; the grammar is small.
fn parse_line_protocol(
    text: &str,
    topic_type: Option<&str>,
    topic_id: Option<&str>,
    received_ms: i64,
) -> Result<Vec<Reading>, String> {
    // Sized once: growing a Vec of readings (and each reading's fields) by doubling was ~8% of
    // the gateway-shaped profile in realloc and its copies. The split buffers are reused.
    let mut out = Vec::with_capacity(text.bytes().filter(|&b| b == b'\n').count() + 1);
    let (mut parts, mut head, mut field_parts) = (Vec::new(), Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |m: String| {
            format!(
                "not JSON, and line {} is not InfluxDB line protocol: {m}",
                n + 1
            )
        };
        split_unescaped_into(line, ' ', &mut parts);
        if parts.len() < 2 || parts.len() > 3 {
            return Err(err(
                "expected `measurement[,tag=v] field=v[,field=v] [timestamp]`".into(),
            ));
        }
        split_unescaped_into(parts[0], ',', &mut head);
        let measurement = head.first().copied().unwrap_or_default();
        if measurement.is_empty() {
            return Err(err("empty measurement".into()));
        }
        let mut device_id = None;
        let mut device_type = None;
        let mut tags = BTreeMap::new();
        for &tag in &head[1..] {
            let (k, v) = split_eq(tag).ok_or_else(|| err(format!("tag `{tag}` has no `=`")))?;
            if k == "device_id" || k == "device" {
                device_id = Some(unescape(v));
            } else if k == "device_type" {
                device_type = Some(unescape(v));
            } else {
                tags.insert(unescape(k), unescape(v));
            }
        }
        split_unescaped_into(parts[1], ',', &mut field_parts);
        let mut fields = Vec::with_capacity(field_parts.len());
        for &f in &field_parts {
            let (k, v) = split_eq(f).ok_or_else(|| err(format!("field `{f}` has no `=`")))?;
            fields.push((
                unescape(k),
                lp_value(v).map_err(|m| err(format!("field `{k}`: {m}")))?,
            ));
        }
        let ts_ms = match parts.get(2) {
            Some(t) => t
                .parse::<i64>()
                .map(|ns| ns.div_euclid(1_000_000))
                .map_err(|_| err(format!("timestamp `{t}` is not an integer (nanoseconds)")))?,
            None => received_ms,
        };
        let device_id = device_id
            .or(topic_id.map(str::to_string))
            .ok_or_else(|| err("no device id: add a `device_id` tag or publish to devices/<type>/<device_id>/telemetry".into()))?;
        out.push(Reading {
            device_id,
            device_type: device_type
                .or(topic_type.map(str::to_string))
                .unwrap_or_else(|| unescape(measurement)),
            ts_ms,
            seq: None,
            fields,
            units: BTreeMap::new(),
            tags,
            status: None,
        });
    }
    if out.is_empty() {
        return Err("payload has no data lines".into());
    }
    Ok(out)
}

fn lp_value(v: &str) -> Result<FieldValue, String> {
    if let Some(s) = v.strip_prefix('"') {
        let s = s.strip_suffix('"').ok_or("unterminated string")?;
        return Ok(FieldValue::Str(
            s.replace("\\\"", "\"").replace("\\\\", "\\"),
        ));
    }
    match v {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Bool(false)),
        _ => {}
    }
    if let Some(i) = v.strip_suffix('i') {
        return i
            .parse()
            .map(FieldValue::I64)
            .map_err(|_| format!("`{v}` is not an integer"));
    }
    if let Some(u) = v.strip_suffix('u') {
        return u
            .parse()
            .map(FieldValue::I64)
            .map_err(|_| format!("`{v}` is not an unsigned integer"));
    }
    v.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(FieldValue::F64)
        .ok_or_else(|| format!("`{v}` is not a number, boolean or quoted string"))
}

/// `s.split_once('=')` with memchr: `str::split_once` with a char pattern went through
/// `CharSearcher` and a memcmp per candidate (2% of the gateway-shaped ingest profile).
fn split_eq(s: &str) -> Option<(&str, &str)> {
    // `=` is ASCII, so both cuts are on char boundaries.
    memchr::memchr(b'=', s.as_bytes()).map(|i| (&s[..i], &s[i + 1..]))
}

/// Split on `sep` outside double quotes and not preceded by a backslash.
#[cfg(test)]
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    split_unescaped_into(s, sep, &mut out);
    out
}

/// [`split_unescaped`] into `out` (cleared first), so a caller can reuse one buffer.
fn split_unescaped_into<'a>(s: &'a str, sep: char, out: &mut Vec<&'a str>) {
    out.clear();
    // Byte-wise: the separators, `\\` and `"` are ASCII, so every cut is on a char boundary.
    // The parts borrow from `s` (escapes kept); `unescape` resolves them where needed. memchr
    // jumps from one interesting byte to the next (a gateway's line is mostly digits).
    let sep = sep as u8;
    let b = s.as_bytes();
    let (mut start, mut quoted, mut i) = (0, false, 0);
    while let Some(k) = memchr::memchr3(sep, b'\\', b'"', &b[i..]) {
        let j = i + k;
        match b[j] {
            b'\\' => {
                // The escaped byte is skipped, whatever it is.
                i = j + 2;
                if i >= b.len() {
                    break;
                }
                continue;
            }
            b'"' => quoted = !quoted,
            _ if !quoted => {
                if j > start || sep == b',' {
                    out.push(&s[start..j]);
                }
                start = j + 1;
            }
            _ => {}
        }
        i = j + 1;
    }
    if s.len() > start {
        out.push(&s[start..]);
    }
}

fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-by-byte splitter `split_unescaped` replaced (memchr jumps); same cuts.
    fn split_reference(s: &str, sep: char) -> Vec<&str> {
        let sep = sep as u8;
        let mut out = Vec::new();
        let (mut start, mut quoted, mut escaped) = (0, false, false);
        for (i, &c) in s.as_bytes().iter().enumerate() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                b'\\' => escaped = true,
                b'"' => quoted = !quoted,
                c if c == sep && !quoted => {
                    if i > start || sep == b',' {
                        out.push(&s[start..i]);
                    }
                    start = i + 1;
                }
                _ => {}
            }
        }
        if s.len() > start {
            out.push(&s[start..]);
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn split_unescaped_cuts_where_the_byte_loop_did(
            s in "[a ,=\"\\\\é1]{0,40}",
            sep in proptest::sample::select(vec![' ', ',', '=']),
        ) {
            proptest::prop_assert_eq!(split_unescaped(&s, sep), split_reference(&s, sep));
        }
    }

    const NOW: i64 = 1_767_225_600_000;
    const T: &str = "devices/TemperatureSensor/t1/telemetry";

    fn one(topic: &str, p: &str) -> Reading {
        let mut v = parse(topic, p.as_bytes(), NOW).unwrap();
        assert_eq!(v.len(), 1);
        v.pop().unwrap()
    }

    #[test]
    fn fieldlab_json() {
        let r = one(
            "x",
            r#"{"device_id":"t9","device_type":"TemperatureSensor","seq":42,"ts":"2026-01-01T00:00:01.500Z","data":{"temperature":21.4,"door_open":false,"count":3},"status":"operational"}"#,
        );
        assert_eq!(r.device_id, "t9");
        assert_eq!(r.seq, Some(42));
        assert_eq!(r.ts_ms, NOW + 1500);
        assert_eq!(r.status.as_deref(), Some("operational"));
        assert!(r.tags.is_empty());
        let t = one(T, r#"{"data":{"a":1},"tags":{"site":"lab"}}"#);
        assert_eq!(t.tags.get("site").map(String::as_str), Some("lab"));
        assert_eq!(t.fields.len(), 1);
        assert_eq!(
            r.fields,
            vec![
                ("count".into(), FieldValue::I64(3)),
                ("door_open".into(), FieldValue::Bool(false)),
                ("temperature".into(), FieldValue::F64(21.4)),
            ]
        );
    }

    #[test]
    fn topic_supplies_id_and_type_and_receipt_time() {
        let r = one(T, r#"{"data":{"temperature":20}}"#);
        assert_eq!(
            (r.device_id.as_str(), r.device_type.as_str()),
            ("t1", "TemperatureSensor")
        );
        assert_eq!(r.ts_ms, NOW);
    }

    #[test]
    fn seed_000_shape_keeps_units() {
        let r = one(
            "sensors/temperature/1",
            r#"{"data":{"temperature":{"unit":"°C","value":22.5}},"device":"temperature_sensor_1","timestamp":"2026-01-01T00:00:00Z"}"#,
        );
        assert_eq!(r.device_id, "temperature_sensor_1");
        assert_eq!(r.units.get("temperature").map(String::as_str), Some("°C"));
        assert_eq!(r.fields[0].1, FieldValue::F64(22.5));
    }

    #[test]
    fn flat_json_and_epoch_times() {
        let r = one(T, r#"{"temperature":21.5,"ts":1767225600}"#);
        assert_eq!(r.ts_ms, NOW);
        assert_eq!(r.fields.len(), 1);
        assert_eq!(one(T, r#"{"v":1,"ts":1767225600000}"#).ts_ms, NOW);
        assert_eq!(one(T, r#"{"v":1,"ts":1767225600000000000}"#).ts_ms, NOW);
    }

    #[test]
    fn null_is_kept_as_missing_value() {
        let r = one(T, r#"{"data":{"t":null}}"#);
        assert!(matches!(r.fields[0].1, FieldValue::F64(f) if f.is_nan()));
    }

    #[test]
    fn line_protocol() {
        let v = parse(
            "anything",
            b"reefer,device_id=r1,site=x temp=4.5,door=t,count=3i,note=\"ok, fine\" 1767225600000000000\nreefer,device_id=r2 temp=5",
            NOW,
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].device_id, "r1");
        assert_eq!(v[0].device_type, "reefer");
        assert_eq!(v[0].ts_ms, NOW);
        assert_eq!(v[0].tags.get("site").map(String::as_str), Some("x"));
        assert_eq!(v[0].fields[1], ("door".into(), FieldValue::Bool(true)));
        assert_eq!(v[0].fields[2], ("count".into(), FieldValue::I64(3)));
        assert_eq!(
            v[0].fields[3],
            ("note".into(), FieldValue::Str("ok, fine".into()))
        );
        assert_eq!(v[1].ts_ms, NOW);
    }

    #[test]
    fn json_array_is_a_batch_of_readings() {
        let v = parse(
            T,
            br#"[{"seq":1,"ts":1767225600000,"data":{"a":1.5}},{"device_id":"t2","seq":2,"b":2}]"#,
            NOW,
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].device_id.as_str(), v[0].seq), ("t1", Some(1)));
        assert_eq!(v[0].fields, vec![("a".into(), FieldValue::F64(1.5))]);
        assert_eq!((v[1].device_id.as_str(), v[1].seq), ("t2", Some(2)));
        assert_eq!(v[1].ts_ms, NOW);
    }

    #[test]
    fn bad_payloads_get_reasons() {
        let reason = |topic: &str, p: &[u8]| parse(topic, p, NOW).unwrap_err();
        assert!(reason(T, b"").contains("empty"));
        assert!(reason(T, &[0xff, 0x00]).contains("not UTF-8"));
        assert!(reason(T, b"{\"data\":").contains("invalid JSON"));
        assert!(reason(T, b"[1,2]").contains("batch element 0 must be an object"));
        assert!(reason(T, b"[]").contains("empty array"));
        assert!(reason(T, b"[{\"a\":1},{\"data\":{}}]").contains("batch element 1"));
        assert!(reason(T, b"\"x\"").contains("object or an array"));
        assert!(reason(T, b"{\"data\":{}}").contains("no data fields"));
        assert!(reason(T, b"{\"data\":{\"a\":[1]}}").contains("field `a` is an array"));
        assert!(reason(T, b"{\"data\":{\"a\":1},\"ts\":\"yesterday\"}").contains("`ts`"));
        assert!(reason(T, b"{\"data\":{\"a\":1},\"seq\":-1}").contains("`seq`"));
        assert!(reason("other/topic", b"{\"data\":{\"a\":1}}").contains("no device id"));
        assert!(reason(T, b"hello world").contains("line protocol"));
        assert!(reason(T, b"m,device_id=x a=zz").contains("field `a`"));
        assert!(reason(T, b"{\"data\":{\"a\":1},\"tags\":{\"site\":1}}").contains("tag `site`"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse(T, &bytes, NOW);
        }
    }
}
