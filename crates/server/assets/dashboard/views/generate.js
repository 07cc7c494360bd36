// Generate: one image at a version or alias, with the model's defaults filled in.

import { image } from "../api.js";
import { h } from "../dom.js";

export async function render(root, _params, ctx) {
  const [w, hgt] = ctx.info.model.default_size;
  const picture = h("img", { id: "image", alt: "", hidden: true, style: "max-width:100%;image-rendering:pixelated" });
  const message = h("span", { id: "gen-msg", class: "msg" });
  const form = h("form", { id: "gen-form" },
    h("label", {}, "Prompt ", h("input", { name: "prompt", required: true, placeholder: "a photo of the Prince of Wales" })),
    h("label", {}, "Negative prompt ", h("input", { name: "negative_prompt" })),
    h("div", { class: "row" },
      h("label", {}, "Version/alias ", h("input", { name: "version", placeholder: "default: production, else the head" })),
      h("label", {}, "Steps ", h("input", { name: "steps", type: "number", value: 25, min: 1 })),
      h("label", {}, "Guidance ", h("input", { name: "guidance_scale", type: "number", value: 7.5, step: 0.5 })),
      h("label", {}, "Seed ", h("input", { name: "seed", type: "number", min: 0 })),
      h("label", {}, "Width ", h("input", { name: "width", type: "number", value: w, step: 8 })),
      h("label", {}, "Height ", h("input", { name: "height", type: "number", value: hgt, step: 8 })),
      h("label", {}, "Scheduler ", h("select", { name: "scheduler" },
        h("option", { value: "" }, `model default (${ctx.info.model.default_scheduler})`),
        ["pndm", "ddim", "euler", "dpmpp-2m"].map((s) => h("option", {}, s))))),
    h("button", {}, "Generate"), " ", message);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const body = { prompt: f.get("prompt") };
    if (f.get("negative_prompt")) body.negative_prompt = f.get("negative_prompt");
    for (const k of ["steps", "guidance_scale", "width", "height", "seed"]) if (f.get(k) !== "") body[k] = Number(f.get(k));
    if (f.get("scheduler")) body.scheduler = f.get("scheduler");
    // Without a seed every click renders anew; with one, the tab's cache answers.
    if (body.seed == null) body.seed = Math.floor(Math.random() * 2 ** 31);
    message.className = "msg muted";
    message.textContent = "rendering…";
    try {
      const r = await image(String(f.get("version") || "").trim(), body);
      picture.src = r.url;
      picture.hidden = false;
      message.className = "msg ok";
      message.textContent = `version ${r.version}, seed ${r.seed}`;
    } catch (e) {
      message.className = "msg";
      message.textContent = e.message;
    }
  });
  root.append(h("section", {}, h("h2", {}, "Generate"), form, picture));
}
