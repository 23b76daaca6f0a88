//! `fieldlab.yaml`: what the user writes, checked strictly, with errors that point at the line.
//!
//! Loading goes file -> environment -> command-line flags, later ones winning. The file is parsed
//! straight from its text so that every error carries `file:line` and the dotted key
//! (`mqtt.port`); unknown keys are errors, not silently ignored. Environment overrides accept the
//! names the seed handbooks use (`LOG_LEVEL`, `MAX_DEVICES`, `MQTT_BROKER_URL`, ...) and a
//! generic `FIELDLAB__SECTION__KEY=value` form for every key.
//!
//! Only sections whose features exist are accepted; a section of a later feature is reported as
//! an unknown key rather than accepted and ignored.

// Config errors happen once, at start-up; a large error value costs nothing there.
#![allow(clippy::result_large_err)]

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The whole configuration. Every field has a default, so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub logging: LoggingConfig,
    pub mqtt: MqttConfig,
    pub ingest: IngestConfig,
    pub devices: DevicesConfig,
    pub storage: StorageConfig,
    pub detect: DetectConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server binds to. Loopback by default: there is no auth yet.
    pub host: String,
    /// HTTP port; 0 picks a free port (printed at start-up).
    pub port: u16,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::Info,
            format: LogFormat::Text,
        }
    }
}

/// Generates a string-backed enum whose parse error lists the accepted spellings.
macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const WORDS: &'static [&'static str] = &[$($word),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $($word => Ok($name::$variant),)+
                    _ => Err(format!("`{}` is not one of: {}", s, Self::WORDS.join(", "))),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> { s.parse() }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String { v.as_str().to_string() }
        }
    };
}

word_enum!(
    /// Log verbosity (the seeds write it in upper case, `INFO`; any case is accepted).
    LogLevel { Trace => "trace", Debug => "debug", Info => "info", Warn => "warn", Error => "error" }
);
word_enum!(
    /// Log line format.
    LogFormat { Text => "text", Json => "json" }
);
word_enum!(
    /// When the write-ahead log is forced to disk.
    ///
    /// - `always`: every batch is fsynced before it is acknowledged (group commit: concurrent
    ///   batches share one fsync). Nothing acknowledged is lost on power failure.
    /// - `interval`: batches are acknowledged once written to the OS; fsync runs every
    ///   `wal_fsync_interval`. A process crash loses nothing, a power failure loses at most
    ///   that interval.
    /// - `never`: the OS decides. For benchmarks and throw-away labs only.
    FsyncPolicy { Always => "always", Interval => "interval", Never => "never" }
);
word_enum!(
    /// MQTT quality of service.
    Qos { AtMostOnce => "0", AtLeastOnce => "1", ExactlyOnce => "2" }
);

impl Qos {
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// External broker (`mqtt://host:port`). Empty: run the embedded broker.
    pub broker_url: Option<String>,
    /// Embedded broker: bind address.
    pub host: String,
    /// Embedded broker: MQTT 3.1.1 port; 0 picks a free port.
    pub port: u16,
    /// Client id of the ingest connection (devices use their own ids).
    pub client_id: String,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// Credentials for an external broker.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Largest accepted MQTT payload in bytes.
    pub max_payload_size: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            broker_url: None,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "fieldlab-ingest".into(),
            keep_alive: 60,
            username: None,
            password: None,
            max_payload_size: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Topic filters ingest subscribes to. Topics of emulated devices with their own
    /// `mqtt_topic` are added automatically.
    pub topics: Vec<String>,
    /// Subscription QoS. 1 (default): a message is acknowledged to the broker only after its
    /// points are durable in the store.
    pub qos: Qos,
    /// Most messages written to the store in one batch.
    pub batch_max: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            topics: vec!["devices/+/+/telemetry".into()],
            qos: Qos::AtLeastOnce,
            batch_max: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// Upper bound on emulated devices (seed: MAX_DEVICES).
    pub max_devices: usize,
    /// Seed of the emulator's random generators; the same seed gives the same values.
    pub seed: u64,
    /// The emulated fleet, in the seed's devices.yaml shape. Absent: the demo fleet
    /// (TemperatureSensor, PressureValve, PvInverter). Empty list: no emulated devices.
    pub fleet: Option<Vec<DeviceSpec>>,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            max_devices: 1000,
            seed: 42,
            fleet: None,
        }
    }
}

