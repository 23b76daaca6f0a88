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

/** The checks of a fieldlab-attest report ({ok, reason, signer_kid, signer_trusted, files,
 * policy_id, rules, policy_status}), in the order the verifier runs them. It stops at the first
 * failure, and each field is filled only once its stage passed, so the fields tell which stage
 * failed; the ones after it are "not reached". Each check: {name, state: pass|fail|skip, detail}. */
export function stagesOf(r) {
  const out = [];
  let failed = false;
  const stage = (name, passed, detail = "") => {
    if (failed) { out.push({ name, state: "skip", detail: "not reached" }); return; }
    if (passed) { out.push({ name, state: "pass", detail }); return; }
    failed = true;
    out.push({ name, state: r.ok ? "pass" : "fail", detail: r.reason || detail });
  };
  const files = Array.isArray(r.files) ? r.files : [];
  stage("Zip container readable and canonical; metadata.json and signature.json present", !!r.signer_kid);
  stage(`Signature over metadata.json${r.signer_kid ? ` (key ${r.signer_kid})` : ""}`,
    files.length > 0 && r.signer_trusted !== false,
    r.signer_trusted === true ? "signed by the trusted key" : r.signer_trusted === false ? "" : "valid; no trusted key pinned");
  if (files.length) {
    const bad = r.policy_id ? -1 : files.findIndex((f) => (r.reason || "").startsWith(`${f.name}:`));
    files.forEach((f, i) => {
      const name = `SHA-256 and size of ${f.name}`;
      if (failed) { out.push({ name, state: "skip", detail: "not reached" }); return; }
      if (r.policy_id || (bad >= 0 && i < bad)) out.push({ name, state: "pass", detail: `${f.sha256.slice(0, 16)}…, ${fmtBytes(f.size)}` });
      else if (bad === i || bad < 0) stage(name, false);
    });
  } else {
    stage("SHA-256 and size of every listed file", false);
  }
  stage("Policy, manifest and proof bind together (hashes in metadata.json)", !!r.policy_id && (r.rules?.length > 0 || !!r.policy_status),
    r.policy_id ? `policy ${r.policy_id}` : "");
  stage("Evidence of every rule checks out", r.ok === true, `${(r.rules || []).length} rules`);
  for (const c of r.rules || []) {
    out.push({ name: `Rule ${c.rule} (${c.basis})`, state: c.status === "pass" ? "pass" : "fail", detail: c.detail });
  }
  return out;
}

const STATE = { pass: ["pass", "ok"], fail: ["FAIL", "bad"], skip: ["not reached", "none"] };

export function renderResult(r, file) {
  const ok = r.ok === true || /^(ok|pass|valid)$/i.test(String(r.status ?? r.result ?? r.verdict ?? ""));
  const checks = Array.isArray(r.checks)
    ? r.checks.map((c) => ({ name: c.name ?? c.check ?? c.id ?? "check", state: checkOk(c) ? "pass" : "fail", detail: c.reason || c.detail || c.message || "" }))
    : "signer_kid" in r || "files" in r ? stagesOf(r) : [];
  return h("section", { class: `notice ${ok ? "" : "error"}`, role: "status", dataset: { verdict: ok ? "OK" : "FAIL" } },
    h("h2", {}, badge(ok ? "OK" : "FAIL", ok ? "ok" : "bad"), ` ${file.name} (${fmtBytes(file.size)})`),
    !ok && (r.reason || r.detail) ? h("p", { class: "reason" }, h("strong", {}, "Reason: "), r.reason || r.detail) : null,
    ok && r.policy_status ? h("p", {}, "The bundle is authentic. Policy outcome it proves: ",
      badge(r.policy_status, r.policy_status === "pass" ? "ok" : "warn")) : null,
    checks.length
      ? h("ul", { class: "checks" }, checks.map((c) => h("li", { dataset: { state: c.state } },
        badge(...STATE[c.state]), " ", h("strong", {}, c.name),
        c.detail ? h("span", { class: "muted" }, ` — ${c.detail}`) : null)))
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
