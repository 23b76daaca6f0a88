//! `verify_proof`: each rule's status re-derived from its evidence against the manifest's roots.

use super::*;

/// The status that a piece of evidence implies for a rule (before checking the evidence).
pub(super) fn status_of(rule: &Rule, e: &Evidence) -> Status {
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

pub(super) fn expect_kind(rule: &Rule, e: &Evidence) -> bool {
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
) -> Result<Vec<RuleCheck>, ProofError> {
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
) -> Result<Vec<RuleCheck>, ProofError> {
    if proof.format != PROOF_FORMAT
        || manifest.format != MANIFEST_FORMAT
        || ir.format != crate::policy::IR_FORMAT
    {
        return Err("unknown proof, manifest or policy IR format".into());
    }
    let ph = ir_hash;
    if manifest.policy.hash != ph || proof.policy_hash != ph || manifest.policy.id != ir.id {
        return Err(ProofError::Invalid(format!(
            "policy hash mismatch: IR {ph}, manifest {}, proof {}",
            manifest.policy.hash, proof.policy_hash
        )));
    }
    if proof.manifest_hash != manifest_hash {
        return Err(ProofError::Invalid(format!(
            "proof refers to manifest {}, but the manifest hashes to {manifest_hash}",
            proof.manifest_hash,
        )));
    }
    if proof.results.len() != ir.rules.len() {
        return Err(ProofError::Invalid(format!(
            "policy has {} rules, proof has {} results",
            ir.rules.len(),
            proof.results.len()
        )));
    }
    let mut out = Vec::new();
    for (rule, res) in ir.rules.iter().zip(&proof.results) {
        let ctx = |m: String| ProofError::Invalid(format!("rule `{}`: {m}", rule.id));
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
        let (basis, detail) =
            check_evidence(rule, manifest, &res.evidence).map_err(|e| ctx(e.to_string()))?;
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
        return Err(ProofError::Invalid(format!(
            "proof claims overall {:?}, its rules give {:?}",
            proof.status, overall
        )));
    }
    Ok(out)
}

pub(super) fn evidence_name(e: &Evidence) -> &'static str {
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

pub(super) fn check_evidence(
    rule: &Rule,
    m: &Manifest,
    e: &Evidence,
) -> Result<(&'static str, String), ProofError> {
    let same = |a: &Option<String>, b: &str| a.as_deref() == Some(b);
    match e {
        Evidence::Count {
            set,
            count,
            size_proof,
        } => {
            let (root, c) = m.root_of(set)?;
            if !same(&rule.set, set) || c != *count {
                return Err(ProofError::Invalid(format!(
                    "count {count} of `{set}` does not match the manifest ({c})"
                )));
            }
            let Some(opened) = size_proof else {
                return Ok((
                    "attested",
                    format!(
                        "{set} has {count} records (the signer's claim: this bundle carries no size proof binding the count to the root; re-export it with a current fieldlab for a verified count)"
                    ),
                ));
            };
            check_size(&root, c, opened).map_err(|e| {
                format!(
                    "the manifest's count {c} of `{set}` is not the size of its Merkle tree: {e}"
                )
            })?;
            Ok((
                "verified",
                format!(
                    "{set} has {count} records (tree size proven by {} opened record(s))",
                    opened.len()
                ),
            ))
        }
        Evidence::Values {
            set,
            field,
            checked,
            witnesses,
        } => {
            let (root, c) = m.root_of(set)?;
            if !same(&rule.set, set) || !same(&rule.field, field) || *checked != c {
                return Err(ProofError::Invalid(format!(
                    "checked {checked} records of `{set}`.{field}, the manifest has {c}"
                )));
            }
            if c > 0 && witnesses.is_empty() {
                return Err("no witness records".into());
            }
            for w in witnesses {
                w.verify(&root, c)?;
                if !holds(rule, w.record.get(field)) {
                    return Err(ProofError::Invalid(format!(
                        "witness record {} does not satisfy the rule",
                        w.index
                    )));
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
                return Err(ProofError::Invalid(format!(
                    "record {} is said to violate the rule but satisfies it",
                    record.index
                )));
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
                    return Err(ProofError::Invalid(format!(
                        "UBO {} does not belong to supplier {}",
                        l.ubo.index, l.supplier.index
                    )));
                }
                seen.insert(l.supplier.index);
            }
            if seen.len() as u64 != sc {
                return Err(ProofError::Invalid(format!(
                    "{} of {sc} suppliers are linked to a UBO",
                    seen.len()
                )));
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
                    return Err(ProofError::Invalid(format!(
                        "record {} has no `{field}` to screen: it cannot pass the rule (a policy may say `missing: allow`)",
                        it.record.index
                    )));
                }
                if key_of(&it.record.record, field) != it.key {
                    return Err(ProofError::Invalid(format!(
                        "record {}: key `{}` is not its normalised {field}",
                        it.record.index, it.key
                    )));
                }
                check_gap(&it.key, it.lower.as_ref(), it.upper.as_ref(), &lr, lc)
                    .map_err(|m| format!("record {}: {m}", it.record.index))?;
                seen.insert(it.record.index);
            }
            if seen.len() as u64 != c {
                return Err(ProofError::Invalid(format!(
                    "{} of {c} records shown absent from `{list}`",
                    seen.len()
                )));
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
            if !same(&rule.set, set) || !same(&rule.field, field) || !same(&rule.list, list) {
                return Err("evidence refers to another set, field or list".into());
            }
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

/// `opened` are the records at [`size_proof_indices`]`(size)`, each a leaf of the tree with
/// `root` and exactly `size` leaves; an empty tree's root is `H("")`.
pub(super) fn check_size(
    root: &Hash,
    size: u64,
    opened: &[OpenedRecord],
) -> Result<(), ProofError> {
    let want = size_proof_indices(size);
    let got: Vec<u64> = opened.iter().map(|o| o.index).collect();
    if got != want {
        return Err(ProofError::Invalid(format!(
            "the size proof opens records {got:?}, a tree of {size} needs {want:?}"
        )));
    }
    if size == 0 && *root != merkle::root(&[]) {
        return Err("an empty set's root must be SHA-256 of the empty string".into());
    }
    for o in opened {
        o.verify(root, size)?;
    }
    Ok(())
}

/// `key` lies strictly between two adjacent entries of the sorted list (or before the first /
/// after the last).
pub(super) fn check_gap(
    key: &str,
    lo: Option<&ListEntry>,
    hi: Option<&ListEntry>,
    root: &Hash,
    size: u64,
) -> Result<(), ProofError> {
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
                    ProofError::Invalid(format!(
                        "`{key}` is not strictly between `{}` and `{}`",
                        l.value, h.value
                    ))
                })
        }
        _ => Err("neighbours are not adjacent entries of the list".into()),
    }
}
