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

// Units of the emulator's catalog (crates/emulator/src/model.rs) and of the renewable lab's
// types. The server's own answer wins when it has one (a `unit` tag on the series, or
// `units` on the device); this table only fills in for payloads that carry no unit.
const UNITS = {
  temperature: "°C", humidity: "%RH", pressure: "bar", valve_position: "%", flow_rate: "m³/h",
  irradiance: "W/m²", module_temperature: "°C", dc_voltage: "V", dc_current: "A",
  dc_power: "W", ac_power: "W", energy_total: "kWh",
  wind_speed: "m/s", rotor_speed: "rpm", power: "kW", pitch_angle: "°", nacelle_temperature: "°C",
  gas_flow: "m³/h", methane: "%", methane_fraction: "%", ch4: "%", digester_temperature: "°C", ph: "pH",
  water_temperature: "°C", supply_temperature: "°C", return_temperature: "°C", ambient_temperature: "°C",
  flue_gas_temperature: "°C", burner_power: "kW", heat_output: "kW",
  soc: "%", state_of_charge: "%", voltage: "V", current: "A", cell_temperature: "°C",
  rpm: "rpm", speed: "rpm", torque: "N·m", oil_temperature: "°C", coolant_temperature: "°C",
  fuel_flow: "l/h", exhaust_temperature: "°C",
  biomass_density: "g/l", light_intensity: "µmol/m²/s", dissolved_oxygen: "mg/l", co2: "ppm",
  vibration: "mm/s", spindle_speed: "rpm", feed_rate: "mm/min", latitude: "°", longitude: "°",
};
const SUFFIX = [
  ["_temperature", "°C"], ["_voltage", "V"], ["_current", "A"], ["_power", "W"], ["_pressure", "bar"],
  ["_percent", "%"], ["_pct", "%"], ["_rpm", "rpm"], ["_kw", "kW"], ["_kwh", "kWh"], ["_ms", "ms"],
  ["_seconds", "s"], ["_bytes", "B"],
];

/** The unit of `field`, or "" when nobody says. */
export function unitOf(field, tags = {}, units = {}) {
  if (units && units[field]) return units[field];
  if (tags && tags.unit) return tags.unit;
  if (UNITS[field]) return UNITS[field];
  for (const [suf, u] of SUFFIX) if (field.endsWith(suf)) return u;
  return "";
}

/** "21.4 °C"; "no unit given" is said in the title where the unit is unknown. */
export function fmtValue(v, unit) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "boolean") return v ? "true" : "false";
  const n = fmtNumber(v);
  return unit ? `${n} ${unit}` : n;
}
