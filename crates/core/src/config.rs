//! `fieldlab.yaml`: what the user writes, checked strictly, with errors that point at the line.
//!
//! Loading goes file -> environment -> command-line flags, later ones winning. The file is parsed
//! straight from its text so that every error carries `file:line` and the dotted key
//! (`mqtt.port`); unknown keys are errors, not silently ignored. Environment overrides accept the
//! names the operations handbooks use (`LOG_LEVEL`, `MAX_DEVICES`, `MQTT_BROKER_URL`, ...) and a
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
    pub ratelimit: RatelimitConfig,
    pub auth: AuthConfig,
    /// The OPC UA server over the emulated fleet (built with the `opcua` cargo feature).
    pub opcua: OpcuaConfig,
    /// Scale-out sinks by name: every point the store acknowledges is also sent to each.
    pub sinks: BTreeMap<String, SinkConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server binds to. Loopback by default: there is no auth yet.
    pub host: String,
    /// HTTP port; 0 picks a free port (printed at start-up).
    pub port: u16,
    /// PEM certificate chain and private key: set both to serve HTTPS (rustls).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle: when set, clients must present a certificate signed by it (mTLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// With auth off, the host names (`Host` header, port ignored) fieldlab answers besides
    /// loopback names and IP addresses, e.g. `[lab.local]`: any other name is refused, so a
    /// web page cannot reach the lab through DNS rebinding. Also the origins (by host) whose
    /// browser writes and WebSocket upgrades are accepted besides the server's own.
    pub allowed_hosts: Vec<String>,
    /// Also export deprecated metric names (`active_devices_count`, now
    /// `fieldlab_active_devices`) for dashboards and autoscalers not yet moved. Removed in the
    /// next release.
    pub legacy_metric_names: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            allowed_hosts: Vec::new(),
            legacy_metric_names: false,
        }
    }
}

/// Who may call fieldlab (see `fieldlab-auth`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Off: every request acts as a local admin (the demo). Then HTTP and the embedded broker
    /// must stay on loopback unless `allow_open_network` is set.
    pub enabled: bool,
    /// Lifetime of tokens from `POST /api/v1/auth/token`, e.g. `1h`.
    pub token_ttl: String,
    /// HS256 signing secret (env JWT_SECRET), at least 32 bytes. Unset: generated at first
    /// start into `<data_dir>/auth/jwt.secret` (mode 0600).
    pub jwt_secret: Option<String>,
    /// Let Prometheus scrape `/metrics` without credentials.
    pub public_metrics: bool,
    /// Allow binding HTTP, MQTT or OPC UA to a non-loopback address with auth off (loud
    /// warning). With auth on it is not needed: every listener takes fieldlab users only.
    pub allow_open_network: bool,
    /// External OAuth2 issuer: its `iss`, the expected `aud`, and its JWKS (file or URL).
    pub oauth2_issuer: Option<String>,
    pub oauth2_audience: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// Claim of external tokens that lists fieldlab roles (array or space-separated).
    pub roles_claim: String,
    /// Password checks (token requests, MQTT and OPC UA logins): the argon2 pool and the
    /// failure limiter.
    pub login: LoginConfig,
}

/// How password checks are bounded (`auth.login`). Each argon2id check takes ~19 MiB and tens
/// of milliseconds of CPU, so at most `workers` run at once; a check that cannot start within
/// `queue_wait` is refused (HTTP 503, MQTT CONNACK 3). Failed logins are counted per user name
/// and per client address (IPv6 by /64): past `per_user` / `per_address` failures within
/// `window`, further attempts are refused without checking (HTTP 429 with `Retry-After`, MQTT
/// CONNACK 5) for `window`, doubling with each lockout up to `max_backoff`. A successful login
/// clears its user's count. 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// argon2 checks at once; 0: one per core, at most 4.
    pub workers: usize,
    pub queue_wait: String,
    pub per_user: u32,
    pub per_address: u32,
    pub window: String,
    pub max_backoff: String,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            workers: 0,
            queue_wait: "2s".into(),
            per_user: 5,
            per_address: 20,
            window: "1m".into(),
            max_backoff: "15m".into(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            token_ttl: "1h".into(),
            jwt_secret: None,
            public_metrics: true,
            allow_open_network: false,
            oauth2_issuer: None,
            oauth2_audience: None,
            jwks_file: None,
            jwks_url: None,
            roles_claim: "roles".into(),
            login: LoginConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    /// Also write logs to this file (rotated by size). Unset: stderr only.
    pub file: Option<PathBuf>,
    /// Rotate the file when it reaches this size, e.g. `100MB`.
    pub max_size: String,
    /// Rotated files kept (`app.log.1` ... `app.log.N`).
    pub max_files: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::Info,
            format: LogFormat::Text,
            file: None,
            max_size: "100MB".into(),
            max_files: 5,
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
    /// Log verbosity (the handbooks write it in upper case, `INFO`; any case is accepted).
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
    /// How emulated devices connect to the broker.
    ConnectionMode { PerDevice => "per_device", Shared => "shared" }
);
word_enum!(
    /// MQTT protocol version.
    MqttProtocol { V311 => "3.1.1", V5 => "5" }
);
word_enum!(
    /// MQTT quality of service.
    Qos { AtMostOnce => "0", AtLeastOnce => "1", ExactlyOnce => "2" }
);

