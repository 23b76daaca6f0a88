// The HTTP API as the UI uses it: JSON fetches with problem+json errors, and the endpoint
// probe that tells which parts this server has.

/** An RFC 9457 problem (or a network failure) as an Error with the server's words. */
export class ApiError extends Error {
  constructor(status, problem, path) {
    super(problem?.detail || problem?.title || `HTTP ${status} from ${path}`);
    this.status = status;
    this.problem = problem;
    this.path = path;
  }
}

function authHeaders() {
  const t = sessionStorage.getItem("fieldlab.token");
  return t ? { Authorization: `Bearer ${t}` } : {};
}

export async function request(method, path, { json, body, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", ...authHeaders(), ...headers }, signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { detail: `the server did not answer (${e.message}); is fieldlab running?` }, path);
  }
  if (r.status === 401) window.dispatchEvent(new CustomEvent("fieldlab:unauthorized", { detail: path }));
  const ct = r.headers.get("content-type") || "";
  const data = ct.includes("json") ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) throw new ApiError(r.status, typeof data === "object" ? data : { detail: String(data).slice(0, 300) }, path);
  return data;
}

export const get = (path, opts) => request("GET", path, opts);
export const post = (path, json, opts = {}) => request("POST", path, { json, ...opts });
export const del = (path, opts) => request("DELETE", path, opts);

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") u.append(k, v);
  const s = u.toString();
  return s ? `?${s}` : "";
}

// The endpoints each page needs. Paths with `{id}` are probed with a placeholder id: routing
// does not depend on it. Parts not merged yet (issues 3, 5, 6, 7) are listed with the paths
// their issues name; a page shows "not available on this server yet" until its path answers.
export const ENDPOINTS = {
  ws: "/ws",                                           // live telemetry (issue 3)
  emulatorDevices: "/api/v1/emulator/devices",         // GET: state, scenario, faults, config (issue 3)
  annotations: "/api/v1/annotations",                  // injected faults as ground truth (issue 3)
  deviceStart: "/api/v1/devices/{id}/start",           // POST (issue 3)
  deviceStop: "/api/v1/devices/{id}/stop",             // POST
  deviceScenario: "/api/v1/devices/{id}/scenario",     // POST {scenario} / DELETE
  deviceFaults: "/api/v1/devices/{id}/faults",         // POST {kind, field?, duration_s?, ...} / DELETE .../{fault_id}
  anomalies: "/api/v1/anomalies",                      // GET (issue 5)
  quality: "/api/v1/quality",                          // GET (issue 5)
  ratelimitStats: "/api/v1/ratelimit/stats",           // GET (issue 6)
  ratelimitConfig: "/api/v1/ratelimit/config",         // GET (issue 6)
  verify: "/verify",                                   // POST the bundle (issue 7)
  authToken: "/api/v1/auth/token",                     // POST {username, password} (issue 9)
};

/** The signed-in user from the stored bearer token ({sub, role, exp}), or null. */
export function session() {
  const t = sessionStorage.getItem("fieldlab.token");
  if (!t) return null;
  try {
    const claims = JSON.parse(atob(t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    if (claims.exp && claims.exp * 1000 < Date.now()) { sessionStorage.removeItem("fieldlab.token"); return null; }
    return { user: claims.sub ?? claims.name ?? "signed in", role: claims.role ?? (claims.roles || [])[0] ?? "" };
  } catch {
    return { user: "signed in", role: "" }; // an opaque token (API key): still sent, nothing to show
  }
}

export const path = (tmpl, id) => tmpl.replace("{id}", encodeURIComponent(id));

let cache = { at: 0, result: {} };

/** {name: true|false} for the named ENDPOINTS, asked of the server in one request and kept
 * for 10 s. Never throws: an unreachable server makes every optional part "unavailable". */
export async function available(...names) {
  const fresh = Date.now() - cache.at < 10_000;
  const missing = names.filter((n) => !(fresh && n in cache.result));
  if (missing.length) {
    const q = missing.map((n) => `path=${encodeURIComponent(path(ENDPOINTS[n], "_probe"))}`).join("&");
    try {
      const r = await get(`/api/v1/ui/endpoints?${q}`);
      if (!fresh) cache = { at: Date.now(), result: {} };
      for (const n of missing) cache.result[n] = !!r[path(ENDPOINTS[n], "_probe")]?.available;
      cache.auth = r.auth?.enabled === true;
    } catch {
      for (const n of missing) cache.result[n] = false;
    }
  }
  return Object.fromEntries(names.map((n) => [n, cache.result[n]]));
}

/** Whether this server requires sign-in (the probe says so; it is public). */
export async function authEnabled() {
  await available("authToken");
  return cache.auth === true;
}

/** Items of a list answer, whatever the wrapper key: [..], {items:[..]}, {anomalies:[..]}... */
export function listOf(data, ...keys) {
  if (Array.isArray(data)) return data;
  for (const k of [...keys, "items", "data", "results"]) if (Array.isArray(data?.[k])) return data[k];
  return [];
}
