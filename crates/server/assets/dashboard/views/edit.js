// One edit: its request, status history (live while it runs), the loss and target
// probability curves, the text-check figures, the gate's metrics, and a before/after
// grid (parent version vs the edit's version) for the edit's prompts and its gate's,
// at fixed seeds, rendered on demand through /generate.

import { api, follow, image } from "../api.js";
import { clear, fact, factsOf, fixed, h, lineChart, when } from "../dom.js";

const COLORS = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f"];

export async function render(root, [id], ctx) {
  const edit = await api("GET", `/edits/${encodeURIComponent(id)}`);
  const version = edit.version != null ? await api("GET", `/versions/${edit.version}`) : null;
  const streams = new AbortController();
  const facts = factsOf(edit.request);

  const status = h("dl", { class: "kv", id: "edit-status" });
  const drawStatus = (e, live) => clear(status,
    h("dt", {}, "status"), h("dd", { class: "status-" + e.status, id: "edit-status-value" }, e.status),
    h("dt", {}, "created"), h("dd", {}, `${when(e.created_at)} by ${e.created_by}`),
    h("dt", {}, "started"), h("dd", {}, when(e.started_at) || "—"),
    h("dt", {}, "finished"), h("dd", {}, when(e.finished_at) || "—"),
    h("dt", {}, "attempts"), h("dd", {}, `${e.attempts} of ${e.max_attempts}`),
    e.version != null ? [h("dt", {}, "version"), h("dd", {}, `v${e.version}`)] : null,
    e.error ? [h("dt", {}, "error"), h("dd", { class: "status-failed" }, e.error)] : null,
    live ? [h("dt", {}, "progress"), h("dd", { class: "status-running" }, live)] : null);
  drawStatus(edit);

  // Curves: stored ones when finished, collected from the event stream while running.
  const charts = h("div", { id: "curves" });
  const live = new Map();
  const drawCurves = (curves) => {
    const series = curves.map((c, i) => ({ name: curveName(c), color: COLORS[i % COLORS.length], xs: c.iteration, ys: c.loss, ps: c.probability }));
    if (!series.length) return clear(charts, h("p", { class: "muted" }, "no iterations yet"));
    clear(charts,
      h("h3", {}, "Loss"), lineChart(series, { yLabel: "loss" }),
      h("h3", {}, "Target probability"), lineChart(series.map((s) => ({ ...s, ys: s.ps })), { yLabel: "p(target)" }),
      series.length > 1 ? h("p", { class: "muted" }, series.map((s) => h("span", { style: `color:${s.color}` }, s.name + " "))) : null);
  };
  drawCurves(storedCurves(edit.metrics));
  if (edit.status === "queued" || edit.status === "running") {
    follow(edit.id, async (event) => {
      if (event.type === "progress") {
        // SDXL runs one optimisation per text encoder: each gets its own curves.
        const key = `${event.encoder ?? ""}/${event.fact ?? ""}`;
        if (!live.has(key)) live.set(key, { fact: event.fact ?? null, encoder: event.encoder ?? null, iteration: [], loss: [], probability: [] });
        const c = live.get(key);
        c.iteration.push(event.iteration); c.loss.push(event.loss); c.probability.push(event.probability);
        drawCurves([...live.values()]);
        drawStatus({ ...edit, status: "running" }, `iteration ${event.iteration}, p ${fixed(event.probability, 3)}`);
      } else if (event.type === "status" && ["applied", "failed", "cancelled"].includes(event.status)) {
        await ctx.refreshInfo();
        root.textContent = "";
        await render(root, [id], ctx);
      }
    }, streams.signal).catch(() => {});
  }

  const metrics = { ...(edit.metrics || {}) };
  const figures = figureList(metrics);
  figures.id = "edit-metrics";

  const gate = edit.request.gate;
  const gateBox = h("div", { id: "gate" },
    version?.gate_status ? h("p", { class: "status-" + version.gate_status }, `gate ${version.gate_status}`) : h("p", { class: "muted" }, gate ? "gate not measured yet" : "no gate"),
    version?.gate_metrics ? h("pre", {}, JSON.stringify(version.gate_metrics, null, 1)) : null);

  const grid = h("div", { id: "before-after" });
  const prompts = [...new Set([
    ...facts.map((f) => f.prompt),
    ...(gate?.positives || []).map((p) => p.prompt),
    ...(gate?.negatives || []).map((p) => p.prompt),
  ])];
  const [w] = ctx.info.model.default_size;
  const controls = h("form", { id: "render-form", class: "row" },
    h("label", {}, "Seeds ", h("input", { name: "seeds", value: "1, 2" })),
    h("label", {}, "Steps ", h("input", { name: "steps", type: "number", min: 1, value: 20 })),
    h("label", {}, "Size ", h("input", { name: "size", type: "number", step: 8, value: w })),
    h("button", { id: "render-before-after", disabled: edit.version == null }, "Render before/after"));
  controls.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(controls);
    const seeds = String(f.get("seeds")).split(/[ ,]+/).filter(Boolean).map(Number);
    const size = Number(f.get("size"));
    drawGrid(grid, prompts, seeds, [version.parent ?? 0, edit.version], { steps: Number(f.get("steps")), width: size, height: size });
  });

  root.append(
    h("section", {}, h("h2", {}, "Edit ", h("code", {}, edit.id.slice(0, 8))),
      h("h3", {}, facts.length > 1 ? `${facts.length} facts` : "Fact"), h("ul", {}, facts.map((f) => h("li", {}, fact(f)))),
      h("h3", {}, "Status"), status,
      h("details", {}, h("summary", {}, "request"), h("pre", {}, JSON.stringify(edit.request, null, 1)))),
    h("section", {}, h("h2", {}, "Optimisation"), charts, h("h3", {}, "Text checks"), figures, h("h3", {}, "Gate"), gateBox),
    h("section", { class: "wide" }, h("h2", {}, "Before / after"), prompts.length ? controls : null, grid));
  return () => streams.abort();
}

