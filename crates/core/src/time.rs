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
    let mut buf = [0u8; 24];
    match rfc3339_ms(ms, &mut buf) {
        Some(s) => s.to_string(),
        None => DateTime::<Utc>::from_timestamp_millis(ms)
            .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_else(|| ms.to_string()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` into `buf`, without allocating, for years 0000-9999 (None
/// outside; [`format_ms`] then falls back to chrono). Query answers format one timestamp per
/// point, and chrono's general formatter (an allocation and a format-item walk each) was a
/// visible part of a 1440-row answer; this is the same output, checked against chrono in the
/// tests. Days to civil date: Howard Hinnant's `civil_from_days`.
pub fn rfc3339_ms(ms: i64, buf: &mut [u8; 24]) -> Option<&str> {
    // 0000-01-01 .. 9999-12-31T23:59:59.999 in epoch ms
    if !(-62_167_219_200_000..=253_402_300_799_999).contains(&ms) {
        return None;
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let put = |buf: &mut [u8; 24], at: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(buf, 0, y, 4);
    buf[4] = b'-';
    put(buf, 5, m, 2);
    buf[7] = b'-';
    put(buf, 8, d, 2);
    buf[10] = b'T';
    put(buf, 11, in_day / 3_600_000, 2);
    buf[13] = b':';
    put(buf, 14, in_day / 60_000 % 60, 2);
    buf[16] = b':';
    put(buf, 17, in_day / 1000 % 60, 2);
    buf[19] = b'.';
    put(buf, 20, in_day % 1000, 3);
    buf[23] = b'Z';
    std::str::from_utf8(&buf[..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn fast_rfc3339_matches_chrono() {
        let chrono_fmt = |ms: i64| {
            DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        };
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut cases = vec![
            0,
            -1,
            NOW,
            NOW - 1,
            951_782_400_000,     // 2000-02-29
            4_107_542_400_000,   // 2100-03-01
            -62_167_219_200_000, // 0000-01-01
            253_402_300_799_999, // 9999-12-31T23:59:59.999
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push((x % 315_569_520_000_000) as i64 - 62_167_219_200_000);
        }
        let mut buf = [0u8; 24];
        for ms in cases {
            assert_eq!(rfc3339_ms(ms, &mut buf).unwrap(), chrono_fmt(ms), "{ms}");
            assert_eq!(format_ms(ms), chrono_fmt(ms));
        }
        assert!(rfc3339_ms(-62_167_219_200_001, &mut buf).is_none());
        assert!(rfc3339_ms(253_402_300_800_000, &mut buf).is_none());
        assert_eq!(
            format_ms(253_402_300_800_000),
            chrono_fmt(253_402_300_800_000)
        );
    }

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
