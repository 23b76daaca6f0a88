//! Policies: YAML in, lint codes out, and a compiled IR with one canonical hash.
//!
//! Why it exists: a proof says "these data satisfy policy P", so P must have exactly one
//! meaning and one identity. Two YAML dialects are accepted — LkSG v1 `constraints`
//! (require_at_least_one_ubo, supplier_count_max, ubo_count_min) and v2 `rules` with an `op`
//! each — and both compile to the same IR, whose hash is SHA-256 of its RFC 8785 encoding.
//! `lint` never stops at the first problem: it reports every finding with a stable code
//! (`E…` errors, `W…` warnings); `validate`/`lint` exit 0 (clean), 2 (warnings) or 3 (errors).

use crate::canon;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_yaml::Value as Y;
use std::collections::{BTreeMap, BTreeSet};

pub const IR_FORMAT: &str = "fieldlab.policy-ir/v1";

/// Every rule operation, with the parameters it needs.
pub const OPS: &[(&str, &[&str], &str)] = &[
    (
        "count_min",
        &["set", "value"],
        "the set has at least `value` records",
    ),
    (
        "count_max",
        &["set", "value"],
        "the set has at most `value` records",
    ),
    (
        "require_at_least_one_ubo",
        &[],
        "every supplier (set `suppliers`, key `id`) has a UBO (set `ubos`, `supplier_id`)",
    ),
    (
        "eq",
        &["set", "field", "value"],
        "every record's `field` equals `value`",
    ),
    (
        "ne",
        &["set", "field", "value"],
        "no record's `field` equals `value`",
    ),
    (
        "one_of",
        &["set", "field", "values"],
        "every record's `field` is one of `values`",
    ),
    (
        "range_min",
        &["set", "field", "min"],
        "every record's `field` is >= `min`",
    ),
    (
        "range_max",
        &["set", "field", "max"],
        "every record's `field` is <= `max`",
    ),
    (
        "range",
        &["set", "field", "min", "max"],
        "every record's `field` is within [min, max]",
    ),
    (
        "non_membership",
        &["set", "field", "list"],
        "every record has `field` and its normalised value is not in the sorted list `list` (`missing: allow` lets records without it pass)",
    ),
];

const RULE_KEYS: &[&str] = &[
    "id",
    "op",
    "description",
    "set",
    "field",
    "value",
    "values",
    "min",
    "max",
    "list",
    "missing",
];

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// `non_membership` only: `allow` lets a record without the screened field (or with an
    /// empty one) pass; absent or `deny`, such a record fails the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Rule {
    /// Whether a `non_membership` rule lets records without the screened field pass.
    pub fn missing_allowed(&self) -> bool {
        self.missing.as_deref() == Some("allow")
    }
}

/// The compiled policy. Its hash is SHA-256(JCS(ir)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyIr {
    pub format: String,
    pub id: String,
    /// Dialect of the source: 1 (constraints) or 2 (rules).
    pub source_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub rules: Vec<Rule>,
}

