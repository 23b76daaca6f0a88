//! `sinks:` of fieldlab.yaml: the scale-out copies, by name.
//!
//! Why here: only the sink workers read these keys, and which keys make sense depends on the
//! kind of sink ([`SinkConfig`]'s checks); the binary composes the map into the whole file.

use fieldlab_core::config::{HumanDuration, Problem, Section};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Kind of scale-out sink.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum SinkKind {
    Influxdb,
    Postgres,
}
fieldlab_core::config_words!(SinkKind);

/// Timestamp precision of InfluxDB writes (`precision=` of the /write endpoint).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum InfluxPrecision {
    Ms,
    S,
    Us,
    Ns,
}
fieldlab_core::config_words!(InfluxPrecision);

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
    pub flush_interval: HumanDuration,
    /// Points buffered for this sink. When full, ingest waits (back-pressure).
    pub buffer_max: usize,
    /// Longest pause between retries (back-off doubles from 100 ms up to this).
    pub max_backoff: HumanDuration,
    /// Timeout of one write request.
    pub timeout: HumanDuration,
    /// At shutdown, how long to keep trying before spooling what is left to disk.
    pub drain_timeout: HumanDuration,
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
            flush_interval: HumanDuration::from_secs(1),
            buffer_max: 100_000,
            max_backoff: HumanDuration::from_secs(30),
            timeout: HumanDuration::from_secs(10),
            drain_timeout: HumanDuration::from_secs(10),
        }
    }
}

impl Section for SinkConfig {
    fn validate(&self) -> Result<(), Problem> {
        if self.url.is_empty() {
            return Problem::at("url", "is required");
        }
        if self.batch_max == 0 {
            return Problem::at("batch_max", "must be at least 1");
        }
        if self.buffer_max < self.batch_max {
            return Problem::at("buffer_max", "must be at least batch_max");
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
                let u = reqwest::Url::parse(&self.url)
                    .map_err(|err| Problem::new("url", format!("`{}`: {err}", self.url)))?;
                if u.scheme() != "http" {
                    return Problem::at(
                        "url",
                        "write http://HOST:PORT (https is not supported yet)",
                    );
                }
                if self.db.is_none() == self.bucket.is_none() {
                    return Problem::at(
                        "db",
                        "set either `db` (InfluxDB 1.x, VictoriaMetrics) or `bucket` with `org` \
                         and `token` (InfluxDB 2/3)",
                    );
                }
                if self.bucket.is_some() && self.org.is_none() {
                    return Problem::at("org", "is required with `bucket` (InfluxDB 2/3)");
                }
                if self.measurement.is_empty() {
                    return Problem::at("measurement", "must not be empty");
                }
            }
            SinkKind::Postgres => {
                if let Some((k, _)) = influx_only.iter().find(|(_, set)| *set) {
                    return Problem::at(
                        *k,
                        "is an InfluxDB key; a postgres sink takes its credentials in `url`",
                    );
                }
                let ok = |s: &str| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                };
                if !self.table.split('.').all(ok) || self.table.split('.').count() > 2 {
                    return Problem::at(
                        "table",
                        "must be `name` or `schema.name` of letters, digits and _",
                    );
                }
            }
        }
        Ok(())
    }
}

/// Check every sink of `sinks:`; keys are relative to `sinks` (`pg.url`).
pub fn validate_sinks(sinks: &BTreeMap<String, SinkConfig>) -> Result<(), Problem> {
    for (name, sink) in sinks {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Problem::at(name.as_str(), "sink names are letters, digits, _ and -");
        }
        sink.validate().map_err(|p| p.within(name))?;
    }
    Ok(())
}
