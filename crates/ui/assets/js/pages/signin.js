// Sign-in, for servers with auth enabled (roles admin, operator, viewer, teacher, student).
// The token lives in sessionStorage (gone with the tab) and is sent as a bearer token; what a
// role may do is decided by the server, whose 403 explanation the pages show.

import { h, fill, pageTitle, errorNotice } from "../dom.js";
import { ENDPOINTS, authEnabled, post, session } from "../api.js";

export default async function signin(root, _p, { navigate }) {
  if (!(await authEnabled())) {
    fill(root, pageTitle("Sign in"),
      h("div", { class: "notice", role: "status", dataset: { unavailable: "auth" } },
        h("h2", {}, "Sign-in is off on this server"),
        h("p", {}, "auth.enabled is false: every page is open and every request acts as the local admin (the local demo binds to 127.0.0.1). Turn it on in fieldlab.yaml and add users with ", h("code", {}, "fieldlab users add NAME --role student"), ".")));
    return;
  }
  const s = session();
  const user = h("input", { type: "text", id: "signin-user", autocomplete: "username", required: true });
  const pass = h("input", { type: "password", id: "signin-pass", autocomplete: "current-password", required: true });
  const msg = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "panel", style: "max-width:26rem" },
    h("div", { class: "row" }, h("label", { class: "field", for: "signin-user" }, "User name", user)),
    h("div", { class: "row", style: "margin-top:.6rem" }, h("label", { class: "field", for: "signin-pass" }, "Password", pass)),
    h("div", { class: "toolbar", style: "margin-top:.8rem" }, h("button", { type: "submit", class: "primary" }, "Sign in")),
    msg);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await post(ENDPOINTS.authToken, { username: user.value, password: pass.value });
      const token = r.access_token ?? r.token;
      if (!token) throw new Error("the server answered without a token");
      sessionStorage.setItem("fieldlab.token", token);
      window.dispatchEvent(new Event("fieldlab:session"));
      navigate(sessionStorage.getItem("fieldlab.after") || "#/");
    } catch (err) {
      fill(msg, errorNotice(err, "Sign-in failed"));
    }
  });
  fill(root, pageTitle("Sign in"),
    s ? h("p", {}, `Signed in as ${s.user}${s.role ? ` (${s.role})` : ""}. `,
      h("button", { type: "button", onclick: () => { sessionStorage.removeItem("fieldlab.token"); window.dispatchEvent(new Event("fieldlab:session")); navigate("#/"); } }, "Sign out"))
      : h("p", { class: "lead" }, "This server requires sign-in. Students watch every page, reveal lessons and verify bundles; teachers also start and stop devices and inject faults; admins also change rate limits and users."),
    form);
}