/// A curve's legend: its text encoder (SDXL) and fact (a batch), or "edit".
function curveName(c) {
  return [c.encoder, c.fact == null ? null : `fact ${c.fact}`].filter((x) => x != null).join(" · ") || "edit";
}

/// The curves of a finished edit, from the losses and probabilities the engine stores
/// for every iteration: the edit's own, or each fact's for a batch (`metrics.facts`);
/// on SDXL, those of each text encoder (`metrics.encoders`).
function storedCurves(metrics) {
  if (!metrics) return [];
  if (metrics.encoders && typeof metrics.encoders === "object") {
    return Object.entries(metrics.encoders).flatMap(([encoder, m]) => curvesOf(m).map((c) => ({ ...c, encoder })));
  }
  return curvesOf(metrics);
}

function curvesOf(metrics) {
  const one = (m, fact) => ({ fact, iteration: m.losses.map((_, i) => i), loss: m.losses, probability: m.probabilities });
  if (Array.isArray(metrics.facts)) return metrics.facts.filter((m) => m.losses).map((m, i) => one(m, i));
  return metrics.losses ? [one(metrics, null)] : [];
}

/// The stored metrics as a definition list: numbers rounded, nested objects (the text
/// check, a batch's per-fact rows) as nested lists, long series left to the charts.
function figureList(metrics) {
  const value = (v) => {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : fixed(v, 4);
    if (Array.isArray(v)) return v.every((x) => typeof x === "number") ? `${v.length} values (see the curves)` : h("ol", {}, v.map((x) => h("li", {}, value(x))));
    if (v && typeof v === "object") return figureList(v);
    return String(v);
  };
  return h("dl", { class: "kv" }, Object.entries(metrics).map(([k, v]) => [h("dt", {}, k.replaceAll("_", " ")), h("dd", {}, value(v))]));
}

/// A table of prompts × seeds × (before, after) images.
export function drawGrid(box, prompts, seeds, [before, after], settings) {
  clear(box);
  for (const prompt of prompts) {
    const cells = [];
    for (const seed of seeds) {
      for (const [label, version] of [["before", before], ["after", after]]) {
        const img = h("img", { alt: `${prompt}, seed ${seed}, v${version}`, class: "grid-image" });
        const caption = h("figcaption", {}, `${label} (v${version}) · seed ${seed}`);
        image(version, { prompt, seed, ...settings })
          .then((r) => { img.src = r.url; })
          .catch((e) => { caption.textContent = e.message; caption.className = "msg"; });
        cells.push(h("figure", {}, img, caption));
      }
    }
    box.append(h("h3", {}, prompt), h("div", { class: "grid" }, cells));
  }
}
