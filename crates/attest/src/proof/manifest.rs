//! The manifest (policy hash and the roots of every committed set and list) and sorted lists.

use super::*;

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
    pub fn from_csv(name: &str, path: &Path) -> Result<SortedList, ProofError> {
        let mut r = csv::Reader::from_path(path).map_err(|e| crate::FileError::new(path, e))?;
        let h = r
            .headers()
            .map_err(|e| crate::FileError::new(path, e))?
            .clone();
        let col = h.iter().position(|c| c.trim() == "name").unwrap_or(0);
        let mut keys = Vec::new();
        for row in r.records() {
            let row = row.map_err(|e| crate::FileError::new(path, e))?;
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

    pub(super) fn entry(&self, leaves: &[Hash], i: usize) -> ListEntry {
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

    pub(super) fn root_of(&self, set: &str) -> Result<(Hash, u64), ProofError> {
        let r = self
            .sets
            .get(set)
            .ok_or_else(|| ProofError::Invalid(format!("manifest has no set `{set}`")))?;
        Ok((
            parse_hex32(&r.root).ok_or("manifest root is not hex")?,
            r.count,
        ))
    }

    pub(super) fn list_root(&self, list: &str) -> Result<(Hash, u64), ProofError> {
        let r = self
            .lists
            .get(list)
            .ok_or_else(|| ProofError::Invalid(format!("manifest has no list `{list}`")))?;
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
) -> Result<Manifest, ProofError> {
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
            return Err(ProofError::Invalid(format!(
                "policy `{}` needs set `{s}`, which was not prepared (run `fieldlab cap prepare`)",
                ir.id
            )));
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
