//! Records and their commitments: CSV/JSON rows -> canonical JSON -> RFC 6962 tree.
//!
//! Why it exists: `cap prepare` turns a supplier list, a UBO list or any table into a
//! commitment (root + count) that a proof can later refer to, and keeps the canonical records
//! (private, under `records/`) so that the proof builder can open single records with inclusion
//! proofs. A record is a flat JSON object typed by a schema; its leaf is
//! `SHA-256(0x00 || JCS(record))`. Rows are encoded straight into canonical bytes (members
//! pre-sorted once per schema), which keeps a million-row `prepare` well under two seconds.

use crate::canon::{self, hex32};
use crate::merkle::{self, Hash};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    #[serde(default)]
    pub required: bool,
}

/// What columns a record set has and how they are typed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    pub name: String,
    pub fields: Vec<FieldSpec>,
}

impl Schema {
    pub fn suppliers() -> Schema {
        Schema::of(
            "suppliers",
            &[
                ("id", FieldType::String, true),
                ("name", FieldType::String, true),
                ("country", FieldType::String, true),
                ("tier", FieldType::Integer, false),
                ("audit_score", FieldType::Number, false),
            ],
        )
    }

    pub fn ubos() -> Schema {
        Schema::of(
            "ubos",
            &[
                ("id", FieldType::String, true),
                ("supplier_id", FieldType::String, true),
                ("name", FieldType::String, true),
                ("nationality", FieldType::String, false),
                ("ownership_pct", FieldType::Number, false),
            ],
        )
    }

    fn of(name: &str, f: &[(&str, FieldType, bool)]) -> Schema {
        Schema {
            name: name.into(),
            fields: f
                .iter()
                .map(|(n, t, r)| FieldSpec {
                    name: (*n).into(),
                    ty: *t,
                    required: *r,
                })
                .collect(),
        }
    }

    /// A built-in schema name (`suppliers`, `ubos`) or a YAML/JSON schema file.
    pub fn load(spec: &str) -> Result<Schema, RecordsError> {
        match spec {
            "suppliers" => Ok(Schema::suppliers()),
            "ubos" => Ok(Schema::ubos()),
            path => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    crate::FileError::new(
                        Path::new(path),
                        format!("{e} (give `suppliers`, `ubos` or a schema file)"),
                    )
                })?;
                let s: Schema = serde_yaml::from_str(&text)
                    .map_err(|e| crate::FileError::new(Path::new(path), e))?;
                if s.fields.is_empty() {
                    return Err(RecordsError::Invalid(format!(
                        "{path}: schema `{}` has no fields",
                        s.name
                    )));
                }
                Ok(s)
            }
        }
    }
}

/// Root and count of one committed record set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCommitment {
    pub count: u64,
    pub root: String,
    pub schema: Schema,
}

/// `commitments.json`: every set of a workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commitments {
    pub format: String,
    pub sets: BTreeMap<String, SetCommitment>,
}

