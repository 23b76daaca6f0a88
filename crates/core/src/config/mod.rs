//! Loading `fieldlab.yaml`: the machinery every config section shares, and none of the sections.
//!
//! Each crate owns its section (`fieldlab_store::StorageConfig`, `fieldlab_auth::AuthConfig`,
//! ...): a serde struct with its defaults and a [`Section::validate`] of what types cannot say.
//! The binary's composed document (`fieldlab_topology::Config`) implements [`Document`]; this
//! module turns text into it so that every error is a [`ConfigError`] with `file:line` and the
//! dotted key.
//!
//! Loading goes file -> environment -> command-line flags, later ones winning. The file is
//! parsed straight from its text (serde_yaml's locations, [`locate_key`] for problems found after
//! parsing); unknown keys are errors, not silently ignored. Environment overrides accept the
//! names the operations handbooks use ([`Document::ENV_ALIASES`]: `LOG_LEVEL`, `MAX_DEVICES`,
//! ...) and a generic `FIELDLAB__SECTION__KEY=value` form for every key; an error in a value
//! from the environment names the variable.
//!
//! Why `locate_key` rather than spans: serde_yaml reports where a value failed to parse but
//! keeps no spans for values that parsed, and a problem such as "`buffer_max` must be at least
//! `batch_max`" is only found afterwards. figment would add layering but not YAML line numbers.

// Config errors happen once, at start-up; a large error value costs nothing there.
#![allow(clippy::result_large_err)]

mod value;

pub use strum::VariantNames;
#[doc(hidden)]
pub use value::word_text;
pub use value::{
    not_one_of, parse_broker_url, parse_size, BrokerAddr, ByteSize, HumanDuration, Qos,
};

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One config section: its defaults (an empty section is valid), its serde shape (unknown keys
/// denied), and the checks that types alone cannot express.
pub trait Section: Default + Serialize + DeserializeOwned {
    /// The first problem found, its key relative to this section (`limits[0].period`; empty:
    /// the section itself). The loader prefixes the section's key and finds the line.
    fn validate(&self) -> Result<(), Problem> {
        Ok(())
    }
}

/// A problem found after parsing: which key, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key relative to the section that found it; empty: the section itself.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }

    /// An error result, for `return Problem::at("limit", "must be at least 1")`.
    pub fn at<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, Problem> {
        Err(Problem::new(key, message))
    }

    /// The same problem seen from the enclosing section: under `sinks.pg`, `url` becomes
    /// `sinks.pg.url` and `[0]` becomes `sinks.pg[0]`.
    pub fn within(self, section: &str) -> Problem {
        let key = if self.key.is_empty() {
            section.to_string()
        } else if section.is_empty() || self.key.starts_with('[') {
            format!("{section}{}", self.key)
        } else {
            format!("{section}.{}", self.key)
        };
        Problem { key, ..self }
    }
}

/// Validate `section` and place its problem under `key` (composing sections).
pub fn validate_at<S: Section>(key: &str, section: &S) -> Result<(), Problem> {
    section.validate().map_err(|p| p.within(key))
}

/// The whole file: a section that is also the root of loading.
pub trait Document: Section {
    /// The operations handbooks' environment variable names and the dotted keys they set.
    const ENV_ALIASES: &'static [(&'static str, &'static str)];
    /// Prefix of the generic form: `FIELDLAB__MQTT__PORT` sets `mqtt.port`.
    const ENV_PREFIX: &'static str = "FIELDLAB__";

    /// Run by [`load`] after validation, for choices that depend on what the user wrote rather
    /// than on the resulting values: `given(key)` says whether a key was written in the file or
    /// set by the environment.
    fn settle(&mut self, given: &dyn Fn(&str) -> bool) -> Result<(), Problem> {
        let _ = given;
        Ok(())
    }
}

/// A configuration error, pointing at where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key, e.g. `mqtt.port` or `devices.fleet[0].type`.
    pub key: Option<String>,
    /// The environment variable the bad value came from, if any.
    pub env_var: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env_var, &self.file, self.line) {
            (Some(var), _, _) => write!(f, "environment variable {var}")?,
            (None, Some(file), Some(line)) => write!(f, "{}:{line}", file.display())?,
            (None, Some(file), None) => write!(f, "{}", file.display())?,
            (None, None, Some(line)) => write!(f, "line {line}")?,
            (None, None, None) => write!(f, "config")?,
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn at(file: Option<&Path>, text: &str, env_var: Option<String>, p: Problem) -> ConfigError {
        ConfigError {
            file: file.map(Path::to_path_buf),
            line: locate_key(text, &p.key),
            column: None,
            key: Some(p.key),
            env_var,
            message: p.message,
        }
    }
}

