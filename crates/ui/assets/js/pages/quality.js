// Data-quality report: the quality score per device and window, and the rule violations behind it.
// Shape: GET /api/v1/quality {from, to, devices: [{device_id, from_ms, to_ms, readings, flagged,
// score}], events: [{device_id, ts_ms, rule, field?, reason}]}.

import { h, fill, table, badge, pageTitle, errorNotice, unavailable } from "../dom.js";
import { available, get, listOf } from "../api.js";
import { fmtTime, fmtNumber } from "../format.js";

function scoreBadge(s) {
  if (typeof s !== "number") return "—";
  const pct = s <= 1 ? s * 100 : s;
  return badge(`${fmtNumber(pct)} %`, pct >= 95 ? "ok" : pct >= 80 ? "warn" : "bad");
}

export default async function quality(root) {
  const { quality: ok } = await available("quality");
  if (!ok) {
    fill(root, pageTitle("Data quality"), unavailable("The data-quality report", "GET /api/v1/quality", "data-quality issue (#5)"));
    return;
  }
  const box = h("div", {});
  fill(root, pageTitle("Data quality"),
    h("p", { class: "lead" }, "Quality score per device (share of points that pass every rule) and what the rules found."), box);
  async function load() {
    try {
      const d = await get("/api/v1/quality");
      const devices = listOf(d, "devices", "quality");
      const events = listOf(d?.events ?? d?.violations ?? [], "events");
      devices.sort((a, b) => (a.score ?? 1) - (b.score ?? 1) || a.device_id.localeCompare(b.device_id));
      fill(box, h("p", { class: "muted" }, `Last hour: ${fmtTime(d.from)} – ${fmtTime(d.to)}. Worst first.`), table([
        { label: "Device", cell: (q) => h("a", { href: `#/device/${encodeURIComponent(q.device_id)}` }, q.device_id) },
        { label: "Score", cell: (q) => scoreBadge(q.score ?? q.quality_score) },
        { label: "Window", cell: (q) => `${fmtTime(q.from_ms ?? d.from)} – ${fmtTime(q.to_ms ?? d.to)}` },
        { label: "Readings", num: true, cell: (q) => fmtNumber(q.readings ?? 0) },
        { label: "Flagged", num: true, cell: (q) => fmtNumber(q.flagged ?? 0) },
      ], devices, { empty: "No quality scores yet." }),
      events.length ? [h("h2", {}, "Recent rule violations"), table([
        { label: "Time", cell: (e) => fmtTime(e.ts_ms ?? e.ts) },
        { label: "Device", cell: (e) => e.device_id },
        { label: "Rule", cell: (e) => badge(e.rule || e.kind || "rule", "warn") },
        { label: "Field", cell: (e) => e.field || "—" },
        { label: "Reason", cell: (e) => e.reason || "" },
      ], events.slice(0, 200))] : null);
    } catch (e) { fill(box, errorNotice(e, "Could not load the quality report")); }
  }
  await load();
  const t = setInterval(load, 5000);
  return () => clearInterval(t);
}
