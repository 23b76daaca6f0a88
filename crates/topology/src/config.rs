//! The whole of `fieldlab.yaml`: every crate's section, composed.
//!
//! Why here: this is where the application is assembled. Each capability crate owns its
//! section (`fieldlab_store::StorageConfig`, `fieldlab_auth::AuthConfig`, ...) with its
//! defaults and checks; [`Config`] puts them under their keys, adds the environment names of
//! the operations handbooks ([`Config::ENV_ALIASES`]) and the few rules that span sections,
//! and `fieldlab_core::config` loads it with `file:line` errors. The binary crate is not the
//! home because [`crate::up`] takes the composed value and the binary depends on this crate,
//! not the reverse.
//!
//! Three sections are defined here rather than in a capability crate, each for its reason:
//! `mqtt:` chooses between the embedded broker and an external one and holds the credentials
//! that ingest and the event publisher share — a wiring decision, which `start.rs` makes
//! (fieldlab-broker deliberately depends on nothing); `opcua:` must parse even when the
//! `opcua` feature (and with it fieldlab-opcua) is left out; `logging:` is read by the binary
//! only, which cannot be a dependency of this crate.

// Config errors happen once, at start-up; a large error value costs nothing there.
#![allow(clippy::result_large_err)]

use fieldlab_core::config::{self as loader, validate_at, ConfigError, Document, Problem, Section};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use fieldlab_auth::{AuthConfig, LoginConfig};
pub use fieldlab_cluster::ClusterConfig;
pub use fieldlab_core::config::{parse_broker_url, BrokerAddr, ByteSize, HumanDuration, Qos};
pub use fieldlab_emulator::{
    ConnectionMode, DeviceSettings, DeviceSpec, DevicesConfig, MqttProtocol, ScenarioSpec,
};
pub use fieldlab_ingest::{GatewayConfig, IngestConfig, MqttVersion};
pub use fieldlab_mqtt_tls::MqttTlsConfig;
pub use fieldlab_ratelimit::{
    FailMode, RatelimitBackend, RatelimitConfig, RatelimitLimitSpec, RatelimitPolicySpec,
};
pub use fieldlab_server::ServerConfig;
pub use fieldlab_sinks::{InfluxPrecision, SinkConfig, SinkKind};
pub use fieldlab_store::{FsyncPolicy, StorageConfig};
pub use fieldlab_watch::{DetectConfig, PredictLimits};

/// The commented default configuration printed by `fieldlab config example`.
pub const EXAMPLE: &str = include_str!("../fieldlab.example.yaml");

/// The whole configuration. Every field has a default, so an empty file is valid.
///
/// Only sections whose features exist are accepted; a section of a later feature is reported
/// as an unknown key rather than accepted and ignored.
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
    pub ratelimit: RatelimitConfig,
    pub auth: AuthConfig,
    /// The OPC UA server over the emulated fleet (built with the `opcua` cargo feature).
    pub opcua: OpcuaConfig,
    /// Scale-out sinks by name: every point the store acknowledges is also sent to each.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Several replicas as one fleet (NATS JetStream partitions); unset: one replica.
    pub cluster: ClusterConfig,
}

impl Config {
    /// Parse and check a configuration text. `file` is only used in error messages.
    pub fn from_yaml_str(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        loader::from_yaml_str(text, file)
    }

    /// Read and check a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        loader::from_file(path)
    }

    /// Load the file (if any), then apply environment overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        all_env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        loader::load(path, env, all_env)
    }

    /// The distinct devices ingest accepts: `ingest.max_devices`, else `devices.max_devices`.
    pub fn ingest_max_devices(&self) -> usize {
        self.ingest.max_devices.unwrap_or(self.devices.max_devices)
    }
}