/// Parse and check a configuration text. `file` is only used in error messages.
pub fn from_yaml_str<T: Section>(text: &str, file: Option<&Path>) -> Result<T, ConfigError> {
    let doc: T = if text.trim().is_empty() {
        T::default()
    } else {
        deserialize_located(text, file)?
    };
    doc.validate()
        .map_err(|p| ConfigError::at(file, text, None, p))?;
    Ok(doc)
}

/// Read and check a configuration file.
pub fn from_file<T: Section>(path: &Path) -> Result<T, ConfigError> {
    from_yaml_str(&read_text(path)?, Some(path))
}

/// Load the file (if any), then apply environment overrides: `env` looks up one variable (the
/// aliases), `all_env` lists them all (the generic form).
pub fn load<T: Document>(
    path: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
    all_env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let text = match path {
        Some(p) => read_text(p)?,
        None => String::new(),
    };
    let file_doc: T = from_yaml_str(&text, path)?;
    let overrides = env_overrides(T::ENV_ALIASES, T::ENV_PREFIX, env, all_env);
    // Whether a key is written in the file (not its parent: `locate_key` falls back) or set by
    // the environment.
    let file_tree: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_default();
    let given = |key: &str| {
        key.split('.')
            .try_fold(&file_tree, |v, k| v.get(k))
            .is_some_and(|v| !v.is_null())
            || overrides.iter().any(|o| o.path.join(".") == key)
    };
    let blame = |key: &str| {
        overrides
            .iter()
            .find(|o| key.starts_with(&o.path.join(".")))
            .map(|o| o.var.clone())
    };
    let mut doc = if overrides.is_empty() {
        file_doc
    } else {
        let mut tree = serde_yaml::to_value(&file_doc).expect("config serialises");
        for o in &overrides {
            set_path(&mut tree, &o.path, parse_scalar(&o.value));
        }
        let doc: T = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            ConfigError {
                file: path.map(Path::to_path_buf),
                line: None,
                column: None,
                env_var: blame(&key),
                key: Some(key),
                message: e.into_inner().to_string(),
            }
        })?;
        doc.validate()
            .map_err(|p| ConfigError::at(path, &text, blame(&p.key), p))?;
        doc
    };
    doc.settle(&given)
        .map_err(|p| ConfigError::at(path, &text, blame(&p.key), p))?;
    Ok(doc)
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_path_buf()),
        line: None,
        column: None,
        key: None,
        env_var: None,
        message: format!("cannot read the file: {e}"),
    })
}

struct Override {
    var: String,
    path: Vec<String>,
    value: String,
}

