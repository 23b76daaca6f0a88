// One device: its state, controls (start/stop, scenario, fault injection — when the server has
// the emulator's control API), history charts with zoom, live updates, and on the same charts the
// injected faults (ground truth, shaded) and the detected anomalies (red marks).

import { h, fill, badge, table, pageTitle, errorNotice, unavailable } from "../dom.js";
import { ENDPOINTS, available, get, post, del, qs, listOf, path } from "../api.js";
import { fmtAgo, fmtTime, fmtValue, fmtDuration, toMs, unitOf } from "../format.js";
import { deviceState } from "../state.js";
import { ChartGroup, TimeChart } from "../chart.js";

const RANGES = [["5m", 5 * 60e3], ["15m", 15 * 60e3], ["1h", 3600e3], ["6h", 6 * 3600e3], ["24h", 86400e3], ["all", null]];
// At most about this many points per chart for a range; beyond it the server aggregates.
const TARGET_POINTS = 1200;

// The fault form's kinds and labels come from the server (`GET /api/v1/emulator/fault-kinds`,
// the emulator's own list), so a new kind shows here without a UI change.
const FAULT_KINDS_URL = "/api/v1/emulator/fault-kinds";

/** Fields an annotation names (`fields: [...]`, or one `field`); none = the whole message. */
export function fieldsOf(a) {
  return a.fields?.length ? a.fields : a.field ? [a.field] : [];
}
const touches = (a, f) => { const fs = fieldsOf(a); return !fs.length || fs.includes(f); };

function stepFor(spanMs) {
  const raw = spanMs / TARGET_POINTS;
  if (raw <= 1000) return null;
  for (const s of [2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400]) if (s * 1000 >= raw) return `${s}s`;
  return "86400s";
}