/// Why records could not be committed, loaded or opened: a file that cannot be read or
/// written, records or schemas that are not valid (named with file and line), or a record
/// that is not in the committed tree.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error(transparent)]
    File(#[from] crate::FileError),
    #[error("{0}")]
    Invalid(String),
    #[error("record {index} is not included in the committed tree")]
    NotIncluded { index: u64 },
    #[error(transparent)]
    Canon(#[from] canon::CanonError),
}

pub const COMMITMENTS_FORMAT: &str = "fieldlab.commitments/v1";

impl PartialEq for Schema {
    fn eq(&self, o: &Schema) -> bool {
        crate::canon::canonical(self).ok() == crate::canon::canonical(o).ok()
    }
}

fn err_at(path: &Path, line: u64, msg: impl std::fmt::Display) -> RecordsError {
    RecordsError::Invalid(format!("{}:{line}: {msg}", path.display()))
}

/// Encode one CSV row as the canonical JSON object of `schema`.
struct RowEncoder {
    /// (csv column index or None, field) in canonical (UTF-16) key order.
    order: Vec<(Option<usize>, FieldSpec)>,
}

impl RowEncoder {
    fn new(
        schema: &Schema,
        headers: &csv::StringRecord,
        path: &Path,
    ) -> Result<RowEncoder, RecordsError> {
        for h in headers.iter() {
            if !schema.fields.iter().any(|f| f.name == h) {
                let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
                return Err(err_at(
                    path,
                    1,
                    format!(
                        "column `{h}` is not in schema `{}` (its fields: {})",
                        schema.name,
                        names.join(", ")
                    ),
                ));
            }
        }
        let mut order = Vec::new();
        for f in &schema.fields {
            let col = headers.iter().position(|h| h == f.name);
            if col.is_none() && f.required {
                return Err(err_at(
                    path,
                    1,
                    format!("required column `{}` is missing", f.name),
                ));
            }
            order.push((col, f.clone()));
        }
        order.sort_by(|a, b| a.1.name.encode_utf16().cmp(b.1.name.encode_utf16()));
        Ok(RowEncoder { order })
    }

    fn encode(
        &self,
        row: &csv::StringRecord,
        out: &mut Vec<u8>,
        path: &Path,
        line: u64,
    ) -> Result<(), RecordsError> {
        out.push(b'{');
        let mut first = true;
        for (col, f) in &self.order {
            let cell = col.and_then(|c| row.get(c)).unwrap_or("");
            if cell.is_empty() {
                if f.required {
                    return Err(err_at(
                        path,
                        line,
                        format!("`{}` is required but empty", f.name),
                    ));
                }
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            canon::write_string(out, &f.name);
            out.push(b':');
            encode_cell(f, cell, out).map_err(|m| err_at(path, line, m))?;
        }
        out.push(b'}');
        Ok(())
    }
}

fn encode_cell(f: &FieldSpec, cell: &str, out: &mut Vec<u8>) -> Result<(), RecordsError> {
    match f.ty {
        FieldType::String => canon::write_string(out, cell),
        FieldType::Integer => {
            let i: i64 = cell.trim().parse().map_err(|_| {
                RecordsError::Invalid(format!("`{}`: `{cell}` is not an integer", f.name))
            })?;
            canon::write_value(out, &Value::from(i))
                .map_err(|e| RecordsError::Invalid(format!("`{}`: {e}", f.name)))?;
        }
        FieldType::Number => {
            let x: f64 = cell.trim().parse().map_err(|_| {
                RecordsError::Invalid(format!("`{}`: `{cell}` is not a number", f.name))
            })?;
            let n = serde_json::Number::from_f64(x).ok_or_else(|| {
                RecordsError::Invalid(format!("`{}`: `{cell}` is not finite", f.name))
            })?;
            // Integral values are written as integers, as ECMAScript does (1.0 -> 1).
            let v = if x.fract() == 0.0 && x.abs() < 9.0e15 {
                Value::from(x as i64)
            } else {
                Value::Number(n)
            };
            canon::write_value(out, &v)
                .map_err(|e| RecordsError::Invalid(format!("`{}`: {e}", f.name)))?;
        }
        FieldType::Bool => out.extend_from_slice(match cell.trim() {
            "true" | "1" | "yes" => b"true",
            "false" | "0" | "no" => b"false",
            _ => {
                return Err(RecordsError::Invalid(format!(
                    "`{}`: `{cell}` is not true/false",
                    f.name
                )))
            }
        }),
    }
    Ok(())
}

/// Canonical records of a set, written as JSON lines to `out_jsonl`; returns the leaf hashes.
pub fn commit_csv(
    input: &Path,
    schema: &Schema,
    out_jsonl: &Path,
) -> Result<Vec<Hash>, RecordsError> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_path(input)
        .map_err(|e| crate::FileError::new(input, e))?;
    let headers = rdr
        .headers()
        .map_err(|e| crate::FileError::new(input, e))?
        .clone();
    let enc = RowEncoder::new(schema, &headers, input)?;
    let file = std::fs::File::create(out_jsonl).map_err(|e| crate::FileError::new(out_jsonl, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut leaves = Vec::new();
    let mut row = csv::StringRecord::new();
    let mut buf = Vec::with_capacity(256);
    loop {
        match rdr.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(crate::FileError::new(input, e).into()),
        }
        let line = row.position().map_or(0, |p| p.line());
        buf.clear();
        enc.encode(&row, &mut buf, input, line)?;
        leaves.push(merkle::leaf_hash(&buf));
        buf.push(b'\n');
        w.write_all(&buf)
            .map_err(|e| crate::FileError::new(out_jsonl, e))?;
    }
    w.flush().map_err(|e| crate::FileError::new(out_jsonl, e))?;
    Ok(leaves)
}

/// Records from a JSON array or JSON-lines file, checked against `schema`.
pub fn commit_json(
    input: &Path,
    schema: &Schema,
    out_jsonl: &Path,
) -> Result<Vec<Hash>, RecordsError> {
    let text = std::fs::read_to_string(input).map_err(|e| crate::FileError::new(input, e))?;
    let rows: Vec<(u64, Value)> = if text.trim_start().starts_with('[') {
        let v: Vec<Value> =
            serde_json::from_str(&text).map_err(|e| crate::FileError::new(input, e))?;
        v.into_iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, r))
            .collect()
    } else {
        let mut v = Vec::new();
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            v.push((
                i as u64 + 1,
                serde_json::from_str(l).map_err(|e| err_at(input, i as u64 + 1, e))?,
            ));
        }
        v
    };
    let mut w = BufWriter::new(
        std::fs::File::create(out_jsonl).map_err(|e| crate::FileError::new(out_jsonl, e))?,
    );
    let mut leaves = Vec::new();
    for (n, r) in rows {
        let obj = r
            .as_object()
            .ok_or_else(|| err_at(input, n, "record is not a JSON object"))?;
        for (k, v) in obj {
            let f = schema.fields.iter().find(|f| &f.name == k).ok_or_else(|| {
                err_at(
                    input,
                    n,
                    format!("field `{k}` is not in schema `{}`", schema.name),
                )
            })?;
            let ok = match f.ty {
                FieldType::String => v.is_string(),
                FieldType::Integer => v.is_i64() || v.is_u64(),
                FieldType::Number => v.is_number(),
                FieldType::Bool => v.is_boolean(),
            } || v.is_null() && !f.required;
            if !ok {
                return Err(err_at(
                    input,
                    n,
                    format!("field `{k}` should be {:?}", f.ty),
                ));
            }
        }
        for f in schema.fields.iter().filter(|f| f.required) {
            if obj.get(&f.name).is_none_or(Value::is_null) {
                return Err(err_at(input, n, format!("`{}` is required", f.name)));
            }
        }
        let mut buf = canon::canonical(&r).map_err(|e| err_at(input, n, e))?;
        leaves.push(merkle::leaf_hash(&buf));
        buf.push(b'\n');
        w.write_all(&buf)
            .map_err(|e| crate::FileError::new(out_jsonl, e))?;
    }
    w.flush().map_err(|e| crate::FileError::new(out_jsonl, e))?;
    Ok(leaves)
}

