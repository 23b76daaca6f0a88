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

/// A public list (e.g. sanctions) as a sorted, de-duplicated set of normalised keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortedList {
    pub format: String,
    pub name: String,
    pub entries: Vec<String>,
}

impl SortedList {
    pub fn new(name: &str, keys: impl IntoIterator<Item = String>) -> SortedList {
        let set: BTreeSet<String> = keys
            .into_iter()
            .map(|k| normalise(&k))
            .filter(|k| !k.is_empty())
            .collect();
        SortedList {
            format: LIST_FORMAT.into(),
            name: name.into(),
            entries: set.into_iter().collect(),
        }
    }

    /// From a CSV file: the `name` column if there is one, else the first column.
    pub fn from_csv(name: &str, path: &Path) -> Result<SortedList, String> {
        let mut r = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let h = r
            .headers()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .clone();
        let col = h.iter().position(|c| c.trim() == "name").unwrap_or(0);
        let mut keys = Vec::new();
        for row in r.records() {
            let row = row.map_err(|e| format!("{}: {e}", path.display()))?;
            keys.push(row.get(col).unwrap_or("").to_string());
        }
        Ok(SortedList::new(name, keys))
    }

    pub fn leaves(&self) -> Vec<Hash> {
        self.entries
            .iter()
            .map(|e| merkle::leaf_hash(e.as_bytes()))
            .collect()
    }

    pub fn root(&self) -> Root {
        Root {
            count: self.entries.len() as u64,
            root: hex32(&merkle::root(&self.leaves())),
        }
    }

    fn entry(&self, leaves: &[Hash], i: usize) -> ListEntry {
        ListEntry {
            index: i as u64,
            value: self.entries[i].clone(),
            proof: merkle::inclusion_proof(leaves, i),
        }
    }
}

/// Root and leaf count of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    pub count: u64,
    pub root: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    pub id: String,
    pub hash: String,
}

/// What a proof is about: the policy and the roots of every committed set and list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub created: String,
    pub policy: PolicyRef,
    pub sets: BTreeMap<String, Root>,
    pub lists: BTreeMap<String, Root>,
}

impl Manifest {
    pub fn hash(&self) -> String {
        hex32(&canon::sha256_canonical(self).expect("manifest encodes"))
    }

    fn root_of(&self, set: &str) -> Result<(Hash, u64), String> {
        let r = self
            .sets
            .get(set)
            .ok_or_else(|| format!("manifest has no set `{set}`"))?;
        Ok((
            parse_hex32(&r.root).ok_or("manifest root is not hex")?,
            r.count,
        ))
    }

    fn list_root(&self, list: &str) -> Result<(Hash, u64), String> {
        let r = self
            .lists
            .get(list)
            .ok_or_else(|| format!("manifest has no list `{list}`"))?;
        Ok((
            parse_hex32(&r.root).ok_or("manifest list root is not hex")?,
            r.count,
        ))
    }
}

