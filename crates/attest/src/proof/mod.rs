//! Manifests, sorted lists, rule evaluation with evidence, and proof verification.
//!
//! Why it exists: the legacy `cap` never evaluated a rule. Here `build` evaluates every rule of the
//! compiled policy over the committed records and leaves evidence a verifier can check against
//! the roots in the manifest: counts; opened records with inclusion proofs (witnesses of a
//! pass, or the violating record of a failure); supplier–UBO links; and non-membership proofs
//! against a sanctions list committed as a sorted Merkle tree (the two adjacent entries around
//! the key, with inclusion proofs and consecutive indices). `verify` re-derives each rule's
//! status from its evidence and refuses a proof whose claimed status disagrees.
//!
//! What is verified versus attested is explicit in each result: a failure backed by a violating
//! record, a count, every UBO link and every non-membership are *verified*; a pass of a value
//! rule (eq, range, …) over records the verifier does not see is *attested* by the signer, with
//! the extreme records shown as witnesses.

use crate::canon::{self, hex32, parse_hex32};
use crate::merkle::{self, Hash};
use crate::policy::{PolicyIr, Rule};
use crate::records::{OpenedRecord, RecordSet, Workspace};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Why a manifest or proof could not be built, or why a proof does not verify (`Invalid`: the
/// first inconsistency found, which is what `proof verify` and a bundle's verdict report).
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error(transparent)]
    File(#[from] crate::FileError),
    #[error(transparent)]
    Records(#[from] crate::records::RecordsError),
    #[error(transparent)]
    Canon(#[from] canon::CanonError),
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for ProofError {
    fn from(m: String) -> ProofError {
        ProofError::Invalid(m)
    }
}

impl From<&str> for ProofError {
    fn from(m: &str) -> ProofError {
        ProofError::Invalid(m.to_string())
    }
}

pub const MANIFEST_FORMAT: &str = "fieldlab.manifest/v1";
pub const PROOF_FORMAT: &str = "fieldlab.proof/v1";
pub const LIST_FORMAT: &str = "fieldlab.list/v1";

/// How list keys and checked values are compared: Unicode lower case, whitespace runs collapsed
/// to one space, trimmed.
pub fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

mod build;
mod evidence;
mod manifest;
mod verify;

pub use build::*;
pub use evidence::*;
pub use manifest::*;
pub use verify::*;

pub(super) fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Does one record's field satisfy a value rule?
pub fn holds(rule: &Rule, v: Option<&Value>) -> bool {
    let v = v.filter(|v| !v.is_null());
    match rule.op.as_str() {
        "eq" => v.is_some_and(|v| json_eq(v, rule.value.as_ref().unwrap_or(&Value::Null))),
        "ne" => !v.is_some_and(|v| json_eq(v, rule.value.as_ref().unwrap_or(&Value::Null))),
        "one_of" => v.is_some_and(|v| rule.values.iter().flatten().any(|x| json_eq(v, x))),
        "range_min" => v
            .and_then(num)
            .is_some_and(|x| rule.min.is_some_and(|m| x >= m)),
        "range_max" => v
            .and_then(num)
            .is_some_and(|x| rule.max.is_some_and(|m| x <= m)),
        "range" => v
            .and_then(num)
            .is_some_and(|x| rule.min.is_some_and(|m| x >= m) && rule.max.is_some_and(|m| x <= m)),
        // The part of screening a single record decides: it has a value to screen (or the
        // rule lets records without one pass). Membership in the list is proven apart.
        "non_membership" => rule.missing_allowed() || !key_of_value(v).is_empty(),
        _ => false,
    }
}

/// A field's screening key: a string normalised; any other value (number, bool, array,
/// object) by its RFC 8785 text, normalised; a missing or null field has none ("").
pub(super) fn key_of_value(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => normalise(s),
        Some(v) if !v.is_null() => {
            let mut text = Vec::new();
            // A value that has no canonical text (not produced by any parse) has no key.
            if canon::write_value(&mut text, v).is_err() {
                return String::new();
            }
            normalise(&String::from_utf8_lossy(&text))
        }
        _ => String::new(),
    }
}

pub(super) fn field<'a>(r: &'a Value, f: &str) -> Option<&'a Value> {
    r.get(f)
}

