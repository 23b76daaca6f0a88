//! The proof's wire format: statuses, evidence of each kind and its strict decoder, results.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
}

/// An entry of a sorted list with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListEntry {
    pub index: u64,
    pub value: String,
    /// The audit path, leaf to root (hex in JSON).
    #[serde(with = "crate::canon::hex_hashes")]
    pub proof: Vec<Hash>,
}

impl ListEntry {
    pub(super) fn verify(&self, root: &Hash, size: u64) -> Result<(), ProofError> {
        if merkle::verify_leaf(self.value.as_bytes(), self.index, size, &self.proof, root) {
            Ok(())
        } else {
            Err(ProofError::Invalid(format!(
                "list entry {} `{}` is not in the committed list",
                self.index, self.value
            )))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UboLink {
    pub supplier: OpenedRecord,
    pub ubo: OpenedRecord,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonMember {
    pub record: OpenedRecord,
    pub key: String,
    /// The neighbours of `key` in the list; one without a neighbour on that side is written as
    /// `null` (the member itself must be there: one encoding per proof).
    #[serde(deserialize_with = "nullable")]
    pub lower: Option<ListEntry>,
    #[serde(deserialize_with = "nullable")]
    pub upper: Option<ListEntry>,
}

/// An `Option` member that must be present, as a value or `null`.
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

/// What a rule's result rests on.
///
/// Encoded as an object whose `type` member names the variant (serde's internally tagged
/// form). Decoded through `EvidenceWire` instead of serde's derive for tagged enums, which
/// first buffers the whole object (every witness record and proof hash) in an untyped tree
/// because `type` sorts after other members in canonical JSON; the decoding is just as
/// strict: the variant's members, all present, nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "EvidenceWire")]
pub enum Evidence {
    /// The committed count of a set. `size_proof` (absent in bundles made before it existed)
    /// opens the records at [`size_proof_indices`]`(count)`, each against a tree of exactly
    /// `count` leaves, which binds the count to the root (docs/formats.md §5); without it the
    /// count is only the signer's claim.
    Count {
        set: String,
        count: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        size_proof: Option<Vec<OpenedRecord>>,
    },
    /// Every record was checked; witnesses are the extreme (or first) records, opened.
    Values {
        set: String,
        field: String,
        checked: u64,
        witnesses: Vec<OpenedRecord>,
    },
    /// A record that violates the rule, opened.
    Violation {
        set: String,
        field: String,
        record: OpenedRecord,
    },
    /// Every supplier opened together with one of its UBOs, opened.
    UboLinks { links: Vec<UboLink> },
    /// A supplier without any UBO (attested: absence cannot be shown without the UBO list).
    MissingUbo { supplier: OpenedRecord },
    /// Every record's key shown absent from the sorted list.
    NonMembership {
        set: String,
        field: String,
        list: String,
        items: Vec<NonMember>,
    },
    /// A record whose key is in the list.
    Membership {
        set: String,
        field: String,
        list: String,
        record: OpenedRecord,
        key: String,
        entry: ListEntry,
    },
}

/// Every member any [`Evidence`] variant has (each name has one type across variants), for
/// decoding in one pass. `null` is refused for all of them, as the tagged enum refuses it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EvidenceFields {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, deserialize_with = "present")]
    set: Option<String>,
    #[serde(default, deserialize_with = "present")]
    count: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    field: Option<String>,
    #[serde(default, deserialize_with = "present")]
    checked: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    witnesses: Option<Vec<OpenedRecord>>,
    #[serde(default, deserialize_with = "present")]
    record: Option<OpenedRecord>,
    #[serde(default, deserialize_with = "present")]
    links: Option<Vec<UboLink>>,
    #[serde(default, deserialize_with = "present")]
    supplier: Option<OpenedRecord>,
    #[serde(default, deserialize_with = "present")]
    list: Option<String>,
    #[serde(default, deserialize_with = "present")]
    items: Option<Vec<NonMember>>,
    #[serde(default, deserialize_with = "present")]
    key: Option<String>,
    #[serde(default, deserialize_with = "present")]
    entry: Option<ListEntry>,
    #[serde(default, deserialize_with = "present")]
    size_proof: Option<Vec<OpenedRecord>>,
}

/// [`EvidenceFields`] from a JSON object only (serde's derives would also take an array of
/// the members in declaration order, which no writer produces).
pub(super) struct EvidenceWire(EvidenceFields);

impl<'de> Deserialize<'de> for EvidenceWire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EvidenceWire;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an evidence object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<EvidenceWire, A::Error> {
                EvidenceFields::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(EvidenceWire)
            }
        }
        d.deserialize_map(V)
    }
}

