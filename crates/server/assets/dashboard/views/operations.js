// Operations: the edit queue and running edits (live over SSE), recent failures, the image queue
// and batching, replicas by heartbeat, the last hour per minute, webhook deliveries
// (admins). Refreshed every few seconds while shown.

import { api, follow } from "../api.js";
import { barChart, clear, fact, factsOf, fixed, h, when } from "../dom.js";

const REFRESH_MS = 2000;

export async function render(root) {
  const boxes = {
    queue: h("section", { id: "ops-queue" }),
    replicas: h("section", { id: "ops-replicas" }),
    hour: h("section", { id: "ops-hour" }),
    failures: h("section", { id: "ops-failures" }),
    webhooks: h("section", { id: "ops-webhooks", class: "wide" }),
  };
  root.append(...Object.values(boxes));
  let stopped = false;
  const streams = new AbortController();
  const followed = new Set();
  async function refresh() {
    const ops = await api("GET", "/operations");
    drawQueue(boxes.queue, ops);
    // Running edits move every iteration: follow each one's event stream, so its line
    // changes live between refreshes.
    for (const e of ops.running) {
      if (followed.has(e.id)) continue;
      followed.add(e.id);
      follow(e.id, (event) => {
        const line = document.getElementById(`ops-progress-${e.id}`);
        if (line && event.type === "progress") line.textContent = progressText(event);
      }, streams.signal).catch(() => {}).finally(() => followed.delete(e.id));
    }
    drawReplicas(boxes.replicas, ops);
    drawHour(boxes.hour, ops.last_hour);
    drawFailures(boxes.failures, ops.recent_failures);
    await drawWebhooks(boxes.webhooks, ops.webhook_receivers);
  }
  await refresh();
  const timer = setInterval(() => { if (!stopped) refresh().catch(() => {}); }, REFRESH_MS);
  return () => { stopped = true; clearInterval(timer); streams.abort(); };
}

function drawQueue(box, ops) {
  const g = ops.generation;
  clear(box, h("h2", {}, "Queues"),
    h("dl", { class: "kv" },
      h("dt", {}, "edits queued"), h("dd", { id: "ops-edits-queued" }, ops.edits_queued),
      h("dt", {}, "edits running"), h("dd", { id: "ops-edits-running" }, ops.edits_running),
      h("dt", {}, "images waiting or rendering"), h("dd", {}, `${g.queue_depth} of ${g.queue_limit} (this replica)`),
      h("dt", {}, "batching"), h("dd", {}, `up to ${g.max_batch} images, waiting ≤ ${g.max_wait_ms} ms`),
      h("dt", {}, "images rendered"), h("dd", { id: "ops-images-rendered" }, `${g.images_rendered} since start (this replica, gates included)`),
      h("dt", {}, "text cache"), h("dd", { id: "ops-text-cache" }, textCache(g.text_cache))),
    ops.running.length ? h("h3", {}, "Running") : null,
    h("ul", {}, ops.running.map((e) => h("li", {},
      h("a", { href: `#/edit/${e.id}` }, fact(factsOf(e.request)[0])),
      h("span", { id: `ops-progress-${e.id}` }, e.progress ? progressText(e.progress) : " · starting")))));
}

/** The text-embedding cache: how full, and how often it answered. */
function textCache(c) {
  const asked = c.hits + c.misses;
  const rate = asked ? `${Math.round((100 * c.hits) / asked)}% of ${asked} prompts from the cache` : "no prompts yet";
  return `${c.prompts} of ${c.capacity} prompts kept · ${rate}`;
}

const progressText = (p) =>
  ` · ${p.fact != null ? "fact " + p.fact + ", " : ""}iteration ${p.iteration}, p ${fixed(p.probability, 3)}`;

function drawReplicas(box, ops) {
  clear(box, h("h2", {}, `Replicas (${ops.replicas.length})`), h("table", {},
    h("thead", {}, h("tr", {}, ["replica", "worker", "images queued", "running edits", "last heartbeat"].map((t) => h("th", {}, t)))),
    h("tbody", {}, ops.replicas.map((r) => h("tr", { class: "replica" },
      h("td", {}, h("code", {}, r.id), r.this ? h("span", { class: "tag" }, "this") : null, r.status.draining ? h("span", { class: "tag protected" }, "draining") : null),
      h("td", {}, r.worker ? "yes" : "no"),
      h("td", {}, r.status.generate_queue ?? ""),
      h("td", {}, (r.status.running_edits || []).length),
      h("td", { class: "muted" }, when(r.last_seen)))))));
}

function drawHour(box, hour) {
  clear(box, h("h2", {}, "Last hour"),
    barChart(hour.images, { label: "images" }),
    barChart(hour.batches, { label: "UNet batches", color: "#00838f" }),
    barChart(hour.edits_applied, { label: "edits applied", color: "#2e7d32" }),
    barChart(hour.edits_failed, { label: "edits failed", color: "#c62828" }));
}

function drawFailures(box, failures) {
  clear(box, h("h2", {}, "Recent failures"),
    failures.length ? h("table", {}, h("tbody", {}, failures.map((e) => h("tr", {},
      h("td", { class: "muted" }, when(e.finished_at)),
      h("td", {}, h("a", { href: `#/edit/${e.id}` }, fact(factsOf(e.request)[0]))),
      h("td", { class: "status-failed" }, e.error)))))
      : h("p", { class: "muted" }, "none"));
}

async function drawWebhooks(box, receivers) {
  let deliveries;
  try {
    deliveries = await api("GET", "/webhooks/deliveries?limit=20");
  } catch (e) {
    if (e.status === 403) return clear(box, h("h2", {}, "Webhooks"), h("p", { class: "muted" }, "deliveries are shown to admin tokens"));
    throw e;
  }
  clear(box, h("h2", {}, `Webhooks (${receivers} receivers)`),
    deliveries.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["created", "event", "receiver", "status", "attempts", "last answer"].map((t) => h("th", {}, t)))),
      h("tbody", {}, deliveries.map((d) => h("tr", {},
        h("td", { class: "muted" }, when(d.created_at)), h("td", {}, d.event), h("td", {}, h("code", {}, d.url)),
        h("td", { class: "status-" + d.status }, d.status), h("td", {}, d.attempts),
        h("td", {}, d.last_code ?? d.last_error ?? "")))))
      : h("p", { class: "muted" }, "no deliveries yet"));
}