/// One emulated device, in the shape of the seed's devices.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub device_type: String,
    #[serde(default)]
    pub config: DeviceSettings,
    #[serde(default)]
    pub scenarios: Vec<ScenarioSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceSettings {
    /// Topic override (default `devices/<type>/<name>/telemetry`).
    pub mqtt_topic: Option<String>,
    /// Seconds between messages.
    pub update_interval: f64,
    /// Clamp of the device's main value.
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
    /// Free-form tags stored with the device's series (site, line, ...).
    pub tags: BTreeMap<String, String>,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        DeviceSettings {
            mqtt_topic: None,
            update_interval: 1.0,
            min_value: None,
            max_value: None,
            tags: BTreeMap::new(),
        }
    }
}

/// One phase of a device's scenario timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    pub name: String,
    /// Seconds the phase lasts.
    pub duration: f64,
    /// Phase parameters, e.g. `temperature_range: [45, 50]`.
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where all state lives (WAL, blocks, quarantine).
    pub data_dir: PathBuf,
    /// Blocks whose newest point is older than this are deleted.
    pub data_retention_days: u32,
    pub wal_fsync: FsyncPolicy,
    /// fsync period for `wal_fsync: interval`, e.g. `100ms`.
    pub wal_fsync_interval: String,
    /// The in-memory head is cut into an immutable block when it holds this many points...
    pub head_max_points: usize,
    /// ...or when its oldest point was written this long ago, e.g. `10m`.
    pub block_max_age: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            data_retention_days: 30,
            wal_fsync: FsyncPolicy::Always,
            wal_fsync_interval: "100ms".into(),
            head_max_points: 1_000_000,
            block_max_age: "10m".into(),
        }
    }
}