fn env_overrides(
    aliases: &[(&str, &str)],
    prefix: &str,
    env: impl Fn(&str) -> Option<String>,
    all_env: impl IntoIterator<Item = (String, String)>,
) -> Vec<Override> {
    let mut out = Vec::new();
    for (var, key) in aliases {
        if let Some(value) = env(var) {
            out.push(Override {
                var: var.to_string(),
                path: key.split('.').map(str::to_string).collect(),
                value,
            });
        }
    }
    let mut generic: Vec<(String, String)> = all_env
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .collect();
    generic.sort();
    for (var, value) in generic {
        let path = var[prefix.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        out.push(Override { var, path, value });
    }
    out
}

fn parse_scalar(s: &str) -> serde_yaml::Value {
    match serde_yaml::from_str::<serde_yaml::Value>(s) {
        Ok(v @ (serde_yaml::Value::Number(_) | serde_yaml::Value::Bool(_))) => v,
        Ok(v @ serde_yaml::Value::Sequence(_)) if s.trim_start().starts_with('[') => v,
        _ => serde_yaml::Value::String(s.to_string()),
    }
}

fn set_path(tree: &mut serde_yaml::Value, path: &[String], value: serde_yaml::Value) {
    let mut cur = tree;
    for (i, seg) in path.iter().enumerate() {
        if !cur.is_mapping() {
            *cur = serde_yaml::Value::Mapping(Default::default());
        }
        let map = cur.as_mapping_mut().expect("mapping");
        let k = serde_yaml::Value::String(seg.clone());
        if i == path.len() - 1 {
            map.insert(k, value);
            return;
        }
        cur = map
            .entry(k)
            .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    }
}

/// Deserialize YAML text, turning errors into `ConfigError`s with line and key.
fn deserialize_located<T: DeserializeOwned>(
    text: &str,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let loc = inner.location();
        let key = if key == "." || key.is_empty() {
            None
        } else {
            Some(key)
        };
        // serde_yaml's location is where the parser was when the error surfaced: never past
        // the problem, but an error raised after a value was read (a bad duration, size or
        // word) lags to an earlier event. So the later of it and the key's own line; without
        // either, the nearest parent's line.
        let exact = key.as_deref().and_then(|k| locate_exact(text, k));
        let line = match (loc.as_ref().map(|l| l.line()), exact) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .or_else(|| key.as_deref().and_then(|k| locate_key(text, k)));
        // serde_yaml appends " at line X column Y"; the location is already in front.
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // serde_yaml sometimes puts the key path, or the path of an enclosing key, in front
        // of the message; the key is already in front.
        if let (Some(k), Some((path, rest))) = (&key, message.split_once(": ")) {
            let encloses = k == path
                || k.strip_prefix(path)
                    .is_some_and(|r| r.starts_with(['.', '[']));
            if encloses {
                message = rest.to_string();
            }
        }
        ConfigError {
            file: file.map(Path::to_path_buf),
            line,
            column: loc.map(|l| l.column()),
            key,
            env_var: None,
            message,
        }
    })
}

/// Find the 1-based line of a dotted key such as `devices.fleet[1].config.update_interval` in
/// block-style YAML. Good enough for pointing users at a line; returns `None` if not found.
pub fn locate_key(text: &str, key: &str) -> Option<usize> {
    if let Some(line) = locate_exact(text, key) {
        return Some(line);
    }
    // Fall back to the parent key.
    let parent = key.rsplit_once(['.', '['])?.0;
    if parent.is_empty() {
        None
    } else {
        locate_key(text, parent)
    }
}

/// The line of exactly `key`, if it is written.
fn locate_exact(text: &str, key: &str) -> Option<usize> {
    let want: Vec<String> = split_key(key);
    // Stack of (indent, segment); list items push "[n]".
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut seq_counters: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for (lineno, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        if line.trim().is_empty() || line.trim_start().starts_with("---") {
            continue;
        }
        let mut indent = line.len() - line.trim_start().len();
        let mut rest = line.trim_start();
        while let Some(after) =
            rest.strip_prefix("- ")
                .or_else(|| if rest == "-" { Some("") } else { None })
        {
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let parent = stack
                .iter()
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join(".");
            let n = seq_counters.entry((indent, parent)).or_insert(0);
            stack.push((indent, format!("[{n}]")));
            *n += 1;
            let skipped = rest.len() - after.len();
            indent += skipped;
            rest = after.trim_start();
            indent += after.len() - rest.len();
            if rest.is_empty() {
                break;
            }
        }
        if let Some(colon) = rest.find(':') {
            let k = rest[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
            if k.is_empty() || k.contains(' ') && !rest.starts_with(['"', '\'']) {
                continue;
            }
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            stack.push((indent, k.to_string()));
            let path: Vec<&str> = stack.iter().map(|(_, s)| s.as_str()).collect();
            if path == want {
                return Some(lineno + 1);
            }
        }
    }
    None
}

fn split_key(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let mut p = part;
        while let Some(i) = p.find('[') {
            if i > 0 {
                out.push(p[..i].to_string());
            }
            let end = p[i..].find(']').map(|e| i + e + 1).unwrap_or(p.len());
            out.push(p[i..end].to_string());
            p = &p[end..];
        }
        if !p.is_empty() {
            out.push(p.to_string());
        }
    }
    out
}

