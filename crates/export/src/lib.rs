//! fieldlab-export: the store's data as files for notebooks — CSV, JSON lines, Parquet.
//!
//! Why it exists: analysis happens in pandas, polars, DuckDB or Spark, which all read these
//! three formats. An export may be larger than memory, so it is streamed: series by series,
//! and within a series window by window (`Store::windows` splits at block-chunk boundaries,
//! re-aligned to `step` buckets so no bucket is cut in two). Memory stays near one block
//! chunk plus one Parquet row group, whatever the export's size.
//!
//! Every format has the same columns: `ts`, `device_id`, `device_type`, `field`, `unit` (from
//! the device catalog, empty when the type or field is unknown), one column per tag of the
//! selected series (`site`, ...), then the values — `value` for raw points (Parquet: `value` as
//! DOUBLE for numbers and booleans, `value_text` for strings), or one column per aggregation
//! when the query has a `step`. With `with=quality,anomaly` (raw points only) each row also
//! carries its verdicts: `quality` (the rules the reading broke, comma-separated; empty/null
//! when none) and `anomaly` (the live detector's score, 0..1; empty/null when not scored).
//! Parquet files also carry the units as key-value metadata (`fieldlab.units`:
//! `{device_type: {field: unit}}` of the exported series).
//!
//! Architecture invariant: reads through `Store` only; knows nothing of HTTP (the server and
//! the CLI hand it a `Write`).

use fieldlab_core::time::format_ms;
use fieldlab_core::{FieldValue, SeriesKey};
use fieldlab_store::{aggregate, join_verdicts, QuerySpec, SeriesInfo, Store};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use std::collections::BTreeSet;
use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the store: {0}")]
    Store(#[from] fieldlab_store::StoreError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
    Parquet,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "csv" => Format::Csv,
            "jsonl" | "ndjson" | "json" => Format::JsonLines,
            "parquet" => Format::Parquet,
            _ => {
                return Err(format!(
                    "`{s}` is not an export format; use csv, jsonl or parquet"
                ))
            }
        })
    }
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Csv, Format::JsonLines, Format::Parquet];

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::JsonLines => "application/x-ndjson",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
            Format::Parquet => "parquet",
        }
    }
}

/// Units by device type and field (`{device_type: {field: unit}}`), e.g. the device catalog's.
pub type Units = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

fn unit_of<'a>(units: &'a Units, s: &SeriesInfo) -> Option<&'a str> {
    units
        .get(&*s.tags.device_type)
        .and_then(|f| f.get(&s.field))
        .map(String::as_str)
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub series: usize,
    pub rows: u64,
}

/// Rows per Parquet row group (and the most rows buffered at once).
const ROW_GROUP: usize = 65_536;

/// Export what `q` selects (its selector, time range, step and aggregations; `limit` and
/// `order` do not apply: exports are complete and oldest first) to `out`.
pub fn export<W: Write + Send>(
    store: &Store,
    q: &QuerySpec,
    format: Format,
    units: &Units,
    out: W,
) -> Result<(W, Summary), ExportError> {
    export_where(store, q, format, units, |_| true, out)
}

/// [`export`] of the selected series `keep` accepts only (a replica's share of a cluster's
/// export: the series of the devices it owns).
pub fn export_where<W: Write + Send>(
    store: &Store,
    q: &QuerySpec,
    format: Format,
    units: &Units,
    keep: impl Fn(&SeriesInfo) -> bool,
    out: W,
) -> Result<(W, Summary), ExportError> {
    let series: Vec<SeriesInfo> = store
        .select(&q.selector)
        .into_iter()
        .filter(|i| i.last_ts_ms >= q.from && i.first_ts_ms <= q.to && keep(i))
        .collect();
    let tags = tag_names(&series);
    let columns: Vec<String> = q.columns().iter().map(|c| c.to_string()).collect();
    // The units of the exported series only.
    let mut used = Units::new();
    for i in &series {
        if let Some(u) = unit_of(units, i) {
            used.entry(i.tags.device_type.to_string())
                .or_default()
                .insert(i.field.clone(), u.to_string());
        }
    }
    let mut sink = sink(format, out, &tags, &columns, q.step.is_none(), &used)?;
    let mut sum = Summary {
        series: series.len(),
        rows: 0,
    };
    for info in &series {
        let key = SeriesKey::new(&info.device_id, &info.field);
        for (lo, hi) in windows(store, &key, q) {
            let pts = store.range(&key, lo, hi)?;
            if pts.is_empty() {
                continue;
            }
            let rows = match q.step {
                None => join_verdicts(pts, store.verdicts(&key, &q.with, lo, hi)?),
                Some(step) => aggregate(&pts, step, &q.effective_aggs()),
            };
            let unit = unit_of(&used, info);
            for (ts, vals) in &rows {
                let line = Line {
                    s: info,
                    unit,
                    ts: *ts,
                    vals,
                };
                sink.row(line, &tags)?;
            }
            sum.rows += rows.len() as u64;
        }
    }
    Ok((sink.finish()?, sum))
}