word_enum!(
    /// MQTT protocol version of the ingest connection.
    MqttVersion { Auto => "auto", V311 => "3.1.1", V5 => "5" }
);
word_enum!(
    /// Kind of scale-out sink.
    SinkKind { Influxdb => "influxdb", Postgres => "postgres" }
);
word_enum!(
    /// Timestamp precision of InfluxDB writes (`precision=` of the /write endpoint).
    InfluxPrecision { Ms => "ms", S => "s", Us => "us", Ns => "ns" }
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
    /// Shared-subscription group: several fieldlab instances on one external broker with the
    /// same group split the messages between them (`$share/<group>/<filter>`, MQTT 5).
    pub share_group: Option<String>,
    /// MQTT version of the ingest connection: `auto` = 5 for an external broker, 3.1.1 for the
    /// embedded one.
    pub mqtt_version: MqttVersion,
    /// Recent (seq, ts) pairs remembered per device to store a redelivered message once.
    /// 0 turns de-duplication off.
    pub dedup_window: usize,
    /// MQTT connections of this instance's ingest, sharing one shared subscription and one
    /// store writer. A broker caps unacknowledged messages per connection (rumqttd: 100), and
    /// a store batch (one fsync) holds at most what is in flight, so more connections mean
    /// bigger batches — on a broker whose shared subscriptions are cheap (Mosquitto, EMQX,
    /// HiveMQ). 0 = auto = 1: the embedded broker (rumqttd 0.20) routes shared subscriptions
    /// so slowly that 2 connections measured 4x slower than 1 (`fieldlab bench ingest
    /// --connections 2`).
    pub connections: usize,
    /// Most distinct devices ingest accepts, emulated and external together; readings of a
    /// further device are quarantined with reason "device limit". Unset (default): the value
    /// of `devices.max_devices` (environment: MAX_DEVICES).
    pub max_devices: Option<usize>,
    /// Most series (fields) per device; readings adding a further one are quarantined with
    /// reason "series limit".
    pub max_series_per_device: usize,
    /// Memory budget of the per-series detector and per-device quality state, in MiB; the
    /// least recently used state is evicted beyond it (and rebuilt, from a cold start, when
    /// its series speaks again).
    pub state_memory_mb: usize,
    /// Logins that may publish readings of other devices (gateways), by login name. A gateway
    /// publishes on its own topic `devices/<type>/<login>/telemetry`; see [`GatewayConfig`].
    pub gateways: BTreeMap<String, GatewayConfig>,
}

/// What one gateway login may speak for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Device ids the gateway may name in its payloads: exact ids or patterns with `*`
    /// (`plant1_*`). Its own id is always allowed.
    pub devices: Vec<String>,
    /// Most distinct devices this gateway may bring in; readings of a further device are
    /// quarantined with reason "device limit".
    pub max_devices: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            devices: Vec::new(),
            max_devices: 1000,
        }
    }
}

impl Config {
    /// The distinct devices ingest accepts: `ingest.max_devices`, else `devices.max_devices`.
    pub fn ingest_max_devices(&self) -> usize {
        self.ingest.max_devices.unwrap_or(self.devices.max_devices)
    }
}

/// A device id ingest accepts: 1 to 128 bytes, no control characters, no MQTT topic level or
/// wildcard characters (`/`, `+`, `#`). `Err` says what is wrong.
pub fn check_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the device id is empty".into());
    }
    if id.len() > 128 {
        return Err(format!(
            "the device id is {} bytes long; at most 128 are accepted",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the device id contains the control character U+{:04X}",
            c as u32
        ));
    }
    if let Some(c) = id.chars().find(|c| matches!(c, '/' | '+' | '#')) {
        return Err(format!(
            "the device id contains `{c}`, which MQTT topics reserve"
        ));
    }
    Ok(())
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            topics: vec!["devices/+/+/telemetry".into()],
            qos: Qos::AtLeastOnce,
            batch_max: 4096,
            share_group: None,
            mqtt_version: MqttVersion::Auto,
            dedup_window: 256,
            connections: 0,
            max_devices: None,
            max_series_per_device: 1000,
            state_memory_mb: 256,
            gateways: BTreeMap::new(),
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
    /// The emulated fleet, in the legacy emulator's devices.yaml shape. Absent: the default
    /// fleet (TemperatureSensor, PressureValve and one device per renewable-lab station type).
    /// Empty list: no emulated devices.
    pub fleet: Option<Vec<DeviceSpec>>,
    /// Custom device types built from value generators (checked by the emulator, which
    /// names the key of a bad entry; see `fieldlab devices types`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<serde_yaml::Value>,
    /// `per_device`: one MQTT connection (own client id, last will) per device.
    /// `shared`: devices share a few connections, for fleets of 10k+ devices.
    pub connection: ConnectionMode,
    /// Number of connections in `shared` mode.
    pub shared_connections: usize,
    /// MQTT protocol of the device connections: `3.1.1` or `5`.
    pub protocol: MqttProtocol,
    /// Telemetry topic of devices without `mqtt_topic`; `{type}` and `{id}` are replaced.
    pub topic_template: String,
    /// MQTT over TLS for the device connections. Unset: plain TCP.
    pub tls: Option<MqttTlsConfig>,
}

