//! The verifier is deployed on its own (an auditor's machine, a registry service): it must not
//! pull in the lab. Checked over `cargo metadata`, so an edge added by mistake fails here
//! rather than in a review of Cargo.lock.

use std::collections::{BTreeSet, HashMap};

#[test]
fn the_verifier_depends_on_no_part_of_the_lab() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // This machine's target only: the other platforms' crates need not be downloaded.
    let rustc = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = m["resolve"]["nodes"].as_array().unwrap();
    let name_of: HashMap<&str, &str> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Normal (not dev, not build) dependency edges.
    let edges: HashMap<&str, Vec<&str>> = nodes
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), deps)
        })
        .collect();
    let root = name_of
        .iter()
        .find(|(_, n)| **n == "fieldlab-verifier")
        .map(|(id, _)| *id)
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if seen.insert(id) {
            todo.extend(edges.get(id).into_iter().flatten());
        }
    }
    let names: BTreeSet<&str> = seen.iter().map(|id| name_of[id]).collect();
    for lab in [
        "fieldlab-server",
        "fieldlab-detect",
        "fieldlab-broker",
        "fieldlab-emulator",
        "fieldlab-store",
        "fieldlab-ingest",
        "fieldlab-topology",
        "rumqttd",
        "candle-core",
        "parquet",
        "arrow",
    ] {
        assert!(
            !names.contains(lab),
            "fieldlab-verifier depends on {lab}, a part of the lab it must not need"
        );
    }
    assert!(names.contains("fieldlab-http"));
}
