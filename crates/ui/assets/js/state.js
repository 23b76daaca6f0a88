// What the fleet looks like right now, shared by the overview and the floor map: the device
// list from /api/v1/devices, last values and seen-times from live telemetry (or, while there is
// no WebSocket, from polling).

import { ENDPOINTS, available, get, qs } from "./api.js";
import { toMs } from "./format.js";

/** A device is "receiving" when its last message is younger than this. The emulator sends
 * every `update_interval` (default 1 s); three missed intervals of a slow device still count. */
export const SILENT_AFTER_MS = 15000;

/** The state shown for a device. The server's own `state` (running/stopped, from the emulator's
 * control API) wins; without it we say only what we know: telemetry arrives, or it does not. */
export function deviceState(d, now = Date.now()) {
  if (d.state) {
    const s = String(d.state).toLowerCase();
    const kind = ["running", "online", "operational"].includes(s) ? "ok"
      : ["stopped", "offline", "disconnected"].includes(s) ? "bad" : "warn";
    return { label: s, kind, title: `state reported by the server: ${s}` };
  }
  const seen = toMs(d.last_seen);
  if (seen === null) return { label: "no data yet", kind: "none", title: "no message from this device has been ingested" };
  if (now - seen <= SILENT_AFTER_MS) return { label: "receiving", kind: "ok", title: `telemetry within the last ${SILENT_AFTER_MS / 1000} s` };
  return { label: "silent", kind: "warn", title: `no telemetry for more than ${SILENT_AFTER_MS / 1000} s` };
}

export class FleetState {
  constructor(live) {
    this.live = live;
    this.devices = new Map(); // id -> device JSON (+ values: {field: {v, ts}})
    this.listeners = new Set();
    this.offs = [];
    this.lastValuesAt = 0;
  }

  async start() {
    const [d, has] = await Promise.all([get("/api/v1/devices"), available("emulatorDevices", "quality")]);
    this.mergeDevices(d);
    this.hasEmulator = has.emulatorDevices;
    await Promise.all([this.pollEmulator(), this.pollValues(true)]);
    this.emuTimer = setInterval(() => this.pollEmulator(), 5000);
    this.offs.push(this.live.on("devices", (d) => { this.mergeDevices(d); this.pollValues(); }));
    this.offs.push(this.live.on("telemetry", (m) => this.telemetry(m)));
    return this;
  }

  stop() { for (const off of this.offs) off(); this.listeners.clear(); clearInterval(this.emuTimer); }

  /** The emulator's state (running/stopped/disconnected), scenario and active faults of the
   * devices it emulates, when the server has the emulator API. */
  async pollEmulator() {
    if (!this.hasEmulator) return;
    try {
      const e = await get(ENDPOINTS.emulatorDevices);
      for (const v of e.devices || []) {
        const d = this.devices.get(v.device_id);
        if (d) Object.assign(d, { state: v.state, scenario: v.scenario, faults: v.faults || [] });
      }
      this.changed();
    } catch { /* state stays derived from telemetry */ }
  }

  onChange(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }
  changed() { for (const fn of this.listeners) fn(this); }

  mergeDevices(d) {
    for (const dev of d.devices || []) {
      const old = this.devices.get(dev.device_id);
      this.devices.set(dev.device_id, { values: {}, ...old, ...dev, values: old?.values || {},
        state: dev.state ?? old?.state, faults: dev.faults ?? old?.faults, scenario: dev.scenario ?? old?.scenario });
    }
    this.changed();
  }

  telemetry(m) {
    const id = m.device_id;
    if (!id) return;
    const d = this.devices.get(id) || { device_id: id, device_type: m.device_type || "?", messages: 0, values: {} };
    d.last_seen = m.ts || new Date().toISOString();
    d.messages = (d.messages || 0) + 1;
    if (m.seq !== undefined) d.last_seq = m.seq;
    if (m.status) d.status = m.status;
    for (const [f, v] of Object.entries(m.data || {})) {
      d.values[f] = { v: typeof v === "object" && v !== null && "value" in v ? v.value : v, ts: d.last_seen };
    }
    this.devices.set(id, d);
    this.changed();
  }

  /** Without the WebSocket, the newest value of each field comes from the store: one request for
   * the series list, then the newest point of each device that has series (at most 30 devices,
   * at most every 5 s). Live telemetry makes this unnecessary. */
  async pollValues(force = false) {
    if (this.live.isLive) return;
    if (!force && Date.now() - this.lastValuesAt < 5000) return;
    this.lastValuesAt = Date.now();
    try {
      const s = await get("/api/v1/series");
      const withData = [...new Set((s.series || []).map((x) => x.device_id))].slice(0, 30);
      await Promise.all(withData.map(async (id) => {
        const q = await get(`/api/v1/query${qs({ device_id: id, order: "desc", limit: 1, from: "-10m" })}`);
        const d = this.devices.get(id);
        if (!d) return;
        for (const ser of q.series || []) {
          const p = ser.points?.[0];
          if (p) d.values[ser.field] = { v: p.value, ts: p.ts, tags: ser.tags };
        }
      }));
      this.changed();
    } catch { /* the live status shows when the server is unreachable */ }
  }
}
