//! The dependency rules of docs/ARCHITECTURE.md hold: for every workspace crate, its fieldlab
//! dependencies (normal, not dev) are exactly the ones the document's rules block lists, and
//! every workspace crate is listed. Change the code and the document together.

use crate::common::output_ok;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The ```text block under "## Dependency rules": `crate -> dep dep ...` per line.
fn documented() -> Graph {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    let section = text
        .split("## Dependency rules")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a `## Dependency rules` section");
    let block = section
        .split("```text")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the rules are in a ```text block");
    let mut g = Graph::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let (name, deps) = line
            .split_once("->")
            .unwrap_or_else(|| panic!("not `crate -> deps`: {line:?}"));
        let deps: BTreeSet<String> = deps.split_whitespace().map(str::to_string).collect();
        assert!(
            g.insert(name.trim().to_string(), deps).is_none(),
            "{} is listed twice",
            name.trim()
        );
    }
    g
}

/// Short name of a workspace package: `fieldlab-store` -> `store`, `fieldlab` stays.
fn short(name: &str) -> String {
    name.strip_prefix("fieldlab-").unwrap_or(name).to_string()
}

fn actual() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = output_ok(
        Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkgs = m["packages"].as_array().unwrap();
    let names: BTreeSet<&str> = pkgs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let mut g = Graph::new();
    for p in pkgs {
        let deps = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null() && names.contains(d["name"].as_str().unwrap()))
            .map(|d| short(d["name"].as_str().unwrap()))
            .collect();
        g.insert(short(p["name"].as_str().unwrap()), deps);
    }
    g
}

#[test]
fn the_dependency_rules_of_the_architecture_document_hold() {
    let (doc, code) = (documented(), actual());
    let mut wrong = Vec::new();
    for (name, deps) in &code {
        match doc.get(name) {
            None => wrong.push(format!("{name}: a crate the document does not list")),
            Some(d) if d != deps => {
                let extra: Vec<_> = deps.difference(d).collect();
                let missing: Vec<_> = d.difference(deps).collect();
                wrong.push(format!(
                    "{name}: depends on {extra:?} which the document does not allow; the document lists {missing:?} which it does not use"
                ));
            }
            Some(_) => {}
        }
    }
    for name in doc.keys().filter(|n| !code.contains_key(*n)) {
        wrong.push(format!("{name}: listed, but no such crate"));
    }
    assert!(
        wrong.is_empty(),
        "docs/ARCHITECTURE.md and the code disagree (change one of them):\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn nothing_in_the_product_depends_on_the_test_kit_or_the_benchmarks() {
    let code = actual();
    for (name, deps) in &code {
        if name != "bench" && name != "fieldlab" {
            assert!(!deps.contains("bench"), "{name} depends on bench");
        }
        if name != "bench" {
            assert!(
                !deps.contains("testkit"),
                "{name} depends on testkit (a dev-dependency at most)"
            );
        }
    }
}
