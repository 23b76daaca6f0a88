// Proof verification: drop a bundle (zip) here; the server's verifier (POST /verify) checks every
// hash and signature and says OK, or FAIL with the reason. The file goes only to this server.

import { h, fill, badge, pageTitle, unavailable } from "../dom.js";
import { ENDPOINTS, available, request } from "../api.js";
import { fmtBytes } from "../format.js";

function checkOk(c) {
  if (typeof c.ok === "boolean") return c.ok;
  if (typeof c.passed === "boolean") return c.passed;
  return /^(ok|pass|passed|valid|true)$/i.test(String(c.status ?? c.result ?? ""));
}

export function renderResult(r, file) {
  const ok = r.ok === true || /^(ok|pass|valid)$/i.test(String(r.status ?? r.result ?? r.verdict ?? ""));
  const checks = Array.isArray(r.checks) ? r.checks : [];
  return h("section", { class: `notice ${ok ? "" : "error"}`, role: "status", dataset: { verdict: ok ? "OK" : "FAIL" } },
    h("h2", {}, badge(ok ? "OK" : "FAIL", ok ? "ok" : "bad"), ` ${file.name} (${fmtBytes(file.size)})`),
    !ok && (r.reason || r.detail) ? h("p", {}, h("strong", {}, "Reason: "), r.reason || r.detail) : null,
    checks.length
      ? h("ul", { class: "checks" }, checks.map((c) => h("li", {},
        badge(checkOk(c) ? "pass" : "FAIL", checkOk(c) ? "ok" : "bad"), " ",
        h("strong", {}, c.name ?? c.check ?? c.id ?? "check"),
        c.reason || c.detail || c.message ? h("span", { class: "muted" }, ` — ${c.reason || c.detail || c.message}`) : null)))
      : h("pre", {}, JSON.stringify(r, null, 2)));
}

export default async function verify(root) {
  const { verify: ok } = await available("verify");
  if (!ok) {
    fill(root, pageTitle("Verify a proof bundle"), unavailable("Proof verification", "POST /verify", "proofs issue (#7)"));
    return;
  }
  const input = h("input", { type: "file", accept: ".zip,application/zip", id: "bundle-file" });
  const result = h("div", { "aria-live": "polite" });
  const drop = h("div", { class: "drop", tabindex: "0", role: "button", "aria-describedby": "drop-help" },
    h("p", {}, h("strong", {}, "Drop a proof bundle (.zip) here")),
    h("p", { id: "drop-help", class: "muted" }, "or press Enter to choose a file. The bundle is checked by this fieldlab server; it is not stored."),
    input);
  input.style.display = "none";
  fill(root, pageTitle("Verify a proof bundle"),
    h("p", { class: "lead" }, "Every file hash, the Merkle commitments, the policy evaluation and the signatures are checked."),
    drop, result);

  async function send(file) {
    fill(result, h("p", { class: "muted" }, `Verifying ${file.name}…`));
    try {
      const r = await request("POST", ENDPOINTS.verify, { body: file, headers: { "Content-Type": file.type || "application/zip" } });
      fill(result, renderResult(r, file));
    } catch (e) {
      // A FAIL may come back as a 4xx problem that still lists the checks.
      fill(result, e.problem ? renderResult({ ...e.problem, ok: false }, file) : h("p", {}, String(e.message)));
    }
  }
  input.addEventListener("change", () => input.files[0] && send(input.files[0]));
  drop.addEventListener("click", (e) => { if (e.target !== input) input.click(); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) send(f);
  });
}
