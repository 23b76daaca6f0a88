// Quarantine: payloads ingest could not parse, newest first, with the reason and the exact bytes.
// Nothing is dropped silently; this is where it goes.

import { h, fill, table, pageTitle, errorNotice } from "../dom.js";
import { get, qs } from "../api.js";
import { fmtTime, fmtBytes, fmtNumber } from "../format.js";

const PAGE = 50;

function bytesOf(b64) {
  try { return atob(b64).length; } catch { return 0; }
}

export default async function quarantine(root) {
  let offset = 0;
  const box = h("div", {});
  const pager = h("div", { class: "toolbar", role: "toolbar", "aria-label": "Pages" });
  fill(root,
    pageTitle("Quarantine"),
    h("p", { class: "lead" }, "Messages that could not be parsed are kept here with their reason and exact bytes, never dropped."),
    pager, box);

  async function load() {
    let d;
    try {
      d = await get(`/api/v1/quarantine${qs({ limit: PAGE, offset })}`);
    } catch (e) {
      fill(box, errorNotice(e, "Could not read the quarantine"));
      return;
    }
    fill(pager,
      h("button", { type: "button", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, "◀ Newer"),
      h("span", { class: "muted" }, d.total ? `${offset + 1}–${Math.min(offset + PAGE, d.total)} of ${fmtNumber(d.total)}` : "0 messages"),
      h("button", { type: "button", disabled: offset + PAGE >= d.total, onclick: () => { offset += PAGE; load(); } }, "Older ▶"),
      h("span", { class: "spacer" }),
      h("button", { type: "button", onclick: load }, "Refresh"));
    fill(box, table([
      { label: "Received", cell: (q) => h("span", { title: fmtTime(q.received_at, { date: "always" }) }, fmtTime(q.received_at)) },
      { label: "Topic", cell: (q) => h("code", {}, q.topic) },
      { label: "Reason", cell: (q) => q.reason },
      { label: "Size", num: true, cell: (q) => fmtBytes(bytesOf(q.payload_base64)) },
      { label: "Payload", cell: (q) => q.payload_text !== undefined
        ? h("pre", { style: "max-height:8rem;margin:0" }, q.payload_text)
        : h("span", { class: "muted", title: q.payload_base64 }, "binary (base64 in the API)") },
    ], d.items || [], { empty: "Nothing quarantined: every message so far could be parsed." }));
  }
  await load();
  const t = setInterval(() => { if (offset === 0 && !document.hidden) load(); }, 5000);
  return () => clearInterval(t);
}
