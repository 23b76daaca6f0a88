// The app shell: hash routes to pages, the navigation, theme, live-connection status.
//
// A page is a module whose default export is `async (main, params, ctx) => cleanup?`; it draws
// into `main` and returns a function that stops its timers and subscriptions when the route
// changes. Routes are hashes (#/device/pv_inverter_1) so every page is a bookmarkable URL and the
// server serves one HTML file.

import { h, fill } from "./dom.js";
import { authEnabled, get, session } from "./api.js";
import { live } from "./live.js";
import { timeZone } from "./format.js";

const ROUTES = [
  [/^\/?$/, "fleet", "Fleet"],
  [/^\/device\/([^/]+)$/, "device", "Device"],
  [/^\/map$/, "map", "Floor map"],
  [/^\/anomalies$/, "anomalies", "Anomalies"],
  [/^\/quality$/, "quality", "Data quality"],
  [/^\/quarantine$/, "quarantine", "Quarantine"],
  [/^\/ratelimit$/, "ratelimit", "Rate limits"],
  [/^\/verify$/, "verify", "Verify proof"],
  [/^\/lessons(?:\/([a-z0-9-]+))?$/, "lessons", "Lessons"],
  [/^\/health$/, "health", "Health"],
  [/^\/signin$/, "signin", "Sign in"],
];

const main = document.getElementById("main");
let cleanup = null;
let generation = 0;
const themeListeners = new Set();

const ctx = {
  live,
  /** Called with no arguments after the colour theme changed; returns the unsubscribe. */
  onTheme(fn) { themeListeners.add(fn); return () => themeListeners.delete(fn); },
  navigate(hash) { location.hash = hash; },
};

function match(hash) {
  const p = decodeURIComponent(hash.replace(/^#/, "")) || "/";
  for (const [re, page, title] of ROUTES) {
    const m = p.match(re);
    if (m) return { page, title, params: m.slice(1) };
  }
  return null;
}

async function route() {
  const hash = location.hash;
  if (hash && !hash.startsWith("#/")) return; // in-page anchors such as #main
  const gen = ++generation;
  if (cleanup) { try { cleanup(); } catch (e) { console.warn(e); } cleanup = null; }
  themeListeners.clear();
  const r = match(hash || "#/");
  markNav(r);
  if (!r) {
    fill(main, h("h1", { tabindex: "-1" }, "No such page"),
      h("p", {}, "This address is not a page of the dashboard. ", h("a", { href: "#/" }, "Go to the fleet overview.")));
    document.title = "fieldlab · not found";
    return;
  }
  document.title = `fieldlab · ${r.title}`;
  fill(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const mod = await import(`./pages/${r.page}.js`);
    if (gen !== generation) return;
    const body = h("div", {});
    const done = await mod.default(body, r.params, ctx);
    if (gen !== generation) { if (typeof done === "function") done(); return; }
    fill(main, body);
    cleanup = typeof done === "function" ? done : null;
  } catch (e) {
    if (gen !== generation) return;
    fill(main, h("h1", { tabindex: "-1" }, r.title),
      h("div", { class: "notice error", role: "alert" }, h("strong", {}, "This page could not be drawn. "), String(e.message || e)));
  }
  // Move keyboard focus to the page heading, so Tab continues from the new content and screen
  // readers announce the page. Not on the first load: the user has not navigated yet.
  if (hash) (main.querySelector("h1") || main).focus({ preventScroll: false });
}

function markNav(r) {
  const current = r ? (r.page === "device" ? "fleet" : r.page) : "";
  for (const a of document.querySelectorAll("#nav a")) {
    const page = match(a.getAttribute("href"))?.page;
    if (page === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

// Theme: the system's choice unless the user picked one here.
function applyTheme(t) {
  if (t) document.documentElement.dataset.theme = t;
  else delete document.documentElement.dataset.theme;
  const dark = t ? t === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  const btn = document.getElementById("theme");
  btn.textContent = dark ? "☀" : "☾";
  btn.setAttribute("aria-label", dark ? "Switch to light theme" : "Switch to dark theme");
  btn.title = btn.getAttribute("aria-label");
  for (const fn of themeListeners) fn();
}

function setupTheme() {
  applyTheme(localStorage.getItem("fieldlab.theme"));
  document.getElementById("theme").addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : matchMedia("(prefers-color-scheme: dark)").matches;
    const next = dark ? "light" : "dark";
    localStorage.setItem("fieldlab.theme", next);
    applyTheme(next);
  });
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => applyTheme(localStorage.getItem("fieldlab.theme")));
}

function setupLiveStatus() {
  const el = document.getElementById("live-status");
  const text = {
    connecting: ["connecting…", "Connecting to the server"],
    live: ["● live", "Live: telemetry arrives over the WebSocket /ws as it is ingested"],
    polling: ["◌ polling every 2 s", "This server has no live WebSocket (/ws); pages refresh every 2 s instead"],
    offline: ["✕ server unreachable", "The fieldlab server does not answer; retrying"],
  };
  live.on("mode", (m) => {
    const [t, title] = text[m] || [m, m];
    el.textContent = t;
    el.title = title;
    el.className = `live mode-${m}`;
  });
}

// With auth on, nothing but the sign-in page asks the API for anything until a token exists
// (a request without one is a 401, and a console error); a 401 later (expired or revoked token)
// leads back to sign-in. The account control appears only on servers with auth.
let needAuth = false;
const signedIn = () => !needAuth || !!session();

function toSignin() {
  if (location.hash === "#/signin") return;
  sessionStorage.setItem("fieldlab.after", location.hash || "#/");
  location.hash = "#/signin";
}

function setupSession() {
  if (!needAuth) return;
  const slot = document.getElementById("account");
  const draw = () => {
    const s = session();
    fill(slot, h("a", { href: "#/signin", class: "btn" }, s ? `${s.user}${s.role ? ` (${s.role})` : ""}` : "Sign in"));
  };
  draw();
  window.addEventListener("fieldlab:session", () => {
    draw();
    // A new token (or none): the live feed reconnects with it, or stops.
    live.stop();
    if (session()) { live.start(); serverInfo(); }
  });
  window.addEventListener("fieldlab:unauthorized", toSignin);
}

async function serverInfo() {
  try {
    const i = await get("/api/v1");
    fill(document.getElementById("server-info"), `fieldlab ${i.version}`, i.mqtt ? ` · MQTT ${i.mqtt}` : "");
  } catch { /* the live status already says the server is unreachable */ }
}

document.getElementById("tz").textContent = timeZone;
document.getElementById("skip").addEventListener("click", (e) => {
  e.preventDefault();
  (main.querySelector("h1") || main).focus();
});
async function boot() {
  setupTheme();
  setupLiveStatus();
  needAuth = await authEnabled();
  setupSession();
  if (!signedIn()) toSignin();
  window.addEventListener("hashchange", () => {
    if (!signedIn() && location.hash !== "#/signin") toSignin();
    else route();
  });
  route();
  if (signedIn()) { live.start(); serverInfo(); }
}

boot();
