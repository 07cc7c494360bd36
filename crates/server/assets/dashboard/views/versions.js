// Versions: the timeline, newest first. Each version shows what it changed from its
// parent (+ facts an edit added, − facts a revert removed), its gate verdict and
// metrics, the aliases on it, and on demand the facts live in it. Promote (move an
// alias) and revert ask for confirmation showing what will change. Below: aliases and
// their history.

import { api } from "../api.js";
import { clear, confirmDialog, fact, factsOf, fixed, h, when } from "../dom.js";

export async function render(root, _params, ctx) {
  const [page, aliases, edits] = await Promise.all([
    api("GET", "/versions?limit=50"),
    api("GET", "/aliases"),
    api("GET", "/edits?limit=200"),
  ]);
  const editById = new Map(edits.items.map((e) => [e.id, e]));
  const byNumber = new Map(page.items.map((v) => [v.number, v]));
  const reverted = new Map(page.items.filter((v) => v.kind === "revert").map((v) => [v.reverts_version, v.number]));
  const factsOfVersion = (v) => (v && v.edit_id ? factsOf(editById.get(v.edit_id)?.request) : []);
  const head = page.items.length ? page.items[0].number : 0;

  const timeline = h("ol", { class: "timeline", id: "timeline" });
  for (const v of page.items) {
    const on = aliases.filter((a) => a.version === v.number);
    const changes = v.kind === "apply"
      ? factsOfVersion(v).map((f) => h("span", { class: "fact added" }, "+ " + fact(f)))
      : v.kind === "revert"
        ? factsOfVersion(byNumber.get(v.reverts_version)).map((f) => h("span", { class: "fact removed" }, "− " + fact(f)))
        : [h("span", { class: "muted" }, "the base model")];
    const live = h("div", { id: `facts-${v.number}`, class: "live-facts" });
    const actions = h("div", { class: "actions" },
      h("button", { id: `show-facts-${v.number}`, onclick: () => showLiveFacts(v.number, live) }, "Facts live"),
      h("button", { id: `promote-${v.number}`, onclick: () => promote(v, aliases, root, ctx) }, "Promote…"),
      v.kind === "apply" && !reverted.has(v.number)
        ? h("button", { id: `revert-${v.number}`, onclick: () => revert(v, factsOfVersion(v), root, ctx) }, "Revert…")
        : null,
      v.edit_id ? h("a", { href: `#/edit/${v.edit_id}` }, "edit details") : null);
    timeline.append(h("li", { id: `version-${v.number}`, class: v.number === head ? "head" : "" },
      h("strong", {}, `v${v.number}`), " ",
      h("span", { class: "muted" }, `${v.kind}${v.parent != null ? " of v" + v.parent : ""} · ${when(v.created_at)}`), " ",
      on.map((a) => h("span", { class: "tag" + (a.protected ? " protected" : ""), title: a.protected ? "protected" : "" }, a.name)),
      gateLine(v),
      reverted.has(v.number) ? h("div", { class: "muted" }, `reverted by v${reverted.get(v.number)}`) : null,
      h("div", {}, changes), live, actions));
  }

  const aliasSection = h("section", { id: "aliases" }, h("h2", {}, "Aliases"));
  const table = h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "alias"), h("th", {}, "version"), h("th", {}, "moved"), h("th", {}, ""))));
  const body = h("tbody");
  for (const a of aliases) {
    body.append(h("tr", { id: `alias-${a.name}` },
      h("td", {}, a.name, a.protected ? h("span", { class: "tag protected" }, "protected") : null),
      h("td", {}, `v${a.version}`), h("td", { class: "muted" }, when(a.updated_at)),
      h("td", {}, h("button", { onclick: () => showHistory(a.name, history) }, "history"))));
  }
  table.append(body);
  const history = h("div", { id: "alias-history" });
  aliasSection.append(table, history);
  if (aliases.length) await showHistory(aliases.find((a) => a.name === "production")?.name || aliases[0].name, history);

  root.append(
    h("section", { class: "wide" }, h("h2", {}, `Versions (${page.total})`), timeline,
      page.total > page.items.length ? h("p", { class: "muted" }, `the newest ${page.items.length} of ${page.total}`) : null),
    aliasSection);
}

function gateLine(v) {
  if (!v.gate_status) return null;
  const m = v.gate_metrics || {};
  const t = m.text || {};
  return h("div", { class: "status-" + v.gate_status },
    `gate ${v.gate_status}: efficacy ${fixed(t.efficacy)}, generality ${fixed(t.generality)}, specificity ${fixed(t.specificity)}`,
    (m.failures || []).length ? h("span", { class: "muted" }, " · " + m.failures.join("; ")) : null);
}