/// An IR that `policy compile` could not have made: the first problem found by
/// [`PolicyIr::validate`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl PolicyIr {
    pub fn hash(&self) -> String {
        canon::hex32(&canon::sha256_canonical(self).expect("IR is canonical-encodable"))
    }

    /// Lists (e.g. `sanctions`) the rules refer to.
    pub fn lists(&self) -> BTreeSet<String> {
        self.rules.iter().filter_map(|r| r.list.clone()).collect()
    }

    /// Check the IR itself, as a verifier must: a bundle's signer could have written any IR,
    /// not only what `policy compile` makes. Known format and source version, an id, at least
    /// one rule, unique non-empty rule ids, known ops with exactly their parameters, of the
    /// right type and range (counts are non-negative integers, bounds finite with
    /// min <= max, count_min <= count_max per set). The first problem is the error.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.format != IR_FORMAT {
            return Err(PolicyError(format!(
                "format `{}` is not `{IR_FORMAT}`",
                cap(&self.format)
            )));
        }
        if !matches!(self.source_version, 1 | 2) {
            return Err(PolicyError(format!(
                "source_version {} is not a known dialect (1 or 2)",
                self.source_version
            )));
        }
        if self.id.trim().is_empty() {
            return Err(PolicyError("the policy has no id".into()));
        }
        if self.rules.is_empty() {
            return Err(PolicyError(
                "the policy has no rules: it would be satisfied by any data".into(),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut bounds: BTreeMap<&str, (Option<u64>, Option<u64>)> = BTreeMap::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}] (`{}`)", cap(&r.id));
            if r.id.trim().is_empty() {
                return Err(PolicyError(format!("rules[{i}] has no id")));
            }
            if !ids.insert(r.id.as_str()) {
                return Err(PolicyError(format!("{at}: the rule id is used twice")));
            }
            let Some((_, params, _)) = OPS.iter().find(|(op, _, _)| *op == r.op) else {
                return Err(PolicyError(format!("{at}: unknown op `{}`", cap(&r.op))));
            };
            let given = [
                ("set", r.set.is_some()),
                ("field", r.field.is_some()),
                ("value", r.value.is_some()),
                ("values", r.values.is_some()),
                ("min", r.min.is_some()),
                ("max", r.max.is_some()),
                ("list", r.list.is_some()),
            ];
            for (name, present) in given {
                let wanted = params.contains(&name);
                if wanted && !present {
                    return Err(PolicyError(format!("{at}: op `{}` needs `{name}`", r.op)));
                }
                if present && !wanted {
                    return Err(PolicyError(format!(
                        "{at}: op `{}` takes no `{name}`",
                        r.op
                    )));
                }
            }
            match (r.op.as_str(), r.missing.as_deref()) {
                (_, None) | ("non_membership", Some("allow" | "deny")) => {}
                ("non_membership", Some(w)) => {
                    return Err(PolicyError(format!(
                        "{at}: `missing` is `allow` or `deny`, not `{}`",
                        cap(w)
                    )))
                }
                (op, Some(_)) => {
                    return Err(PolicyError(format!("{at}: op `{op}` takes no `missing`")))
                }
            }
            for (name, text) in [("set", &r.set), ("field", &r.field), ("list", &r.list)] {
                if text.as_deref().is_some_and(|t| t.trim().is_empty()) {
                    return Err(PolicyError(format!("{at}: `{name}` is empty")));
                }
            }
            for (name, x) in [("min", r.min), ("max", r.max)] {
                if x.is_some_and(|x| !x.is_finite()) {
                    return Err(PolicyError(format!(
                        "{at}: `{name}` is not a finite number"
                    )));
                }
            }
            match r.op.as_str() {
                "count_min" | "count_max" => {
                    let n = r.value.as_ref().and_then(Value::as_u64).ok_or_else(|| {
                        PolicyError(format!(
                            "{at}: `value` of {} must be a non-negative integer",
                            r.op
                        ))
                    })?;
                    let set = r.set.as_deref().unwrap_or("");
                    let b = bounds.entry(set).or_default();
                    if r.op == "count_min" {
                        b.0 = Some(n);
                    } else {
                        b.1 = Some(n);
                    }
                }
                "eq" | "ne"
                    if r.value
                        .as_ref()
                        .is_some_and(|v| v.is_array() || v.is_object()) =>
                {
                    return Err(PolicyError(format!(
                        "{at}: `value` must be a string, number, boolean or null"
                    )));
                }
                "one_of" => {
                    let v = r.values.as_deref().unwrap_or_default();
                    if v.is_empty() || v.iter().any(|x| x.is_array() || x.is_object()) {
                        return Err(PolicyError(format!(
                            "{at}: `values` must be a non-empty list of strings, numbers, booleans or null"
                        )));
                    }
                }
                "range" => {
                    if let (Some(lo), Some(hi)) = (r.min, r.max) {
                        if lo > hi {
                            return Err(PolicyError(format!("{at}: min {lo} > max {hi}")));
                        }
                    }
                }
                _ => {}
            }
        }
        for (set, (lo, hi)) in bounds {
            if let (Some(lo), Some(hi)) = (lo, hi) {
                if lo > hi {
                    return Err(PolicyError(format!(
                        "set `{}`: count_min {lo} > count_max {hi}",
                        cap(set)
                    )));
                }
            }
        }
        Ok(())
    }
}