/// A member that is present (and not `null`).
pub(super) fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl TryFrom<EvidenceWire> for Evidence {
    type Error = ProofError;

    fn try_from(w: EvidenceWire) -> Result<Evidence, ProofError> {
        let EvidenceFields {
            kind,
            mut set,
            mut count,
            mut field,
            mut checked,
            mut witnesses,
            mut record,
            mut links,
            mut supplier,
            mut list,
            mut items,
            mut key,
            mut entry,
            mut size_proof,
        } = w.0;
        // Take the variant's members (each must be there), then insist nothing is left.
        fn take<T>(v: &mut Option<T>, kind: &str, name: &str) -> Result<T, ProofError> {
            v.take().ok_or_else(|| {
                ProofError::Invalid(format!("{kind} evidence: missing field `{name}`"))
            })
        }
        let k = kind.as_str();
        let e = match k {
            "count" => Evidence::Count {
                set: take(&mut set, k, "set")?,
                count: take(&mut count, k, "count")?,
                // Optional: bundles from before size proofs carry only the claimed count.
                size_proof: size_proof.take(),
            },
            "values" => Evidence::Values {
                set: take(&mut set, k, "set")?,
                field: take(&mut field, k, "field")?,
                checked: take(&mut checked, k, "checked")?,
                witnesses: take(&mut witnesses, k, "witnesses")?,
            },
            "violation" => Evidence::Violation {
                set: take(&mut set, k, "set")?,
                field: take(&mut field, k, "field")?,
                record: take(&mut record, k, "record")?,
            },
            "ubo_links" => Evidence::UboLinks {
                links: take(&mut links, k, "links")?,
            },
            "missing_ubo" => Evidence::MissingUbo {
                supplier: take(&mut supplier, k, "supplier")?,
            },
            "non_membership" => Evidence::NonMembership {
                set: take(&mut set, k, "set")?,
                field: take(&mut field, k, "field")?,
                list: take(&mut list, k, "list")?,
                items: take(&mut items, k, "items")?,
            },
            "membership" => Evidence::Membership {
                set: take(&mut set, k, "set")?,
                field: take(&mut field, k, "field")?,
                list: take(&mut list, k, "list")?,
                record: take(&mut record, k, "record")?,
                key: take(&mut key, k, "key")?,
                entry: take(&mut entry, k, "entry")?,
            },
            other => {
                return Err(ProofError::Invalid(format!(
                    "unknown evidence type `{other}`"
                )))
            }
        };
        let left = [
            ("set", set.is_some()),
            ("count", count.is_some()),
            ("field", field.is_some()),
            ("checked", checked.is_some()),
            ("witnesses", witnesses.is_some()),
            ("record", record.is_some()),
            ("links", links.is_some()),
            ("supplier", supplier.is_some()),
            ("list", list.is_some()),
            ("items", items.is_some()),
            ("key", key.is_some()),
            ("entry", entry.is_some()),
            ("size_proof", size_proof.is_some()),
        ];
        if let Some((name, _)) = left.iter().find(|(_, there)| *there) {
            return Err(ProofError::Invalid(format!(
                "{k} evidence: unknown field `{name}`"
            )));
        }
        Ok(e)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleResult {
    pub rule: String,
    pub op: String,
    pub status: Status,
    pub evidence: Evidence,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub format: String,
    pub manifest_hash: String,
    pub policy_hash: String,
    pub status: Status,
    pub results: Vec<RuleResult>,
}

/// The leaf indices whose openings prove that a tree has exactly `count` leaves: the first leaf
/// of each left subtree on the path from the root to the last leaf (one per set bit of
/// `count − 1`, largest first), then the last leaf `count − 1`. Empty for `count` 0.
///
/// Why these: an RFC 9162 inclusion proof of the last leaf alone does not fix the size (the
/// siblings on its path are opaque hashes: leaf 5 of a 6-leaf claim verifies against a 7-leaf
/// tree). Its opening fixes the length of the root's right spine; the opening of each left
/// subtree's first leaf fixes that subtree's height (its left spine ends in a leaf, which
/// `0x00`/`0x01` domain separation tells apart from a node). Those heights are the set bits of
/// `count − 1`, so for one root at most one count has a valid size proof.
pub fn size_proof_indices(count: u64) -> Vec<u64> {
    if count == 0 {
        return Vec::new();
    }
    let last = count - 1;
    let mut out = Vec::new();
    let mut start = 0u64;
    for bit in (0..64).rev() {
        if last & (1 << bit) != 0 {
            out.push(start);
            start += 1 << bit;
        }
    }
    out.push(last);
    out
}
