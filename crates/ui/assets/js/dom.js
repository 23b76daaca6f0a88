// Building DOM nodes without innerHTML: every value from the server (device ids, quarantined
// payloads, reasons) becomes a text node, so nothing it contains can run as markup.

/** h("a", {href: "#/", class: "x", onclick: fn}, "text", childNode, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    // Through the CSSOM: the Content-Security-Policy (style-src 'self') blocks style attributes.
    else if (k === "style") el.style.cssText = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Same, for SVG elements. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replace the children of `el`. */
export function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

export function badge(text, kind = "none", title) {
  return h("span", { class: `badge b-${kind}`, title }, text);
}

/** A table from column specs [{label, num?, cell: row => node|string}]. */
export function table(columns, rows, { caption, empty = "Nothing here yet." } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : c.cls }, c.label)));
  const body = rows.length
    ? rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : c.cls }, c.cell(r)))))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))];
  return h("div", { class: "table-wrap" },
    h("table", {}, caption ? h("caption", { class: "muted" }, caption) : null, h("thead", {}, head), h("tbody", {}, body)));
}

/** A page heading that route changes can move keyboard focus to. */
export function pageTitle(...children) {
  return h("h1", { tabindex: "-1" }, ...children);
}

/** The "this server does not have that part yet" state of a page or panel. */
export function unavailable(what, endpoint, issue) {
  return h("div", { class: "notice unavailable", role: "status", dataset: { unavailable: endpoint } },
    h("h2", {}, `${what}: not available on this server yet`),
    h("p", {}, "This fieldlab server does not answer ", h("code", {}, endpoint),
      issue ? `, which the ${issue} adds. ` : ". ",
      "This page shows real data only; it will work as soon as the server has that endpoint."));
}

/** An error notice with the server's explanation. */
export function errorNotice(e, what = "The request failed") {
  return h("div", { class: "notice error", role: "alert" }, h("strong", {}, `${what}: `), String(e?.message || e));
}