/// A prepared workspace directory: `commitments.json` plus `records/<set>.jsonl`.
pub struct Workspace {
    pub dir: PathBuf,
}

impl Workspace {
    pub fn new(dir: impl Into<PathBuf>) -> Workspace {
        Workspace { dir: dir.into() }
    }

    pub fn records_path(&self, set: &str) -> PathBuf {
        self.dir.join("records").join(format!("{set}.jsonl"))
    }

    pub fn commitments_path(&self) -> PathBuf {
        self.dir.join("commitments.json")
    }

    /// Commit `input` (CSV, or JSON / JSON lines by extension) as set `set`; updates commitments.json.
    pub fn prepare(
        &self,
        set: &str,
        input: &Path,
        schema: &Schema,
    ) -> Result<SetCommitment, RecordsError> {
        if set.is_empty()
            || !set
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(RecordsError::Invalid(format!(
                "set name `{set}`: use letters, digits, `_` or `-`"
            )));
        }
        std::fs::create_dir_all(self.dir.join("records"))
            .map_err(|e| crate::FileError::new(&self.dir, e))?;
        let out = self.records_path(set);
        let ext = input.extension().and_then(|e| e.to_str()).unwrap_or("");
        let leaves = if matches!(ext, "json" | "jsonl" | "ndjson") {
            commit_json(input, schema, &out)?
        } else {
            commit_csv(input, schema, &out)?
        };
        let c = SetCommitment {
            count: leaves.len() as u64,
            root: hex32(&merkle::root(&leaves)),
            schema: schema.clone(),
        };
        let mut all = self.commitments().unwrap_or(Commitments {
            format: COMMITMENTS_FORMAT.into(),
            sets: BTreeMap::new(),
        });
        all.sets.insert(set.into(), c.clone());
        crate::write_json(&self.commitments_path(), &all)?;
        Ok(c)
    }

    pub fn commitments(&self) -> Result<Commitments, RecordsError> {
        let p = self.commitments_path();
        let c: Commitments = crate::read_json(&p)?;
        if c.format != COMMITMENTS_FORMAT {
            return Err(RecordsError::Invalid(format!(
                "{}: format `{}` is not `{COMMITMENTS_FORMAT}`",
                p.display(),
                c.format
            )));
        }
        Ok(c)
    }

    /// The committed records of `set`, checked against the commitment's root and count.
    pub fn load_set(&self, set: &str) -> Result<RecordSet, RecordsError> {
        let c = self.commitments()?;
        let sc = c.sets.get(set).ok_or_else(|| {
            RecordsError::Invalid(format!(
                "set `{set}` was not prepared in {} (prepared: {})",
                self.dir.display(),
                c.sets.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let p = self.records_path(set);
        let f = std::fs::File::open(&p).map_err(|e| crate::FileError::new(&p, e))?;
        let mut rs = RecordSet {
            name: set.into(),
            records: Vec::new(),
            leaves: Vec::new(),
        };
        for line in std::io::BufReader::new(f).lines() {
            let line = line.map_err(|e| crate::FileError::new(&p, e))?;
            rs.leaves.push(merkle::leaf_hash(line.as_bytes()));
            rs.records
                .push(serde_json::from_str(&line).map_err(|e| crate::FileError::new(&p, e))?);
        }
        if rs.records.len() as u64 != sc.count || hex32(&merkle::root(&rs.leaves)) != sc.root {
            return Err(RecordsError::Invalid(format!(
                "{} does not match its commitment (changed after prepare?)",
                p.display()
            )));
        }
        Ok(rs)
    }
}

/// The records of one set with their leaf hashes.
pub struct RecordSet {
    pub name: String,
    pub records: Vec<Value>,
    pub leaves: Vec<Hash>,
}

impl RecordSet {
    pub fn root(&self) -> Hash {
        merkle::root(&self.leaves)
    }

    /// Record `i` opened: the record itself and its audit path.
    pub fn open(&self, i: usize) -> OpenedRecord {
        OpenedRecord {
            index: i as u64,
            record: self.records[i].clone(),
            proof: merkle::inclusion_proof(&self.leaves, i),
        }
    }
}

/// A record with its inclusion proof against its set's root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenedRecord {
    pub index: u64,
    pub record: Value,
    /// The audit path, leaf to root (hex in JSON).
    #[serde(with = "canon::hex_hashes")]
    pub proof: Vec<Hash>,
}

impl OpenedRecord {
    /// Check the record is leaf `index` of the tree with `root` and `size` leaves.
    pub fn verify(&self, root: &Hash, size: u64) -> Result<(), RecordsError> {
        let mut bytes = Vec::with_capacity(128);
        canon::write_value(&mut bytes, &self.record)?;
        if merkle::verify_leaf(&bytes, self.index, size, &self.proof, root) {
            Ok(())
        } else {
            Err(RecordsError::NotIncluded { index: self.index })
        }
    }
}
