// The dashboard's entry point: the header (server info, token), the error banner, and
// a hash router that gives each view the <main> element. A view is one module in
// views/ exporting `render(root, params, ctx)`, which may return a cleanup function
// (called when the user leaves the view); no view knows about another.

import { api, setToken, token } from "./api.js";
import * as versions from "./views/versions.js";
import * as edits from "./views/edits.js";
import * as edit from "./views/edit.js";
import * as compare from "./views/compare.js";
import * as generate from "./views/generate.js";
import * as operations from "./views/operations.js";

const ROUTES = { versions, edits, edit, compare, generate, operations };
const $ = (id) => document.getElementById(id);

// Errors the page did not handle, shown to the user and kept for the browser tests.
window.dashboardErrors = [];
function reportError(text) {
  window.dashboardErrors.push(text);
  const banner = $("errors");
  banner.textContent = window.dashboardErrors.slice(-3).join("\n");
  banner.hidden = false;
}
window.addEventListener("error", (e) => reportError(e.message || String(e)));
window.addEventListener("unhandledrejection", (e) => reportError(String(e.reason && e.reason.message || e.reason)));
document.addEventListener("securitypolicyviolation", (e) => reportError(`blocked by CSP: ${e.violatedDirective} ${e.blockedURI}`));

const ctx = { info: null, refreshInfo };

async function refreshInfo() {
  const info = await api("GET", "/info");
  ctx.info = info;
  $("server-info").textContent =
    `${info.model.source} (${info.model.family}) · ${info.model.device} · head v${info.head} · ${info.database}`;
  $("demo-banner").hidden = !info.model.is_demo;
  $("token-form").hidden = !info.auth_enabled;
  return info;
}

let cleanup = null;
let renderCount = 0;

async function route() {
  const [name, ...params] = (location.hash.replace(/^#\/?/, "") || "versions").split("/");
  const view = ROUTES[name] || versions;
  if (cleanup) cleanup();
  cleanup = null;
  for (const a of document.querySelectorAll("header nav a[data-view]")) {
    a.classList.toggle("active", a.dataset.view === name || (name === "edit" && a.dataset.view === "edits"));
  }
  const root = $("view");
  root.textContent = "";
  const mine = ++renderCount;
  try {
    if (!ctx.info) await refreshInfo();
    const done = await view.render(root, params.map(decodeURIComponent), ctx);
    if (mine === renderCount) cleanup = done || null;
    else if (done) done();
  } catch (e) {
    root.textContent = "";
    const message = document.createElement("section");
    message.className = "wide msg";
    message.id = "view-error";
    message.textContent = e.status === 401 || e.status === 403
      ? `${e.message}: enter a token above.`
      : e.message;
    root.append(message);
  }
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setToken($("token").value);
  $("token").value = "";
  $("token").placeholder = "token set (replace…)";
  ctx.info = null;
  route();
});
$("token").placeholder = token() ? "token set (replace…)" : "token rfs_…";
window.addEventListener("hashchange", route);
route();
