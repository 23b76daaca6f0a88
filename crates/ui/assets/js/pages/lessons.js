// The bad-data lab: guided exercises. Each injects one fault into a demo device (through the
// emulator's fault API), asks the student to find it in the charts, then reveals what the
// quality rules and detectors saw next to the ground truth (the fault's annotation).

import { h, fill, badge, table, pageTitle, unavailable } from "../dom.js";
import { ENDPOINTS, available, get, post, qs, listOf, path } from "../api.js";
import { fmtTime, toMs } from "../format.js";
import { fieldsOf } from "./device.js";

export const LESSONS = [
  {
    id: "stuck-sensor", title: "A stuck sensor",
    device: "temperature_sensor_1", field: "temperature",
    fault: { kind: "stuck_at", field: "temperature", duration_s: 120 },
    why: "A sensor that freezes keeps sending — the last value, forever. Nothing looks broken: messages arrive, values are plausible, and every range check passes.",
    steps: [
      "Open the device page and choose the 15m range. Note how the temperature wanders by a few tenths of a degree.",
      "Start the lesson: the sensor now repeats one value for two minutes.",
      "Find the flat stretch. How long must a line be flat before you are sure it is stuck and not just a calm room?",
      "Compare with the humidity of the same device: does it still move?",
    ],
    look: "A perfectly horizontal segment: zero variance where the signal had noise before.",
    rules: "Quality: a flat-line/staleness rule (same value for N points) fires after its window. Detectors that score deviation (z-score, MAD) see nothing: a stuck value is never far from normal. A variance-aware detector catches it.",
  },
  {
    id: "clock-skew", title: "Clock skew",
    device: "pv_inverter_1", field: "ac_power",
    fault: { kind: "clock_skew", field: "ac_power", duration_s: 120, offset_s: 300 },
    why: "Each device stamps its own messages. When its clock runs five minutes ahead, its data lands in the future, and joins with other devices pair the wrong moments.",
    steps: [
      "Open pv_inverter_1 and watch the newest points at the right edge of the charts.",
      "Start the lesson: the device's clock jumps 300 s ahead for two minutes.",
      "Find points whose time is later than now (the chart's right edge runs ahead of your clock).",
      "Compare the device's `last seen` (time of receipt) with the timestamps of its points.",
    ],
    look: "Timestamps ahead of the receipt time; a gap and an overlap when the clock returns.",
    rules: "Quality: timestamp-in-the-future and out-of-order rules compare the payload's `ts` with the time of receipt. Value detectors do not see it at all: the values are fine, only their times are wrong.",
  },
  {
    id: "unit-switch", title: "A unit switch (°C → °F)",
    device: "temperature_sensor_1", field: "temperature",
    fault: { kind: "unit_switch", field: "temperature", duration_s: 180 },
    why: "A firmware update starts reporting Fahrenheit. 21 °C becomes 69.8 — plausible for a boiler, absurd for an office.",
    steps: [
      "Open temperature_sensor_1, 15m range.",
      "Start the lesson.",
      "Find the jump. Compute what 21 °C is in °F and check that the new level matches T·9/5 + 32.",
      "Decide: is this an anomaly of the process or of the data? What would you tell the operator?",
    ],
    look: "A step to a new, steady level exactly 1.8x + 32 of the old one, with the noise scaled by 1.8.",
    rules: "Quality: the per-field range rule fires if 69.8 is outside the configured range. Detectors flag the step, then adapt to the new level within their window — a level shift is only an anomaly at its start.",
  },
  {
    id: "drift", title: "Drift",
    device: "pressure_valve_1", field: "pressure",
    fault: { kind: "drift", field: "pressure", duration_s: 600, rate_per_s: 0.002 },
    why: "Sensors age: an offset that grows by a little every minute. After a week the reading is wrong, but no single point ever looked unusual.",
    steps: [
      "Open pressure_valve_1 and choose the 1h range.",
      "Start the lesson: the pressure gains 0.002 bar per second for ten minutes (1.2 bar in total).",
      "Zoom to the last ten minutes: can you see it? Zoom out to the hour: now?",
      "Compare the pressure with the valve position and flow rate: do they agree with the rising pressure?",
    ],
    look: "A slow ramp under the noise: visible only at the right zoom, and in disagreement with related fields.",
    rules: "Detectors with rolling baselines (z-scores, EWMA) follow a slow drift and stay silent: point-wise scores miss trends. fieldlab's trend check compares the level's change over 12 minutes with the changes the series usually shows over as long, and reports `trend` once such a ramp has stood out for 12 minutes running (from about an hour after the device started, when it knows the usual changes): this ten-minute drift ends before that. A reference model, or a physics rule between fields (pressure against flow and valve position), sees it sooner.",
  },
  {
    id: "duplicates-out-of-order", title: "Duplicates and out-of-order messages",
    device: "pv_inverter_1", field: "dc_power",
    fault: { kind: "duplicate", field: "dc_power", duration_s: 60 },
    fault2: { kind: "out_of_order", field: "dc_power", duration_s: 60 },
    why: "Networks retry (QoS 1 delivers at least once) and reorder. A naive pipeline counts a duplicate twice, and a late message breaks every 'last value' calculation.",
    steps: [
      "Open pv_inverter_1; note the message count and the last seq in the header.",
      "Start the lesson: for a minute each message is sent twice, then for a minute messages arrive out of order.",
      "Look at the chart: do you see the duplicates? (fieldlab's store keeps one point per timestamp, so a duplicate replaces itself.)",
      "Compare `messages` with the number of points stored in the same minute, and watch `last seq`.",
    ],
    look: "More messages than points; sequence numbers that repeat or go backwards.",
    rules: "Quality: the duplicate rule (same device, seq and ts) and the out-of-order rule (ts earlier than the newest stored) count them. The store is idempotent on (series, timestamp): duplicates do not double the data.",
  },
  {
    id: "spike-vs-event", title: "A spike versus a real event",
    device: "temperature_sensor_1", field: "temperature",
    fault: { kind: "spike", field: "temperature", magnitude: 25 },
    scenario: "high_temperature_alert",
    why: "Not every outlier is bad data. A single spike is a glitch; a rise that lasts, that neighbours and related fields confirm, is an event someone must act on.",
    steps: [
      "Open temperature_sensor_1, 15m range.",
      "Start the lesson: one spike of +25 °C is injected, then the device runs its real `high_temperature_alert` scenario (45–50 °C for 5 minutes).",
      "Find both. Which one would you page an operator for?",
      "List what separates them: duration, shape, and whether humidity moves too.",
    ],
    look: "One isolated point versus a sustained plateau with a ramp in and out.",
    rules: "Detectors flag both starts. The spike is an annotation (injected fault = bad data); the scenario is not — it is the ground truth of a real event. Scoring a detector means rewarding the second and not the first.",
  },
  {
    id: "unparseable", title: "A message that does not parse",
    device: null, field: null,
    fault: null,
    why: "Some data is not wrong but unreadable: truncated JSON, a renamed field, text where a number belongs. fieldlab never drops it silently — it is quarantined with the reason.",
    steps: [
      "Publish a broken message to the broker (works on every fieldlab):",
      "mosquitto_pub -p 1883 -t devices/x/y/telemetry -m 'not a payload'",
      "Open the Quarantine page: the message is there with its topic, its exact bytes and why it was refused.",
      "Now send `{\"device_id\":\"lab_1\",\"data\":{\"temperature\":\"warm\"}}`. Is it quarantined, or stored as text? Why?",
    ],
    look: "The Quarantine page lists the message with the parser's reason.",
    rules: "Ingest's parser refuses it before any rule runs; /api/v1/quarantine keeps it. Nothing reaches the store or the detectors.",
  },
];

