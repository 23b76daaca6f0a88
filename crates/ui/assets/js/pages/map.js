// Floor map of the renewable-energy lab: one station per device type of the lab, with the
// devices of that type in the fleet, their state and newest values. Stations link to devices.

import { h, s, fill, pageTitle, errorNotice } from "../dom.js";
import { fmtValue, unitOf, fmtAgo } from "../format.js";
import { FleetState, deviceState } from "../state.js";

// x, y, w, hh in the 1000 x 600 plan.
export const STATIONS = [
  { type: "pv_inverter", name: "PV array + inverter", area: "Roof", x: 30, y: 40, w: 300, hh: 150 },
  { type: "wind_turbine", name: "Wind turbine", area: "Yard", x: 350, y: 40, w: 300, hh: 150 },
  { type: "algae_farm", name: "Algae farm", area: "Greenhouse", x: 670, y: 40, w: 300, hh: 150 },
  { type: "biogas_plant", name: "Biogas plant", area: "Hall", x: 30, y: 260, w: 220, hh: 170 },
  { type: "heat_boiler", name: "Heat boiler", area: "Hall", x: 270, y: 260, w: 220, hh: 170 },
  { type: "energy_storage", name: "Energy storage", area: "Hall", x: 510, y: 260, w: 220, hh: 170 },
  { type: "engine_test_bench", name: "Engine test bench", area: "Hall", x: 750, y: 260, w: 220, hh: 170 },
];

const norm = (t) => String(t || "").toLowerCase().replace(/[^a-z0-9]/g, "");

export default async function map(root, _p, { live }) {
  const state = new FleetState(live);
  try {
    await state.start();
  } catch (e) {
    fill(root, pageTitle("Floor map"), errorNotice(e, "Could not list the devices"));
    return () => state.stop();
  }
  const holder = h("div", { class: "map-wrap" });
  const legend = h("p", { class: "muted" });
  fill(root, pageTitle("Floor map: renewable-energy lab"),
    h("p", { class: "lead" }, "Each station shows the lab's devices of that type with their newest values. Select a station to open its device."),
    holder, legend);

  function station(st, devices) {
    const d = devices[0];
    const cls = ["map-station", d ? "has-device" : "", d && deviceState(d).kind !== "ok" ? "silent" : ""].join(" ");
    const lines = [];
    if (!d) {
      lines.push(s("text", { x: 12, y: 62, class: "small" }, "no device of this type"));
      lines.push(s("text", { x: 12, y: 78, class: "small" }, "in the fleet"));
    } else {
      const st8 = deviceState(d);
      lines.push(s("text", { x: 12, y: 60 }, `${d.device_id} · ${st8.label}`));
      const vals = Object.entries(d.values || {}).slice(0, st.hh > 160 ? 5 : 4);
      vals.forEach(([f, x], i) => lines.push(s("text", { x: 12, y: 80 + i * 17, class: "value" }, `${f}: ${fmtValue(x.v, unitOf(f, x.tags, d.units))}`)));
      if (!vals.length) lines.push(s("text", { x: 12, y: 80, class: "small" }, `last seen ${fmtAgo(d.last_seen)}`));
      if (devices.length > 1) lines.push(s("text", { x: st.w - 12, y: 24, "text-anchor": "end", class: "small" }, `+${devices.length - 1} more`));
    }
    const body = s("g", { class: cls, transform: `translate(${st.x},${st.y})`, dataset: undefined },
      s("rect", { width: st.w, height: st.hh, rx: 10 }),
      s("text", { x: 12, y: 22, "font-weight": "700" }, st.name),
      s("text", { x: 12, y: 38, class: "small" }, `${st.type}`),
      ...lines);
    body.setAttribute("data-type", st.type);
    if (!d) return body;
    const a = s("a", { href: `#/device/${encodeURIComponent(d.device_id)}`, "aria-label": `${st.name}: ${d.device_id}` }, body);
    return a;
  }

  function draw() {
    const byType = new Map();
    for (const d of state.devices.values()) {
      const k = norm(d.device_type);
      byType.set(k, [...(byType.get(k) || []), d]);
    }
    const svg = s("svg", { viewBox: "0 0 1000 460", role: "img", "aria-label": "Floor plan of the renewable-energy lab" },
      s("rect", { x: 10, y: 10, width: 980, height: 195, rx: 14, class: "map-room" }),
      s("text", { x: 24, y: 32, class: "small", fill: "currentColor" }, "Outdoor · roof · greenhouse"),
      s("rect", { x: 10, y: 228, width: 980, height: 222, rx: 14, class: "map-room" }),
      s("text", { x: 24, y: 250, class: "small", fill: "currentColor" }, "Lab hall"),
      STATIONS.map((st) => station(st, byType.get(norm(st.type)) || [])));
    // Keep keyboard focus on the same station across redraws.
    const active = holder.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
    fill(holder, svg);
    if (active) holder.querySelector(`a[href="${CSS.escape(active)}"]`)?.focus();
    const known = new Set(STATIONS.map((x) => norm(x.type)));
    const elsewhere = [...state.devices.values()].filter((d) => !known.has(norm(d.device_type)));
    fill(legend, elsewhere.length
      ? ["Not in the renewable lab: ", elsewhere.map((d, i) => [i ? ", " : "", h("a", { href: `#/device/${encodeURIComponent(d.device_id)}` }, d.device_id)])]
      : "");
  }
  let queued = false;
  const off = state.onChange(() => {
    if (queued) return;
    queued = true;
    setTimeout(() => { queued = false; draw(); }, 500);
  });
  draw();
  return () => { off(); state.stop(); };
}