impl Section for Config {
    /// Each section's checks, under its key. The order is the order of the problems a file
    /// with several reports first (one at a time, as before the split).
    fn validate(&self) -> Result<(), Problem> {
        validate_at("mqtt", &self.mqtt)?;
        validate_at("storage", &self.storage)?;
        validate_at("detect", &self.detect)?;
        validate_at("ratelimit", &self.ratelimit)?;
        validate_at("auth", &self.auth)?;
        validate_at("server", &self.server)?;
        validate_at("opcua", &self.opcua)?;
        validate_at("logging", &self.logging)?;
        validate_at("ingest", &self.ingest)?;
        fieldlab_sinks::validate_sinks(&self.sinks).map_err(|p| p.within("sinks"))?;
        validate_at("cluster", &self.cluster)?;
        if self.cluster.enabled() && self.mqtt.broker_url.is_none() {
            return Problem::at(
                "mqtt.broker_url",
                "must be set when cluster.nats_url is: devices publish to the NATS server's MQTT \
                 listener, so point mqtt.broker_url (MQTT_BROKER_URL) at it, e.g. mqtt://nats:1883",
            );
        }
        validate_at("devices", &self.devices)
    }
}

impl Document for Config {
    /// The operations handbooks' environment variable names and the keys they set.
    const ENV_ALIASES: &'static [(&'static str, &'static str)] = &[
        ("LOG_LEVEL", "logging.level"),
        ("LOG_FORMAT", "logging.format"),
        ("MAX_DEVICES", "devices.max_devices"),
        ("MQTT_BROKER_URL", "mqtt.broker_url"),
        ("OPC_UA_PORT", "opcua.port"),
        ("MQTT_USERNAME", "mqtt.username"),
        ("MQTT_PASSWORD", "mqtt.password"),
        ("HTTP_PORT", "server.port"),
        ("DATA_DIR", "storage.data_dir"),
        ("DATA_RETENTION_DAYS", "storage.data_retention_days"),
        ("REDIS_URL", "ratelimit.redis_url"),
        ("REDIS_PASSWORD", "ratelimit.redis_password"),
        ("JWT_SECRET", "auth.jwt_secret"),
        ("AUTH_ENABLED", "auth.enabled"),
        ("NATS_URL", "cluster.nats_url"),
        ("FIELDLAB_REPLICA_ID", "cluster.replica_id"),
    ];

    /// A Redis URL given (file, `REDIS_URL`) selects the Redis backend, or is an error next to
    /// an explicit `backend: memory` ([`RatelimitConfig::redis_url_selects_backend`]).
    fn settle(&mut self, given: &dyn Fn(&str) -> bool) -> Result<(), Problem> {
        self.ratelimit
            .redis_url_selects_backend(given("ratelimit.redis_url"), given("ratelimit.backend"))
            .map_err(|p| p.within("ratelimit"))
    }
}

/// Log verbosity (the handbooks write it in upper case, `INFO`; any case is accepted).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}
fieldlab_core::config_words!(LogLevel);

/// Log line format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum LogFormat {
    Text,
    Json,
}
fieldlab_core::config_words!(LogFormat);

/// Logging of the binary (`logging:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    /// Also write logs to this file (rotated by size). Unset: stderr only.
    pub file: Option<PathBuf>,
    /// Rotate the file when it reaches this size, e.g. `100MB`.
    pub max_size: ByteSize,
    /// Rotated files kept (`app.log.1` ... `app.log.N`).
    pub max_files: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::Info,
            format: LogFormat::Text,
            file: None,
            max_size: ByteSize::mib(100),
            max_files: 5,
        }
    }
}

impl Section for LoggingConfig {
    fn validate(&self) -> Result<(), Problem> {
        if self.max_files == 0 {
            return Problem::at("max_files", "must be at least 1");
        }
        Ok(())
    }
}