pub(super) fn key_of(r: &Value, f: &str) -> String {
    key_of_value(r.get(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The decoding `Evidence` had before [`EvidenceWire`]: serde's derive for an internally
    /// tagged enum. The one-pass decoding must accept and refuse exactly what this does.
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
    enum Reference {
        Count {
            set: String,
            count: u64,
            #[serde(default, deserialize_with = "present")]
            size_proof: Option<Vec<OpenedRecord>>,
        },
        Values {
            set: String,
            field: String,
            checked: u64,
            witnesses: Vec<OpenedRecord>,
        },
        Violation {
            set: String,
            field: String,
            record: OpenedRecord,
        },
        UboLinks {
            links: Vec<UboLink>,
        },
        MissingUbo {
            supplier: OpenedRecord,
        },
        NonMembership {
            set: String,
            field: String,
            list: String,
            items: Vec<NonMember>,
        },
        Membership {
            set: String,
            field: String,
            list: String,
            record: OpenedRecord,
            key: String,
            entry: ListEntry,
        },
    }

    #[test]
    fn evidence_decoding_is_as_strict_as_the_tagged_derive() {
        let rec = || OpenedRecord {
            index: 1,
            record: json!({"id": "S1", "name": "A"}),
            proof: vec![[0; 32]],
        };
        let le = |i: u64, v: &str| ListEntry {
            index: i,
            value: v.into(),
            proof: vec![],
        };
        let all = vec![
            Evidence::Count {
                set: "suppliers".into(),
                count: 3,
                size_proof: None,
            },
            Evidence::Count {
                set: "suppliers".into(),
                count: 3,
                size_proof: Some(vec![rec(), rec()]),
            },
            Evidence::Values {
                set: "s".into(),
                field: "f".into(),
                checked: 2,
                witnesses: vec![rec(), rec()],
            },
            Evidence::Violation {
                set: "s".into(),
                field: "f".into(),
                record: rec(),
            },
            Evidence::UboLinks {
                links: vec![UboLink {
                    supplier: rec(),
                    ubo: rec(),
                }],
            },
            Evidence::MissingUbo { supplier: rec() },
            Evidence::NonMembership {
                set: "s".into(),
                field: "f".into(),
                list: "l".into(),
                items: vec![NonMember {
                    record: rec(),
                    key: "k".into(),
                    lower: None,
                    upper: Some(le(0, "z")),
                }],
            },
            Evidence::Membership {
                set: "s".into(),
                field: "f".into(),
                list: "l".into(),
                record: rec(),
                key: "k".into(),
                entry: le(2, "k"),
            },
        ];
        let extra: Vec<(&str, Value)> = vec![
            ("set", json!("s")),
            ("count", json!(1)),
            ("field", json!("f")),
            ("checked", json!(1)),
            ("witnesses", json!([])),
            ("record", serde_json::to_value(rec()).unwrap()),
            ("links", json!([])),
            ("supplier", serde_json::to_value(rec()).unwrap()),
            ("list", json!("l")),
            ("items", json!([])),
            ("key", json!("k")),
            ("entry", serde_json::to_value(le(0, "a")).unwrap()),
            ("size_proof", json!([])),
            ("other", json!(1)),
        ];
        let same = |v: &Value| {
            let text = v.to_string();
            let ours = serde_json::from_str::<Evidence>(&text);
            let theirs = serde_json::from_str::<Reference>(&text);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{text}: {ours:?} vs {theirs:?}"
            );
            if let Ok(e) = ours {
                assert_eq!(
                    serde_json::to_value(&e).unwrap(),
                    *v,
                    "round trip of {text}"
                );
            }
        };
        let mut checked = 0;
        for e in &all {
            let v = serde_json::to_value(e).unwrap();
            assert!(serde_json::from_value::<Evidence>(v.clone()).unwrap() == *e);
            same(&v);
            let Value::Object(m) = &v else { panic!() };
            for (k, _) in m.iter() {
                // Each member missing, null, or of the wrong type.
                let mut w = m.clone();
                w.remove(k);
                same(&Value::Object(w));
                for bad in [Value::Null, json!(true), json!("x"), json!(-1)] {
                    let mut w = m.clone();
                    w.insert(k.clone(), bad);
                    same(&Value::Object(w));
                }
            }
            for (k, x) in &extra {
                let mut w = m.clone();
                w.insert(k.to_string(), x.clone());
                same(&Value::Object(w));
                checked += 1;
            }
            let mut w = m.clone();
            w.insert("type".into(), json!("counts"));
            same(&Value::Object(w));
        }
        assert_eq!(checked, all.len() * extra.len());
        same(&json!(null));
        same(&json!({}));
        same(&json!("count"));
        // Stricter than the derive on one point: the array form (the members in declaration
        // order, which serde's derives accept and no writer produces) is refused.
        for a in [json!([]), json!(["count", "suppliers", 3])] {
            assert!(
                serde_json::from_value::<Evidence>(a.clone()).is_err(),
                "{a}"
            );
        }
        assert!(serde_json::from_value::<Reference>(json!(["count", "suppliers", 3])).is_ok());
    }

    fn tree(n: usize) -> (Vec<Value>, Vec<Hash>, Hash) {
        let recs: Vec<Value> = (0..n).map(|i| json!({"id": format!("S{i}")})).collect();
        let leaves: Vec<Hash> = recs
            .iter()
            .map(|r| merkle::leaf_hash(&canon::canonical(r).unwrap()))
            .collect();
        let root = merkle::root(&leaves);
        (recs, leaves, root)
    }

    fn opened(recs: &[Value], i: u64, proof: Vec<Hash>) -> OpenedRecord {
        OpenedRecord {
            index: i,
            record: recs[i as usize].clone(),
            proof,
        }
    }

    #[test]
    fn size_proof_indices_are_the_left_subtrees_first_leaves_and_the_last_leaf() {
        assert_eq!(size_proof_indices(0), Vec::<u64>::new());
        assert_eq!(size_proof_indices(1), vec![0]);
        assert_eq!(size_proof_indices(2), vec![0, 1]);
        assert_eq!(size_proof_indices(3), vec![0, 2]);
        assert_eq!(size_proof_indices(6), vec![0, 4, 5]);
        assert_eq!(size_proof_indices(7), vec![0, 4, 6]);
        assert_eq!(size_proof_indices(8), vec![0, 4, 6, 7]);
        // Every true size proof of every small tree verifies; for every other claimed size,
        // the real records' openings do not.
        for n in 0..=40usize {
            let (recs, leaves, root) = tree(n);
            let honest: Vec<OpenedRecord> = size_proof_indices(n as u64)
                .into_iter()
                .map(|i| opened(&recs, i, merkle::inclusion_proof(&leaves, i as usize)))
                .collect();
            check_size(&root, n as u64, &honest).unwrap();
            for claim in 0..=48u64 {
                if claim == n as u64 {
                    continue;
                }
                let forged: Vec<OpenedRecord> = size_proof_indices(claim)
                    .into_iter()
                    .filter(|i| (*i as usize) < n)
                    .map(|i| opened(&recs, i, merkle::inclusion_proof(&leaves, i as usize)))
                    .collect();
                assert!(
                    check_size(&root, claim, &forged).is_err(),
                    "n={n} claim={claim}"
                );
            }
        }
    }

    /// Why the last leaf alone is not enough: in a 7-leaf tree, leaf 6 with the siblings
    /// [MTH(4..6), MTH(0..4)] is a valid RFC 9162 proof for index 5 of a 6-leaf tree, and leaf 0
    /// passes as index 0 of 6 too. The size proof also needs index 4, the first leaf of the
    /// 2-leaf subtree, which would have to be a leaf hash equal to the node MTH(4..6).
    #[test]
    fn a_seven_leaf_root_cannot_be_passed_off_as_six() {
        let (recs, leaves, root) = tree(7);
        let last = OpenedRecord {
            index: 5,
            record: recs[6].clone(),
            proof: vec![merkle::root(&leaves[4..6]), merkle::root(&leaves[..4])],
        };
        last.verify(&root, 6)
            .expect("the naive last-leaf check is fooled");
        let first = OpenedRecord {
            index: 0,
            record: recs[0].clone(),
            proof: vec![
                leaves[1],
                merkle::root(&leaves[2..4]),
                merkle::root(&leaves[4..7]),
            ],
        };
        first.verify(&root, 6).expect("so is the first leaf");
        for fourth in [4usize, 5] {
            let mid = OpenedRecord {
                index: 4,
                record: recs[fourth].clone(),
                proof: vec![leaves[9 - fourth], merkle::root(&leaves[..4])],
            };
            let err = check_size(&root, 6, &[first.clone(), mid, last.clone()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("record 4"), "{err}");
        }
        // The true size passes.
        let honest: Vec<OpenedRecord> = size_proof_indices(7)
            .into_iter()
            .map(|i| opened(&recs, i, merkle::inclusion_proof(&leaves, i as usize)))
            .collect();
        check_size(&root, 7, &honest).unwrap();
        // An empty claim needs the empty tree's root.
        assert!(check_size(&root, 0, &[]).is_err());
        check_size(&merkle::root(&[]), 0, &[]).unwrap();
    }
}