function curlFor(l) {
  const out = [];
  const f = (x) => `curl -X POST localhost:8080${path(ENDPOINTS.deviceFaults, l.device)} -H 'Content-Type: application/json' -d '${JSON.stringify(x)}'`;
  if (l.fault) out.push(f(l.fault));
  if (l.fault2) out.push(f(l.fault2));
  if (l.scenario) out.push(`curl -X POST localhost:8080${path(ENDPOINTS.deviceScenario, l.device)} -H 'Content-Type: application/json' -d '${JSON.stringify({ scenario: l.scenario })}'`);
  if (l.device) out.push(`curl 'localhost:8080/api/v1/annotations?device_id=${l.device}'   # the ground truth`);
  return out;
}

export default async function lessons(root, [id]) {
  if (!id) {
    fill(root, pageTitle("Bad-data lessons"),
      h("p", { class: "lead" }, "Guided exercises: inject a fault, find it in the charts, then see what the quality rules and detectors saw, next to the truth."),
      h("div", { class: "lessons" }, LESSONS.map((l, i) => h("article", { class: "panel lesson-card" },
        h("h2", {}, h("a", { href: `#/lessons/${l.id}` }, `${i + 1}. ${l.title}`)),
        h("p", {}, l.why),
        h("p", { class: "muted" }, l.device ? `Device: ${l.device} · field: ${l.field}` : "Uses the broker and the quarantine")))));
    return;
  }
  const l = LESSONS.find((x) => x.id === id);
  if (!l) {
    fill(root, pageTitle("No such lesson"), h("p", {}, h("a", { href: "#/lessons" }, "All lessons")));
    return;
  }
  const has = await available("deviceFaults", "deviceScenario", "annotations", "anomalies", "quality");
  const status = h("p", { role: "status", "aria-live": "polite" });
  const reveal = h("div", {});
  let startedAt = null;

  async function start() {
    startedAt = new Date(Date.now() - 5000).toISOString();
    status.textContent = "Injecting…";
    try {
      if (l.fault) await post(path(ENDPOINTS.deviceFaults, l.device), l.fault);
      if (l.fault2) await post(path(ENDPOINTS.deviceFaults, l.device), l.fault2);
      if (l.scenario && has.deviceScenario) await post(path(ENDPOINTS.deviceScenario, l.device), { scenario: l.scenario });
      status.textContent = `Started at ${fmtTime(Date.now())}. Open the device and find it, then come back and reveal.`;
    } catch (e) {
      status.textContent = e.status === 403
        ? `Only a teacher (or an operator or admin) can inject this fault; ask yours to start the lesson, then find it and reveal. The server said: ${e.message}`
        : `Could not start: ${e.message}`;
    }
  }

  async function showTruth() {
    const q = { device_id: l.device, from: startedAt || new Date(Date.now() - 3600e3).toISOString() };
    const [ann, an, qual] = await Promise.all([
      has.annotations ? get(`/api/v1/annotations${qs(q)}`).then((d) => listOf(d, "annotations")
        .filter((a) => (toMs(a.end ?? a.end_ms) ?? Date.now()) >= toMs(q.from))).catch(() => []) : null,
      has.anomalies ? get(`/api/v1/anomalies${qs(q)}`).then((d) => listOf(d, "anomalies")).catch(() => []) : null,
      has.quality ? get(`/api/v1/quality${qs({ device_id: l.device, limit: 200 })}`).catch(() => null) : null,
    ]);
    fill(reveal,
      h("h2", {}, "What the rules and detectors saw"),
      h("p", {}, l.rules),
      ann ? [h("h3", {}, "Ground truth (injected faults)"), table([
        { label: "Kind", cell: (a) => badge(a.kind, "warn") }, { label: "Fields", cell: (a) => fieldsOf(a).join(", ") || "whole message" },
        { label: "Start", cell: (a) => fmtTime(a.start ?? a.start_ms) }, { label: "End", cell: (a) => ((a.end ?? a.end_ms) ? fmtTime(a.end ?? a.end_ms) : "active") },
      ], ann)] : h("p", { class: "muted" }, "Ground truth: GET /api/v1/annotations is not available on this server yet."),
      an ? [h("h3", {}, "Detector events"), table([
        { label: "Time", cell: (a) => fmtTime(a.ts_ms ?? a.ts) }, { label: "Field", cell: (a) => a.field || "—" },
        { label: "Score", num: true, cell: (a) => a.score?.toFixed?.(3) ?? "—" }, { label: "Detector", cell: (a) => a.detector || "—" },
      ], an, { empty: "No detector fired." })] : h("p", { class: "muted" }, "Detectors: GET /api/v1/anomalies is not available on this server yet."),
      qual ? [h("h3", {}, "Quality rules"),
        h("p", {}, "Quality score of ", l.device, " over the last hour: ",
          ...listOf(qual, "devices").map((d) => `${(d.score * 100).toFixed(1)} % (${d.flagged} of ${d.readings} readings flagged)`)),
        table([
          { label: "Time", cell: (e) => fmtTime(e.ts_ms) }, { label: "Rule", cell: (e) => badge(e.rule, "warn") },
          { label: "Field", cell: (e) => e.field || "—" }, { label: "Reason", cell: (e) => e.reason },
        ], listOf(qual, "events").filter((e) => e.ts_ms >= toMs(q.from)).slice(0, 50), { empty: "No rule fired since the lesson started." })]
        : h("p", { class: "muted" }, "Quality rules: GET /api/v1/quality is not available on this server yet."));
  }

  const canRun = l.fault ? has.deviceFaults : true;
  fill(root,
    pageTitle(l.title),
    h("p", {}, h("a", { href: "#/lessons" }, "← All lessons")),
    h("p", { class: "lead" }, l.why),
    h("section", { class: "panel" },
      h("h2", {}, "Steps"),
      h("ol", { class: "steps" }, l.steps.map((st) => h("li", {}, st.startsWith("mosquitto_pub") ? h("code", {}, st) : st))),
      h("p", {}, h("strong", {}, "What to look for: "), l.look),
      l.device ? h("p", {}, h("a", { href: `#/device/${encodeURIComponent(l.device)}` }, `Open ${l.device} →`)) : h("p", {}, h("a", { href: "#/quarantine" }, "Open the quarantine →"))),
    l.fault ? h("section", { class: "panel" },
      h("h2", {}, "Inject the fault"),
      canRun ? h("div", { class: "toolbar" }, h("button", { type: "button", class: "primary", onclick: start }, "Start the lesson"), status)
        : unavailable("Fault injection", `POST ${ENDPOINTS.deviceFaults}`, "emulator issue (#3)"),
      h("p", { class: "muted" }, "The API calls this lesson makes:"),
      h("pre", {}, curlFor(l).join("\n"))) : null,
    h("section", { class: "panel" },
      h("h2", {}, "Reveal"),
      h("p", {}, "Found it? Compare with the truth."),
      h("button", { type: "button", onclick: showTruth }, "Show what the rules saw"),
      reveal));
}