/// The tag columns of an export: every tag name of its series, sorted.
fn tag_names<'a>(series: impl IntoIterator<Item = &'a SeriesInfo>) -> Vec<String> {
    series
        .into_iter()
        .flat_map(|s| s.tags.extra.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn sink<'w, W: Write + Send + 'w>(
    format: Format,
    out: W,
    tags: &[String],
    columns: &[String],
    raw: bool,
    units: &Units,
) -> Result<Box<dyn Sink<W> + 'w>, ExportError> {
    Ok(match format {
        Format::Csv => Box::new(CsvSink::new(out, tags, columns)?),
        Format::JsonLines => Box::new(JsonSink {
            out: std::io::BufWriter::with_capacity(1 << 16, out),
            columns: columns.to_vec(),
        }),
        Format::Parquet => Box::new(ParquetSink::new(out, tags, columns, raw, units)?),
    })
}

/// One exported row held in memory: a row of another replica's share, read back from its
/// JSON lines ([`Row::from_json_line`]) to be written again with the others ([`write_rows`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's series (`first_ts_ms` and `last_ts_ms` are the row's `ts`).
    pub info: SeriesInfo,
    pub unit: Option<String>,
    pub ts: i64,
    /// One value per column of the query (`QuerySpec::columns`).
    pub vals: Vec<Option<FieldValue>>,
}

impl Row {
    /// The inverse of the JSON lines format: one line as `export` wrote it for a query with
    /// these `columns`.
    pub fn from_json_line(line: &str, columns: &[String]) -> Result<Row, String> {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let text = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("no `{k}` in the line {line}"))
        };
        let ts = fieldlab_core::time::parse_instant_ms(&text("ts")?, 0)
            .map_err(|e| format!("`ts` of the line {line}: {e}"))?;
        let extra = v["tags"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, t)| t.as_str().map(|t| (k.clone(), t.to_string())))
            .collect();
        let vals = columns
            .iter()
            .map(|c| match &v[c.as_str()] {
                serde_json::Value::Bool(b) => Some(FieldValue::Bool(*b)),
                serde_json::Value::String(s) => Some(FieldValue::Str(s.clone())),
                serde_json::Value::Number(n) => Some(match n.as_i64() {
                    Some(i) if !n.is_f64() => FieldValue::I64(i),
                    _ => FieldValue::F64(n.as_f64().unwrap_or(f64::NAN)),
                }),
                _ => None,
            })
            .collect();
        Ok(Row {
            info: SeriesInfo {
                device_id: text("device_id")?,
                field: text("field")?,
                tags: fieldlab_core::Tags {
                    device_type: text("device_type")?.into(),
                    extra,
                },
                first_ts_ms: ts,
                last_ts_ms: ts,
            },
            unit: v["unit"].as_str().map(str::to_string),
            ts,
            vals,
        })
    }
}

/// Write rows held in memory as an export of `q` would write them (same columns, tags and
/// units metadata), in the order given: the rows of several replicas' shares as one file.
pub fn write_rows<W: Write + Send>(
    rows: &[Row],
    q: &QuerySpec,
    format: Format,
    out: W,
) -> Result<(W, Summary), ExportError> {
    let tags = tag_names(rows.iter().map(|r| &r.info));
    let columns: Vec<String> = q.columns().iter().map(|c| c.to_string()).collect();
    let mut used = Units::new();
    for r in rows {
        if let Some(u) = &r.unit {
            used.entry(r.info.tags.device_type.to_string())
                .or_default()
                .insert(r.info.field.clone(), u.clone());
        }
    }
    let mut sink = sink(format, out, &tags, &columns, q.step.is_none(), &used)?;
    let mut series = BTreeSet::new();
    for r in rows {
        series.insert((r.info.device_id.as_str(), r.info.field.as_str()));
        let line = Line {
            s: &r.info,
            unit: r.unit.as_deref(),
            ts: r.ts,
            vals: &r.vals,
        };
        sink.row(line, &tags)?;
    }
    let sum = Summary {
        series: series.len(),
        rows: rows.len() as u64,
    };
    Ok((sink.finish()?, sum))
}