fn strip_comment(line: &str) -> &str {
    let mut in_s = false;
    let mut in_d = false;
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !in_d => in_s = !in_s,
            '"' if !in_s => in_d = !in_d,
            '#' if !in_s && !in_d && (i == 0 || line[..i].ends_with(char::is_whitespace)) => {
                return &line[..i]
            }
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A two-level document standing in for the composed one (whose tests, with every
    /// section, live in fieldlab-topology).
    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Doc {
        part: Part,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Part {
        every: HumanDuration,
        size: ByteSize,
        qos: Qos,
        names: Vec<String>,
    }

    impl Default for Part {
        fn default() -> Self {
            Part {
                every: HumanDuration::from_secs(1),
                size: ByteSize::mib(1),
                qos: Qos::AtLeastOnce,
                names: vec!["a".into()],
            }
        }
    }

    impl Section for Part {
        fn validate(&self) -> Result<(), Problem> {
            if let Some(i) = self.names.iter().position(String::is_empty) {
                return Problem::at(format!("names[{i}]"), "must not be empty");
            }
            Ok(())
        }
    }

    impl Section for Doc {
        fn validate(&self) -> Result<(), Problem> {
            validate_at("part", &self.part)
        }
    }

    impl Document for Doc {
        const ENV_ALIASES: &'static [(&'static str, &'static str)] = &[("EVERY", "part.every")];
        fn settle(&mut self, given: &dyn Fn(&str) -> bool) -> Result<(), Problem> {
            if given("part.qos") && self.part.qos == Qos::ExactlyOnce {
                return Problem::at("part.qos", "2 is not for this lab");
            }
            Ok(())
        }
    }

    fn err(text: &str) -> ConfigError {
        from_yaml_str::<Doc>(text, Some(Path::new("f.yaml"))).unwrap_err()
    }

    #[test]
    fn parse_errors_name_file_line_and_key() {
        let e = err("part:\n  qos: 1\n  every: soon\n");
        assert_eq!((e.key.as_deref(), e.line), (Some("part.every"), Some(3)));
        assert!(
            e.to_string()
                .starts_with("f.yaml:3: key `part.every`: `soon` is not a duration"),
            "{e}"
        );
        let e = err("part:\n  size: 3 parsecs\n");
        assert_eq!((e.key.as_deref(), e.line), (Some("part.size"), Some(2)));
        let e = err("part:\n  qos: 3\n");
        assert!(e.message.contains("`3` is not one of: 0, 1, 2"), "{e}");
        // A syntax error is where the parser gave up, past the key it was in.
        let e = err("part:\n  qos: \"1\n");
        assert_eq!(e.line, Some(3), "{e}");
        let e = err("part:\n  sise: 1MB\n");
        assert!(e.message.contains("unknown field `sise`"), "{e}");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn problems_are_placed_under_their_section_and_located() {
        let e = err("part:\n  names:\n    - x\n    - ''\n");
        assert_eq!(e.key.as_deref(), Some("part.names[1]"));
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(Problem::new("", "m").within("sinks.a").key, "sinks.a");
        assert_eq!(
            Problem::new("url", "m").within("sinks.a").key,
            "sinks.a.url"
        );
        assert_eq!(
            from_yaml_str::<Doc>("# empty\n", None).unwrap(),
            Doc::default()
        );
    }

    #[test]
    fn environment_layers_over_the_file_and_is_blamed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.yaml");
        std::fs::write(&f, "part:\n  size: 2MiB\n").unwrap();
        let env = |k: &str| (k == "EVERY").then(|| "5m".to_string());
        let all = vec![("FIELDLAB__PART__QOS".to_string(), "0".to_string())];
        let d: Doc = load(Some(&f), env, all).unwrap();
        assert_eq!(d.part.every, HumanDuration::from_secs(300));
        assert_eq!((d.part.size.get(), d.part.qos), (2 << 20, Qos::AtMostOnce));
        let env = |k: &str| (k == "EVERY").then(|| "later".to_string());
        let e = load::<Doc>(Some(&f), env, vec![]).unwrap_err();
        assert_eq!(e.env_var.as_deref(), Some("EVERY"));
        assert!(
            e.to_string()
                .starts_with("environment variable EVERY: key `part.every`"),
            "{e}"
        );
        // settle sees what was given, and its problem is blamed and located too.
        let all = vec![("FIELDLAB__PART__QOS".to_string(), "2".to_string())];
        let e = load::<Doc>(Some(&f), |_| None, all).unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.env_var.as_deref()),
            (Some("part.qos"), Some("FIELDLAB__PART__QOS"))
        );
        std::fs::write(&f, "part:\n  qos: 2\n").unwrap();
        let e = load::<Doc>(Some(&f), |_| None, vec![]).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }
}
