// Fleet overview: every known device with its type, whether telemetry arrives, when it was last
// seen, how many messages it sent, and its newest values with units. Updated live (WebSocket) or,
// without one, by polling; redrawn at most twice a second however fast data arrives.

import { h, fill, badge, table, pageTitle, errorNotice } from "../dom.js";
import { available, get, listOf } from "../api.js";
import { fmtAgo, fmtTime, fmtValue, fmtNumber, unitOf } from "../format.js";
import { FleetState, deviceState } from "../state.js";

export default async function fleet(root, _params, { live }) {
  const state = new FleetState(live);
  try {
    await state.start();
  } catch (e) {
    fill(root, pageTitle("Fleet"), errorNotice(e, "Could not list the devices"));
    return () => state.stop();
  }
  const extra = await available("quality", "emulatorDevices");
  const quality = new Map();
  async function loadExtras() {
    if (extra.quality) {
      try {
        for (const q of listOf(await get("/api/v1/quality"), "devices", "quality")) {
          if (q.device_id) quality.set(q.device_id, q.score ?? q.quality_score);
        }
      } catch { /* shown as "—" */ }
    }
  }
  await loadExtras();

  const filter = h("input", { type: "search", placeholder: "Filter by id or type", "aria-label": "Filter devices by id or type" });
  const cards = h("div", { class: "cards", "aria-live": "off" });
  const tableBox = h("div", { id: "fleet-table" });
  fill(root,
    pageTitle("Fleet"),
    h("p", { class: "lead" }, "Every device fieldlab knows: emulated here or sending to its broker."),
    cards,
    h("div", { class: "toolbar" }, filter, h("span", { class: "spacer" }),
      h("span", { class: "muted" }, "“receiving” = telemetry in the last 15 s")),
    tableBox);

  const card = (k, v, title) => h("div", { class: "card", title }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));

  function draw() {
    const now = Date.now();
    const all = [...state.devices.values()].sort((a, b) => a.device_id.localeCompare(b.device_id));
    const states = all.map((d) => deviceState(d, now));
    fill(cards,
      card("Devices", fmtNumber(all.length)),
      card("Receiving", fmtNumber(states.filter((s) => s.label === "receiving" || s.kind === "ok").length), "telemetry within the last 15 s"),
      card("Silent", fmtNumber(states.filter((s) => s.kind === "warn" || s.kind === "bad").length)),
      card("Messages", fmtNumber(all.reduce((n, d) => n + (d.messages || 0), 0)), "ingested by this fieldlab process since it started"));
    const f = filter.value.trim().toLowerCase();
    const rows = all.filter((d) => !f || d.device_id.toLowerCase().includes(f) || String(d.device_type).toLowerCase().includes(f));
    const cols = [
      { label: "Device", cell: (d) => h("a", { href: `#/device/${encodeURIComponent(d.device_id)}` }, d.device_id) },
      { label: "Type", cls: "hide-narrow", cell: (d) => [d.device_type, d.emulated ? h("span", { class: "muted" }, " · emulated") : null] },
      { label: "Telemetry", cell: (d) => { const s = deviceState(d, now); return badge(s.label, s.kind, s.title); } },
      { label: "Last seen", cell: (d) => h("span", { title: d.last_seen ? fmtTime(d.last_seen, { date: "always" }) : "" }, fmtAgo(d.last_seen, now)) },
      { label: "Messages", num: true, cell: (d) => fmtNumber(d.messages || 0) },
      { label: "Newest values", cls: "hide-narrow", cell: (d) => lastValues(d) },
    ];
    if (extra.quality) cols.push({ label: "Quality", num: true, cell: (d) => quality.has(d.device_id) ? fmtNumber(quality.get(d.device_id)) : "—" });
    if (extra.emulatorDevices) {
      cols.push({ label: "Scenario", cls: "hide-narrow", cell: (d) => d.scenario?.name || (d.emulated ? "normal" : "—") });
      cols.push({ label: "Active faults", cell: (d) => (d.faults || []).length ? (d.faults || []).map((f) => badge(f.kind, "warn", f.field ? `on ${f.field}` : "whole message")) : "—" });
    }
    // Keep keyboard focus on the same link across redraws.
    const active = tableBox.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
    fill(tableBox, table(cols, rows, { empty: f ? "No device matches the filter." : "No devices yet: start `fieldlab up` with a fleet, or publish telemetry to the broker." }));
    if (active) tableBox.querySelector(`a[href="${CSS.escape(active)}"]`)?.focus();
  }

  function lastValues(d) {
    const entries = Object.entries(d.values || {});
    if (!entries.length) return h("span", { class: "muted" }, "—");
    return h("span", { class: "mono" }, entries.slice(0, 4).map(([f, x], i) => {
      const unit = unitOf(f, x.tags, d.units);
      return h("span", { title: `${f} at ${fmtTime(x.ts, { date: "always" })}${unit ? "" : " (no unit given)"}` },
        i ? " · " : "", `${f} `, h("strong", {}, fmtValue(x.v, unit)));
    }), entries.length > 4 ? h("span", { class: "muted" }, ` +${entries.length - 4}`) : null);
  }

  // Redraw at most every 500 ms, and every second for the "ago" column.
  let queued = false;
  const schedule = () => {
    if (queued) return;
    queued = true;
    setTimeout(() => { queued = false; draw(); }, 500);
  };
  const off = state.onChange(schedule);
  filter.addEventListener("input", draw);
  const tick = setInterval(draw, 1000);
  const extrasTimer = setInterval(loadExtras, 10000);
  draw();
  return () => { off(); state.stop(); clearInterval(tick); clearInterval(extrasTimer); };
}