/// At most 80 characters of a signer-controlled string, for error messages.
fn cap(s: &str) -> String {
    s.chars().take(80).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    /// Where in the policy, e.g. `rules[2].min`.
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{s}[{}] {}: {}", self.code, self.at, self.message)
    }
}

/// Every lint code with its meaning (printed by `cap policy lint --codes`, listed in docs/formats.md).
pub const CODES: &[(&str, &str)] = &[
    ("E001", "the file is not valid YAML or not a mapping"),
    ("E002", "unknown policy version / dialect"),
    ("E003", "`id` missing or not a non-empty string"),
    ("E004", "no rules (v2 `rules` or v1 `constraints` empty)"),
    ("E005", "duplicate rule id"),
    ("E006", "unknown `op`"),
    (
        "E007",
        "a parameter the op needs is missing or has the wrong type",
    ),
    ("E008", "`min` is greater than `max`"),
    ("E009", "unknown key (typo?)"),
    (
        "E010",
        "contradictory count bounds on one set (count_min > count_max)",
    ),
    ("W001", "the policy has no `description`"),
    ("W002", "a rule has no `description`"),
    ("W003", "v1 `constraints` dialect: prefer v2 `rules`"),
    ("W004", "a parameter is given that the op ignores"),
    (
        "W005",
        "rule id is not lower-case letters, digits, `-` or `_`",
    ),
];

/// Lint result: the IR when there are no errors, and every finding.
pub struct Linted {
    pub ir: Option<PolicyIr>,
    pub findings: Vec<Finding>,
}

impl Linted {
    /// 0 clean, 2 warnings only, 3 errors.
    pub fn exit_code(&self) -> u8 {
        match self.findings.iter().map(|f| f.severity).max() {
            None => 0,
            Some(Severity::Warning) => 2,
            Some(Severity::Error) => 3,
        }
    }
}

struct Lint(Vec<Finding>);

impl Lint {
    fn e(&mut self, code: &'static str, at: impl Into<String>, m: impl Into<String>) {
        self.0.push(Finding {
            code,
            severity: Severity::Error,
            at: at.into(),
            message: m.into(),
        });
    }
    fn w(&mut self, code: &'static str, at: impl Into<String>, m: impl Into<String>) {
        self.0.push(Finding {
            code,
            severity: Severity::Warning,
            at: at.into(),
            message: m.into(),
        });
    }
}

fn y_str(v: Option<&Y>) -> Option<String> {
    v.and_then(Y::as_str).map(str::to_string)
}

fn y_json(v: &Y) -> Option<Value> {
    serde_json::to_value(v).ok()
}

fn y_num(v: &Y) -> Option<f64> {
    v.as_f64().or_else(|| v.as_i64().map(|i| i as f64))
}

