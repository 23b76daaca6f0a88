// Times in the viewer's own time zone, values with their units.

export const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});
const timeOnly = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});

/** Milliseconds since the epoch from a number (ms) or an RFC 3339 string. */
export function toMs(t) {
  if (t === null || t === undefined || t === "") return null;
  if (typeof t === "number") return t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}

/** "2026-11-23 14:05:09" in the viewer's zone; today's times without the date. */
export function fmtTime(t, { date = "auto" } = {}) {
  const ms = toMs(t);
  if (ms === null) return "—";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return date === "never" || (date === "auto" && today) ? timeOnly.format(d) : dateTime.format(d);
}

/** "4 s ago", "3 min ago", "2 h ago". */
export function fmtAgo(t, now = Date.now()) {
  const ms = toMs(t);
  if (ms === null) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = ms / 1000;
  if (s < 1) return `${Math.round(ms)} ms`;
  if (s < 120) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

const num = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const small = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 3 });
export function fmtNumber(v) {
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return String(v);
  return Math.abs(v) < 1 && v !== 0 ? small.format(v) : num.format(v);
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** The unit of `field`, or "" when nobody says. Units come from the server only: the device
 * catalog's (`units` on each device of `/api/v1/devices`, for every emulated or catalogued
 * type), else the series' own `unit` tag (a payload that declares its units). No table here:
 * a unit the UI guessed could contradict the catalog (kW shown as W). */
export function unitOf(field, tags = {}, units = {}) {
  if (units && units[field]) return units[field];
  if (tags && tags.unit) return tags.unit;
  return "";
}

/** "21.4 °C"; "no unit given" is said in the title where the unit is unknown. */
export function fmtValue(v, unit) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "boolean") return v ? "true" : "false";
  const n = fmtNumber(v);
  return unit ? `${n} ${unit}` : n;
}
