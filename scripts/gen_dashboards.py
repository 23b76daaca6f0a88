#!/usr/bin/env python3
"""Generate fieldlab's Grafana dashboards (deploy/grafana/dashboards/*.json).

Why generated: six dashboards share one layout and datasource; writing ~1000 lines of JSON by
hand invites drift. Edit the PANELS table, run `python3 scripts/gen_dashboards.py`, commit the
JSON. scripts/validate_deploy.py checks that every metric the dashboards query is exported.
"""
import json
import pathlib

DS = {"type": "prometheus", "uid": "prometheus"}

# dashboard slug -> (title, [(panel title, unit, [(promql, legend)])])
PANELS = {
    "fleet": ("fieldlab / Fleet", [
        ("Active devices (last 60 s)", "short", [("sum(fieldlab_active_devices)", "active devices")]),
        ("Messages per second", "ops", [("sum(rate(fieldlab_ingest_messages_total[1m]))", "messages/s")]),
        ("Ingest connected to broker", "short", [("max(fieldlab_ingest_connected)", "connected")]),
        ("HTTP requests by status", "reqps", [
            ("sum by (status) (rate(fieldlab_http_request_duration_seconds_count[5m]))", "{{status}}")]),
        ("HTTP latency p95 by route", "s", [
            ("histogram_quantile(0.95, sum by (le, route) (rate(fieldlab_http_request_duration_seconds_bucket[5m])))", "{{route}}")]),
    ]),
    "ingest": ("fieldlab / Ingest", [
        ("Messages and points per second", "ops", [
            ("sum(rate(fieldlab_ingest_messages_total[1m]))", "messages/s"),
            ("sum(rate(fieldlab_ingest_points_total[1m]))", "points/s")]),
        ("Quarantined per second", "ops", [("sum(rate(fieldlab_ingest_quarantined_total[5m]))", "quarantined/s")]),
        ("Quarantine ratio", "percentunit", [
            ("sum(rate(fieldlab_ingest_quarantined_total[5m])) / clamp_min(sum(rate(fieldlab_ingest_messages_total[5m])), 1e-9)", "ratio")]),
        ("Batch write latency p50 / p99", "s", [
            ("histogram_quantile(0.5, sum by (le) (rate(fieldlab_ingest_batch_duration_seconds_bucket[5m])))", "p50"),
            ("histogram_quantile(0.99, sum by (le) (rate(fieldlab_ingest_batch_duration_seconds_bucket[5m])))", "p99")]),
        ("Batches and store write errors", "ops", [
            ("sum(rate(fieldlab_ingest_batches_total[5m]))", "batches/s"),
            ("sum(rate(fieldlab_ingest_write_errors_total[5m]))", "write errors/s")]),
    ]),
    "store": ("fieldlab / Store", [
        ("Points written per second", "ops", [("sum(rate(fieldlab_store_points_total[1m]))", "points/s")]),
        ("WAL size", "bytes", [("sum(fieldlab_store_wal_size_bytes)", "WAL bytes")]),
        ("WAL fsyncs per second", "ops", [("sum(rate(fieldlab_store_wal_fsyncs_total[1m]))", "fsyncs/s")]),
        ("Blocks, series, head points", "short", [
            ("sum(fieldlab_store_blocks)", "blocks"),
            ("sum(fieldlab_store_series)", "series"),
            ("sum(fieldlab_store_head_points)", "head points")]),
        ("Torn WAL tails truncated at start", "short", [("sum(fieldlab_store_wal_truncations_total)", "truncations")]),
    ]),
    "detection": ("fieldlab / Detection", [
        ("Anomalies per second by detector", "ops", [
            ("sum by (detector) (rate(fieldlab_detect_anomalies_total[5m]))", "{{detector}}")]),
        ("Points scored per second", "ops", [("sum(rate(fieldlab_detect_points_scored_total[1m]))", "scored/s")]),
        ("Data-quality violations per second by rule", "ops", [
            ("sum by (rule) (rate(fieldlab_quality_violations_total[5m]))", "{{rule}}")]),
    ]),
    "ratelimits": ("fieldlab / Rate limits", [
        ("Decisions per second by result", "ops", [
            ("sum by (result) (rate(fieldlab_ratelimit_decisions_total[1m]))", "{{result}}")]),
        ("Rejected share by policy", "percentunit", [
            ("sum by (policy) (rate(fieldlab_ratelimit_decisions_total{result=\"rejected\"}[5m])) / clamp_min(sum by (policy) (rate(fieldlab_ratelimit_decisions_total[5m])), 1e-9)", "{{policy}}")]),
        ("Backend latency p99", "s", [
            ("histogram_quantile(0.99, sum by (le, backend) (rate(fieldlab_ratelimit_backend_latency_seconds_bucket[5m])))", "{{backend}}")]),
        ("Redis errors and fail-open", "ops", [
            ("sum(rate(fieldlab_ratelimit_redis_errors_total[5m]))", "redis errors/s"),
            ("sum(rate(fieldlab_ratelimit_fail_open_total[5m]))", "let through unchecked/s")]),
    ]),
    "proofs": ("fieldlab / Proofs", [
        ("Bundles registered per hour", "short", [("sum(increase(fieldlab_attest_bundles_total[1h]))", "bundles")]),
        ("Verifications by result", "ops", [
            ("sum by (result) (rate(fieldlab_attest_verifications_total[5m]))", "{{result}}")]),
    ]),
}


def panel(i, title, unit, targets):
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + j), "datasource": DS, "expr": e, "legendFormat": leg}
            for j, (e, leg) in enumerate(targets)
        ],
    }


def dashboard(slug, title, panels):
    return {
        "uid": f"fieldlab-{slug}",
        "title": title,
        "tags": ["fieldlab"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": [panel(i, *p) for i, p in enumerate(panels)],
    }


def main():
    out = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
    out.mkdir(parents=True, exist_ok=True)
    for slug, (title, panels) in PANELS.items():
        (out / f"{slug}.json").write_text(json.dumps(dashboard(slug, title, panels), indent=2) + "\n")
    print(f"wrote {len(PANELS)} dashboards to {out}")


if __name__ == "__main__":
    main()