/// Anomaly detection and data quality (`detect:`). Specs are detector names with optional
/// parameters (`robust_z:window=120`); `fieldlab-detect` checks them at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub enabled: bool,
    /// Detector for every numeric series without an entry in `series`.
    pub default_detector: String,
    /// `<device_id or device_type>.<field>` or `<field>` -> detector spec.
    pub series: BTreeMap<String, String>,
    /// Score at or above which an anomaly event is raised (0..1).
    pub threshold: f64,
    /// `/predict` defaults (the seed's `window_size` and `batch_size`).
    pub window_size: usize,
    pub batch_size: usize,
    /// Autoencoder saved by `fieldlab detect train`, loaded at start-up.
    pub model_path: Option<PathBuf>,
    /// POST every anomaly event as JSON to this URL.
    pub webhook_url: Option<String>,
    /// A device silent this long gets a `stale` quality event (e.g. `60s`; `0s` = off).
    pub stale_after: String,
    /// Apply the lab's physics rules (PV power <= 1.1 V I, wind cut-in/out, ...).
    pub physics: bool,
    /// Per field `[min, max]`, added to (and overriding) the built-in ranges.
    pub ranges: BTreeMap<String, [f64; 2]>,
    /// Per field, largest |change| per second, added to the built-in limits.
    pub max_rate_per_s: BTreeMap<String, f64>,
    /// Per device type, required fields, added to the built-in ones.
    pub required: BTreeMap<String, Vec<String>>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            default_detector: "ensemble".into(),
            // Defaults per emulator type: daily rhythms get the seasonal residual, counters
            // and set-points a short robust z; everything else the ensemble.
            series: [
                ("TemperatureSensor.temperature", "seasonal"),
                ("PressureValve.valve_position", "robust_z:window=60"),
                ("PvInverter.irradiance", "seasonal"),
                ("PvInverter.module_temperature", "seasonal"),
                ("PvInverter.energy_total", "robust_z:window=60"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            threshold: 0.9,
            window_size: 30,
            batch_size: 32,
            model_path: None,
            webhook_url: None,
            stale_after: "60s".into(),
            physics: true,
            ranges: BTreeMap::new(),
            max_rate_per_s: BTreeMap::new(),
            required: BTreeMap::new(),
        }
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

impl Config {
    /// Parse and check a configuration text. `file` is only used in error messages.
    pub fn from_yaml_str(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        let cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            deserialize_located(text, file)?
        };
        cfg.validate().map_err(|(key, message)| ConfigError {
            file: file.map(Path::to_path_buf),
            line: locate_key(text, &key),
            column: None,
            key: Some(key),
            env_var: None,
            message,
        })?;
        Ok(cfg)
    }

    /// Read and check a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Self::from_yaml_str(&read_text(path)?, Some(path))
    }

    /// Load the file (if any), then apply environment overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        all_env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => read_text(p)?,
            None => String::new(),
        };
        let file_cfg = Self::from_yaml_str(&text, path)?;
        let overrides = env_overrides(env, all_env);
        if overrides.is_empty() {
            return Ok(file_cfg);
        }
        let mut tree: serde_yaml::Value =
            serde_yaml::to_value(&file_cfg).expect("config serialises");
        for o in &overrides {
            set_path(&mut tree, &o.path, parse_scalar(&o.value));
        }
        let blame = |key: &str| {
            overrides
                .iter()
                .find(|o| key.starts_with(&o.path.join(".")))
                .map(|o| o.var.clone())
        };
        let cfg: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
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
        cfg.validate().map_err(|(key, message)| ConfigError {
            file: path.map(Path::to_path_buf),
            line: locate_key(&text, &key),
            column: None,
            env_var: blame(&key),
            key: Some(key),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks that types alone cannot express. Returns the dotted key and what is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(url) = &self.mqtt.broker_url {
            parse_broker_url(url).map_err(|m| ("mqtt.broker_url".to_string(), m))?;
        }
        if self.storage.data_retention_days == 0 {
            return Err((
                "storage.data_retention_days".into(),
                "must be at least 1 (days of data to keep)".into(),
            ));
        }
        for (key, v) in [
            (
                "storage.wal_fsync_interval",
                &self.storage.wal_fsync_interval,
            ),
            ("storage.block_max_age", &self.storage.block_max_age),
        ] {
            crate::time::parse_duration_ms(v).map_err(|e| (key.to_string(), e.to_string()))?;
        }
        if self.storage.head_max_points < 1000 {
            return Err((
                "storage.head_max_points".into(),
                "must be at least 1000".into(),
            ));
        }
        if self.ingest.topics.is_empty() {
            return Err((
                "ingest.topics".into(),
                "needs at least one topic filter, e.g. devices/+/+/telemetry".into(),
            ));
        }
        let d = &self.detect;
        if !(0.0..=1.0).contains(&d.threshold) {
            return Err(("detect.threshold".into(), "must be between 0 and 1".into()));
        }
        if d.window_size < 2 {
            return Err(("detect.window_size".into(), "must be at least 2".into()));
        }
        crate::time::parse_duration_ms(&d.stale_after)
            .map_err(|e| ("detect.stale_after".to_string(), e.to_string()))?;
        for (k, [lo, hi]) in &d.ranges {
            if lo > hi {
                return Err((
                    format!("detect.ranges.{k}"),
                    format!("min {lo} is above max {hi}"),
                ));
            }
        }
        if self.ingest.batch_max == 0 {
            return Err(("ingest.batch_max".into(), "must be at least 1".into()));
        }
        if let Some(fleet) = &self.devices.fleet {
            if fleet.len() > self.devices.max_devices {
                return Err((
                    "devices.fleet".into(),
                    format!(
                        "{} devices exceed devices.max_devices = {}",
                        fleet.len(),
                        self.devices.max_devices
                    ),
                ));
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, d) in fleet.iter().enumerate() {
                if d.name.is_empty() || d.name.contains(['/', '+', '#']) {
                    return Err((
                        format!("devices.fleet[{i}].name"),
                        "must be non-empty and must not contain '/', '+' or '#'".into(),
                    ));
                }
                if !names.insert(d.name.as_str()) {
                    return Err((
                        format!("devices.fleet[{i}].name"),
                        format!("device `{}` is defined twice", d.name),
                    ));
                }
                if !(d.config.update_interval > 0.0 && d.config.update_interval.is_finite()) {
                    return Err((
                        format!("devices.fleet[{i}].config.update_interval"),
                        "must be a positive number of seconds".into(),
                    ));
                }
                for (j, s) in d.scenarios.iter().enumerate() {
                    if !(s.duration > 0.0 && s.duration.is_finite()) {
                        return Err((
                            format!("devices.fleet[{i}].scenarios[{j}].duration"),
                            "must be a positive number of seconds".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
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

/// A broker address split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Parse `mqtt://host:port` (also `tcp://`, and `mqtts://`/`ssl://` for TLS).
pub fn parse_broker_url(s: &str) -> Result<BrokerAddr, String> {
    let url = url::Url::parse(s)
        .map_err(|e| format!("`{s}` is not a broker URL ({e}); write mqtt://HOST:PORT"))?;
    let tls = match url.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            return Err(format!(
                "scheme `{other}` is not supported; write mqtt://HOST:PORT (or mqtts:// for TLS)"
            ))
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("`{s}` has no host; write mqtt://HOST:PORT"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    Ok(BrokerAddr { host, port, tls })
}

struct Override {
    var: String,
    path: Vec<String>,
    value: String,
}

/// The seeds' environment variable names and the keys they set.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("LOG_LEVEL", "logging.level"),
    ("LOG_FORMAT", "logging.format"),
    ("MAX_DEVICES", "devices.max_devices"),
    ("MQTT_BROKER_URL", "mqtt.broker_url"),
    ("MQTT_USERNAME", "mqtt.username"),
    ("MQTT_PASSWORD", "mqtt.password"),
    ("HTTP_PORT", "server.port"),
    ("DATA_DIR", "storage.data_dir"),
    ("DATA_RETENTION_DAYS", "storage.data_retention_days"),
];

fn env_overrides(
    env: impl Fn(&str) -> Option<String>,
    all_env: impl IntoIterator<Item = (String, String)>,
) -> Vec<Override> {
    let mut out = Vec::new();
    for (var, key) in ENV_ALIASES {
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
        .filter(|(k, _)| k.starts_with("FIELDLAB__"))
        .collect();
    generic.sort();
    for (var, value) in generic {
        let path = var["FIELDLAB__".len()..]
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
        let line = loc
            .as_ref()
            .map(|l| l.line())
            .or_else(|| key.as_deref().and_then(|k| locate_key(text, k)));
        // serde_yaml appends " at line X column Y"; the location is already in front.
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // serde_yaml sometimes repeats the key path in front of the message.
        if let Some(k) = &key {
            if let Some(rest) = message.strip_prefix(&format!("{k}: ")) {
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
    // Fall back to the parent key.
    let parent = key.rsplit_once(['.', '['])?.0;
    if parent.is_empty() {
        None
    } else {
        locate_key(text, parent)
    }
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

/// The commented default configuration printed by `fieldlab config example`.
pub const EXAMPLE: &str = include_str!("../fieldlab.example.yaml");

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        Config::from_yaml_str(text, Some(Path::new("fieldlab.yaml"))).unwrap_err()
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_yaml_str("", None).unwrap(), Config::default());
        assert_eq!(
            Config::from_yaml_str("# nothing\n", None).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn example_parses_and_matches_defaults_apart_from_the_fleet() {
        let mut cfg = Config::from_yaml_str(EXAMPLE, None).unwrap();
        assert!(cfg.devices.fleet.as_ref().is_some_and(|f| f.len() >= 3));
        cfg.devices.fleet = None;
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = err("server:\n  host: 0.0.0.0\n  port: eighty\n");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("server.port"));
        assert!(
            e.to_string()
                .starts_with("fieldlab.yaml:3: key `server.port`:"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = err("mqtt:\n  port: 1883\n  brokr_url: x\n");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("unknown field `brokr_url`"), "{e}");
    }

    #[test]
    fn bad_enum_lists_choices() {
        let e = err("logging:\n  level: loud\n");
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("logging.level"));
        assert!(e.message.contains("trace, debug, info, warn, error"), "{e}");
        // The seeds write levels in upper case.
        let c = Config::from_yaml_str("logging:\n  level: INFO\n", None).unwrap();
        assert_eq!(c.logging.level, LogLevel::Info);
    }

    #[test]
    fn semantic_error_is_located() {
        let text = "storage:\n  data_dir: /tmp/x\n  data_retention_days: 0\n";
        let e = err(text);
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("storage.data_retention_days"));
        let e = err("mqtt:\n  broker_url: \"http://x:1\"\n");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("scheme `http`"), "{e}");
    }

    #[test]
    fn located_inside_lists() {
        let text = "devices:\n  fleet:\n    - name: a\n      type: TemperatureSensor\n    - name: b\n      type: PressureValve\n      config:\n        update_interval: -1\n";
        let e = err(text);
        assert_eq!(
            e.key.as_deref(),
            Some("devices.fleet[1].config.update_interval")
        );
        assert_eq!(e.line, Some(8));
        let text =
            "devices:\n  fleet:\n    - name: a\n      type: T\n    - name: a\n      type: T\n";
        let e = err(text);
        assert_eq!(e.line, Some(5), "{e}");
    }

    #[test]
    fn env_overrides_use_seed_names_and_generic_form() {
        let env = |k: &str| match k {
            "LOG_LEVEL" => Some("DEBUG".to_string()),
            "MAX_DEVICES" => Some("5".to_string()),
            "MQTT_BROKER_URL" => Some("mqtt://broker:1884".to_string()),
            _ => None,
        };
        let all = vec![("FIELDLAB__SERVER__PORT".to_string(), "9090".to_string())];
        let c = Config::load(None, env, all).unwrap();
        assert_eq!(c.logging.level, LogLevel::Debug);
        assert_eq!(c.devices.max_devices, 5);
        assert_eq!(c.mqtt.broker_url.as_deref(), Some("mqtt://broker:1884"));
        assert_eq!(c.server.port, 9090);
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let env = |k: &str| (k == "MAX_DEVICES").then(|| "lots".to_string());
        let e = Config::load(None, env, vec![]).unwrap_err();
        assert_eq!(e.env_var.as_deref(), Some("MAX_DEVICES"));
        assert!(
            e.to_string()
                .starts_with("environment variable MAX_DEVICES"),
            "{e}"
        );
        let env = |k: &str| (k == "MQTT_BROKER_URL").then(|| "nonsense".to_string());
        let e = Config::load(None, env, vec![]).unwrap_err();
        assert_eq!(e.env_var.as_deref(), Some("MQTT_BROKER_URL"));
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1884").unwrap(),
            BrokerAddr {
                host: "127.0.0.1".into(),
                port: 1884,
                tls: false
            }
        );
        assert_eq!(parse_broker_url("mqtts://h").unwrap().port, 8883);
        assert!(parse_broker_url("localhost:1883").is_err());
    }
}
