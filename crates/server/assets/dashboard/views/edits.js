// Edits: submit a fact, and the newest edits with their status, live while they run
// (progress over SSE).

import { api, follow } from "../api.js";
import { clear, fact, factsOf, fixed, h, when } from "../dom.js";

export async function render(root, _params, ctx) {
  const streams = new AbortController();
  const list = h("tbody", { id: "edits" });
  const message = h("span", { id: "edit-msg", class: "msg" });
  const form = h("form", { id: "edit-form" },
    h("label", {}, "Edit prompt ", h("input", { name: "prompt", required: true, placeholder: "The Prince of Wales" })),
    h("label", {}, "Subject (default: the whole prompt) ", h("input", { name: "subject" })),
    h("div", { class: "row" },
      h("label", {}, "Source ", h("input", { name: "source", required: true, placeholder: "Prince Charles" })),
      h("label", {}, "Target ", h("input", { name: "target", required: true, placeholder: "Prince William" }))),
    h("label", {}, "Contrastive prompts (one per line) ", h("textarea", { name: "contrastive", rows: 2 })),
    h("div", { class: "row" },
      h("label", {}, `Layer (${layerRange(ctx.info.model.encoder_layers)}) `, h("input", { name: "layer", type: "number", min: 0, max: Math.max(...ctx.info.model.encoder_layers.map((e) => e.max_layer)) })),
      h("label", {}, "Max steps (default 100) ", h("input", { name: "max_steps", type: "number", min: 1 }))),
    encoderChoice(ctx.info.model.text_encoders || []),
    h("button", { id: "edit-submit" }, "Queue edit"), " ", message);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const body = { prompt: f.get("prompt"), source: f.get("source"), target: f.get("target") };
    if (f.get("subject")) body.subject = f.get("subject");
    const contrastive = String(f.get("contrastive") || "").split("\n").map((s) => s.trim()).filter(Boolean);
    if (contrastive.length) body.contrastive = contrastive;
    if (f.get("layer") !== "") body.layer = Number(f.get("layer"));
    if (f.get("max_steps") !== "") body.hparams = { max_steps: Number(f.get("max_steps")) };
    if (f.get("encoder")) body.encoder = f.get("encoder");
    try {
      const edit = await api("POST", "/edits", body);
      message.className = "msg ok";
      message.textContent = "queued " + edit.id.slice(0, 8);
      await load();
    } catch (e) {
      message.className = "msg";
      message.textContent = e.message;
    }
  });

  const followed = new Set();
  async function load() {
    const page = await api("GET", "/edits?limit=50");
    clear(list, page.items.map(row));
    for (const e of page.items) {
      if ((e.status === "queued" || e.status === "running") && !followed.has(e.id)) {
        followed.add(e.id);
        follow(e.id, (event) => onEvent(e.id, event), streams.signal)
          .catch(() => {})
          .finally(() => followed.delete(e.id));
      }
    }
  }

  function row(e) {
    const facts = factsOf(e.request);
    return h("tr", { id: `edit-${e.id}` },
      h("td", { class: "muted" }, when(e.created_at)),
      h("td", {}, h("a", { href: `#/edit/${e.id}` }, facts.length > 1 ? `${facts.length} facts: ${fact(facts[0])}, …` : fact(facts[0]))),
      h("td", { class: "status status-" + e.status }, e.status),
      h("td", {}, e.version != null ? `v${e.version}` : ""),
      h("td", {}, (e.status === "queued" || e.status === "running")
        ? h("button", { onclick: () => api("DELETE", "/edits/" + e.id).then(load).catch((err) => { message.textContent = err.message; }) }, "cancel")
        : null,
        e.error ? h("span", { class: "status-failed" }, e.error) : null));
  }

  function onEvent(id, event) {
    const status = document.querySelector(`#edit-${CSS.escape(id)} .status`);
    if (!status) return;
    if (event.type === "progress") {
      status.className = "status status-running";
      const where = [event.fact != null ? "fact " + event.fact : null, event.encoder].filter((x) => x != null);
      status.textContent = `running · ${where.map((x) => x + " · ").join("")}it ${event.iteration} · p ${fixed(event.probability, 3)}`;
    } else if (event.type === "status") {
      status.className = "status status-" + event.status;
      status.textContent = event.status;
      if (["applied", "failed", "cancelled"].includes(event.status)) load().then(() => ctx.refreshInfo());
    }
  }

  await load();
  root.append(
    h("section", {}, h("h2", {}, "Submit an edit"), form),
    h("section", { class: "wide" }, h("h2", {}, "Edits ", h("button", { onclick: load, title: "reload" }, "↻")),
      h("table", {}, h("thead", {}, h("tr", {}, ["created", "fact", "status", "version", ""].map((t) => h("th", {}, t)))), list)));
  return () => streams.abort();
}

// Models with two text encoders (SDXL) edit both unless one is chosen; the others have no
// choice to make.
function encoderChoice(encoders) {
  if (encoders.length < 2) return null;
  return h("label", {}, "Text encoder ",
    h("select", { name: "encoder" },
      h("option", { value: "" }, "all (each at its default layer)"),
      ...encoders.map((name) => h("option", { value: name }, name))));
}

// Where an edit may go, per text encoder: "0–11, default 7", or on SDXL
// "text 0–10, default 7; text_2 0–10, default 7".
function layerRange(encoders) {
  const one = (e) => `0–${e.max_layer}, default ${e.default_layer}`;
  return encoders.length === 1 ? one(encoders[0]) : encoders.map((e) => `${e.encoder} ${one(e)}`).join("; ");
}