/// Lint and compile policy YAML.
pub fn lint(text: &str) -> Linted {
    let mut l = Lint(Vec::new());
    let doc: Y = match serde_yaml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            l.e("E001", "policy", format!("not valid YAML: {e}"));
            return Linted {
                ir: None,
                findings: l.0,
            };
        }
    };
    let Some(map) = doc.as_mapping() else {
        l.e(
            "E001",
            "policy",
            "the policy must be a YAML mapping with `id` and `rules` (or v1 `constraints`)",
        );
        return Linted {
            ir: None,
            findings: l.0,
        };
    };
    let id = y_str(map.get("id")).filter(|s| !s.trim().is_empty());
    if id.is_none() {
        l.e(
            "E003",
            "id",
            "`id` is required, e.g. `id: lksg-suppliers-2026`",
        );
    }
    let description = y_str(map.get("description"));
    if description.is_none() {
        l.w(
            "W001",
            "description",
            "add a `description` saying what the policy proves",
        );
    }
    let v1 = map.contains_key("constraints");
    let version = map.get("version");
    let mut rules = Vec::new();
    if v1 {
        l.w(
            "W003",
            "constraints",
            "v1 `constraints`: consider `version: 2` with `rules` (same meaning, more ops)",
        );
        for k in map.keys().filter_map(Y::as_str) {
            if ![
                "id",
                "version",
                "description",
                "constraints",
                "legal_basis",
                "name",
            ]
            .contains(&k)
            {
                l.e("E009", k, format!("unknown key `{k}` in a v1 policy"));
            }
        }
        rules = compile_v1(map.get("constraints").unwrap(), &mut l);
    } else {
        match version {
            Some(v) if v.as_u64() == Some(2) || v.as_str() == Some("2") => {}
            Some(v) => l.e("E002", "version", format!("version {v:?} is not supported; use `version: 2` with `rules`, or v1 `constraints`")),
            None => l.e("E002", "version", "`version: 2` is required for a `rules` policy"),
        }
        for k in map.keys().filter_map(Y::as_str) {
            if !["id", "version", "description", "rules", "name"].contains(&k) {
                l.e("E009", k, format!("unknown key `{k}`"));
            }
        }
        match map.get("rules").and_then(Y::as_sequence) {
            Some(seq) => {
                let mut ids = BTreeSet::new();
                for (i, r) in seq.iter().enumerate() {
                    if let Some(id) = y_str(r.get("id")) {
                        if !ids.insert(id.clone()) {
                            l.e(
                                "E005",
                                format!("rules[{i}].id"),
                                format!("rule id `{id}` is used twice"),
                            );
                        }
                    }
                    if let Some(rule) = compile_rule(i, r, &mut l) {
                        rules.push(rule);
                    }
                }
            }
            None => l.e("E004", "rules", "`rules` must be a list of rules"),
        }
    }
    if rules.is_empty() && !l.0.iter().any(|f| f.severity == Severity::Error) {
        l.e(
            "E004",
            if v1 { "constraints" } else { "rules" },
            "the policy has no rules",
        );
    }
    let mut bounds: BTreeMap<&str, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for r in &rules {
        let set = r.set.as_deref().unwrap_or("");
        let v = r.value.as_ref().and_then(Value::as_f64);
        match r.op.as_str() {
            "count_min" => bounds.entry(set).or_default().0 = v,
            "count_max" => bounds.entry(set).or_default().1 = v,
            _ => {}
        }
    }
    for (set, (lo, hi)) in bounds {
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo > hi {
                l.e(
                    "E010",
                    "rules",
                    format!(
                        "set `{set}`: count_min {lo} > count_max {hi}; no data can satisfy this"
                    ),
                );
            }
        }
    }
    let has_errors = l.0.iter().any(|f| f.severity == Severity::Error);
    let ir = (!has_errors).then(|| PolicyIr {
        format: IR_FORMAT.into(),
        id: id.unwrap_or_default(),
        source_version: if v1 { 1 } else { 2 },
        description,
        rules,
    });
    Linted { ir, findings: l.0 }
}

fn compile_v1(c: &Y, l: &mut Lint) -> Vec<Rule> {
    let mut out = Vec::new();
    let Some(m) = c.as_mapping() else {
        l.e("E004", "constraints", "`constraints` must be a mapping");
        return out;
    };
    let rule = |id: &str, op: &str, set: Option<&str>, value: Option<Value>| Rule {
        id: id.into(),
        op: op.into(),
        set: set.map(Into::into),
        field: None,
        value,
        values: None,
        min: None,
        max: None,
        list: None,
        missing: None,
        description: None,
    };
    for (k, v) in m {
        let k = k.as_str().unwrap_or("?");
        let at = format!("constraints.{k}");
        match k {
            "require_at_least_one_ubo" => match v.as_bool() {
                Some(true) => out.push(rule(k, "require_at_least_one_ubo", None, None)),
                Some(false) => {}
                None => l.e("E007", at, "must be true or false"),
            },
            "supplier_count_max" | "ubo_count_min" | "supplier_count_min" | "ubo_count_max" => {
                match v.as_u64() {
                    Some(n) => {
                        let (set, op) = k.split_once("_count_").unwrap();
                        let set = if set == "supplier" { "suppliers" } else { "ubos" };
                        out.push(rule(k, &format!("count_{op}"), Some(set), Some(Value::from(n))));
                    }
                    None => l.e("E007", at, "must be a non-negative integer"),
                }
            }
            _ => l.e("E009", at, format!("unknown v1 constraint `{k}` (known: require_at_least_one_ubo, supplier_count_max, ubo_count_min)")),
        }
    }
    out
}