/// TLS of an MQTT client connection (rustls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MqttTlsConfig {
    /// PEM CA bundle the broker's certificate must chain to. Unset: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for brokers that require client certificates.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Host name the devices connect to and check in the broker's certificate. Unset:
    /// `localhost` for the embedded broker's TLS listener, else the broker URL's host.
    pub server_name: Option<String>,
}

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
    pub security: Vec<String>,
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
            security: vec!["none".into(), "basic256sha256".into()],
            trust_client_certs: false,
            max_devices: 1000,
        }
    }
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            max_devices: 1000,
            seed: 42,
            fleet: None,
            types: Vec::new(),
            connection: ConnectionMode::PerDevice,
            shared_connections: 4,
            protocol: MqttProtocol::V311,
            topic_template: "devices/{type}/{id}/telemetry".into(),
            tls: None,
        }
    }
}

/// One emulated device, in the shape of the legacy emulator's devices.yaml.
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
    /// Disk budget of the quarantine (`64MiB`, or a number of bytes); its oldest files are
    /// deleted beyond it, and what they held is counted.
    #[serde(deserialize_with = "size_or_number")]
    pub quarantine_max_bytes: String,
    /// At most this many block files are kept open at once; the others are opened when a
    /// query reads them. Keep it well below the process' open-file limit (`ulimit -n`).
    pub max_open_blocks: usize,
}

/// A byte size written with a unit (`64MiB`) or as a plain number of bytes.
fn size_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    Ok(match Size::deserialize(d)? {
        Size::Bytes(n) => n.to_string(),
        Size::Text(s) => s,
    })
}

impl StorageConfig {
    /// `quarantine_max_bytes` in bytes (valid after [`Config::validate`]; the default otherwise).
    pub fn quarantine_budget(&self) -> u64 {
        parse_size(&self.quarantine_max_bytes).unwrap_or(64 << 20)
    }
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
            quarantine_max_bytes: "64MiB".into(),
            max_open_blocks: 512,
        }
    }
}

/// One scale-out sink (`sinks.<name>` in fieldlab.yaml). Keys of the other kind are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// `http://host:8086` for InfluxDB (VictoriaMetrics: `http://host:8428`);
    /// `postgres://user@host:5432/db` (or a libpq key=value string) for PostgreSQL.
    pub url: String,
    /// InfluxDB 1.x database (`/write?db=`). Also VictoriaMetrics' /write.
    pub db: Option<String>,
    /// InfluxDB 1.x credentials (`u=`/`p=`); use environment overrides for the password.
    pub username: Option<String>,
    pub password: Option<String>,
    /// InfluxDB 2/3 form: org, bucket and token (`/api/v2/write`, `Authorization: Token ...`).
    pub org: Option<String>,
    pub bucket: Option<String>,
    pub token: Option<String>,
    pub precision: InfluxPrecision,
    /// InfluxDB measurement the points are written to.
    pub measurement: String,
    /// PostgreSQL table (created if missing), optionally `schema.table`.
    pub table: String,
    /// Most points in one write.
    pub batch_max: usize,
    /// A partial batch is written after this long, e.g. `1s`.
    pub flush_interval: String,
    /// Points buffered for this sink. When full, ingest waits (back-pressure).
    pub buffer_max: usize,
    /// Longest pause between retries (back-off doubles from 100 ms up to this).
    pub max_backoff: String,
    /// Timeout of one write request.
    pub timeout: String,
    /// At shutdown, how long to keep trying before spooling what is left to disk.
    pub drain_timeout: String,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            kind: SinkKind::Influxdb,
            url: String::new(),
            db: None,
            username: None,
            password: None,
            org: None,
            bucket: None,
            token: None,
            precision: InfluxPrecision::Ms,
            measurement: "telemetry".into(),
            table: "fieldlab_points".into(),
            batch_max: 5000,
            flush_interval: "1s".into(),
            buffer_max: 100_000,
            max_backoff: "30s".into(),
            timeout: "10s".into(),
            drain_timeout: "10s".into(),
        }
    }
}

