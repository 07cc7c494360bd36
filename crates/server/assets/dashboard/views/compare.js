// Compare: prompts × two versions (numbers or aliases) × a few seeds, side by side.

import { clear, h } from "../dom.js";
import { image } from "../api.js";

export async function render(root, _params, ctx) {
  const [w] = ctx.info.model.default_size;
  const grid = h("div", { id: "compare-grid" });
  const form = h("form", { id: "compare-form" },
    h("label", {}, "Prompts (one per line) ", h("textarea", { name: "prompts", rows: 3, required: true, placeholder: "a photo of the Prince of Wales" })),
    h("div", { class: "row" },
      h("label", {}, "Version A ", h("input", { name: "a", value: "0", required: true })),
      h("label", {}, "Version B ", h("input", { name: "b", value: ctx.info.head, required: true })),
      h("label", {}, "Seeds ", h("input", { name: "seeds", value: "1, 2" })),
      h("label", {}, "Steps ", h("input", { name: "steps", type: "number", min: 1, value: 20 })),
      h("label", {}, "Size ", h("input", { name: "size", type: "number", step: 8, value: w }))),
    h("button", { id: "compare-submit" }, "Compare"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const prompts = String(f.get("prompts")).split("\n").map((s) => s.trim()).filter(Boolean);
    const seeds = String(f.get("seeds")).split(/[ ,]+/).filter(Boolean).map(Number);
    const size = Number(f.get("size"));
    const settings = { steps: Number(f.get("steps")), width: size, height: size };
    const versions = [String(f.get("a")).trim(), String(f.get("b")).trim()];
    clear(grid);
    for (const prompt of prompts) {
      const row = h("div", { class: "grid" });
      for (const seed of seeds) {
        for (const version of versions) {
          const img = h("img", { alt: `${prompt}, seed ${seed}, ${version}`, class: "compare-image" });
          const caption = h("figcaption", {}, `${version} · seed ${seed}`);
          image(version, { prompt, seed, ...settings })
            .then((r) => { img.src = r.url; caption.textContent = `${version} (v${r.version}) · seed ${seed}`; })
            .catch((e) => { caption.textContent = e.message; caption.className = "msg"; });
          row.append(h("figure", {}, img, caption));
        }
      }
      grid.append(h("h3", {}, prompt), row);
    }
  });
  root.append(h("section", { class: "wide" }, h("h2", {}, "Compare versions"), form, grid));
}