/// Build the manifest of a workspace for a policy; lists the policy needs must be given.
pub fn build_manifest(
    ws: &Workspace,
    ir: &PolicyIr,
    lists: &BTreeMap<String, SortedList>,
) -> Result<Manifest, String> {
    let c = ws.commitments()?;
    let mut need_sets = BTreeSet::new();
    for r in &ir.rules {
        if let Some(s) = &r.set {
            need_sets.insert(s.clone());
        }
        if r.op == "require_at_least_one_ubo" {
            need_sets.insert("suppliers".into());
            need_sets.insert("ubos".into());
        }
    }
    for s in &need_sets {
        if !c.sets.contains_key(s) {
            return Err(format!(
                "policy `{}` needs set `{s}`, which was not prepared (run `fieldlab cap prepare`)",
                ir.id
            ));
        }
    }
    let mut ls = BTreeMap::new();
    for l in ir.lists() {
        let list = lists.get(&l).ok_or_else(|| {
            format!(
                "policy `{}` needs list `{l}`; pass --list {l}=FILE.csv",
                ir.id
            )
        })?;
        ls.insert(l, list.root());
    }
    Ok(Manifest {
        format: MANIFEST_FORMAT.into(),
        created: crate::now_rfc3339(),
        policy: PolicyRef {
            id: ir.id.clone(),
            hash: ir.hash(),
        },
        sets: c
            .sets
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Root {
                        count: v.count,
                        root: v.root.clone(),
                    },
                )
            })
            .collect(),
        lists: ls,
    })
}

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
    fn verify(&self, root: &Hash, size: u64) -> Result<(), String> {
        if merkle::verify_inclusion(
            &merkle::leaf_hash(self.value.as_bytes()),
            self.index,
            size,
            &self.proof,
            root,
        ) {
            Ok(())
        } else {
            Err(format!(
                "list entry {} `{}` is not in the committed list",
                self.index, self.value
            ))
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
    pub lower: Option<ListEntry>,
    pub upper: Option<ListEntry>,
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
    /// The committed count of a set.
    Count { set: String, count: u64 },
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
struct EvidenceFields {
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
}

/// [`EvidenceFields`] from a JSON object only (serde's derives would also take an array of
/// the members in declaration order, which no writer produces).
struct EvidenceWire(EvidenceFields);

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
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl TryFrom<EvidenceWire> for Evidence {
    type Error = String;

    fn try_from(w: EvidenceWire) -> Result<Evidence, String> {
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
        } = w.0;
        // Take the variant's members (each must be there), then insist nothing is left.
        fn take<T>(v: &mut Option<T>, kind: &str, name: &str) -> Result<T, String> {
            v.take()
                .ok_or_else(|| format!("{kind} evidence: missing field `{name}`"))
        }
        let k = kind.as_str();
        let e = match k {
            "count" => Evidence::Count {
                set: take(&mut set, k, "set")?,
                count: take(&mut count, k, "count")?,
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
            other => return Err(format!("unknown evidence type `{other}`")),
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
        ];
        if let Some((name, _)) = left.iter().find(|(_, there)| *there) {
            return Err(format!("{k} evidence: unknown field `{name}`"));
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

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn json_eq(a: &Value, b: &Value) -> bool {
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

fn key_of_value(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => normalise(s),
        Some(v) if !v.is_null() => normalise(&v.to_string()),
        _ => String::new(),
    }
}

fn field<'a>(r: &'a Value, f: &str) -> Option<&'a Value> {
    r.get(f)
}

fn key_of(r: &Value, f: &str) -> String {
    key_of_value(r.get(f))
}

/// Evaluate every rule of `ir` over the workspace; the proof refers to `manifest`.
pub fn build_proof(
    ws: &Workspace,
    ir: &PolicyIr,
    manifest: &Manifest,
    lists: &BTreeMap<String, SortedList>,
) -> Result<Proof, String> {
    if manifest.policy.hash != ir.hash() {
        return Err(format!(
            "manifest is for policy hash {}, not this policy ({}); rebuild the manifest",
            manifest.policy.hash,
            ir.hash()
        ));
    }
    let mut sets: BTreeMap<String, RecordSet> = BTreeMap::new();
    let load = |name: &str, sets: &mut BTreeMap<String, RecordSet>| -> Result<(), String> {
        if !sets.contains_key(name) {
            let rs = ws.load_set(name)?;
            let (root, count) = manifest.root_of(name)?;
            if rs.root() != root || rs.records.len() as u64 != count {
                return Err(format!(
                    "set `{name}` changed since the manifest was built; rebuild the manifest"
                ));
            }
            sets.insert(name.into(), rs);
        }
        Ok(())
    };
    let mut results = Vec::new();
    for rule in &ir.rules {
        let evidence = match rule.op.as_str() {
            "count_min" | "count_max" => {
                let set = rule.set.clone().unwrap_or_default();
                let (_, count) = manifest.root_of(&set)?;
                Evidence::Count { set, count }
            }
            "require_at_least_one_ubo" => {
                load("suppliers", &mut sets)?;
                load("ubos", &mut sets)?;
                let (s, u) = (&sets["suppliers"], &sets["ubos"]);
                let mut first_ubo: BTreeMap<String, usize> = BTreeMap::new();
                for (i, r) in u.records.iter().enumerate() {
                    if let Some(sid) = r.get("supplier_id").and_then(Value::as_str) {
                        first_ubo.entry(sid.to_string()).or_insert(i);
                    }
                }
                let mut links = Vec::new();
                let mut missing = None;
                for (i, r) in s.records.iter().enumerate() {
                    let id = r.get("id").and_then(Value::as_str).unwrap_or("");
                    match first_ubo.get(id) {
                        Some(&j) => links.push(UboLink {
                            supplier: s.open(i),
                            ubo: u.open(j),
                        }),
                        None => {
                            missing = Some(s.open(i));
                            break;
                        }
                    }
                }
                match missing {
                    Some(supplier) => Evidence::MissingUbo { supplier },
                    None => Evidence::UboLinks { links },
                }
            }
            "non_membership" => {
                let set = rule.set.clone().unwrap_or_default();
                let f = rule.field.clone().unwrap_or_default();
                let ln = rule.list.clone().unwrap_or_default();
                load(&set, &mut sets)?;
                let list = lists
                    .get(&ln)
                    .ok_or_else(|| format!("list `{ln}` is not available"))?;
                if list.root()
                    != *manifest
                        .lists
                        .get(&ln)
                        .ok_or_else(|| format!("manifest has no list `{ln}`"))?
                {
                    return Err(format!("list `{ln}` differs from the one in the manifest"));
                }
                let leaves = list.leaves();
                let rs = &sets[&set];
                let mut items = Vec::new();
                let mut member = None;
                for (i, r) in rs.records.iter().enumerate() {
                    let key = key_of(r, &f);
                    if !holds(rule, r.get(&f)) {
                        // Nothing to screen: the record fails the rule (unless `missing: allow`).
                        member = Some(Evidence::Violation {
                            set: set.clone(),
                            field: f.clone(),
                            record: rs.open(i),
                        });
                        break;
                    }
                    let p = list.entries.partition_point(|e| e.as_str() < key.as_str());
                    if p < list.entries.len() && list.entries[p] == key {
                        member = Some(Evidence::Membership {
                            set: set.clone(),
                            field: f.clone(),
                            list: ln.clone(),
                            record: rs.open(i),
                            key,
                            entry: list.entry(&leaves, p),
                        });
                        break;
                    }
                    items.push(NonMember {
                        record: rs.open(i),
                        key,
                        lower: (p > 0).then(|| list.entry(&leaves, p - 1)),
                        upper: (p < list.entries.len()).then(|| list.entry(&leaves, p)),
                    });
                }
                member.unwrap_or(Evidence::NonMembership {
                    set,
                    field: f,
                    list: ln,
                    items,
                })
            }
            _ => {
                let set = rule.set.clone().unwrap_or_default();
                let f = rule.field.clone().unwrap_or_default();
                load(&set, &mut sets)?;
                let rs = &sets[&set];
                match rs.records.iter().position(|r| !holds(rule, field(r, &f))) {
                    Some(i) => Evidence::Violation {
                        set,
                        field: f,
                        record: rs.open(i),
                    },
                    None => {
                        let mut w = BTreeSet::new();
                        if !rs.records.is_empty() {
                            w.insert(0);
                            if rule.op.starts_with("range") {
                                let v = |i: &usize| {
                                    field(&rs.records[*i], &f).and_then(num).unwrap_or(0.0)
                                };
                                let idx: Vec<usize> = (0..rs.records.len()).collect();
                                w.clear();
                                w.insert(*idx.iter().min_by(|a, b| v(a).total_cmp(&v(b))).unwrap());
                                w.insert(*idx.iter().max_by(|a, b| v(a).total_cmp(&v(b))).unwrap());
                            }
                        }
                        Evidence::Values {
                            set,
                            field: f,
                            checked: rs.records.len() as u64,
                            witnesses: w.into_iter().map(|i| rs.open(i)).collect(),
                        }
                    }
                }
            }
        };
        let status = status_of(rule, &evidence);
        results.push(RuleResult {
            rule: rule.id.clone(),
            op: rule.op.clone(),
            status,
            evidence,
        });
    }
    let status = if results.iter().all(|r| r.status == Status::Pass) {
        Status::Pass
    } else {
        Status::Fail
    };
    Ok(Proof {
        format: PROOF_FORMAT.into(),
        manifest_hash: manifest.hash(),
        policy_hash: ir.hash(),
        status,
        results,
    })
}

/// The status that a piece of evidence implies for a rule (before checking the evidence).
fn status_of(rule: &Rule, e: &Evidence) -> Status {
    let pass = match e {
        Evidence::Count { count, .. } => {
            let v = rule.value.as_ref().and_then(Value::as_u64).unwrap_or(0);
            if rule.op == "count_min" {
                *count >= v
            } else {
                *count <= v
            }
        }
        Evidence::Values { .. } | Evidence::UboLinks { .. } | Evidence::NonMembership { .. } => {
            true
        }
        Evidence::Violation { .. } | Evidence::MissingUbo { .. } | Evidence::Membership { .. } => {
            false
        }
    };
    if pass {
        Status::Pass
    } else {
        Status::Fail
    }
}

/// One line of a verification report.
#[derive(Debug, Clone, Serialize)]
pub struct RuleCheck {
    pub rule: String,
    pub status: Status,
    /// `verified` (the evidence proves it) or `attested` (the signer vouches for it).
    pub basis: &'static str,
    pub detail: String,
}

fn expect_kind(rule: &Rule, e: &Evidence) -> bool {
    matches!(
        (rule.op.as_str(), e),
        ("count_min" | "count_max", Evidence::Count { .. })
            | (
                "require_at_least_one_ubo",
                Evidence::UboLinks { .. } | Evidence::MissingUbo { .. }
            )
            | (
                "non_membership",
                Evidence::NonMembership { .. }
                    | Evidence::Membership { .. }
                    | Evidence::Violation { .. }
            )
            | (
                "eq" | "ne" | "one_of" | "range_min" | "range_max" | "range",
                Evidence::Values { .. } | Evidence::Violation { .. }
            )
    )
}

/// Verify a proof against its manifest and compiled policy: hashes bind them, every rule has a
/// result in order, every piece of evidence checks out against the manifest's roots, and every
/// claimed status follows from its evidence.
pub fn verify_proof(
    ir: &PolicyIr,
    manifest: &Manifest,
    proof: &Proof,
) -> Result<Vec<RuleCheck>, String> {
    verify_proof_hashed(ir, &ir.hash(), manifest, &manifest.hash(), proof)
}

/// [`verify_proof`] with the IR and manifest hashes already computed by the caller (the bundle
/// verifier needs them too; each is a canonical encoding plus SHA-256).
pub fn verify_proof_hashed(
    ir: &PolicyIr,
    ir_hash: &str,
    manifest: &Manifest,
    manifest_hash: &str,
    proof: &Proof,
) -> Result<Vec<RuleCheck>, String> {
    if proof.format != PROOF_FORMAT
        || manifest.format != MANIFEST_FORMAT
        || ir.format != crate::policy::IR_FORMAT
    {
        return Err("unknown proof, manifest or policy IR format".into());
    }
    let ph = ir_hash;
    if manifest.policy.hash != ph || proof.policy_hash != ph || manifest.policy.id != ir.id {
        return Err(format!(
            "policy hash mismatch: IR {ph}, manifest {}, proof {}",
            manifest.policy.hash, proof.policy_hash
        ));
    }
    if proof.manifest_hash != manifest_hash {
        return Err(format!(
            "proof refers to manifest {}, but the manifest hashes to {manifest_hash}",
            proof.manifest_hash,
        ));
    }
    if proof.results.len() != ir.rules.len() {
        return Err(format!(
            "policy has {} rules, proof has {} results",
            ir.rules.len(),
            proof.results.len()
        ));
    }
    let mut out = Vec::new();
    for (rule, res) in ir.rules.iter().zip(&proof.results) {
        let ctx = |m: String| format!("rule `{}`: {m}", rule.id);
        if res.rule != rule.id || res.op != rule.op || !expect_kind(rule, &res.evidence) {
            return Err(ctx(format!(
                "result is for `{}` ({}) with {} evidence",
                res.rule,
                res.op,
                evidence_name(&res.evidence)
            )));
        }
        let implied = status_of(rule, &res.evidence);
        if implied != res.status {
            return Err(ctx(format!(
                "claims {:?} but its evidence implies {:?}",
                res.status, implied
            )));
        }
        let (basis, detail) = check_evidence(rule, manifest, &res.evidence).map_err(ctx)?;
        out.push(RuleCheck {
            rule: rule.id.clone(),
            status: res.status,
            basis,
            detail,
        });
    }
    let overall = if out.iter().all(|c| c.status == Status::Pass) {
        Status::Pass
    } else {
        Status::Fail
    };
    if overall != proof.status {
        return Err(format!(
            "proof claims overall {:?}, its rules give {:?}",
            proof.status, overall
        ));
    }
    Ok(out)
}

fn evidence_name(e: &Evidence) -> &'static str {
    match e {
        Evidence::Count { .. } => "count",
        Evidence::Values { .. } => "values",
        Evidence::Violation { .. } => "violation",
        Evidence::UboLinks { .. } => "ubo_links",
        Evidence::MissingUbo { .. } => "missing_ubo",
        Evidence::NonMembership { .. } => "non_membership",
        Evidence::Membership { .. } => "membership",
    }
}

fn check_evidence(
    rule: &Rule,
    m: &Manifest,
    e: &Evidence,
) -> Result<(&'static str, String), String> {
    let same = |a: &Option<String>, b: &str| a.as_deref() == Some(b);
    match e {
        Evidence::Count { set, count } => {
            let (_, c) = m.root_of(set)?;
            if !same(&rule.set, set) || c != *count {
                return Err(format!(
                    "count {count} of `{set}` does not match the manifest ({c})"
                ));
            }
            Ok(("verified", format!("{set} has {count} records")))
        }
        Evidence::Values {
            set,
            field,
            checked,
            witnesses,
        } => {
            let (root, c) = m.root_of(set)?;
            if !same(&rule.set, set) || !same(&rule.field, field) || *checked != c {
                return Err(format!(
                    "checked {checked} records of `{set}`.{field}, the manifest has {c}"
                ));
            }
            if c > 0 && witnesses.is_empty() {
                return Err("no witness records".into());
            }
            for w in witnesses {
                w.verify(&root, c)?;
                if !holds(rule, w.record.get(field)) {
                    return Err(format!(
                        "witness record {} does not satisfy the rule",
                        w.index
                    ));
                }
            }
            Ok((
                "attested",
                format!(
                    "all {c} records of {set}.{field} satisfy {}; {} witness(es) verified",
                    rule.op,
                    witnesses.len()
                ),
            ))
        }
        Evidence::Violation { set, field, record } => {
            let (root, c) = m.root_of(set)?;
            if !same(&rule.set, set) || !same(&rule.field, field) {
                return Err("violation refers to another set or field".into());
            }
            record.verify(&root, c)?;
            if holds(rule, record.record.get(field)) {
                return Err(format!(
                    "record {} is said to violate the rule but satisfies it",
                    record.index
                ));
            }
            Ok((
                "verified",
                format!(
                    "record {} of {set} violates it: {field} = {}",
                    record.index,
                    record
                        .record
                        .get(field)
                        .map_or("(missing)".into(), Value::to_string)
                ),
            ))
        }
        Evidence::UboLinks { links } => {
            let (sr, sc) = m.root_of("suppliers")?;
            let (ur, uc) = m.root_of("ubos")?;
            let mut seen = BTreeSet::new();
            for l in links {
                l.supplier.verify(&sr, sc)?;
                l.ubo.verify(&ur, uc)?;
                let sid = l.supplier.record.get("id").and_then(Value::as_str);
                if sid.is_none() || sid != l.ubo.record.get("supplier_id").and_then(Value::as_str) {
                    return Err(format!(
                        "UBO {} does not belong to supplier {}",
                        l.ubo.index, l.supplier.index
                    ));
                }
                seen.insert(l.supplier.index);
            }
            if seen.len() as u64 != sc {
                return Err(format!(
                    "{} of {sc} suppliers are linked to a UBO",
                    seen.len()
                ));
            }
            Ok(("verified", format!("each of {sc} suppliers has a UBO")))
        }
        Evidence::MissingUbo { supplier } => {
            let (sr, sc) = m.root_of("suppliers")?;
            supplier.verify(&sr, sc)?;
            Ok((
                "attested",
                format!("supplier {} has no UBO", supplier.index),
            ))
        }
        Evidence::NonMembership {
            set,
            field,
            list,
            items,
        } => {
            let (root, c) = m.root_of(set)?;
            let (lr, lc) = m.list_root(list)?;
            if !same(&rule.set, set) || !same(&rule.field, field) || !same(&rule.list, list) {
                return Err("evidence refers to another set, field or list".into());
            }
            let mut seen = BTreeSet::new();
            for it in items {
                it.record.verify(&root, c)?;
                if !holds(rule, it.record.record.get(field.as_str())) {
                    return Err(format!(
                        "record {} has no `{field}` to screen: it cannot pass the rule (a policy may say `missing: allow`)",
                        it.record.index
                    ));
                }
                if key_of(&it.record.record, field) != it.key {
                    return Err(format!(
                        "record {}: key `{}` is not its normalised {field}",
                        it.record.index, it.key
                    ));
                }
                check_gap(&it.key, it.lower.as_ref(), it.upper.as_ref(), &lr, lc)
                    .map_err(|m| format!("record {}: {m}", it.record.index))?;
                seen.insert(it.record.index);
            }
            if seen.len() as u64 != c {
                return Err(format!(
                    "{} of {c} records shown absent from `{list}`",
                    seen.len()
                ));
            }
            Ok((
                "verified",
                format!("none of {c} {set}.{field} values is among the {lc} entries of {list}"),
            ))
        }
        Evidence::Membership {
            set,
            field,
            list,
            record,
            key,
            entry,
        } => {
            let (root, c) = m.root_of(set)?;
            let (lr, lc) = m.list_root(list)?;
            record.verify(&root, c)?;
            entry.verify(&lr, lc)?;
            if key_of(&record.record, field) != *key || entry.value != *key {
                return Err("membership evidence keys do not match".into());
            }
            Ok((
                "verified",
                format!(
                    "record {} of {set} (`{key}`) is entry {} of {list}",
                    record.index, entry.index
                ),
            ))
        }
    }
}

/// `key` lies strictly between two adjacent entries of the sorted list (or before the first /
/// after the last).
fn check_gap(
    key: &str,
    lo: Option<&ListEntry>,
    hi: Option<&ListEntry>,
    root: &Hash,
    size: u64,
) -> Result<(), String> {
    match (lo, hi) {
        (None, None) if size == 0 => Ok(()),
        (None, Some(h)) if h.index == 0 => {
            h.verify(root, size)?;
            (key < h.value.as_str())
                .then_some(())
                .ok_or_else(|| "key is not before the first entry".into())
        }
        (Some(l), None) if l.index + 1 == size => {
            l.verify(root, size)?;
            (l.value.as_str() < key)
                .then_some(())
                .ok_or_else(|| "key is not after the last entry".into())
        }
        (Some(l), Some(h)) if l.index + 1 == h.index => {
            l.verify(root, size)?;
            h.verify(root, size)?;
            (l.value.as_str() < key && key < h.value.as_str())
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "`{key}` is not strictly between `{}` and `{}`",
                        l.value, h.value
                    )
                })
        }
        _ => Err("neighbours are not adjacent entries of the list".into()),
    }
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
}
