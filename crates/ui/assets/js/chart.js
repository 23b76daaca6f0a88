// Time-series charts on canvas (uPlot, vendored), fed in batches: any number of pushes between
// two animation frames become one redraw, so 10+ updates/s per chart cost one paint per frame.
// Zoom: drag across a chart, the group's zoom buttons, or the keyboard (see device page);
// double-click or "Reset zoom" returns to following the live edge. Charts of one group share
// their x range and cursor.

let loading = null;

/** Load uPlot once, on the first page that draws a chart (the overview does not need it). */
export function loadUPlot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const css = document.createElement("link");
      css.rel = "stylesheet";
      css.href = "/ui/vendor/uplot/uPlot.min.css";
      document.head.append(css);
      const js = document.createElement("script");
      js.src = "/ui/vendor/uplot/uPlot.iife.min.js";
      js.onload = () => resolve(window.uPlot);
      js.onerror = () => reject(new Error("could not load the chart library"));
      document.head.append(js);
    });
  }
  return loading;
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

const MAX_POINTS = 20000;

// Axis labels in the viewer's zone and locale, 24-hour, as precise as the visible span needs.
const tickFmt = {
  sec: new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }),
  min: new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }),
  day: new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }),
};
function timeTicks(u, splits) {
  const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
  const f = span > 2 * 86400 ? tickFmt.day : span > 600 ? tickFmt.min : tickFmt.sec;
  return splits.map((v) => f.format(new Date(v * 1000)));
}

export class ChartGroup {
  constructor(syncKey) {
    this.key = syncKey;
    this.charts = new Set();
    this.range = null; // [minMs, maxMs] when zoomed, null when following the data
    this.onZoom = () => {};
  }

  add(c) { this.charts.add(c); c.group = this; }
  remove(c) { this.charts.delete(c); }

  setRange(range) {
    this.range = range;
    for (const c of this.charts) c.applyRange();
    this.onZoom(range);
  }

  /** Zoom by `factor` (< 1 in, > 1 out) around the middle of what is shown. */
  zoom(factor) {
    const [lo, hi] = this.range || this.extent();
    if (lo === undefined || hi === undefined || hi <= lo) return;
    const mid = (lo + hi) / 2;
    const half = Math.max(1000, ((hi - lo) * factor) / 2);
    this.setRange([mid - half, mid + half]);
  }

  /** Move the zoomed window by `frac` of its width (negative = back in time). */
  pan(frac) {
    const [lo, hi] = this.range || this.extent();
    if (lo === undefined) return;
    const d = (hi - lo) * frac;
    this.setRange([lo + d, hi + d]);
  }

  extent() {
    let lo = Infinity, hi = -Infinity;
    for (const c of this.charts) {
      if (c.xs.length) {
        lo = Math.min(lo, c.xs[0] * 1000);
        hi = Math.max(hi, c.xs[c.xs.length - 1] * 1000);
      }
    }
    return Number.isFinite(lo) ? [lo, hi] : [];
  }
}

export class TimeChart {
  /** `el` receives the canvas; `label` and `unit` name the series. */
  /** `readout`, if given, shows the newest value, or the value under the cursor while hovering. */
  constructor(el, { label, unit = "", height = 200, readout = null }) {
    this.el = el;
    this.readout = readout;
    this.latest = ["", ""];
    this.label = label;
    this.unit = unit;
    this.height = height;
    this.xs = [];
    this.ys = [];
    this.pending = [];
    this.frame = 0;
    this.bands = []; // [{from, to, label}] ms: injected faults
    this.marks = []; // [{t, label}] ms: detected anomalies
    this.group = null;
    this.u = null;
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(el);
  }

  async init() {
    const uPlot = await loadUPlot();
    this.build(uPlot);
    return this;
  }

  build(uPlot) {
    if (this.u) this.u.destroy();
    const fg = cssVar("--fg"), muted = cssVar("--muted"), line = cssVar("--line");
    const stroke = cssVar("--accent");
    const unit = this.unit;
    const fmt = (v) => (v === null || v === undefined ? "—" : `${+v.toPrecision(6)}${unit ? " " + unit : ""}`);
    const opts = {
      width: Math.max(200, this.el.clientWidth),
      height: this.height,
      cursor: {
        sync: this.group ? { key: this.group.key } : undefined,
        drag: { x: true, y: false, setScale: false },
      },
      scales: { x: { time: true } },
      legend: { show: false },
      series: [
        { label: "time" },
        { label: this.label + (unit ? ` (${unit})` : ""), stroke, width: 1.5, value: (u, v) => fmt(v), points: { size: 4 } },
      ],
      axes: [
        { stroke: muted, grid: { stroke: line, width: 1 }, ticks: { stroke: line }, values: timeTicks, space: 70 },
        { stroke: muted, grid: { stroke: line, width: 1 }, ticks: { stroke: line }, size: 60,
          values: (u, vals) => vals.map((v) => `${+v.toPrecision(4)}`),
          label: unit || undefined, labelSize: unit ? 18 : 0, labelFont: "12px system-ui" },
      ],
      hooks: {
        setSelect: [(u) => {
          // A drag selects a time window: zoom every chart of the group to it.
          if (u.select.width > 2) {
            const lo = u.posToVal(u.select.left, "x") * 1000;
            const hi = u.posToVal(u.select.left + u.select.width, "x") * 1000;
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            if (this.group) this.group.setRange([lo, hi]);
          }
        }],
        draw: [(u) => this.drawAnnotations(u, fg)],
        setCursor: [(u) => this.showCursor(u)],
      },
    };
    this.u = new uPlot(opts, [this.xs, this.ys], this.el);
    this.u.over.addEventListener("dblclick", () => this.group && this.group.setRange(null));
    this.el.dataset.points = String(this.xs.length);
    this.applyRange();
  }

