//! Time as users write it: RFC 3339 instants, relative offsets (`-1h`, `now-15m`), epoch numbers,
//! and durations (`60s`, `5m`).
//!
//! Every query parameter, CLI flag and config value that names a time goes through here, so the
//! API and the command line accept exactly the same forms.

use chrono::{DateTime, SecondsFormat, Utc};
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum TimeError {
    #[error("`{0}` is not a time: use RFC 3339 (2026-01-01T00:00:00Z), a relative time (-1h, now-15m), `now`, or epoch milliseconds")]
    BadInstant(String),
    #[error("`{0}` is not a duration: use a number with a unit, e.g. 500ms, 60s, 5m, 1h, 7d")]
    BadDuration(String),
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Parse a duration such as `60s`, `1h30m`, `500ms`, `7d` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, TimeError> {
    let t = s.trim();
    humantime::parse_duration(t)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| TimeError::BadDuration(s.to_string()))
}

/// Parse an instant relative to `now_ms`: RFC 3339, `now`, `-1h`, `now-1h`, `+5m`, or an
/// integer (epoch milliseconds; values below 10^11 are taken as epoch seconds).
pub fn parse_instant_ms(s: &str, now_ms: i64) -> Result<i64, TimeError> {
    let t = s.trim();
    let bad = || TimeError::BadInstant(s.to_string());
    if t.is_empty() {
        return Err(bad());
    }
    if t == "now" {
        return Ok(now_ms);
    }
    let rel = t.strip_prefix("now").unwrap_or(t);
    if let Some(rest) = rel.strip_prefix('-') {
        if rest.starts_with(|c: char| c.is_ascii_digit())
            && !rest.contains(':')
            && !rest.contains('T')
        {
            return parse_duration_ms(rest)
                .map(|d| now_ms - d)
                .map_err(|_| bad());
        }
    }
    if let Some(rest) = rel.strip_prefix('+') {
        return parse_duration_ms(rest)
            .map(|d| now_ms + d)
            .map_err(|_| bad());
    }
    if let Ok(n) = t.parse::<i64>() {
        return Ok(if n.abs() < 100_000_000_000 {
            n * 1000
        } else {
            n
        });
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|_| bad())
}

/// Format epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(parse_instant_ms("2026-01-01T00:00:00Z", 0), Ok(NOW));
        assert_eq!(parse_instant_ms("2026-01-01T01:00:00+01:00", 0), Ok(NOW));
        assert_eq!(parse_instant_ms("now", NOW), Ok(NOW));
        assert_eq!(parse_instant_ms("-1h", NOW), Ok(NOW - 3_600_000));
        assert_eq!(parse_instant_ms("now-15m", NOW), Ok(NOW - 900_000));
        assert_eq!(parse_instant_ms("+5s", NOW), Ok(NOW + 5_000));
        assert_eq!(parse_instant_ms("1767225600", 0), Ok(NOW));
        assert_eq!(parse_instant_ms("1767225600000", 0), Ok(NOW));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        let e = parse_instant_ms("yesterday", NOW).unwrap_err();
        assert!(e.to_string().contains("RFC 3339"));
        assert!(parse_duration_ms("fast").is_err());
        assert_eq!(parse_duration_ms("60s"), Ok(60_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_ms(NOW), "2026-01-01T00:00:00.000Z");
        assert_eq!(parse_instant_ms(&format_ms(NOW + 7), 0), Ok(NOW + 7));
    }
}
