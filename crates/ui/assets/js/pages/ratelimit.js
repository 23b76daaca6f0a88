// Rate-limit status: every policy (exact keys, patterns, the default, and the ones guarding
// fieldlab's own API and ingest) with its limits, and what each decided since start.
// Shapes: GET /api/v1/ratelimit/config {default, keys: {k: {policy, source}}, patterns, api,
// ingest, backend, precedence} (admin only) and GET /api/v1/ratelimit/stats {backend, policies:
// {name: {allowed, rejected, shadow_rejected, fail_open, fail_closed}}}.

import { h, fill, table, badge, pageTitle, errorNotice, unavailable } from "../dom.js";
import { available, get } from "../api.js";
import { fmtNumber } from "../format.js";

/** "token_bucket 100 / 1m (burst 20) + fixed_window 1000 / 1h" */
export function describeLimits(p) {
  const limits = p?.limits || (p?.capacity ? [{ algorithm: p.algorithm || "token_bucket", limit: p.capacity, period: `refill ${p.refillRate}/s` }] : []);
  if (!limits.length) return "—";
  return limits.map((l) => `${l.algorithm} ${fmtNumber(l.limit)} / ${l.period}` +
    (l.burst ? ` (burst ${fmtNumber(l.burst)})` : "") + (l.max_delay ? ` (wait ≤ ${l.max_delay})` : "")).join(" + ");
}

function policyRows(config) {
  const rows = [];
  if (config?.default) rows.push({ scope: "default", name: "default", ...config.default });
  for (const [k, v] of Object.entries(config?.keys || {})) rows.push({ scope: "key", name: k, ...v });
  for (const [k, v] of Object.entries(config?.patterns || {})) rows.push({ scope: "pattern", name: k, ...v });
  for (const scope of ["api", "ingest"]) {
    const p = config?.[scope];
    if (p) rows.push({ scope, name: `fieldlab ${scope}`, policy: p, source: "file" });
  }
  return rows;
}

export default async function ratelimit(root) {
  const has = await available("ratelimitStats", "ratelimitConfig");
  if (!has.ratelimitStats && !has.ratelimitConfig) {
    fill(root, pageTitle("Rate limits"), unavailable("Rate-limit status", "GET /api/v1/ratelimit/stats", "rate-limiting issue (#6)"));
    return;
  }
  const box = h("div", {});
  fill(root, pageTitle("Rate limits"),
    h("p", { class: "lead" }, "Policies guarding your keys, fieldlab's API and its ingest, and their decisions since start."), box);
  async function load() {
    const [stats, config] = await Promise.all([
      has.ratelimitStats ? get("/api/v1/ratelimit/stats").catch((e) => e) : null,
      has.ratelimitConfig ? get("/api/v1/ratelimit/config").catch((e) => e) : null,
    ]);
    const decisions = Object.entries(stats?.policies || {}).map(([name, s]) => ({ name, ...s }));
    const backend = stats?.backend || config?.backend;
    fill(box,
      backend ? h("p", {}, "Backend: ", h("strong", {}, typeof backend === "string" ? backend : backend.kind),
        typeof backend === "object" && backend.redis_errors !== undefined ? ` · Redis errors ${fmtNumber(backend.redis_errors)} · allowed while Redis was down ${fmtNumber(backend.fail_open ?? 0)}` : "") : null,
      h("h2", {}, "Policies"),
      config instanceof Error
        ? errorNotice(config, config.status === 403 ? "Only admins may read the rate-limit configuration" : "Could not load the configuration")
        : config ? [table([
          { label: "Scope", cell: (p) => badge(p.scope, p.scope === "default" ? "none" : "info") },
          { label: "Key or pattern", cell: (p) => h("code", {}, p.name) },
          { label: "Limits (all must pass)", cell: (p) => describeLimits(p.policy) },
          { label: "Mode", cell: (p) => (p.policy?.shadow ? badge("shadow (dry run)", "info") : badge("enforcing", "ok")) },
          { label: "Redis down", cell: (p) => (p.policy?.fail ? `fail ${p.policy.fail}` : "—") },
          { label: "Source", cell: (p) => p.source || "—" },
        ], policyRows(config), { empty: "No policies configured." }),
        config.precedence ? h("p", { class: "muted" }, `Precedence: ${config.precedence}.`) : null] : null,
      h("h2", {}, "Decisions since start"),
      stats instanceof Error ? errorNotice(stats, "Could not load the statistics") : table([
        { label: "Policy", cell: (s) => h("code", {}, s.name) },
        { label: "Allowed", num: true, cell: (s) => fmtNumber(s.allowed ?? 0) },
        { label: "Rejected", num: true, cell: (s) => fmtNumber(s.rejected ?? 0) },
        { label: "Would reject (shadow)", num: true, cell: (s) => fmtNumber(s.shadow_rejected ?? 0) },
        { label: "Fail-open / fail-closed", num: true, cell: (s) => `${fmtNumber(s.fail_open ?? 0)} / ${fmtNumber(s.fail_closed ?? 0)}` },
      ], decisions, { empty: "No decisions yet." }));
  }
  await load();
  const t = setInterval(load, 5000);
  return () => clearInterval(t);
}
