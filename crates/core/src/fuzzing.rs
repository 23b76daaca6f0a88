//! Fuzzing entry points of this crate, and the corpus replay every fuzzing crate's tests use.
//!
//! Why it exists: the cargo-fuzz targets in `fuzz/` (nightly, libFuzzer) are one-liners that
//! call a `fuzz_*` function of the crate owning the parser, so the same function runs on
//! stable in the ordinary test suite: [`replay`] feeds it every seed in
//! `fuzz/corpus/<target>/` and every minimised crash in `fuzz/regressions/<target>/`. An
//! entry point must not panic on any input; a panic is a finding.
//!
//! Not part of fieldlab's API (hidden from the docs). [`replay`] reads files, but only when a
//! test calls it.

use std::path::{Path, PathBuf};

/// `config_yaml`: parse (and validate) a configuration file's text with the shared loading
/// machinery, then locate every key of the text it parsed. (The composed document with every
/// section replays the same corpus in fieldlab-topology's tests.)
pub fn fuzz_config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) =
        crate::config::from_yaml_str::<fuzz_doc::Doc>(text, Some(Path::new("fieldlab.yaml")))
    {
        // The message is what the user reads: rendering it must not panic either.
        let _ = e.to_string();
    }
    if let Ok(serde_yaml::Value::Mapping(m)) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        for (k, v) in m.iter().take(64) {
            if let Some(k) = k.as_str() {
                let _ = crate::config::locate_key(text, k);
                if let serde_yaml::Value::Mapping(inner) = v {
                    for k2 in inner.keys().take(64).filter_map(|k| k.as_str()) {
                        let _ = crate::config::locate_key(text, &format!("{k}.{k2}[0].x"));
                    }
                }
            }
        }
    }
    let _ = crate::config::parse_size(text);
    let _ = crate::config::parse_broker_url(text);
    let _ = text.parse::<crate::config::HumanDuration>();
}

/// A document of every kind of value the sections use (durations, sizes, words, lists, maps of
/// structs), for the fuzz target.
mod fuzz_doc {
    use crate::config::{ByteSize, HumanDuration, Problem, Qos, Section};
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Doc {
        every: Option<HumanDuration>,
        size: Option<ByteSize>,
        qos: Option<Qos>,
        port: u16,
        list: Vec<Item>,
        map: BTreeMap<String, Item>,
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Item {
        name: String,
        ratio: f64,
        tags: BTreeMap<String, String>,
    }

    impl Section for Doc {
        fn validate(&self) -> Result<(), Problem> {
            for (i, it) in self.list.iter().enumerate() {
                if it.name.is_empty() {
                    return Problem::at(format!("list[{i}].name"), "must not be empty");
                }
            }
            Ok(())
        }
    }
}

/// The fuzz directory of the repository (`fuzz/`), from a crate's manifest dir.
pub fn fuzz_dir(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../../fuzz")
}

/// Run `entry` on every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`,
/// failing (with the file names) if any input panics. Returns how many inputs ran; panics if
/// the target has no seed at all, so a renamed directory cannot turn the test into a no-op.
pub fn replay(manifest_dir: &str, target: &str, entry: fn(&[u8])) -> usize {
    let root = fuzz_dir(manifest_dir);
    let mut files = Vec::new();
    for sub in ["corpus", "regressions"] {
        let dir = root.join(sub).join(target);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().is_file() {
                files.push(e.path());
            }
        }
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no seed inputs for fuzz target {target} under {}",
        root.display()
    );
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz target {target} panicked on: {failed:?}"
    );
    files.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_yaml_corpus_replays() {
        super::replay(
            env!("CARGO_MANIFEST_DIR"),
            "config_yaml",
            super::fuzz_config_yaml,
        );
    }

    #[test]
    fn every_fuzz_target_has_a_replay_test() {
        // Each fuzz/fuzz_targets/<name>.rs must be replayed by some crate's fuzzing module
        // (crates/*/src/fuzzing.rs or crates/*/src/*/fuzzing.rs).
        let root = super::fuzz_dir(env!("CARGO_MANIFEST_DIR"));
        let mut sources = String::new();
        for c in std::fs::read_dir(root.join("../crates")).unwrap().flatten() {
            let src = c.path().join("src");
            let subs = std::fs::read_dir(&src).into_iter().flatten().flatten();
            for d in std::iter::once(src.clone()).chain(subs.map(|e| e.path())) {
                if let Ok(s) = std::fs::read_to_string(d.join("fuzzing.rs")) {
                    sources.push_str(&s);
                }
            }
        }
        let mut n = 0;
        for t in std::fs::read_dir(root.join("fuzz_targets"))
            .unwrap()
            .flatten()
        {
            let name = t.path().file_stem().unwrap().to_string_lossy().to_string();
            assert!(
                sources.contains(&format!("\"{name}\"")),
                "fuzz target {name} has no corpus replay test in any crates/*/src/**/fuzzing.rs"
            );
            n += 1;
        }
        assert!(
            n >= 10,
            "expected the fuzz targets under {}",
            root.display()
        );
    }
}
