//! Value types that several config sections share: durations, byte sizes, word enums, MQTT QoS,
//! broker URLs.
//!
//! Why: a duration or a size used to be a `String` in its section, checked once by the loader
//! and parsed again (with a silent fallback) wherever it was used. Here each is parsed once, at
//! load time, into a type that cannot hold a bad value; the error of a bad one is a serde error,
//! so the loader points at its file, line and key like any other.
//!
//! The accepted syntax is exactly what it was: durations go through
//! [`crate::time::parse_duration_ms`] (humantime, millisecond resolution), sizes through
//! [`parse_size`] (binary units: `MB` = `MiB`, which is why this is not the `bytesize` crate:
//! it reads `MB` as 10^6 bytes).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A duration as users write it (`250ms`, `60s`, `15m`, `1h`, `7d`), held as a
/// [`std::time::Duration`] of whole milliseconds. Serialised in humantime's form (`1h`, `100ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(std::time::Duration);

impl HumanDuration {
    pub const ZERO: HumanDuration = HumanDuration(std::time::Duration::ZERO);

    pub const fn from_millis(ms: u64) -> HumanDuration {
        HumanDuration(std::time::Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(s))
    }

    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// Whole milliseconds (what the parser keeps), saturating at `u64::MAX`.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for HumanDuration {
    fn from(d: std::time::Duration) -> Self {
        HumanDuration(d)
    }
}

impl From<HumanDuration> for std::time::Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl FromStr for HumanDuration {
    type Err = crate::time::TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ms = crate::time::parse_duration_ms(s)?;
        // parse_duration_ms never returns a negative number (humantime has no sign).
        Ok(HumanDuration::from_millis(ms.max(0) as u64))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `1h`, `250ms`, `1h 30m`, `0s`: forms the parser reads back.
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI document: a string in the form the parser reads.
impl utoipa::PartialSchema for HumanDuration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some(
                "a duration: a number with a unit (ms, s, m, h, d), e.g. `250ms`, `1m`, `1h 30m`",
            ))
            .examples(["250ms", "1s", "1m", "1h"])
            .into()
    }
}

impl utoipa::ToSchema for HumanDuration {}

/// A byte size written with a unit (`64MiB`, `100MB`, `512KB`, `1GB`; binary units) or as a
/// plain number of bytes, at least 1 KiB (see [`parse_size`]). Serialised with the largest
/// unit that divides it (`64MiB`), else as a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;

    /// A size in bytes. Values below 1 KiB are not accepted from config text, but may be
    /// constructed (tests).
    pub const fn bytes(n: u64) -> ByteSize {
        ByteSize(n)
    }

    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n << 20)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_size(s).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, name) in [(Self::GIB, "GiB"), (Self::MIB, "MiB"), (Self::KIB, "KiB")] {
            if n >= unit && n.is_multiple_of(unit) {
                return write!(f, "{}{name}", n / unit);
            }
        }
        write!(f, "{n}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        let text = match Written::deserialize(d)? {
            Written::Bytes(n) => n.to_string(),
            Written::Text(s) => s,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI document: a string with a binary unit, or a number of bytes.
impl utoipa::PartialSchema for ByteSize {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .examples(["64MiB", "512KiB", "1GiB"]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1024)),
            )
            .description(Some(
                "a size: a number with a binary unit (KB = KiB, MB = MiB, GB = GiB) or a number of bytes, at least 1 KiB",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ByteSize {}

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

/// The text of a config word, also when YAML or an environment override made it a number
/// (`qos: 1`, `FIELDLAB__INGEST__QOS=1`, `protocol: 5`). Used by [`crate::config_words!`].
#[doc(hidden)]
pub fn word_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Word;
    impl serde::de::Visitor<'_> for Word {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a word")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Word)
}

/// The error of a word that is not one of an enum's spellings: it lists them all.
pub fn not_one_of(word: &str, accepted: &[&str]) -> String {
    format!("`{word}` is not one of: {}", accepted.join(", "))
}

/// Serde for a config enum whose table of spellings is strum's.
///
/// The enum derives `strum::EnumString` (with `ascii_case_insensitive`: the handbooks write
/// `INFO`), `strum::IntoStaticStr` and `strum::VariantNames`; this adds `as_str`, `parse_word`
/// and serde through them, so the parser, its error message ("`loud` is not one of: trace,
/// debug, ...") and every other list of the values (OpenAPI, CLI help) read the one table,
/// `<E as strum::VariantNames>::VARIANTS`. (A derive of serde's own would need the table a
/// second time as `rename` attributes, and would reject `INFO`.)
#[macro_export]
macro_rules! config_words {
    ($name:ty) => {
        impl $name {
            /// The spelling config files, the environment and the API use.
            pub fn as_str(self) -> &'static str {
                self.into()
            }

            /// Parse in any case; the error lists every accepted spelling.
            pub fn parse_word(s: &str) -> ::std::result::Result<Self, String> {
                <Self as ::std::str::FromStr>::from_str(s).map_err(|_| {
                    $crate::config::not_one_of(s, <Self as $crate::config::VariantNames>::VARIANTS)
                })
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(
                &self,
                s: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let s = $crate::config::word_text(d)?;
                Self::parse_word(&s).map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
    };
}

/// MQTT quality of service: `0`, `1` or `2` (ingest's subscription, the devices' publishes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
pub enum Qos {
    #[strum(serialize = "0")]
    AtMostOnce,
    #[strum(serialize = "1")]
    AtLeastOnce,
    #[strum(serialize = "2")]
    ExactlyOnce,
}
crate::config_words!(Qos);

impl Qos {
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_before_and_round_trip() {
        for (text, ms) in [
            ("250ms", 250),
            ("1m", 60_000),
            ("1h 30m", 5_400_000),
            ("0s", 0),
        ] {
            let d: HumanDuration = text.parse().unwrap();
            assert_eq!(d.as_millis(), ms, "{text}");
            assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d, "{text}");
        }
        assert_eq!(HumanDuration::from_secs(3600).to_string(), "1h");
        let e = "soon".parse::<HumanDuration>().unwrap_err().to_string();
        assert!(e.contains("not a duration"), "{e}");
        assert!(serde_yaml::from_str::<HumanDuration>("12").is_err());
    }

    #[test]
    fn sizes_take_units_or_numbers_and_round_trip() {
        let y = |t: &str| serde_yaml::from_str::<ByteSize>(t).map(ByteSize::get);
        assert_eq!(y("64MiB").unwrap(), 64 << 20);
        assert_eq!(y("100MB").unwrap(), 100 << 20);
        assert_eq!(y("1048576").unwrap(), 1 << 20);
        assert!(y("12 parsecs").is_err());
        assert!(y("100").unwrap_err().to_string().contains("between 1KB"));
        for n in [1024, 1025, 64 << 20, 3 << 30, (1 << 20) + 1] {
            let s = ByteSize::bytes(n);
            assert_eq!(s.to_string().parse::<ByteSize>().unwrap(), s);
        }
        assert_eq!(ByteSize::mib(64).to_string(), "64MiB");
    }

    #[test]
    fn words_take_any_case_and_list_the_choices() {
        assert_eq!(Qos::parse_word("1"), Ok(Qos::AtLeastOnce));
        let e = Qos::parse_word("3").unwrap_err();
        assert_eq!(e, "`3` is not one of: 0, 1, 2");
        assert_eq!(
            serde_yaml::to_string(&Qos::ExactlyOnce).unwrap().trim(),
            "'2'"
        );
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