impl SinkConfig {
    /// Checks of one sink; the key is relative to `sinks.<name>`.
    fn validate(&self) -> Result<(), (String, String)> {
        let e = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        if self.url.is_empty() {
            return e("url", "is required");
        }
        for (k, v) in [
            ("flush_interval", &self.flush_interval),
            ("max_backoff", &self.max_backoff),
            ("timeout", &self.timeout),
            ("drain_timeout", &self.drain_timeout),
        ] {
            crate::time::parse_duration_ms(v).map_err(|err| (k.to_string(), err.to_string()))?;
        }
        if self.batch_max == 0 {
            return e("batch_max", "must be at least 1");
        }
        if self.buffer_max < self.batch_max {
            return e("buffer_max", "must be at least batch_max");
        }
        let influx_only = [
            ("db", self.db.is_some()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
            ("org", self.org.is_some()),
            ("bucket", self.bucket.is_some()),
            ("token", self.token.is_some()),
        ];
        match self.kind {
            SinkKind::Influxdb => {
                let u = url::Url::parse(&self.url)
                    .map_err(|err| ("url".to_string(), format!("`{}`: {err}", self.url)))?;
                if u.scheme() != "http" {
                    return e("url", "write http://HOST:PORT (https is not supported yet)");
                }
                if self.db.is_none() == self.bucket.is_none() {
                    return e(
                        "db",
                        "set either `db` (InfluxDB 1.x, VictoriaMetrics) or `bucket` with `org` \
                         and `token` (InfluxDB 2/3)",
                    );
                }
                if self.bucket.is_some() && self.org.is_none() {
                    return e("org", "is required with `bucket` (InfluxDB 2/3)");
                }
                if self.measurement.is_empty() {
                    return e("measurement", "must not be empty");
                }
            }
            SinkKind::Postgres => {
                if let Some((k, _)) = influx_only.iter().find(|(_, set)| *set) {
                    return e(
                        k,
                        "is an InfluxDB key; a postgres sink takes its credentials in `url`",
                    );
                }
                let ok = |s: &str| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                };
                if !self.table.split('.').all(ok) || self.table.split('.').count() > 2 {
                    return e(
                        "table",
                        "must be `name` or `schema.name` of letters, digits and _",
                    );
                }
            }
        }
        Ok(())
    }
}

word_enum!(
    /// Where rate-limit state lives.
    ///
    /// - `memory`: in this process (one instance, or limits per instance).
    /// - `redis`: in Redis, one atomic script per check: limits hold across all instances.
    /// - `hybrid`: Redis, plus a local cache of keys known to be over their limit (a rejected
    ///   key is refused locally until its retry-after passes, saving the round trip).
    RatelimitBackend { Memory => "memory", Redis => "redis", Hybrid => "hybrid" }
);
word_enum!(
    /// What a Redis-backed policy answers while Redis is unreachable: `open` allows (and counts
    /// it in `fieldlab_ratelimit_fail_open_total`), `closed` rejects.
    FailMode { Open => "open", Closed => "closed" }
);

/// Rate limiting: the service (`/api/ratelimit/...`) and fieldlab guarding itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RatelimitConfig {
    pub backend: RatelimitBackend,
    /// Redis for the `redis` and `hybrid` backends (env REDIS_URL).
    pub redis_url: String,
    /// Password for Redis, if not in the URL (env REDIS_PASSWORD).
    pub redis_password: Option<String>,
    /// Longest wait for one Redis check before the policy's fail mode applies, e.g. `250ms`.
    pub redis_timeout: String,
    /// Keys held in memory (in-process backend, hybrid cache); least recently used go first.
    pub max_keys: usize,
    /// Peers whose `X-Forwarded-For` is believed (IPs or CIDRs, e.g. 10.0.0.0/8). Empty: the
    /// header is ignored and the peer address is the client.
    pub trusted_proxies: Vec<String>,
    /// The policy of keys that match no exact key and no pattern.
    pub default: RatelimitPolicySpec,
    /// Policies of exact keys.
    pub keys: BTreeMap<String, RatelimitPolicySpec>,
    /// Policies of key patterns (`*` matches any run of characters, e.g. `user:*`); the longest
    /// matching pattern wins.
    pub patterns: BTreeMap<String, RatelimitPolicySpec>,
    /// Guard fieldlab's own HTTP API per principal (or client IP). null: no guard.
    pub api: Option<RatelimitPolicySpec>,
    /// Guard ingest per device: over-limit messages are quarantined as "rate limited". null: no guard.
    pub ingest: Option<RatelimitPolicySpec>,
}

