//! `build_proof`: every rule of the policy evaluated over the committed records, with evidence.

use super::*;

/// Evaluate every rule of `ir` over the workspace; the proof refers to `manifest`.
pub fn build_proof(
    ws: &Workspace,
    ir: &PolicyIr,
    manifest: &Manifest,
    lists: &BTreeMap<String, SortedList>,
) -> Result<Proof, ProofError> {
    if manifest.policy.hash != ir.hash() {
        return Err(ProofError::Invalid(format!(
            "manifest is for policy hash {}, not this policy ({}); rebuild the manifest",
            manifest.policy.hash,
            ir.hash()
        )));
    }
    let mut sets: BTreeMap<String, RecordSet> = BTreeMap::new();
    let load = |name: &str, sets: &mut BTreeMap<String, RecordSet>| -> Result<(), ProofError> {
        if !sets.contains_key(name) {
            let rs = ws.load_set(name)?;
            let (root, count) = manifest.root_of(name)?;
            if rs.root() != root || rs.records.len() as u64 != count {
                return Err(ProofError::Invalid(format!(
                    "set `{name}` changed since the manifest was built; rebuild the manifest"
                )));
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
                load(&set, &mut sets)?;
                let rs = &sets[&set];
                let count = rs.records.len() as u64;
                Evidence::Count {
                    size_proof: Some(
                        size_proof_indices(count)
                            .into_iter()
                            .map(|i| rs.open(i as usize))
                            .collect(),
                    ),
                    set,
                    count,
                }
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
                    .ok_or_else(|| ProofError::Invalid(format!("list `{ln}` is not available")))?;
                if list.root()
                    != *manifest.lists.get(&ln).ok_or_else(|| {
                        ProofError::Invalid(format!("manifest has no list `{ln}`"))
                    })?
                {
                    return Err(ProofError::Invalid(format!(
                        "list `{ln}` differs from the one in the manifest"
                    )));
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