/// Where the broker is and how fieldlab's own clients reach it (`mqtt:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// External broker (`mqtt://host:port`, or `mqtts://host:8883` for TLS). Empty: run the
    /// embedded broker.
    pub broker_url: Option<String>,
    /// Embedded broker: bind address.
    pub host: String,
    /// Embedded broker: MQTT 3.1.1 port; 0 picks a free port.
    pub port: u16,
    /// Client id of the ingest connection (devices use their own ids). Empty (default):
    /// `fieldlab-ingest-<hostname>-<data-dir hash>`, unique per instance. Set it per instance (e.g. the
    /// pod name) to keep an external broker's persistent session across restarts.
    pub client_id: String,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// Credentials for an external broker.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Largest accepted MQTT payload in bytes.
    pub max_payload_size: usize,
    /// Embedded broker: MQTT over TLS port (8883 by convention); needs the two files below.
    pub tls_port: Option<u16>,
    /// Embedded broker: MQTT over WebSocket port (9001 by convention). Unset: off.
    pub ws_port: Option<u16>,
    /// Embedded broker: PEM certificate chain and key for the TLS listener.
    pub server_cert_file: Option<PathBuf>,
    pub server_key_file: Option<PathBuf>,
    /// TLS of fieldlab's own connections to an external `mqtts://` broker (ingest, the event
    /// publisher, and the emulated devices unless `devices.tls` is set): CA, client certificate
    /// for brokers that require one (mTLS), the name checked in the broker's certificate.
    /// Unset with an `mqtts://` broker: the system's trust store, the URL's host.
    pub tls: Option<MqttTlsConfig>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            broker_url: None,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            keep_alive: 60,
            username: None,
            password: None,
            max_payload_size: 256 * 1024,
            tls_port: None,
            ws_port: None,
            server_cert_file: None,
            server_key_file: None,
            tls: None,
        }
    }
}

impl Section for MqttConfig {
    fn validate(&self) -> Result<(), Problem> {
        if let Some(url) = &self.broker_url {
            parse_broker_url(url).map_err(|m| Problem::new("broker_url", m))?;
        }
        if self.tls_port.is_some()
            && (self.server_cert_file.is_none() || self.server_key_file.is_none())
        {
            return Problem::at(
                "tls_port",
                "MQTT over TLS needs mqtt.server_cert_file and mqtt.server_key_file",
            );
        }
        if let Some(t) = &self.tls {
            validate_at("tls", t)?;
        }
        Ok(())
    }
}

/// Endpoint security of the OPC UA server.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub enum OpcuaSecurity {
    /// No signing, no encryption: for the local lab.
    None,
    /// Basic256Sha256, signed and encrypted.
    Basic256sha256,
}
fieldlab_core::config_words!(OpcuaSecurity);

/// The OPC UA server: `Objects/DeviceEmulator/<device>/<variable>`, methods Start, Stop,
/// RunScenario. Auth off: anonymous access, loopback only unless `auth.allow_open_network`.
/// Auth on: fieldlab users only (user name/password or an X.509 user certificate trusted in
/// `<data_dir>/opcua/pki/users/trusted`, CN = user name), over `basic256sha256` only; viewers
/// browse and read, operators, teachers and admins also call methods. See
/// docs/ARCHITECTURE.md (crates/opcua).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpcuaConfig {
    pub enabled: bool,
    /// Bind address. Loopback by default, like the other listeners; beyond loopback needs
    /// auth on (or `auth.allow_open_network`).
    pub host: String,
    /// OPC UA port (seed: OPC_UA_PORT); 0 picks a free port.
    pub port: u16,
    /// Endpoints offered: `none` (no security) and/or `basic256sha256` (signed and encrypted;
    /// the server certificate is generated under `<data_dir>/opcua/pki`). With auth on `none`
    /// is left out, so `basic256sha256` must be listed.
    pub security: Vec<OpcuaSecurity>,
    /// Accept any client certificate on the secure endpoint (lab use). Off: a new client's
    /// certificate lands in `<data_dir>/opcua/pki/rejected`; move it to `trusted` to allow it.
    pub trust_client_certs: bool,
    /// Most devices shown in the address space (the first by name).
    pub max_devices: usize,
}

impl Default for OpcuaConfig {
    fn default() -> Self {
        OpcuaConfig {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 4840,
            security: vec![OpcuaSecurity::None, OpcuaSecurity::Basic256sha256],
            trust_client_certs: false,
            max_devices: 1000,
        }
    }
}