export default async function device(root, [id], { live, onTheme }) {
  let dev;
  try {
    dev = await get(`/api/v1/devices/${encodeURIComponent(id)}`);
  } catch (e) {
    fill(root, pageTitle(id), errorNotice(e, "Could not load the device"), h("p", {}, h("a", { href: "#/" }, "Back to the fleet")));
    return;
  }
  const has = await available("deviceStart", "deviceStop", "deviceScenario", "deviceFaults", "annotations", "anomalies", "emulatorDevices");
  // The emulator's view (state, scenario, active faults, configured scenarios), when it has one.
  let emu = null;
  async function loadEmu() {
    if (!has.emulatorDevices || !dev.emulated) return;
    try { emu = await get(`${ENDPOINTS.emulatorDevices}/${encodeURIComponent(id)}`); dev.state = emu.state; } catch { emu = null; }
  }
  await loadEmu();
  let faultKinds = [];
  if (has.deviceFaults) {
    try { faultKinds = (await get(FAULT_KINDS_URL)).kinds || []; } catch { faultKinds = []; }
  }
  const units = dev.units || {};
  const seriesTags = Object.fromEntries((dev.series || []).map((s) => [s.field, s.tags]));

  const head = h("div", {});
  const controls = h("section", { class: "panel", "aria-labelledby": "ctl-h" });
  const status = h("p", { role: "status", "aria-live": "polite", class: "muted" });
  const charts = h("div", { class: "charts", tabindex: "0", role: "group",
    "aria-label": "History charts. Keys: plus and minus zoom, left and right arrows move in time, 0 resets the zoom." });
  const others = h("div", {});
  const notes = h("section", {});
  const group = new ChartGroup(`dev-${id}`);
  const byField = new Map(); // field -> TimeChart
  const latest = new Map(); // field -> {v, ts}
  let range = "15m";
  let lastTs = null;
  let stopped = false;

  const rangeButtons = RANGES.map(([name]) => h("button", { type: "button", "aria-pressed": String(name === range),
    onclick: () => { range = name; for (const b of rangeButtons) b.setAttribute("aria-pressed", String(b.textContent === name)); group.setRange(null); load(); } }, name));
  const zoomLabel = h("span", { class: "muted", "aria-live": "polite" });
  group.onZoom = (r) => { zoomLabel.textContent = r ? `zoomed: ${fmtTime(r[0])} – ${fmtTime(r[1])}` : "following live data"; };
  group.onZoom(null);

  fill(root,
    head,
    controls,
    h("h2", {}, "History"),
    h("div", { class: "toolbar", role: "toolbar", "aria-label": "Time range and zoom" },
      h("span", { class: "muted" }, "Range:"), rangeButtons,
      h("span", { class: "spacer" }),
      h("button", { type: "button", onclick: () => group.zoom(0.5), title: "Zoom in (key +)" }, "Zoom in"),
      h("button", { type: "button", onclick: () => group.zoom(2), title: "Zoom out (key -)" }, "Zoom out"),
      h("button", { type: "button", onclick: () => group.pan(-0.25), "aria-label": "Earlier", title: "Earlier (key ←)" }, "◀"),
      h("button", { type: "button", onclick: () => group.pan(0.25), "aria-label": "Later", title: "Later (key →)" }, "▶"),
      h("button", { type: "button", onclick: () => group.setRange(null) }, "Reset zoom")),
    h("p", { class: "muted" }, zoomLabel, " · drag across a chart to zoom, double-click to reset."),
    charts, others, notes, status);

  charts.addEventListener("keydown", (e) => {
    const k = { "+": () => group.zoom(0.5), "=": () => group.zoom(0.5), "-": () => group.zoom(2),
      ArrowLeft: () => group.pan(-0.25), ArrowRight: () => group.pan(0.25), 0: () => group.setRange(null) }[e.key];
    if (k) { e.preventDefault(); k(); }
  });

  // The heading is built once (route changes move focus to it); its badge and facts refresh.
  const stateBadge = h("span", {});
  const facts = h("dl", { class: "kv" });
  fill(head, pageTitle(dev.device_id, " ", stateBadge), facts);
  function drawHead() {
    const s = deviceState(dev);
    fill(stateBadge, badge(s.label, s.kind, s.title));
    fill(facts,
      h("dt", {}, "Type"), h("dd", {}, dev.device_type, dev.emulated ? " (emulated by this fieldlab)" : ""),
      h("dt", {}, "Last seen"), h("dd", {}, dev.last_seen ? `${fmtTime(dev.last_seen, { date: "always" })} (${fmtAgo(dev.last_seen)})` : "never"),
      h("dt", {}, "Messages"), h("dd", {}, `${dev.messages ?? 0}`, dev.last_seq !== null && dev.last_seq !== undefined ? ` · last seq ${dev.last_seq}` : ""),
      h("dt", {}, "Fields"), h("dd", {}, (dev.series || []).map((x) => x.field).join(", ") || "none stored yet"));
  }
  drawHead();

  // ---- controls: only what the server offers -------------------------------------------------
  const act = (what, fn) => async () => {
    status.textContent = `${what}…`;
    try { await fn(); status.textContent = `${what}: done.`; refreshDevice(); loadNotes(); }
    catch (e) {
      // 403: the server's reason names the roles that may do this and the caller's.
      status.textContent = e.status === 403 ? `${what} refused: ${e.message}` : `${what} failed: ${e.message}`;
    }
  };
  // What is running now; redrawn on refresh without touching the form the user may be filling.
  const activeBox = h("div", {});
  function drawActive() {
    const faults = emu?.faults || [];
    fill(activeBox,
      emu?.scenario ? h("p", { class: "muted" }, `Scenario running: ${emu.scenario.name}${emu.scenario.phase ? ` (phase ${emu.scenario.phase})` : ""}`) : null,
      faults.length ? [h("h3", {}, "Active faults"), table([
        { label: "Kind", cell: (f) => badge(f.kind, "warn") }, { label: "Field", cell: (f) => f.field || "whole message" },
        { label: "Since", cell: (f) => fmtTime(f.start_ms) }, { label: "Until", cell: (f) => (f.end_ms ? fmtTime(f.end_ms) : "removed") },
        { label: "", cell: (f) => h("button", { type: "button", onclick: act(`End ${f.kind}`, () => del(`${path(ENDPOINTS.deviceFaults, id)}/${f.id}`)) }, "End now") },
      ], faults)] : null);
  }
  function drawControls() {
    const fields = (dev.series || []).map((x) => x.field);
    if (!has.deviceStart && !has.deviceStop && !has.deviceScenario && !has.deviceFaults) {
      fill(controls, h("h2", { id: "ctl-h" }, "Control"),
        unavailable("Device control (start, stop, scenarios, fault injection)", "POST /api/v1/devices/{id}/start", "emulator issue (#3)"));
      return;
    }
    const scenarios = emu?.config?.scenarios || dev.scenarios || [];
    const scenarioSel = h("select", { "aria-label": "Scenario" },
      scenarios.map((sc) => h("option", { value: sc.name ?? sc }, sc.name ?? sc)));
    const scenarioIn = scenarios.length ? scenarioSel : h("input", { type: "text", placeholder: "scenario name", "aria-label": "Scenario name" });
    const kindSel = h("select", { "aria-label": "Fault kind" }, faultKinds.map((k) => h("option", { value: k.kind }, k.label)));
    const fieldSel = h("select", { "aria-label": "Field" }, fields.map((f) => h("option", { value: f }, f)));
    const durIn = h("input", { type: "number", min: "1", value: "60", "aria-label": "Duration in seconds", style: "width:6rem" });
    const magIn = h("input", { type: "number", step: "any", placeholder: "auto", "aria-label": "Magnitude, in the field's unit", style: "width:7rem" });
    fill(controls,
      h("h2", { id: "ctl-h" }, "Control"),
      h("div", { class: "toolbar" },
        has.deviceStart ? h("button", { type: "button", class: "primary", onclick: act("Start", () => post(path(ENDPOINTS.deviceStart, id), {})) }, "Start") : null,
        has.deviceStop ? h("button", { type: "button", class: "danger", onclick: act("Stop", () => post(path(ENDPOINTS.deviceStop, id), {})) }, "Stop") : null),
      has.deviceScenario ? h("div", { class: "row" },
        h("label", { class: "field" }, "Scenario", scenarioIn),
        h("button", { type: "button", onclick: act("Run scenario", () => post(path(ENDPOINTS.deviceScenario, id), { scenario: scenarioIn.value })) }, "Run scenario"),
        h("button", { type: "button", onclick: act("Stop scenario", () => del(path(ENDPOINTS.deviceScenario, id))) }, "Stop scenario")) : null,
      has.deviceFaults ? h("div", { class: "row", style: "margin-top:.6rem" },
        h("label", { class: "field" }, "Fault", kindSel),
        h("label", { class: "field" }, "Field", fieldSel),
        h("label", { class: "field" }, "Duration (s)", durIn),
        h("label", { class: "field" }, "Magnitude", magIn),
        h("button", { type: "button", class: "primary", onclick: act("Inject fault", () => post(path(ENDPOINTS.deviceFaults, id), {
          kind: kindSel.value, field: fieldSel.value, duration_s: Number(durIn.value) || undefined,
          magnitude: magIn.value === "" ? undefined : Number(magIn.value),
        })) }, "Inject fault")) : null,
      activeBox);
    drawActive();
  }

  drawControls();

  async function refreshDevice() {
    try {
      dev = await get(`/api/v1/devices/${encodeURIComponent(id)}`);
      await loadEmu();
      drawHead();
      drawActive();
    } catch { /* keep the last */ }
  }

  // ---- history ---------------------------------------------------------------------------------
  function chartFor(field, tags) {
    if (byField.has(field)) return byField.get(field);
    const unit = unitOf(field, tags, units);
    const now = h("span", { class: "now" });
    const plot = h("div", { class: "plot" });
    const box = h("figure", { class: "chart", dataset: { field } },
      h("h3", {}, h("span", {}, field, unit ? h("span", { class: "muted" }, ` (${unit})`) : h("span", { class: "muted", title: "the device reports no unit" }, " (no unit)")), now),
      plot);
    box.style.margin = "0";
    charts.append(box);
    const c = new TimeChart(plot, { label: field, unit, readout: now });
    group.add(c);
    byField.set(field, c);
    c.ready = c.init();
    return c;
  }

  async function load() {
    const fields = dev.series || [];
    if (!fields.length) {
      fill(others, h("p", { class: "muted" }, "No data stored for this device yet; charts appear with its first message."));
      return;
    }
    const spec = RANGES.find(([n]) => n === range)[1];
    const first = Math.min(...fields.map((x) => toMs(x.first)));
    const span = spec ?? Math.max(60e3, Date.now() - first);
    const step = stepFor(span);
    let q;
    try {
      q = await get(`/api/v1/query${qs({ device_id: id, from: spec ? `-${range}` : undefined, step, agg: step ? "mean" : undefined })}`);
    } catch (e) {
      fill(others, errorNotice(e, "Could not load the history"));
      return;
    }
    if (stopped) return;
    const nonNumeric = [];
    for (const s of q.series) {
      const pts = s.points.map((p) => [toMs(p.ts), p.value]);
      const numeric = pts.some((p) => typeof p[1] === "number") || (!pts.length && !nonNumeric.includes(s.field));
      if (pts.length) latest.set(s.field, { v: pts[pts.length - 1][1], ts: pts[pts.length - 1][0], tags: s.tags });
      if (!numeric) { nonNumeric.push(s); continue; }
      const c = chartFor(s.field, s.tags);
      await c.ready;
      c.setData(pts);
      if (pts.length) lastTs = Math.max(lastTs ?? 0, pts[pts.length - 1][0]);
    }
    drawLatest();
    drawOthers(nonNumeric);
    loadNotes();
  }

  function drawLatest() {
    for (const [f, c] of byField) {
      const x = latest.get(f);
      if (x) c.setLatest(fmtValue(x.v, c.unit), `newest, at ${fmtTime(x.ts, { date: "always" })}`);
    }
  }

  function drawOthers(nonNumeric) {
    if (!nonNumeric.length) { fill(others); return; }
    fill(others, h("h3", {}, "Other fields"), table(
      [{ label: "Field", cell: (s) => s.field }, { label: "Newest value", cell: (s) => fmtValue(latest.get(s.field)?.v, unitOf(s.field, s.tags, units)) },
        { label: "At", cell: (s) => fmtTime(latest.get(s.field)?.ts) }],
      nonNumeric));
  }

  // ---- live --------------------------------------------------------------------------------------
  function onTelemetry(m) {
    if (m.device_id !== id) return;
    const ts = toMs(m.ts) ?? Date.now();
    for (const [f, raw] of Object.entries(m.data || {})) {
      const v = raw && typeof raw === "object" && "value" in raw ? raw.value : raw;
      latest.set(f, { v, ts });
      if (typeof v === "number" && (byField.has(f) || dev.series?.length)) chartFor(f, seriesTags[f]).push(ts, v);
    }
    lastTs = Math.max(lastTs ?? 0, ts);
    dev.last_seen = m.ts;
    dev.messages = (dev.messages || 0) + 1;
    scheduleLatest();
  }
  let latestQueued = false;
  function scheduleLatest() {
    if (latestQueued) return;
    latestQueued = true;
    requestAnimationFrame(() => { latestQueued = false; drawLatest(); });
  }

  // Without a WebSocket: fetch what is newer than the newest point every 2 s.
  async function poll() {
    if (live.isLive || stopped) return;
    if (!dev.series?.length) { await refreshDevice(); if (dev.series?.length) load(); return; }
    if (lastTs === null) return;
    try {
      const q = await get(`/api/v1/query${qs({ device_id: id, from: new Date(lastTs + 1).toISOString() })}`);
      for (const s of q.series) {
        for (const p of s.points) {
          const ts = toMs(p.ts);
          latest.set(s.field, { v: p.value, ts, tags: s.tags });
          if (typeof p.value === "number") chartFor(s.field, s.tags).push(ts, p.value);
          lastTs = Math.max(lastTs, ts);
        }
      }
      scheduleLatest();
    } catch { /* the live status shows when the server is unreachable */ }
  }

  // ---- annotations and anomalies -------------------------------------------------------------
  async function loadNotes() {
    if (!has.annotations && !has.anomalies) {
      fill(notes, h("h2", {}, "Faults and anomalies"),
        h("p", { class: "muted" }, "Injected faults (",
          h("code", {}, "GET /api/v1/annotations"), ") and detected anomalies (", h("code", {}, "GET /api/v1/anomalies"),
          ") are not available on this server yet; when they are, they are drawn on the charts above and listed here."));
      return;
    }
    const from = new Date(Date.now() - 86400e3).toISOString();
    const [ann, an] = await Promise.all([
      has.annotations ? get(`/api/v1/annotations${qs({ device_id: id, from })}`).then((d) => listOf(d, "annotations")).catch(() => []) : [],
      has.anomalies ? get(`/api/v1/anomalies${qs({ device_id: id, from })}`).then((d) => listOf(d, "anomalies")).catch(() => []) : [],
    ]);
    for (const [f, c] of byField) {
      c.setAnnotations({
        bands: ann.filter((a) => touches(a, f)).map((a) => ({ from: toMs(a.start ?? a.start_ms), to: toMs(a.end ?? a.end_ms), label: a.kind })),
        marks: an.filter((a) => !a.field || a.field === f).map((a) => ({ t: toMs(a.ts ?? a.timestamp), label: a.detector })),
      });
    }
    fill(notes, h("h2", {}, "Faults and anomalies"),
      has.annotations ? [h("h3", {}, "Injected faults (ground truth)"), table([
        { label: "Kind", cell: (a) => badge(a.kind, "warn") }, { label: "Fields", cell: (a) => fieldsOf(a).join(", ") || "whole message" },
        { label: "Start", cell: (a) => fmtTime(a.start ?? a.start_ms) }, { label: "End", cell: (a) => (a.end ?? a.end_ms) ? fmtTime(a.end ?? a.end_ms) : "active" },
        { label: "Duration", cell: (a) => fmtDuration((toMs(a.end ?? a.end_ms) ?? Date.now()) - toMs(a.start ?? a.start_ms)) },
      ], ann, { empty: "No faults injected in the last 24 h." })] : null,
      has.anomalies ? [h("h3", {}, "Detected anomalies"), table([
        { label: "Time", cell: (a) => fmtTime(a.ts ?? a.timestamp) }, { label: "Field", cell: (a) => a.field || "—" },
        { label: "Value", cell: (a) => fmtValue(a.value, unitOf(a.field || "", seriesTags[a.field], units)) },
        { label: "Score", num: true, cell: (a) => a.score?.toFixed?.(3) ?? "—" }, { label: "Detector", cell: (a) => a.detector || "—" },
      ], an, { empty: "No anomalies detected in the last 24 h." })] : null);
  }

  const offs = [live.on("telemetry", onTelemetry), onTheme(() => { for (const c of byField.values()) c.retheme(); })];
  await load();
  const pollTimer = setInterval(poll, 2000);
  const notesTimer = setInterval(() => { if (!document.hidden) loadNotes(); }, 5000);
  const headTimer = setInterval(() => { if (!live.isLive) refreshDevice(); else drawHead(); }, 5000);
  return () => {
    stopped = true;
    for (const off of offs) off();
    clearInterval(pollTimer); clearInterval(notesTimer); clearInterval(headTimer);
    for (const c of byField.values()) c.destroy();
  };
}