impl RatelimitConfig {
    /// A Redis URL given (`REDIS_URL`, `ratelimit.redis_url`, `--redis-url`) means Redis: with
    /// no backend given it selects `redis`; with `backend: memory` given it is an error, since
    /// the limits would silently stay in one process's memory.
    pub fn redis_url_selects_backend(
        &mut self,
        url_given: bool,
        backend_given: bool,
    ) -> Result<(), (String, String)> {
        if !url_given || self.backend != RatelimitBackend::Memory {
            return Ok(());
        }
        if backend_given {
            return Err((
                "ratelimit.redis_url".into(),
                "is set, but ratelimit.backend is memory, which never uses it (limits would stay in this process); choose backend redis or hybrid, or remove the URL (and REDIS_URL)".into(),
            ));
        }
        self.backend = RatelimitBackend::Redis;
        Ok(())
    }
}

impl Default for RatelimitConfig {
    fn default() -> Self {
        RatelimitConfig {
            backend: RatelimitBackend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_password: None,
            redis_timeout: "250ms".into(),
            max_keys: 100_000,
            trusted_proxies: Vec::new(),
            default: RatelimitPolicySpec::default(),
            keys: BTreeMap::new(),
            patterns: BTreeMap::new(),
            api: None,
            ingest: None,
        }
    }
}

/// A policy: limits that must all pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RatelimitPolicySpec {
    pub limits: Vec<RatelimitLimitSpec>,
    /// Dry run: decisions are recorded (metrics, headers) but nothing is ever rejected.
    pub shadow: bool,
    /// Allow (`open`) or reject (`closed`) while Redis is unreachable.
    pub fail: FailMode,
}

impl Default for RatelimitPolicySpec {
    fn default() -> Self {
        RatelimitPolicySpec {
            limits: vec![RatelimitLimitSpec {
                algorithm: "token_bucket".into(),
                limit: 100,
                period: "1m".into(),
                burst: None,
                max_delay: None,
            }],
            shadow: false,
            fail: FailMode::Open,
        }
    }
}

/// One limit. `algorithm`: token_bucket | gcra | fixed_window | sliding_log | sliding_counter |
/// leaky_bucket | concurrency. `limit` units per `period` (for concurrency: leases held at once,
/// `period` = lease expiry); `burst`: bucket capacity (token_bucket, gcra; default `limit`);
/// `max_delay`: longest queue wait (leaky_bucket; default 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatelimitLimitSpec {
    pub algorithm: String,
    pub limit: u64,
    pub period: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
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
    /// `/predict` defaults (the legacy `window_size` and `batch_size`).
    pub window_size: usize,
    pub batch_size: usize,
    /// Autoencoder saved by `fieldlab detect train`, loaded at start-up.
    pub model_path: Option<PathBuf>,
    /// The only directory `POST /api/v1/models/load` loads from (paths in requests are relative
    /// to it). Unset: `<data_dir>/models`.
    pub models_dir: Option<PathBuf>,
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
    /// Caps of `/predict` and `/predict/batch`: CPU and memory per request are bounded by
    /// these, whoever calls.
    pub predict: PredictLimits,
    /// Largest size of each event log (`events/quality.jsonl`, `events/anomalies.jsonl`) before
    /// it is rotated to `.1` (one older file kept), e.g. `64MB`: disk for events is bounded by
    /// this, however many events devices provoke.
    pub events_max_size: String,
}

impl DetectConfig {
    /// `events_max_size` in bytes (checked by [`Config::validate`]).
    pub fn events_max_bytes(&self) -> u64 {
        parse_size(&self.events_max_size).unwrap_or(64 << 20)
    }
}

/// `detect.predict`: what one `/predict` or `/predict/batch` request may cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictLimits {
    /// Rows per request (all row sets of a batch together); more is 413.
    pub max_rows: usize,
    /// Largest `window_size`; more is 422.
    pub max_window: usize,
    /// Estimated steps of scoring per request (summed over a batch's row sets): rows x window
    /// x features for robust_z and ensemble, per-method factors for the forest and the
    /// autoencoder (`fieldlab_watch::predict::work`); more is 413.
    pub max_work: u64,
    /// Largest request body (e.g. `8MB`); more is 413.
    pub max_body: String,
    /// Scorings running at once (requests and jobs together); more is 429.
    pub max_concurrent_jobs: usize,
    /// Finished jobs kept for `/predict/status/{id}` (the oldest are forgotten).
    pub max_jobs_kept: usize,
}

impl Default for PredictLimits {
    fn default() -> Self {
        PredictLimits {
            max_rows: 100_000,
            max_window: 1440,
            max_work: 200_000_000,
            max_body: "8MB".into(),
            max_concurrent_jobs: 2,
            max_jobs_kept: 1000,
        }
    }
}

