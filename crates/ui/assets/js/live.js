// Live telemetry for every page: one WebSocket to `/ws`, reconnecting with back-off, and, only
// while the WebSocket is unavailable, polling `/api/v1/devices` instead.
//
// Messages on /ws are fieldlab JSON (brief, "Conventions"):
//   {"device_id", "device_type", "seq", "ts", "data": {field: value}, "status"}
// bare, wrapped as {"topic", "message": {...}} (the emulator's stream), or typed as
// {"type": "anomaly"|"quality"|..., "payload"?: {...}}.
// Subscribers get them per event name; the connection state is the "mode" event:
//   "connecting", "live" (WebSocket open), "polling" (no WebSocket; data by polling),
//   "offline" (neither answers).

import { available, get } from "./api.js";

const POLL_MS = 2000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
// Without a /ws route there is nothing to reconnect to; ask again this often whether it appeared.
const REPROBE_MS = 30000;

export class LiveFeed {
  /** `probe` says whether the WebSocket route exists (default: ask the server's endpoint probe). */
  constructor({ wsPath = "/ws", pollPath = "/api/v1/devices", probe = async () => (await available("ws")).ws } = {}) {
    this.wsPath = wsPath;
    this.pollPath = pollPath;
    this.probe = probe;
    this.handlers = new Map();
    this.mode = "connecting";
    this.ws = null;
    this.backoff = BACKOFF_MIN_MS;
    this.pollTimer = null;
    this.retryTimer = null;
    this.stopped = false;
    this.lastDevices = null;
  }

  /** Subscribe; returns the function that unsubscribes. */
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    if (event === "mode") fn(this.mode);
    if (event === "devices" && this.lastDevices) fn(this.lastDevices);
    return () => this.handlers.get(event)?.delete(fn);
  }

  emit(event, payload) {
    for (const fn of this.handlers.get(event) || []) {
      try { fn(payload); } catch (e) { console.warn(`live ${event} handler failed`, e); }
    }
  }

  setMode(m) {
    if (m !== this.mode) {
      this.mode = m;
      this.emit("mode", m);
    }
  }

  get isLive() { return this.mode === "live"; }

  async start() {
    this.stopped = false;
    await this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.stopPolling();
    // Detached first: a later start() must not see this socket's close as its own.
    if (this.ws) { this.ws.onclose = null; this.ws.onmessage = null; this.ws.close(); this.ws = null; }
  }

  async connect() {
    if (this.stopped) return;
    // Ask first whether the route exists: a handshake against a missing route is a browser
    // console error on every retry, and there is nothing to retry for.
    if (!(await this.probe())) {
      this.startPolling();
      this.retryTimer = setTimeout(() => this.connect(), REPROBE_MS);
      return;
    }
    const url = new URL(this.wsPath, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    // Browsers cannot set headers on a handshake: with auth on, /ws takes the bearer token
    // as `?access_token=` (RFC 6750 section 2.3).
    const token = sessionStorage.getItem("fieldlab.token");
    if (token) url.searchParams.set("access_token", token);
    let opened = false;
    const sock = new WebSocket(url);
    this.ws = sock;
    sock.onopen = () => {
      opened = true;
      this.backoff = BACKOFF_MIN_MS;
      this.stopPolling();
      this.setMode("live");
    };
    sock.onmessage = (ev) => this.dispatch(ev.data);
    sock.onclose = () => {
      if (this.ws === sock) this.ws = null;
      if (this.stopped) return;
      this.startPolling();
      // Exponential back-off with jitter, reset after a successful open.
      const wait = opened ? BACKOFF_MIN_MS : this.backoff;
      this.backoff = Math.min(BACKOFF_MAX_MS, this.backoff * 2);
      this.retryTimer = setTimeout(() => this.connect(), wait * (0.75 + Math.random() / 2));
    };
  }

  dispatch(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    // User Timing mark of the first live message (devtools' Performance panel shows it; the
    // browser test reads it for the time-to-first-live-value figure).
    if (!this.marked) { this.marked = true; performance.mark("fieldlab:first-live"); }
    for (let m of Array.isArray(msg) ? msg : [msg]) {
      // fieldlab's /ws wraps each MQTT message as {topic, message}; a slow client is told how
      // many it missed with {lagged: n}.
      if (m.lagged !== undefined) { this.emit("lagged", m.lagged); continue; }
      if (m.message && m.topic) m = { ...m.message, topic: m.topic };
      const type = m.type || (m.data && m.device_id ? "telemetry" : "message");
      this.emit(type, m.payload && type !== "telemetry" ? m.payload : m);
    }
  }

  startPolling() {
    if (this.pollTimer) return;
    this.setMode("polling");
    const tick = async () => {
      try {
        const d = await get(this.pollPath);
        this.lastDevices = d;
        if (this.mode !== "live") this.setMode("polling");
        this.emit("devices", d);
      } catch {
        if (this.mode !== "live") this.setMode("offline");
      }
    };
    tick();
    this.pollTimer = setInterval(tick, POLL_MS);
  }

  stopPolling() {
    clearInterval(this.pollTimer);
    this.pollTimer = null;
  }
}

export const live = new LiveFeed();