fn compile_rule(i: usize, r: &Y, l: &mut Lint) -> Option<Rule> {
    let at = |k: &str| format!("rules[{i}].{k}");
    let Some(m) = r.as_mapping() else {
        l.e(
            "E007",
            format!("rules[{i}]"),
            "a rule must be a mapping with `id` and `op`",
        );
        return None;
    };
    for k in m.keys() {
        let ks = k.as_str().unwrap_or("?");
        if !RULE_KEYS.contains(&ks) {
            l.e(
                "E009",
                at(ks),
                format!("unknown key `{ks}` (rule keys: {})", RULE_KEYS.join(", ")),
            );
        }
    }
    let id = y_str(m.get("id")).filter(|s| !s.is_empty());
    let Some(id) = id else {
        l.e("E003", at("id"), "every rule needs an `id`");
        return None;
    };
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        l.w(
            "W005",
            at("id"),
            format!("rule id `{id}`: use lower-case letters, digits, `-`, `_`"),
        );
    }
    let description = y_str(m.get("description"));
    if description.is_none() {
        l.w(
            "W002",
            at("description"),
            format!("rule `{id}` has no description"),
        );
    }
    let op = y_str(m.get("op")).unwrap_or_default();
    let Some((_, needs, _)) = OPS.iter().find(|(o, _, _)| *o == op) else {
        let known: Vec<&str> = OPS.iter().map(|o| o.0).collect();
        l.e(
            "E006",
            at("op"),
            format!("unknown op `{op}` (known: {})", known.join(", ")),
        );
        return None;
    };
    let mut rule = Rule {
        id: id.clone(),
        op: op.clone(),
        set: None,
        field: None,
        value: None,
        values: None,
        min: None,
        max: None,
        list: None,
        missing: None,
        description,
    };
    let mut ok = true;
    if let Some(v) = m.get("missing") {
        match (op.as_str(), y_str(Some(v)).as_deref()) {
            ("non_membership", Some(w @ ("allow" | "deny"))) => rule.missing = Some(w.into()),
            ("non_membership", _) => {
                l.e("E007", at("missing"), "`missing` is `allow` or `deny`");
                ok = false;
            }
            _ => l.w(
                "W004",
                at("missing"),
                format!("op `{op}` ignores `missing`"),
            ),
        }
    }
    for p in ["set", "field", "value", "values", "min", "max", "list"] {
        let v = m.get(p);
        let needed = needs.contains(&p);
        match (v, needed) {
            (None, true) => {
                l.e("E007", at(p), format!("op `{op}` needs `{p}`"));
                ok = false;
            }
            (Some(_), false) => l.w("W004", at(p), format!("op `{op}` ignores `{p}`")),
            (None, false) => {}
            (Some(v), true) => {
                let good = match p {
                    "set" => {
                        rule.set = y_str(Some(v));
                        rule.set.is_some()
                    }
                    "field" => {
                        rule.field = y_str(Some(v));
                        rule.field.is_some()
                    }
                    "list" => {
                        rule.list = y_str(Some(v));
                        rule.list.is_some()
                    }
                    "min" => {
                        rule.min = y_num(v);
                        rule.min.is_some()
                    }
                    "max" => {
                        rule.max = y_num(v);
                        rule.max.is_some()
                    }
                    "values" => {
                        rule.values = v
                            .as_sequence()
                            .map(|s| s.iter().filter_map(y_json).collect());
                        rule.values.as_ref().is_some_and(|x| !x.is_empty())
                    }
                    _ => {
                        rule.value =
                            y_json(v).filter(|x| !x.is_null() && !x.is_object() && !x.is_array());
                        let count_op = op.starts_with("count_");
                        rule.value.is_some()
                            && (!count_op || rule.value.as_ref().is_some_and(Value::is_u64))
                    }
                };
                if !good {
                    l.e(
                        "E007",
                        at(p),
                        format!("`{p}` has the wrong type for op `{op}`"),
                    );
                    ok = false;
                }
            }
        }
    }
    if let (Some(a), Some(b)) = (rule.min, rule.max) {
        if a > b {
            l.e("E008", at("min"), format!("min {a} > max {b}"));
            ok = false;
        }
    }
    ok.then_some(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "version: 2\nid: t\ndescription: d\nrules:\n  - id: a\n    op: count_max\n    set: suppliers\n    value: 10\n    description: x\n";

    #[test]
    fn clean_policy_compiles_and_hash_ignores_yaml_layout() {
        let a = lint(V2);
        assert_eq!(a.exit_code(), 0, "{:?}", a.findings);
        let b = lint("{version: 2, id: t, description: d, rules: [{description: x, value: 10, set: suppliers, op: count_max, id: a}]}");
        assert_eq!(a.ir.unwrap().hash(), b.ir.unwrap().hash());
    }

    #[test]
    fn v1_compiles_to_the_same_ops_with_a_warning() {
        let r = lint("id: lksg\ndescription: d\nconstraints:\n  require_at_least_one_ubo: true\n  supplier_count_max: 10\n  ubo_count_min: 1\n");
        assert_eq!(r.exit_code(), 2);
        let ops: Vec<String> = r.ir.unwrap().rules.iter().map(|r| r.op.clone()).collect();
        assert_eq!(ops, ["require_at_least_one_ubo", "count_max", "count_min"]);
    }

    /// What `policy compile` makes is valid; what a hostile signer could write instead is not.
    #[test]
    fn validate_refuses_irs_compile_would_never_make() {
        let good = lint(V2).ir.unwrap();
        assert_eq!(good.validate(), Ok(()));
        let v1 = lint("id: lksg\ndescription: d\nconstraints:\n  require_at_least_one_ubo: true\n  supplier_count_max: 10\n  ubo_count_min: 1\n").ir.unwrap();
        assert_eq!(v1.validate(), Ok(()));
        let bad = |f: &dyn Fn(&mut PolicyIr), why: &str| {
            let mut ir = good.clone();
            f(&mut ir);
            let e = ir.validate().expect_err(why).to_string();
            assert!(e.contains(why), "{why}: {e}");
        };
        bad(&|ir| ir.rules.clear(), "no rules");
        bad(&|ir| ir.source_version = 3, "source_version 3");
        bad(&|ir| ir.format = "x".into(), "format");
        bad(&|ir| ir.id = " ".into(), "no id");
        bad(
            &|ir| {
                let r = ir.rules[0].clone();
                ir.rules.push(r);
            },
            "used twice",
        );
        bad(&|ir| ir.rules[0].value = None, "needs `value`");
        bad(
            &|ir| ir.rules[0].value = Some(serde_json::json!(1.5)),
            "non-negative integer",
        );
        bad(
            &|ir| ir.rules[0].value = Some(serde_json::json!(-1)),
            "non-negative integer",
        );
        bad(
            &|ir| ir.rules[0].field = Some("f".into()),
            "takes no `field`",
        );
        bad(&|ir| ir.rules[0].op = "frobnicate".into(), "unknown op");
        bad(
            &|ir| {
                let mut r = ir.rules[0].clone();
                r.id = "b".into();
                r.op = "count_min".into();
                r.value = Some(serde_json::json!(11));
                ir.rules.push(r);
            },
            "count_min 11 > count_max 10",
        );
        bad(
            &|ir| {
                ir.rules[0] = Rule {
                    id: "r".into(),
                    op: "range".into(),
                    set: Some("s".into()),
                    field: Some("f".into()),
                    value: None,
                    values: None,
                    min: Some(5.0),
                    max: Some(1.0),
                    list: None,
                    missing: None,
                    description: None,
                }
            },
            "min 5 > max 1",
        );
    }

    #[test]
    fn every_error_is_reported_with_its_code() {
        let r = lint("version: 2\nid: t\ncolour: red\nrules:\n  - {id: a, op: range, set: s, field: f, min: 5, max: 1}\n  - {id: a, op: count_max, set: s, value: 1}\n  - {id: b, op: frobnicate}\n  - {id: c, op: eq, set: s}\n  - {id: d, op: count_min, set: s, value: 5}\n");
        let codes: BTreeSet<&str> = r.findings.iter().map(|f| f.code).collect();
        for c in [
            "E009", "E008", "E005", "E006", "E007", "E010", "W001", "W002",
        ] {
            assert!(codes.contains(c), "{c} missing from {codes:?}");
        }
        assert_eq!(r.exit_code(), 3);
        assert!(r.ir.is_none());
        assert_eq!(lint(": : :").exit_code(), 3);
    }
}
