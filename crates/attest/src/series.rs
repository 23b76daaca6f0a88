//! Telemetry attestation: "every stored point of series S in [from, to] lay within [a, b]".
//!
//! Why it exists: the cold-chain question ("stayed between 2 and 8 °C") is a proof over
//! stored points rather than a CSV. The points become records `{"ts": <ms>, "value": <v>}`
//! committed in an RFC 6962 tree; the attestation carries the root and count, the minimum and
//! maximum points opened with inclusion proofs (a pass is attested by the signer; the extremes
//! are verified to be in the tree and in range), or the first out-of-range point (a refutation
//! anyone can verify), and an Ed25519 signature over its RFC 8785 encoding.

use crate::canon;
use crate::merkle;
use crate::records::{OpenedRecord, RecordSet};
use crate::sign::{KeyPair, Signature};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Why an attestation could not be made or does not verify. `Fails`: the claim is not
/// what its signed evidence shows; the others are malformed input.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error(transparent)]
    Signature(#[from] crate::sign::SignatureError),
    #[error(transparent)]
    Record(#[from] crate::records::RecordsError),
    #[error(transparent)]
    Canon(#[from] canon::CanonError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Fails(String),
}

pub const FORMAT: &str = "fieldlab.series-attestation/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesClaim {
    pub format: String,
    pub device_id: String,
    pub field: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub min: f64,
    pub max: f64,
    pub count: u64,
    pub root: String,
    /// `true`: every point was within [min, max].
    pub in_range: bool,
    pub out_of_range: u64,
    pub lowest: Option<OpenedRecord>,
    pub highest: Option<OpenedRecord>,
    pub first_violation: Option<OpenedRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesAttestation {
    pub claim: SeriesClaim,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// Commit the points and check the range.
#[allow(clippy::too_many_arguments)]
pub fn attest(
    device_id: &str,
    field: &str,
    from_ms: i64,
    to_ms: i64,
    min: f64,
    max: f64,
    points: &[(i64, f64)],
    key: Option<&KeyPair>,
) -> Result<SeriesAttestation, SeriesError> {
    if min > max {
        return Err(SeriesError::Invalid(format!("range {min}..{max} is empty")));
    }
    let records: Vec<Value> = points
        .iter()
        .map(|(t, v)| json!({"ts": t, "value": v}))
        .collect();
    let mut leaves = Vec::with_capacity(records.len());
    for r in &records {
        leaves.push(merkle::leaf_hash(&canon::canonical(r)?));
    }
    let rs = RecordSet {
        name: "points".into(),
        records,
        leaves,
    };
    let inr = |v: f64| v >= min && v <= max;
    let out = points.iter().filter(|p| !inr(p.1)).count() as u64;
    let lo = (0..points.len()).min_by(|a, b| points[*a].1.total_cmp(&points[*b].1));
    let hi = (0..points.len()).max_by(|a, b| points[*a].1.total_cmp(&points[*b].1));
    let claim = SeriesClaim {
        format: FORMAT.into(),
        device_id: device_id.into(),
        field: field.into(),
        from_ms,
        to_ms,
        min,
        max,
        count: points.len() as u64,
        root: canon::hex32(&rs.root()),
        in_range: out == 0,
        out_of_range: out,
        lowest: lo.map(|i| rs.open(i)),
        highest: hi.map(|i| rs.open(i)),
        first_violation: points.iter().position(|p| !inr(p.1)).map(|i| rs.open(i)),
    };
    let signature = match key {
        Some(k) => Some(k.sign(FORMAT, &canon::canonical(&claim)?)),
        None => None,
    };
    Ok(SeriesAttestation { claim, signature })
}

/// Verify an attestation: signature (if any), opened points in the tree, and the verdict.
pub fn verify(a: &SeriesAttestation) -> Result<String, SeriesError> {
    let c = &a.claim;
    if c.format != FORMAT {
        return Err(SeriesError::Invalid("not a series attestation".into()));
    }
    let signed = match &a.signature {
        Some(s) => {
            s.verify(FORMAT, &canon::canonical(c)?)?;
            format!("signed by {}", s.kid)
        }
        None => "UNSIGNED".into(),
    };
    let root = canon::parse_hex32(&c.root)
        .ok_or_else(|| SeriesError::Invalid("root is not hex".into()))?;
    let val = |o: &OpenedRecord| -> Result<(i64, f64), SeriesError> {
        o.verify(&root, c.count)?;
        let t = o
            .record
            .get("ts")
            .and_then(Value::as_i64)
            .ok_or_else(|| SeriesError::Invalid("point without ts".into()))?;
        let v = o
            .record
            .get("value")
            .and_then(Value::as_f64)
            .ok_or_else(|| SeriesError::Invalid("point without value".into()))?;
        if t < c.from_ms || t > c.to_ms {
            return Err(SeriesError::Fails(format!(
                "point at {t} lies outside the attested interval"
            )));
        }
        Ok((t, v))
    };
    let inr = |v: f64| v >= c.min && v <= c.max;
    for o in [&c.lowest, &c.highest].into_iter().flatten() {
        let (_, v) = val(o)?;
        if c.in_range && !inr(v) {
            return Err(SeriesError::Fails(format!(
                "claims in range, but point {} has value {v}",
                o.index
            )));
        }
    }
    match (&c.first_violation, c.in_range) {
        (Some(o), false) => {
            let (t, v) = val(o)?;
            if inr(v) {
                return Err(SeriesError::Fails("the violating point is in range".into()));
            }
            Ok(format!("REFUTED ({signed}): point {} at {t} ms has {} = {v}, outside [{}, {}]; {} of {} points out of range", o.index, c.field, c.min, c.max, c.out_of_range, c.count))
        }
        (None, true) if c.out_of_range == 0 => Ok(format!("IN RANGE ({signed}, attested): {} points of {}/{} within [{}, {}]; extremes verified in the tree", c.count, c.device_id, c.field, c.min, c.max)),
        _ => Err(SeriesError::Fails("verdict and evidence disagree".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proves_and_refutes_a_range() {
        let k = KeyPair::generate(None).unwrap();
        let pts: Vec<(i64, f64)> = (0..100)
            .map(|i| (i * 1000, 4.0 + (i % 7) as f64 * 0.5))
            .collect();
        let a = attest(
            "fridge-1",
            "temperature",
            0,
            99_000,
            2.0,
            8.0,
            &pts,
            Some(&k),
        )
        .unwrap();
        assert!(verify(&a).unwrap().starts_with("IN RANGE"));
        let mut forged = a.clone();
        forged.claim.max = 6.0;
        assert!(verify(&forged).is_err());
        let mut bad = pts.clone();
        bad[42].1 = 9.5;
        let r = attest(
            "fridge-1",
            "temperature",
            0,
            99_000,
            2.0,
            8.0,
            &bad,
            Some(&k),
        )
        .unwrap();
        assert!(!r.claim.in_range);
        assert!(verify(&r).unwrap().contains("point 42"));
    }
}