  /** Text for the readout when the cursor is not over the chart. */
  setLatest(text, title = "") {
    this.latest = [text, title];
    if (this.readout && !this.hovering) this.writeReadout(text, title);
  }

  writeReadout(text, title) {
    this.readout.textContent = text;
    this.readout.title = title;
  }

  showCursor(u) {
    if (!this.readout) return;
    const i = u.cursor.idx;
    this.hovering = i !== null && i !== undefined;
    if (!this.hovering) return this.writeReadout(...this.latest);
    const v = u.data[1][i];
    const t = new Date(u.data[0][i] * 1000);
    const when = tickFmt.sec.format(t);
    this.writeReadout(`${v === null || v === undefined ? "—" : +v.toPrecision(6)}${this.unit ? " " + this.unit : ""} at ${when}`, t.toString());
  }

  fit() {
    if (this.u && this.el.clientWidth > 0) this.u.setSize({ width: this.el.clientWidth, height: this.height });
  }

  /** Replace all data: `points` as [[ms, value], ...] sorted by time. */
  setData(points) {
    this.xs = points.map((p) => p[0] / 1000);
    this.ys = points.map((p) => (typeof p[1] === "number" ? p[1] : p[1] === true ? 1 : p[1] === false ? 0 : null));
    this.pending = [];
    this.flush();
  }

  /** Append one point; drawn on the next animation frame together with all others. */
  push(ms, value) {
    this.pending.push([ms / 1000, typeof value === "number" ? value : null]);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    if (this.pending.length) {
      for (const [x, y] of this.pending) {
        const n = this.xs.length;
        if (!n || x > this.xs[n - 1]) {
          this.xs.push(x);
          this.ys.push(y);
        } else {
          // Late or repeated timestamp: insert in order; same time replaces, as the store does.
          let lo = 0, hi = n;
          while (lo < hi) { const m = (lo + hi) >> 1; if (this.xs[m] < x) lo = m + 1; else hi = m; }
          if (this.xs[lo] === x) this.ys[lo] = y;
          else { this.xs.splice(lo, 0, x); this.ys.splice(lo, 0, y); }
        }
      }
      this.pending = [];
      if (this.xs.length > MAX_POINTS) {
        const cut = this.xs.length - MAX_POINTS;
        this.xs.splice(0, cut);
        this.ys.splice(0, cut);
      }
    }
    this.el.dataset.points = String(this.xs.length);
    if (!this.u) return;
    const zoomed = this.group && this.group.range;
    this.u.setData([this.xs, this.ys], !zoomed);
    if (zoomed) this.applyRange();
  }

  applyRange() {
    if (!this.u) return;
    const r = this.group && this.group.range;
    if (r) this.u.setScale("x", { min: r[0] / 1000, max: r[1] / 1000 });
    else if (this.xs.length) this.u.setScale("x", { min: this.xs[0], max: this.xs[this.xs.length - 1] });
  }

  setAnnotations({ bands = this.bands, marks = this.marks } = {}) {
    this.bands = bands;
    this.marks = marks;
    this.el.dataset.annotations = String(bands.length + marks.length);
    if (this.u) this.u.redraw(false);
  }

  drawAnnotations(u, fg) {
    if (!this.bands.length && !this.marks.length) return;
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui`;
    const fault = cssVar("--fault"), anomaly = cssVar("--anomaly");
    for (const b of this.bands) {
      const x0 = u.valToPos(b.from / 1000, "x", true);
      const x1 = u.valToPos((b.to ?? Date.now()) / 1000, "x", true);
      ctx.fillStyle = fault;
      ctx.fillRect(x0, top, Math.max(2, x1 - x0), height);
      ctx.fillStyle = fg;
      ctx.fillText(b.label, x0 + 3, top + 12 * devicePixelRatio);
    }
    ctx.strokeStyle = anomaly;
    ctx.fillStyle = anomaly;
    ctx.lineWidth = 1.5 * devicePixelRatio;
    for (const m of this.marks) {
      const x = u.valToPos(m.t / 1000, "x", true);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(x, top + 5 * devicePixelRatio, 4 * devicePixelRatio, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.restore();
  }

  /** Rebuild with the current theme's colours. */
  retheme() {
    if (window.uPlot) this.build(window.uPlot);
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.resize.disconnect();
    if (this.u) this.u.destroy();
    if (this.group) this.group.remove(this);
  }
}