async function showLiveFacts(number, box) {
  const live = await api("GET", `/versions/${number}/facts`);
  const facts = live.flatMap((e) => e.facts.map((f) => ({ ...f, version: e.version })));
  clear(box, h("h3", {}, `Facts live in v${number}: ${facts.length}`),
    facts.length ? h("ul", {}, facts.map((f) => h("li", { class: "live-fact" }, fact(f), h("span", { class: "muted" }, ` (v${f.version})`))))
      : h("p", { class: "muted" }, "none: the base model's knowledge"));
}

/// The facts that moving from version `from` to `to` adds and removes.
async function factDiff(from, to) {
  const [a, b] = await Promise.all([
    from == null ? Promise.resolve([]) : api("GET", `/versions/${from}/facts`),
    api("GET", `/versions/${to}/facts`),
  ]);
  const key = (e) => e.version;
  const before = new Set(a.map(key)), after = new Set(b.map(key));
  return {
    added: b.filter((e) => !before.has(key(e))).flatMap((e) => e.facts),
    removed: a.filter((e) => !after.has(key(e))).flatMap((e) => e.facts),
  };
}

async function promote(v, aliases, root, ctx) {
  const name = h("input", { id: "promote-alias", value: "production", list: "alias-names", required: true });
  const names = h("datalist", { id: "alias-names" }, aliases.map((a) => h("option", { value: a.name })));
  const force = h("input", { type: "checkbox", id: "promote-force", style: "width:auto" });
  const protect = h("input", { type: "checkbox", id: "promote-protect", style: "width:auto" });
  const picked = await confirmDialog(`Promote v${v.number}`, h("div", {},
    h("label", {}, "Alias ", name, names),
    h("label", {}, force, " force past failed gates"),
    h("label", {}, protect, " protect the alias (then only admins, or versions whose gate passed, move it)")));
  if (!picked) return;
  const alias = name.value.trim();
  const current = aliases.find((a) => a.name === alias);
  const diff = await factDiff(current ? current.version : null, v.number);
  const ok = await confirmDialog(`${alias}: ${current ? "v" + current.version : "new"} → v${v.number}`, h("div", { id: "promote-changes" },
    current && current.protected ? h("p", { class: "status-failed" }, "This alias is protected: it moves only for an admin or onto a version whose gate passed.") : null,
    h("p", {}, `${diff.added.length} fact(s) added, ${diff.removed.length} removed for everyone using ${alias}.`),
    diff.added.map((f) => h("span", { class: "fact added" }, "+ " + fact(f))),
    diff.removed.map((f) => h("span", { class: "fact removed" }, "− " + fact(f)))));
  if (!ok) return;
  const body = { version: v.number, force: force.checked };
  if (protect.checked) body.protected = true;
  await act(root, ctx, () => api("PUT", `/aliases/${encodeURIComponent(alias)}`, body));
}

async function revert(v, facts, root, ctx) {
  const ok = await confirmDialog(`Revert v${v.number}?`, h("div", { id: "revert-changes" },
    h("p", {}, "A new version without this edit becomes the head; aliases stay where they are."),
    facts.map((f) => h("span", { class: "fact removed" }, "− " + fact(f)))));
  if (!ok) return;
  await act(root, ctx, () => api("POST", `/versions/${v.number}/revert`));
}

async function showHistory(name, box) {
  const events = await api("GET", `/aliases/${encodeURIComponent(name)}/history?limit=20`);
  clear(box, h("h3", {}, `History of ${name}`), h("table", {},
    h("thead", {}, h("tr", {}, ["when", "who", "change", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, events.map((e) => h("tr", { class: "history-row" },
      h("td", { class: "muted" }, when(e.at)), h("td", {}, e.actor),
      h("td", {}, e.action === "removed" ? `removed (was v${e.from_version})`
        : `${e.from_version == null ? "created" : "v" + e.from_version} → v${e.to_version}`),
      h("td", {}, e.forced ? h("span", { class: "status-failed" }, "forced") : null))))));
}

/// Runs a change, then draws the view again with its outcome (a refusal is shown on
/// top, with the API's error code).
async function act(root, ctx, call) {
  let error = null;
  try {
    await call();
  } catch (e) {
    error = e;
  }
  await ctx.refreshInfo();
  root.textContent = "";
  await render(root, [], ctx);
  if (error) root.prepend(h("section", { class: "wide msg", id: "action-error" }, error.message));
}