impl PredictLimits {
    /// `max_body` in bytes (checked by [`Config::validate`]).
    pub fn max_body_bytes(&self) -> u64 {
        parse_size(&self.max_body).unwrap_or(8 << 20)
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            default_detector: "ensemble".into(),
            // Defaults per emulator type: daily rhythms get the seasonal residual, counters
            // and set-points a short robust z; everything else the ensemble. Fields a program
            // or controller steps between set points (the test bench's load cycle, the pitch
            // controller), and wind power (the cube of the wind speed: a gust doubles it) are
            // not judged as gross outliers (`gross=0`): every new set point or gust would be
            // "far outside what the series has shown".
            series: [
                ("TemperatureSensor.temperature", "seasonal"),
                ("PressureValve.valve_position", "robust_z:window=60"),
                ("PvInverter.irradiance", "seasonal"),
                ("PvInverter.module_temperature", "seasonal"),
                ("PvInverter.energy_total", "robust_z:window=60"),
                ("WindTurbine.pitch_angle", "ensemble:gross=0"),
                ("WindTurbine.power", "ensemble:gross=0"),
                ("EngineTestBench.engine_speed", "ensemble:gross=0"),
                ("EngineTestBench.torque", "ensemble:gross=0"),
                ("EngineTestBench.power", "ensemble:gross=0"),
                ("EngineTestBench.fuel_flow", "ensemble:gross=0"),
                ("EngineTestBench.oil_temperature", "ensemble:gross=0"),
                ("EngineTestBench.exhaust_temperature", "ensemble:gross=0"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            threshold: 0.9,
            window_size: 30,
            batch_size: 32,
            model_path: None,
            models_dir: None,
            webhook_url: None,
            stale_after: "60s".into(),
            physics: true,
            ranges: BTreeMap::new(),
            max_rate_per_s: BTreeMap::new(),
            required: BTreeMap::new(),
            predict: PredictLimits::default(),
            events_max_size: "64MB".into(),
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
        let mut file_cfg = Self::from_yaml_str(&text, path)?;
        let overrides = env_overrides(env, all_env);
        // Whether a key is written in the file (not its parent: `locate_key` falls back) or set
        // by the environment.
        let file_tree: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_default();
        let given = |key: &str| {
            key.split('.')
                .try_fold(&file_tree, |v, k| v.get(k))
                .is_some_and(|v| !v.is_null())
                || overrides.iter().any(|o| o.path.join(".") == key)
        };
        let redis_given = (given("ratelimit.redis_url"), given("ratelimit.backend"));
        if overrides.is_empty() {
            file_cfg
                .ratelimit
                .redis_url_selects_backend(redis_given.0, redis_given.1)
                .map_err(|(key, message)| ConfigError {
                    file: path.map(Path::to_path_buf),
                    line: locate_key(&text, &key),
                    column: None,
                    key: Some(key),
                    env_var: None,
                    message,
                })?;
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
        let mut cfg: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
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
        cfg.validate()
            .and_then(|()| {
                cfg.ratelimit
                    .redis_url_selects_backend(redis_given.0, redis_given.1)
            })
            .map_err(|(key, message)| ConfigError {
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
        if self.storage.max_open_blocks < 8 {
            return Err((
                "storage.max_open_blocks".into(),
                "must be at least 8".into(),
            ));
        }
        match parse_size(&self.storage.quarantine_max_bytes) {
            Ok(n) if n >= 64 << 10 => {}
            Ok(_) => {
                return Err((
                    "storage.quarantine_max_bytes".into(),
                    "must be at least 64KiB".into(),
                ))
            }
            Err(m) => return Err(("storage.quarantine_max_bytes".into(), m)),
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
        let p = &d.predict;
        for (key, v, min) in [
            ("detect.predict.max_rows", p.max_rows, 1),
            ("detect.predict.max_window", p.max_window, 3),
            (
                "detect.predict.max_concurrent_jobs",
                p.max_concurrent_jobs,
                1,
            ),
            ("detect.predict.max_jobs_kept", p.max_jobs_kept, 1),
        ] {
            if v < min {
                return Err((key.into(), format!("must be at least {min}")));
            }
        }
        if d.window_size > p.max_window {
            return Err((
                "detect.window_size".into(),
                format!(
                    "{} is above detect.predict.max_window ({}); lower it or raise the cap",
                    d.window_size, p.max_window
                ),
            ));
        }
        if p.max_work < 1000 {
            return Err((
                "detect.predict.max_work".into(),
                "must be at least 1000 (rows x window x features)".into(),
            ));
        }
        parse_size(&p.max_body).map_err(|m| ("detect.predict.max_body".to_string(), m))?;
        match parse_size(&d.events_max_size) {
            Ok(n) if n >= 64 << 10 => {}
            Ok(_) => {
                return Err((
                    "detect.events_max_size".into(),
                    "must be at least 64KB (each event log's size before it is rotated)".into(),
                ))
            }
            Err(m) => return Err(("detect.events_max_size".into(), m)),
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
        crate::config::validate_ratelimit(&self.ratelimit)?;
        self.validate_ops()?;
        if self.ingest.batch_max == 0 {
            return Err(("ingest.batch_max".into(), "must be at least 1".into()));
        }
        if self.ingest.connections > 64 {
            return Err((
                "ingest.connections".into(),
                "must be at most 64 (0 = auto)".into(),
            ));
        }
        self.validate_ingest_limits()?;
        if let Some(g) = &self.ingest.share_group {
            if g.is_empty() || g.contains(['/', '+', '#']) {
                return Err((
                    "ingest.share_group".into(),
                    "must be non-empty and must not contain '/', '+' or '#'".into(),
                ));
            }
            if self.ingest.mqtt_version == MqttVersion::V311 {
                return Err((
                    "ingest.mqtt_version".into(),
                    "shared subscriptions (ingest.share_group) need MQTT 5; write 5 or auto".into(),
                ));
            }
        }
        for (name, sink) in &self.sinks {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err((
                    format!("sinks.{name}"),
                    "sink names are letters, digits, _ and -".into(),
                ));
            }
            sink.validate()
                .map_err(|(k, m)| (format!("sinks.{name}.{k}"), m))?;
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

/// Checks of the `ratelimit` section that do not need the rate-limit crate: durations and
/// algorithm names. (The numbers are checked again by fieldlab-ratelimit when it builds the
/// policies; `fieldlab config check` runs both.)
fn validate_ratelimit(r: &RatelimitConfig) -> Result<(), (String, String)> {
    crate::time::parse_duration_ms(&r.redis_timeout)
        .map_err(|e| ("ratelimit.redis_timeout".to_string(), e.to_string()))?;
    let mut policies: Vec<(String, &RatelimitPolicySpec)> =
        vec![("ratelimit.default".into(), &r.default)];
    policies.extend(
        r.keys
            .iter()
            .map(|(k, p)| (format!("ratelimit.keys.{k}"), p)),
    );
    policies.extend(
        r.patterns
            .iter()
            .map(|(k, p)| (format!("ratelimit.patterns.{k}"), p)),
    );
    policies.extend(r.api.iter().map(|p| ("ratelimit.api".to_string(), p)));
    policies.extend(r.ingest.iter().map(|p| ("ratelimit.ingest".to_string(), p)));
    for (at, p) in policies {
        if p.limits.is_empty() {
            return Err((format!("{at}.limits"), "needs at least one limit".into()));
        }
        for (i, l) in p.limits.iter().enumerate() {
            l.check()
                .map_err(|(k, m)| (format!("{at}.limits[{i}].{k}"), m))?;
        }
    }
    Ok(())
}

/// The algorithm names a [`RatelimitLimitSpec`] accepts.
pub const RATELIMIT_ALGORITHMS: &[&str] = &[
    "token_bucket",
    "gcra",
    "fixed_window",
    "sliding_log",
    "sliding_counter",
    "leaky_bucket",
    "concurrency",
];

impl RatelimitLimitSpec {
    /// Check names and durations; returns the bad field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !RATELIMIT_ALGORITHMS.contains(&self.algorithm.as_str()) {
            return Err((
                "algorithm",
                format!(
                    "`{}` is not one of: {}",
                    self.algorithm,
                    RATELIMIT_ALGORITHMS.join(", ")
                ),
            ));
        }
        if self.limit == 0 {
            return Err(("limit", "must be at least 1".into()));
        }
        let p =
            crate::time::parse_duration_ms(&self.period).map_err(|e| ("period", e.to_string()))?;
        if p <= 0 {
            return Err(("period", "must be positive, e.g. 1s or 1m".into()));
        }
        if let Some(d) = &self.max_delay {
            crate::time::parse_duration_ms(d).map_err(|e| ("max_delay", e.to_string()))?;
        }
        if self.burst == Some(0) {
            return Err(("burst", "must be at least 1".into()));
        }
        Ok(())
    }
}

impl Config {
    /// Checks of the operations keys: auth, TLS files, log rotation.
    /// `ingest.max_devices`, `ingest.max_series_per_device`, `ingest.state_memory_mb`,
    /// `ingest.gateways`.
    fn validate_ingest_limits(&self) -> Result<(), (String, String)> {
        let i = &self.ingest;
        if i.max_devices == Some(0) {
            return Err((
                "ingest.max_devices".into(),
                "must be at least 1 (or unset: devices.max_devices / MAX_DEVICES)".into(),
            ));
        }
        if i.max_series_per_device == 0 {
            return Err((
                "ingest.max_series_per_device".into(),
                "must be at least 1".into(),
            ));
        }
        if i.state_memory_mb < 8 {
            return Err((
                "ingest.state_memory_mb".into(),
                "must be at least 8 (MiB)".into(),
            ));
        }
        for (login, g) in &i.gateways {
            check_device_id(login).map_err(|m| {
                (
                    format!("ingest.gateways.{login}"),
                    format!(
                        "a gateway is named by its login, which must be a valid device id: {m}"
                    ),
                )
            })?;
            if g.devices.is_empty() {
                return Err((
                    format!("ingest.gateways.{login}.devices"),
                    "list the device ids (or patterns such as plant1_*) this gateway may speak for"
                        .into(),
                ));
            }
            for p in &g.devices {
                check_device_id(p).map_err(|m| {
                    (
                        format!("ingest.gateways.{login}.devices"),
                        format!("`{p}`: {m}"),
                    )
                })?;
            }
            if g.max_devices == 0 {
                return Err((
                    format!("ingest.gateways.{login}.max_devices"),
                    "must be at least 1".into(),
                ));
            }
        }
        Ok(())
    }

    fn validate_ops(&self) -> Result<(), (String, String)> {
        crate::time::parse_duration_ms(&self.auth.token_ttl)
            .map_err(|e| ("auth.token_ttl".to_string(), e.to_string()))?;
        for (key, v) in [
            ("auth.login.queue_wait", &self.auth.login.queue_wait),
            ("auth.login.window", &self.auth.login.window),
            ("auth.login.max_backoff", &self.auth.login.max_backoff),
        ] {
            let ms =
                crate::time::parse_duration_ms(v).map_err(|e| (key.to_string(), e.to_string()))?;
            if ms <= 0 {
                return Err((key.into(), "must be longer than 0, e.g. `1m`".into()));
            }
        }
        for (i, h) in self.server.allowed_hosts.iter().enumerate() {
            if h.is_empty() || (h.contains(['/', ':', ' ', '*']) && !h.starts_with('[')) {
                return Err((
                    format!("server.allowed_hosts[{i}]"),
                    format!("`{h}` is not a host name: write the bare name, e.g. `lab.local` (no scheme, port, path or wildcard)"),
                ));
            }
        }
        if let Some(s) = &self.auth.jwt_secret {
            if s.len() < 32 {
                return Err((
                    "auth.jwt_secret".into(),
                    "must be at least 32 bytes (e.g. `openssl rand -base64 48`); leave it unset to have one generated".into(),
                ));
            }
        }
        if self.auth.jwks_file.is_some() && self.auth.jwks_url.is_some() {
            return Err((
                "auth.jwks_url".into(),
                "set auth.jwks_file or auth.jwks_url, not both".into(),
            ));
        }
        if self.server.tls_cert_file.is_some() != self.server.tls_key_file.is_some() {
            return Err((
                "server.tls_key_file".into(),
                "set both server.tls_cert_file and server.tls_key_file for HTTPS".into(),
            ));
        }
        if self.server.tls_client_ca_file.is_some() && self.server.tls_cert_file.is_none() {
            return Err((
                "server.tls_client_ca_file".into(),
                "client certificates (mTLS) need HTTPS: set server.tls_cert_file and server.tls_key_file".into(),
            ));
        }
        if self.mqtt.tls_port.is_some()
            && (self.mqtt.server_cert_file.is_none() || self.mqtt.server_key_file.is_none())
        {
            return Err((
                "mqtt.tls_port".into(),
                "MQTT over TLS needs mqtt.server_cert_file and mqtt.server_key_file".into(),
            ));
        }
        for (i, s) in self.opcua.security.iter().enumerate() {
            if !matches!(s.to_ascii_lowercase().as_str(), "none" | "basic256sha256") {
                return Err((
                    format!("opcua.security[{i}]"),
                    format!("`{s}` is not one of: none, basic256sha256"),
                ));
            }
        }
        for (section, tls) in [("devices", &self.devices.tls), ("mqtt", &self.mqtt.tls)] {
            if let Some(t) = tls {
                if t.cert_file.is_some() != t.key_file.is_some() {
                    return Err((
                        format!("{section}.tls.key_file"),
                        format!("set both {section}.tls.cert_file and {section}.tls.key_file for a client certificate"),
                    ));
                }
            }
        }
        parse_size(&self.logging.max_size).map_err(|m| ("logging.max_size".to_string(), m))?;
        if self.logging.max_files == 0 {
            return Err(("logging.max_files".into(), "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Parse a byte size such as `100MB`, `512KiB`, `1GB` or `4096` (binary units: MB = MiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. 100MB, 512KB or 1GB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}`; use KB, MB or GB"
            ))
        }
    };
    match n.checked_mul(mult) {
        Some(v) if v >= 1024 => Ok(v),
        _ => Err(format!("`{s}` must be between 1KB and a sane maximum")),
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

/// The operations handbooks' environment variable names and the keys they set.
pub const ENV_ALIASES: &[(&str, &str)] = &[
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
        assert_eq!(PredictLimits::default().max_body_bytes(), 8 << 20);
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
                .quarantine_budget()
        };
        assert_eq!(Config::default().storage.quarantine_budget(), 64 << 20);
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
        assert!(check_device_id("t1").is_ok());
        assert!(check_device_id("a\0b").unwrap_err().contains("U+0000"));
        assert!(check_device_id(&"x".repeat(129)).is_err());
        assert!(check_device_id("a+b").is_err());
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
