//! `/metrics` in the format the scraper asks for: OpenMetrics or Prometheus text 0.0.4.
//!
//! Why it exists: prometheus-client encodes OpenMetrics only, and the tools people point at
//! `/metrics` without asking for OpenMetrics (`curl | promtool check metrics`, older
//! scrapers, the Pushgateway) read Prometheus text 0.0.4, where a counter family is named with
//! its `_total` suffix and there is no `# EOF`, `# UNIT` or `_created`. Prometheus itself asks
//! for OpenMetrics in its `Accept` header and gets it unchanged. No crate converts between the
//! two, and the conversion is a line-by-line renaming, so it is written here.

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// `Content-Type` of an OpenMetrics exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of a Prometheus text 0.0.4 exposition.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encode `registry` for a request with these headers: OpenMetrics when its `Accept` names
/// `application/openmetrics-text`, Prometheus text 0.0.4 otherwise.
pub fn respond(registry: &Registry, headers: &HeaderMap) -> Response {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        return crate::Problem::internal(format!("encoding metrics failed: {e}")).into_response();
    }
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], out).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&out),
        )
            .into_response()
    }
}

/// Rewrite an OpenMetrics exposition as Prometheus text 0.0.4: counter families take their
/// samples' `_total` name, info families their `_info` name (as gauges), state sets and
/// unknowns become gauges and untyped; `# EOF`, `# UNIT`, counters' `_created` samples and
/// exemplars are dropped.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    use std::collections::HashMap;
    // Family name -> its type, from the TYPE lines (which come before the samples).
    let mut types: HashMap<&str, &str> = HashMap::new();
    for l in openmetrics.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            if let Some((name, ty)) = rest.split_once(' ') {
                types.insert(name, ty.trim());
            }
        }
    }
    let renamed = |name: &str| -> String {
        match types.get(name).copied() {
            Some("counter") => format!("{name}_total"),
            Some("info") => format!("{name}_info"),
            _ => name.to_string(),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for l in openmetrics.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", renamed(name)));
            continue;
        }
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let ty = match ty.trim() {
                "info" | "stateset" => "gauge",
                "gaugehistogram" => "histogram",
                "unknown" => "untyped",
                t => t,
            };
            out.push_str(&format!("# TYPE {} {ty}\n", renamed(name)));
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        // A sample: `name{labels} value [timestamp] [# exemplar]`.
        let sample = match l.find(" # ") {
            Some(i) if l[..i].contains(' ') => &l[..i],
            _ => l,
        };
        let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
        let name = &sample[..name_end];
        if let Some(family) = name.strip_suffix("_created") {
            if types.get(family) == Some(&"counter") {
                continue;
            }
        }
        out.push_str(sample);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::info::Info;

    #[test]
    fn counters_take_their_total_name_and_openmetrics_markers_go() {
        let mut r = Registry::default();
        let c = Counter::<u64>::default();
        c.inc_by(3);
        r.register("fieldlab_things", "Things seen", c);
        let g = Gauge::<i64>::default();
        g.set(7);
        r.register("fieldlab_open", "Open now", g);
        let h = Histogram::new([0.1, 1.0]);
        h.observe(0.5);
        r.register("fieldlab_wait_seconds", "Waits", h);
        r.register(
            "fieldlab_build",
            "Build",
            Info::new(vec![("version".to_string(), "1".to_string())]),
        );
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &r).unwrap();
        let text = to_prometheus_text(&om);
        assert!(
            text.contains("# HELP fieldlab_things_total Things seen.\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fieldlab_things_total counter\n"),
            "{text}"
        );
        assert!(text.contains("\nfieldlab_things_total 3\n"), "{text}");
        assert!(
            text.contains("# TYPE fieldlab_open gauge\nfieldlab_open 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fieldlab_wait_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("fieldlab_wait_seconds_bucket{le=\"1.0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fieldlab_build_info gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("fieldlab_build_info{version=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn the_scraper_chooses_the_format() {
        let mut r = Registry::default();
        r.register("fieldlab_things", "Things seen", Counter::<u64>::default());
        let ct = |accept: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(a) = accept {
                h.insert(header::ACCEPT, a.parse().unwrap());
            }
            respond(&r, &h).headers()[header::CONTENT_TYPE].clone()
        };
        assert_eq!(ct(None), PROMETHEUS_TEXT);
        assert_eq!(ct(Some("*/*")), PROMETHEUS_TEXT);
        // What Prometheus 2.x/3.x sends by default.
        assert_eq!(
            ct(Some("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")),
            OPENMETRICS
        );
    }
}
