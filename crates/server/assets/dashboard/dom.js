// Small helpers every view uses: building elements, formatting, charts, confirmations.

/// `h("td", {class: "x"}, "text", child)`: an element with attributes and children
/// (strings become text, null/false are skipped). `on*` attributes add listeners.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.textContent = "";
  append(el, children);
  return el;
}

export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
export const fixed = (x, digits = 2) => (x == null || Number.isNaN(Number(x)) ? "n/a" : Number(x).toFixed(digits));
export const fact = (f) => `${f.prompt}: ${f.source} → ${f.target}`;

/// The facts of a stored edit request (a batch's list, or the edit itself).
export function factsOf(request) {
  if (!request) return [];
  return Array.isArray(request.facts) ? request.facts : [request];
}

/// A line chart of several series `{name, color, xs, ys}` as SVG.
export function lineChart(series, { width = 420, height = 150, yLabel = "" } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  const pad = { l: 36, r: 8, t: 8, b: 18 };
  const xs = series.flatMap((s) => s.xs), ys = series.flatMap((s) => s.ys).filter(Number.isFinite);
  if (!xs.length || !ys.length) return svg;
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 === y0) y1 = y0 + 1;
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text != null) el.textContent = text;
    svg.append(el);
  };
  add("line", { x1: pad.l, y1: Y(y0), x2: width - pad.r, y2: Y(y0), stroke: "#bbb" });
  add("line", { x1: pad.l, y1: Y(y0), x2: pad.l, y2: Y(y1), stroke: "#bbb" });
  add("text", { x: 2, y: Y(y1) + 8 }, fixed(y1, 3));
  add("text", { x: 2, y: Y(y0) }, fixed(y0, 3));
  add("text", { x: width - pad.r, y: height - 4, "text-anchor": "end" }, `iteration ${x1}`);
  if (yLabel) add("text", { x: pad.l + 4, y: pad.t + 8 }, yLabel);
  for (const s of series) {
    const points = s.xs.map((x, i) => `${X(x).toFixed(1)},${Y(s.ys[i]).toFixed(1)}`).join(" ");
    add("polyline", { points, fill: "none", stroke: s.color || "#1565c0", "stroke-width": 1.5, "data-series": s.name });
  }
  return svg;
}

/// A bar chart of counts per minute (oldest first) as SVG.
export function barChart(values, { width = 600, height = 56, color = "#1565c0", label = "" } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  const max = Math.max(1, ...values);
  const w = width / values.length;
  values.forEach((v, i) => {
    const bar = document.createElementNS(ns, "rect");
    const bh = (v / max) * (height - 14);
    Object.entries({ x: i * w + 0.5, y: height - bh, width: Math.max(w - 1, 1), height: bh, fill: color })
      .forEach(([k, val]) => bar.setAttribute(k, val));
    svg.append(bar);
  });
  const text = document.createElementNS(ns, "text");
  text.setAttribute("x", 2);
  text.setAttribute("y", 10);
  text.textContent = `${label} (max ${max}/min, total ${values.reduce((a, b) => a + b, 0)})`;
  svg.append(text);
  return svg;
}

/// Asks for confirmation in a dialog showing `body`; resolves true on "Confirm".
export function confirmDialog(title, body) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { id: "confirm" },
      h("h2", {}, title), body,
      h("form", { method: "dialog", class: "actions" },
        h("button", { value: "cancel", id: "confirm-cancel" }, "Cancel"), " ",
        h("button", { value: "confirm", id: "confirm-ok" }, "Confirm")));
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "confirm");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