/// The security list is checked when the server starts (an empty list is an error only with
/// `opcua.enabled`); the words themselves by their parser.
impl Section for OpcuaConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        Config::from_yaml_str(text, Some(Path::new("fieldlab.yaml"))).unwrap_err()
    }

    #[test]
    fn allowed_hosts_and_login_limits_are_checked_where_they_are_written() {
        let c = Config::from_yaml_str(
            "server:\n  allowed_hosts: [lab.local, \"[fd00::1]\"]\nauth:\n  login:\n    per_user: 3\n",
            None,
        )
        .unwrap();
        assert_eq!(c.server.allowed_hosts, ["lab.local", "[fd00::1]"]);
        assert_eq!((c.auth.login.per_user, c.auth.login.per_address), (3, 20));
        let e = err(
            "server:\n  port: 8080\n  allowed_hosts:\n    - lab.local\n    - http://lab.local/\n",
        );
        assert_eq!(e.key.as_deref(), Some("server.allowed_hosts[1]"), "{e}");
        // The line of the list's key (locate_key does not count scalar list items).
        assert_eq!(e.line, Some(3), "{e}");
        assert!(
            e.to_string().contains("fieldlab.yaml:3") && e.to_string().contains("bare name"),
            "{e}"
        );
        let e = err("auth:\n  login:\n    window: soon\n");
        assert_eq!(e.key.as_deref(), Some("auth.login.window"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        let e = err("auth:\n  login:\n    per_users: 3\n");
        assert!(e.to_string().contains("per_users"), "{e}");
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
    fn a_redis_url_selects_redis_or_is_a_clear_error() {
        let none = |_: &str| None::<String>;
        let redis_env = |k: &str| (k == "REDIS_URL").then(|| "redis://r:6379".to_string());
        // REDIS_URL alone: the redis backend.
        let c = Config::load(None, redis_env, Vec::new()).unwrap();
        assert_eq!(c.ratelimit.backend, RatelimitBackend::Redis);
        assert_eq!(c.ratelimit.redis_url, "redis://r:6379");
        // Nothing given: memory.
        let c = Config::load(None, none, Vec::new()).unwrap();
        assert_eq!(c.ratelimit.backend, RatelimitBackend::Memory);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.yaml");
        // In the file, without a backend: redis; with hybrid: kept.
        std::fs::write(&f, "ratelimit:\n  redis_url: redis://r:6379\n").unwrap();
        let c = Config::load(Some(&f), none, Vec::new()).unwrap();
        assert_eq!(c.ratelimit.backend, RatelimitBackend::Redis);
        std::fs::write(&f, "ratelimit:\n  backend: hybrid\n").unwrap();
        let c = Config::load(Some(&f), redis_env, Vec::new()).unwrap();
        assert_eq!(c.ratelimit.backend, RatelimitBackend::Hybrid);
        // backend: memory given and a URL given: an error naming the key, the file and line.
        std::fs::write(&f, "ratelimit:\n  backend: memory\n").unwrap();
        let e = Config::load(Some(&f), redis_env, Vec::new()).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ratelimit.redis_url"));
        assert_eq!(e.env_var.as_deref(), Some("REDIS_URL"));
        assert!(
            e.to_string().contains("choose backend redis or hybrid"),
            "{e}"
        );
        std::fs::write(
            &f,
            "ratelimit:\n  backend: memory\n  redis_url: redis://r:6379\n",
        )
        .unwrap();
        let e = Config::load(Some(&f), none, Vec::new()).unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("ratelimit.redis_url"), Some(3))
        );
    }

    #[test]
    fn example_parses_and_matches_defaults_apart_from_the_fleet() {
        let mut cfg = Config::from_yaml_str(EXAMPLE, None).unwrap();
        assert!(cfg.devices.fleet.as_ref().is_some_and(|f| f.len() >= 9));
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
        // The handbooks write levels in upper case.
        let c = Config::from_yaml_str("logging:\n  level: INFO\n", None).unwrap();
        assert_eq!(c.logging.level, LogLevel::Info);
    }

    #[test]
    fn predict_caps_are_checked_and_located() {
        let e = err("detect:\n  predict:\n    max_window: 2\n");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("detect.predict.max_window"));
        let e = err("detect:\n  window_size: 60\n  predict:\n    max_window: 50\n");
        assert_eq!(e.key.as_deref(), Some("detect.window_size"));
        assert!(e.message.contains("max_window (50)"), "{e}");
        let e = err("detect:\n  predict:\n    max_body: 8 parsecs\n");
        assert_eq!(e.key.as_deref(), Some("detect.predict.max_body"));
        let e = err("detect:\n  events_max_size: 1KB\n");
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("detect.events_max_size"), Some(2))
        );
        let e = err("detect:\n  predict:\n    max_concurrent_jobs: 0\n");
        assert_eq!(e.key.as_deref(), Some("detect.predict.max_concurrent_jobs"));
        assert_eq!(PredictLimits::default().max_body.get(), 8 << 20);
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
    fn quarantine_budget_takes_a_size_or_a_number_and_a_bad_one_is_located() {
        let ok = |t: &str| {
            Config::from_yaml_str(t, None)
                .unwrap()
                .storage
                .quarantine_max_bytes
                .get()
        };
        assert_eq!(
            Config::default().storage.quarantine_max_bytes.get(),
            64 << 20
        );
        assert_eq!(ok("storage:\n  quarantine_max_bytes: 8MiB\n"), 8 << 20);
        assert_eq!(ok("storage:\n  quarantine_max_bytes: 1048576\n"), 1 << 20);
        let e = err("storage:\n  data_dir: /tmp/x\n  quarantine_max_bytes: 12 parsecs\n");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("storage.quarantine_max_bytes"));
        let e = err("storage:\n  quarantine_max_bytes: 4KiB\n");
        assert_eq!(e.key.as_deref(), Some("storage.quarantine_max_bytes"));
        assert!(e.message.contains("64KiB"), "{e}");
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
    fn ingest_limits_default_from_max_devices_and_errors_name_the_key() {
        let env = |k: &str| (k == "MAX_DEVICES").then(|| "7".to_string());
        let c = Config::load(None, env, vec![]).unwrap();
        assert_eq!(c.ingest_max_devices(), 7);
        let c = Config::from_yaml_str("ingest:\n  max_devices: 50\n", None).unwrap();
        assert_eq!(c.ingest_max_devices(), 50);
        let text = "ingest:\n  gateways:\n    gw1:\n      devices: [\"plant1_*\"]\n      max_devices: 20\n";
        let c = Config::from_yaml_str(text, None).unwrap();
        assert_eq!(c.ingest.gateways["gw1"].max_devices, 20);
        let e = err("ingest:\n  gateways:\n    gw1:\n      devices: [\"a/b\"]\n");
        assert_eq!(e.key.as_deref(), Some("ingest.gateways.gw1.devices"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");
        let e = err("ingest:\n  max_series_per_device: 0\n");
        assert_eq!(
            e.key.as_deref(),
            Some("ingest.max_series_per_device"),
            "{e}"
        );
        assert_eq!(e.line, Some(2), "{e}");
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
    fn sinks_are_checked_and_located() {
        let ok = "sinks:\n  influx:\n    type: influxdb\n    url: http://127.0.0.1:8086\n    db: lab\n  pg:\n    type: postgres\n    url: postgres://u@h/db\n";
        let c = Config::from_yaml_str(ok, None).unwrap();
        assert_eq!(c.sinks["influx"].db.as_deref(), Some("lab"));
        assert_eq!(c.sinks["pg"].kind, SinkKind::Postgres);
        assert_eq!(c.sinks["pg"].table, "fieldlab_points");
        // Unknown key inside a sink.
        let e =
            err("sinks:\n  influx:\n    type: influxdb\n    url: http://h:8086\n    dbb: lab\n");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("unknown field `dbb`"), "{e}");
        // An InfluxDB key on a postgres sink.
        let e = err("sinks:\n  pg:\n    type: postgres\n    url: postgres://h/db\n    bucket: x\n");
        assert_eq!(e.key.as_deref(), Some("sinks.pg.bucket"));
        assert_eq!(e.line, Some(5), "{e}");
        // Neither db nor bucket.
        let e = err("sinks:\n  influx:\n    type: influxdb\n    url: http://h:8086\n");
        assert_eq!(e.key.as_deref(), Some("sinks.influx.db"));
        assert_eq!(e.line, Some(2), "{e}");
        let e = err("sinks:\n  i:\n    type: influxdb\n    url: http://h:8086\n    db: x\n    flush_interval: soon\n");
        assert_eq!(e.line, Some(6), "{e}");
        let e = err("sinks:\n  i:\n    type: kafka\n");
        assert!(e.message.contains("influxdb, postgres"), "{e}");
    }

    #[test]
    fn sinks_and_share_group_from_the_environment() {
        let all = vec![
            (
                "FIELDLAB__SINKS__PG__TYPE".to_string(),
                "postgres".to_string(),
            ),
            (
                "FIELDLAB__SINKS__PG__URL".to_string(),
                "postgres://u:secret@h/db".to_string(),
            ),
            (
                "FIELDLAB__INGEST__SHARE_GROUP".to_string(),
                "lab".to_string(),
            ),
        ];
        let c = Config::load(None, |_| None, all).unwrap();
        assert_eq!(c.sinks["pg"].url, "postgres://u:secret@h/db");
        assert_eq!(c.ingest.share_group.as_deref(), Some("lab"));
        let all = vec![(
            "FIELDLAB__SINKS__PG__TYPE".to_string(),
            "postgres".to_string(),
        )];
        let e = Config::load(None, |_| None, all).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sinks.pg.url"));
        assert!(e.message.contains("required"), "{e}");
        let e = err("ingest:\n  share_group: lab\n  mqtt_version: 3.1.1\n");
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn mqtt_tls_from_the_environment() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = Config::load(
            None,
            |_| None,
            env(&[
                ("FIELDLAB__MQTT__BROKER_URL", "mqtts://broker.example:8883"),
                ("FIELDLAB__MQTT__TLS__CA_FILE", "/etc/fieldlab/ca.pem"),
                ("FIELDLAB__MQTT__TLS__CERT_FILE", "/etc/fieldlab/client.pem"),
                ("FIELDLAB__MQTT__TLS__KEY_FILE", "/etc/fieldlab/client.key"),
                ("FIELDLAB__MQTT__TLS__SERVER_NAME", "broker.internal"),
            ]),
        )
        .unwrap();
        let t = c.mqtt.tls.expect("mqtt.tls from the environment");
        assert_eq!(
            t.ca_file.as_deref(),
            Some(Path::new("/etc/fieldlab/ca.pem"))
        );
        assert_eq!(
            t.cert_file.as_deref(),
            Some(Path::new("/etc/fieldlab/client.pem"))
        );
        assert_eq!(
            t.key_file.as_deref(),
            Some(Path::new("/etc/fieldlab/client.key"))
        );
        assert_eq!(t.server_name.as_deref(), Some("broker.internal"));
        let e = Config::load(
            None,
            |_| None,
            env(&[("FIELDLAB__MQTT__TLS__CA_FLIE", "x")]),
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("mqtt.tls.ca_flie"), "{e}");
    }

    #[test]
    fn the_example_config_shows_the_default_fleet() {
        let cfg = Config::from_yaml_str(EXAMPLE, None).unwrap();
        let names = |f: Vec<DeviceSpec>| -> Vec<(String, String)> {
            f.into_iter().map(|d| (d.name, d.device_type)).collect()
        };
        assert_eq!(
            names(cfg.devices.fleet.unwrap()),
            names(fieldlab_emulator::demo_fleet())
        );
    }

    #[test]
    fn opcua_security_words_are_checked_where_written() {
        let c = Config::from_yaml_str("opcua:\n  security: [NONE]\n", None).unwrap();
        assert_eq!(c.opcua.security, [OpcuaSecurity::None]);
        let e = err("opcua:\n  security:\n    - none\n    - aes\n");
        assert_eq!(e.key.as_deref(), Some("opcua.security[1]"), "{e}");
        assert!(
            e.message
                .contains("`aes` is not one of: none, basic256sha256"),
            "{e}"
        );
    }

    /// The fuzz corpus of `config_yaml` (fieldlab-core fuzzes the loader with a stand-in
    /// document) through the composed document with every section: no input panics.
    #[test]
    fn config_yaml_corpus_replays_through_every_section() {
        fieldlab_core::fuzzing::replay(env!("CARGO_MANIFEST_DIR"), "config_yaml", |data| {
            if let Ok(text) = std::str::from_utf8(data) {
                if let Err(e) = Config::from_yaml_str(text, Some(Path::new("fieldlab.yaml"))) {
                    let _ = e.to_string();
                }
            }
        });
    }
}
