// Health: liveness, readiness per component, and the server's own metrics (/metrics, parsed).

import { h, fill, badge, table, pageTitle, errorNotice } from "../dom.js";
import { get, request } from "../api.js";
import { fmtDuration, fmtNumber, fmtBytes } from "../format.js";

/** OpenMetrics text to [{name, labels, value}], skipping comments and histogram buckets. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const [, name, , labels = "", value] = m;
    if (name.endsWith("_bucket")) continue;
    out.push({ name, labels, value: Number(value) });
  }
  return out;
}

function unitFromName(name, v) {
  if (/_seconds(_sum|_total)?$/.test(name)) return fmtDuration(v * 1000);
  if (/_bytes(_total)?$/.test(name)) return fmtBytes(v);
  return fmtNumber(v);
}

export default async function health(root) {
  const top = h("div", { class: "cards" });
  const comps = h("div", {});
  const metrics = h("div", {});
  const filter = h("input", { type: "search", placeholder: "Filter metrics, e.g. ingest", "aria-label": "Filter metrics", style: "min-width:18rem" });
  let rows = [];
  fill(root, pageTitle("Health"),
    h("p", { class: "lead" }, "What ", h("code", {}, "/health"), ", ", h("code", {}, "/ready"), " and ", h("code", {}, "/metrics"), " say right now."),
    top, h("h2", {}, "Readiness by component"), comps,
    h("h2", {}, "Metrics"), h("div", { class: "toolbar" }, filter), metrics);

  const card = (k, v) => h("div", { class: "card" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));

  function drawMetrics() {
    const f = filter.value.trim().toLowerCase();
    const sel = rows.filter((r) => !f || r.name.includes(f) || r.labels.toLowerCase().includes(f));
    fill(metrics, table([
      { label: "Metric", cell: (r) => h("code", {}, r.name) },
      { label: "Labels", cell: (r) => h("span", { class: "mono muted" }, r.labels) },
      { label: "Value", num: true, cell: (r) => unitFromName(r.name, r.value) },
    ], sel.slice(0, 300), { empty: "No metric matches." }));
  }
  filter.addEventListener("input", drawMetrics);

  async function load() {
    try {
      const [liveness, text] = await Promise.all([get("/health"), request("GET", "/metrics", { headers: { Accept: "text/plain" } })]);
      // /ready answers 503 with the same body while a part is down; both are worth showing.
      const ready = await get("/ready").catch((e) => e.problem);
      fill(top,
        card("Process", badge(liveness.status === "ok" ? "alive" : liveness.status, "ok")),
        card("Ready", badge(ready?.status || "unknown", ready?.status === "UP" ? "ok" : "bad")),
        card("Uptime", fmtDuration((liveness.uptime_seconds || 0) * 1000)));
      fill(comps, table([
        { label: "Component", cell: ([k]) => k },
        { label: "Status", cell: ([, v]) => badge(v.status, v.status === "UP" ? "ok" : "bad") },
      ], Object.entries(ready?.components || {})));
      rows = parseMetrics(typeof text === "string" ? text : "");
      drawMetrics();
    } catch (e) {
      fill(top, errorNotice(e, "The server did not answer"));
    }
  }
  await load();
  const t = setInterval(load, 5000);
  return () => clearInterval(t);
}
