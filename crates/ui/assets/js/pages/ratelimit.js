// Rate-limit status: policies, their limits and what they decided.

import { h, fill, table, badge, pageTitle, errorNotice, unavailable } from "../dom.js";
import { available, get, listOf } from "../api.js";
import { fmtNumber } from "../format.js";

export default async function ratelimit(root) {
  const has = await available("ratelimitStats", "ratelimitConfig");
  if (!has.ratelimitStats && !has.ratelimitConfig) {
    fill(root, pageTitle("Rate limits"), unavailable("Rate-limit status", "GET /api/v1/ratelimit/stats", "rate-limiting issue (#6)"));
    return;
  }
  const box = h("div", {});
  fill(root, pageTitle("Rate limits"),
    h("p", { class: "lead" }, "Policies guarding the API, ingest and your own keys, and their decisions since start."), box);
  async function load() {
    try {
      const [stats, config] = await Promise.all([
        has.ratelimitStats ? get("/api/v1/ratelimit/stats") : null,
        has.ratelimitConfig ? get("/api/v1/ratelimit/config") : null,
      ]);
      const policies = listOf(config, "policies", "keys", "patterns");
      const decisions = listOf(stats, "policies", "stats", "keys");
      fill(box,
        h("h2", {}, "Policies"),
        table([
          { label: "Key or pattern", cell: (p) => h("code", {}, p.key ?? p.pattern ?? p.name ?? "default") },
          { label: "Algorithm", cell: (p) => p.algorithm ?? "—" },
          { label: "Limit", cell: (p) => (p.limit ?? p.capacity) !== undefined ? `${fmtNumber(p.limit ?? p.capacity)} per ${p.window ?? p.period ?? (p.rate ? "refill " + p.rate + "/s" : "window")}` : "—" },
          { label: "Mode", cell: (p) => p.shadow ? badge("shadow (dry run)", "info") : badge("enforcing", "ok") },
          { label: "When Redis is down", cell: (p) => p.fail_open === undefined ? "—" : p.fail_open ? "fail open" : "fail closed" },
        ], policies, { empty: "No policies configured." }),
        h("h2", {}, "Decisions"),
        table([
          { label: "Policy", cell: (s) => h("code", {}, s.policy ?? s.key ?? s.name ?? "—") },
          { label: "Allowed", num: true, cell: (s) => fmtNumber(s.allowed ?? 0) },
          { label: "Rejected", num: true, cell: (s) => fmtNumber(s.rejected ?? s.denied ?? 0) },
          { label: "Shadow rejections", num: true, cell: (s) => fmtNumber(s.shadow_rejected ?? 0) },
        ], decisions, { empty: "No decisions yet." }),
        stats && !decisions.length ? h("pre", {}, JSON.stringify(stats, null, 2)) : null);
    } catch (e) { fill(box, errorNotice(e, "Could not load the rate-limit status")); }
  }
  await load();
  const t = setInterval(load, 5000);
  return () => clearInterval(t);
}
