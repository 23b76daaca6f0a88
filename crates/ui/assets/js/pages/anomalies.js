// Anomaly feed: detector events, newest first. Shape: GET /api/v1/anomalies {count, anomalies:
// [{device_id, field, ts_ms, time, value, score, detector, quality?}]}. /ws carries telemetry only, so the
// feed polls every 3 s even while the live connection is up (and takes `anomaly` messages too,
// should /ws ever carry them).

import { h, fill, table, pageTitle, errorNotice, unavailable } from "../dom.js";
import { available, get, listOf, qs } from "../api.js";
import { fmtTime, fmtValue, toMs, unitOf } from "../format.js";

/** The event's time: `ts_ms` from fieldlab-watch, older shapes' `ts`/`timestamp`. */
export const when = (a) => a.ts_ms ?? a.time ?? a.ts ?? a.timestamp;

export default async function anomalies(root, _p, { live }) {
  const { anomalies: ok } = await available("anomalies");
  if (!ok) {
    fill(root, pageTitle("Anomalies"), unavailable("The anomaly feed", "GET /api/v1/anomalies", "anomaly-detection issue (#5)"));
    return;
  }
  let items = [];
  // Units per device, from the device catalog (`units` of /api/v1/devices), re-read with the feed.
  let units = new Map();
  const box = h("div", {});
  fill(root, pageTitle("Anomalies"),
    h("p", { class: "lead" }, "Points the streaming detectors scored as anomalous, newest first."), box);
  function draw() {
    fill(box, table([
      { label: "Time", cell: (a) => fmtTime(when(a)) },
      { label: "Device", cell: (a) => h("a", { href: `#/device/${encodeURIComponent(a.device_id)}` }, a.device_id) },
      { label: "Field", cell: (a) => a.field || "—" },
      { label: "Value", cell: (a) => fmtValue(a.value, unitOf(a.field || "", {}, units.get(a.device_id))) },
      { label: "Score", num: true, cell: (a) => (typeof a.score === "number" ? a.score.toFixed(3) : "—") },
      { label: "Detector", cell: (a) => a.detector || a.method || "—" },
      // The other verdict on the same value: quality rules it broke (both are shown).
      { label: "Quality", cell: (a) => (Array.isArray(a.quality) && a.quality.length ? a.quality.join(", ") : "ok") },
    ], items.slice(0, 500), { empty: "No anomalies detected." }));
  }
  async function load() {
    try {
      const devices = listOf(await get("/api/v1/devices"), "devices");
      units = new Map(devices.map((d) => [d.device_id, d.units || {}]));
    } catch { /* values are shown without units */ }
    try {
      items = listOf(await get(`/api/v1/anomalies${qs({ limit: 500 })}`), "anomalies")
        .sort((a, b) => (toMs(when(b)) ?? 0) - (toMs(when(a)) ?? 0));
      draw();
    } catch (e) { fill(box, errorNotice(e, "Could not load anomalies")); }
  }
  await load();
  const off = live.on("anomaly", (a) => { items.unshift(a); draw(); });
  const t = setInterval(load, 3000);
  return () => { off(); clearInterval(t); };
}