/// The store's windows for one series, with every boundary moved to the end of a `step`
/// bucket so that aggregating window by window gives the same buckets as one pass.
fn windows(store: &Store, key: &SeriesKey, q: &QuerySpec) -> Vec<(i64, i64)> {
    let raw = store.windows(key, q.from, q.to);
    let Some(step) = q.step else {
        return raw;
    };
    let mut out = Vec::new();
    let mut lo = q.from;
    for (_, hi) in &raw[..raw.len() - 1] {
        let end = (hi + 1).div_euclid(step) * step - 1;
        if end >= lo {
            out.push((lo, end));
            lo = end + 1;
        }
    }
    out.push((lo, q.to));
    out
}

/// One row of an export as a sink writes it: its series, unit, time and one value per column.
struct Line<'a> {
    s: &'a SeriesInfo,
    unit: Option<&'a str>,
    ts: i64,
    vals: &'a [Option<FieldValue>],
}

trait Sink<W> {
    /// Write one row; `tags` are the export's tag columns.
    fn row(&mut self, line: Line<'_>, tags: &[String]) -> Result<(), ExportError>;
    fn finish(self: Box<Self>) -> Result<W, ExportError>;
}

/// A value as a CSV or table cell: its plain text, empty where the row has none.
pub fn text(v: &Option<FieldValue>) -> String {
    match v {
        None => String::new(),
        Some(FieldValue::F64(f)) => f.to_string(),
        Some(FieldValue::I64(i)) => i.to_string(),
        Some(FieldValue::Bool(b)) => b.to_string(),
        Some(FieldValue::Str(s)) => s.clone(),
    }
}

struct CsvSink<W: Write> {
    w: csv::Writer<W>,
}

impl<W: Write> CsvSink<W> {
    fn new(out: W, tags: &[String], columns: &[String]) -> Result<Self, ExportError> {
        let mut w = csv::WriterBuilder::new()
            .buffer_capacity(1 << 16)
            .from_writer(out);
        let mut header = vec!["ts", "device_id", "device_type", "field", "unit"];
        header.extend(tags.iter().map(String::as_str));
        header.extend(columns.iter().map(String::as_str));
        w.write_record(&header)?;
        Ok(CsvSink { w })
    }
}

impl<W: Write> Sink<W> for CsvSink<W> {
    fn row(&mut self, line: Line<'_>, tags: &[String]) -> Result<(), ExportError> {
        let Line { s, unit, ts, vals } = line;
        let mut rec = vec![
            format_ms(ts),
            s.device_id.clone(),
            s.tags.device_type.to_string(),
            s.field.clone(),
            unit.unwrap_or_default().to_string(),
        ];
        rec.extend(
            tags.iter()
                .map(|t| s.tags.extra.get(t).cloned().unwrap_or_default()),
        );
        rec.extend(vals.iter().map(text));
        self.w.write_record(&rec)?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<W, ExportError> {
        self.w
            .into_inner()
            .map_err(|e| ExportError::Io(std::io::Error::other(e.to_string())))
    }
}

struct JsonSink<W: Write> {
    out: std::io::BufWriter<W>,
    columns: Vec<String>,
}

impl<W: Write> Sink<W> for JsonSink<W> {
    fn row(&mut self, line: Line<'_>, _tags: &[String]) -> Result<(), ExportError> {
        let Line { s, unit, ts, vals } = line;
        let mut o = serde_json::Map::new();
        o.insert("ts".into(), format_ms(ts).into());
        o.insert("device_id".into(), s.device_id.clone().into());
        o.insert("device_type".into(), s.tags.device_type.to_string().into());
        o.insert("field".into(), s.field.clone().into());
        o.insert(
            "unit".into(),
            unit.map_or(serde_json::Value::Null, Into::into),
        );
        o.insert(
            "tags".into(),
            serde_json::to_value(&s.tags.extra).unwrap_or_default(),
        );
        for (c, v) in self.columns.iter().zip(vals) {
            o.insert(
                c.clone(),
                v.as_ref().map_or(serde_json::Value::Null, |v| v.to_json()),
            );
        }
        serde_json::to_writer(&mut self.out, &o).map_err(std::io::Error::from)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<W, ExportError> {
        self.out
            .into_inner()
            .map_err(|e| ExportError::Io(e.into_error()))
    }
}

/// A Parquet column name from a tag name: letters, digits and `_` only, and never one of
/// the fixed columns.
fn column_name(tag: &str) -> String {
    let s: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if [
        "ts",
        "device_id",
        "device_type",
        "field",
        "unit",
        "value",
        "value_text",
        "quality",
        "anomaly",
    ]
    .contains(&s.as_str())
        || s.is_empty()
        || s.starts_with(|c: char| c.is_ascii_digit())
    {
        format!("tag_{s}")
    } else {
        s
    }
}

/// Buffers up to `ROW_GROUP` rows column by column, then writes them as one row group.
struct ParquetSink<W: Write + Send> {
    w: SerializedFileWriter<W>,
    raw: bool,
    ts: Vec<i64>,
    ids: Vec<ByteArray>,
    types: Vec<ByteArray>,
    fields: Vec<ByteArray>,
    units: (Vec<ByteArray>, Vec<i16>),
    /// Per tag: present values and definition levels.
    tags: Vec<(Vec<ByteArray>, Vec<i16>)>,
    /// Per value column: present values and definition levels.
    nums: Vec<(Vec<f64>, Vec<i16>)>,
    /// `value_text` (raw exports only).
    texts: (Vec<ByteArray>, Vec<i16>),
    /// Text value columns (`quality`), after `value_text`.
    text_cols: Vec<(Vec<ByteArray>, Vec<i16>)>,
    /// Per value column: whether it is a text column.
    kinds: Vec<bool>,
}

/// A buffered optional Parquet column (present values, every row's definition level): one
/// more row, `None` a null.
fn push_optional<T>(col: &mut (Vec<T>, Vec<i16>), v: Option<T>) {
    match v {
        Some(x) => {
            col.0.push(x);
            col.1.push(1);
        }
        None => col.1.push(0),
    }
}

fn clear_optional<T>(col: &mut (Vec<T>, Vec<i16>)) {
    col.0.clear();
    col.1.clear();
}

/// A text value as a Parquet string; anything else is null in a text column.
fn text_bytes(v: &Option<FieldValue>) -> Option<ByteArray> {
    match v {
        Some(FieldValue::Str(x)) => Some(ByteArray::from(x.as_str())),
        _ => None,
    }
}

/// Value columns written as text in Parquet (the others are DOUBLE).
fn is_text(column: &str) -> bool {
    column == fieldlab_store::Verdict::Quality.name()
}

impl<W: Write + Send> ParquetSink<W> {
    fn new(
        out: W,
        tags: &[String],
        columns: &[String],
        raw: bool,
        units: &Units,
    ) -> Result<Self, ExportError> {
        let mut schema = String::from(
            "message fieldlab_export {\n  REQUIRED INT64 ts (TIMESTAMP(MILLIS,true));\n  REQUIRED BYTE_ARRAY device_id (UTF8);\n  REQUIRED BYTE_ARRAY device_type (UTF8);\n  REQUIRED BYTE_ARRAY field (UTF8);\n  OPTIONAL BYTE_ARRAY unit (UTF8);\n",
        );
        for t in tags {
            schema.push_str(&format!(
                "  OPTIONAL BYTE_ARRAY {} (UTF8);\n",
                column_name(t)
            ));
        }
        for c in columns.iter().filter(|c| !is_text(c)) {
            schema.push_str(&format!("  OPTIONAL DOUBLE {c};\n"));
        }
        if raw {
            schema.push_str("  OPTIONAL BYTE_ARRAY value_text (UTF8);\n");
        }
        for c in columns.iter().filter(|c| is_text(c)) {
            schema.push_str(&format!("  OPTIONAL BYTE_ARRAY {c} (UTF8);\n"));
        }
        schema.push('}');
        let schema = Arc::new(parquet::schema::parser::parse_message_type(&schema)?);
        let meta = parquet::file::metadata::KeyValue::new(
            "fieldlab.units".to_string(),
            serde_json::to_string(units).unwrap_or_default(),
        );
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("fieldlab {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![meta]))
            .build();
        Ok(ParquetSink {
            w: SerializedFileWriter::new(out, schema, Arc::new(props))?,
            raw,
            ts: Vec::new(),
            ids: Vec::new(),
            types: Vec::new(),
            fields: Vec::new(),
            units: Default::default(),
            tags: vec![Default::default(); tags.len()],
            nums: vec![Default::default(); columns.iter().filter(|c| !is_text(c)).count()],
            texts: Default::default(),
            text_cols: vec![Default::default(); columns.iter().filter(|c| is_text(c)).count()],
            kinds: columns.iter().map(|c| is_text(c)).collect(),
        })
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        if self.ts.is_empty() {
            return Ok(());
        }
        let mut rg = self.w.next_row_group()?;
        let mut i = 0;
        while let Some(mut col) = rg.next_column()? {
            // Schema order: ts, device_id, device_type, field, unit, tags..., values...,
            // [value_text].
            let ntags = self.tags.len();
            let nnums = self.nums.len();
            match i {
                0 => {
                    col.typed::<Int64Type>().write_batch(&self.ts, None, None)?;
                }
                1..=3 => {
                    let v = [&self.ids, &self.types, &self.fields][i - 1];
                    col.typed::<ByteArrayType>().write_batch(v, None, None)?;
                }
                4 => {
                    let (v, d) = &self.units;
                    col.typed::<ByteArrayType>().write_batch(v, Some(d), None)?;
                }
                _ if i < 5 + ntags => {
                    let (v, d) = &self.tags[i - 5];
                    col.typed::<ByteArrayType>().write_batch(v, Some(d), None)?;
                }
                _ if i < 5 + ntags + nnums => {
                    let (v, d) = &self.nums[i - 5 - ntags];
                    col.typed::<DoubleType>().write_batch(v, Some(d), None)?;
                }
                _ if self.raw && i == 5 + ntags + nnums => {
                    let (v, d) = &self.texts;
                    col.typed::<ByteArrayType>().write_batch(v, Some(d), None)?;
                }
                _ => {
                    let first = 5 + ntags + nnums + usize::from(self.raw);
                    let (v, d) = &self.text_cols[i - first];
                    col.typed::<ByteArrayType>().write_batch(v, Some(d), None)?;
                }
            }
            col.close()?;
            i += 1;
        }
        rg.close()?;
        self.ts.clear();
        self.ids.clear();
        self.types.clear();
        self.fields.clear();
        clear_optional(&mut self.units);
        self.tags.iter_mut().for_each(clear_optional);
        self.nums.iter_mut().for_each(clear_optional);
        clear_optional(&mut self.texts);
        self.text_cols.iter_mut().for_each(clear_optional);
        Ok(())
    }
}

impl<W: Write + Send> Sink<W> for ParquetSink<W> {
    fn row(&mut self, line: Line<'_>, tags: &[String]) -> Result<(), ExportError> {
        let Line { s, unit, ts, vals } = line;
        self.ts.push(ts);
        self.ids.push(ByteArray::from(s.device_id.as_str()));
        self.types.push(ByteArray::from(&*s.tags.device_type));
        self.fields.push(ByteArray::from(s.field.as_str()));
        push_optional(&mut self.units, unit.map(ByteArray::from));
        for (t, col) in tags.iter().zip(&mut self.tags) {
            let v = s.tags.extra.get(t).map(|x| ByteArray::from(x.as_str()));
            push_optional(col, v);
        }
        let (mut nums, mut texts) = (self.nums.iter_mut(), self.text_cols.iter_mut());
        for (val, text) in vals.iter().zip(&self.kinds) {
            if *text {
                let Some(col) = texts.next() else { break };
                push_optional(col, text_bytes(val));
                continue;
            }
            let Some(col) = nums.next() else { break };
            push_optional(col, val.as_ref().and_then(FieldValue::as_f64));
        }
        if self.raw {
            push_optional(&mut self.texts, vals.first().and_then(text_bytes));
        }
        if self.ts.len() >= ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<W, ExportError> {
        self.flush()?;
        Ok(self.w.into_inner()?)
    }
}

#[cfg(test)]
mod tests;
