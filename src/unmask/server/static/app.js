// unmask page: plain JS, no build step. Every model string reaches the page through textContent,
// never parsed as markup, so a token like "<script>" shows as text.
"use strict";

const state = { info: null, busy: false };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "style") Object.assign(node.style, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setBusy(busy, what) {
  state.busy = busy;
  for (const id of ["explain", "reduce", "hotflip", "audit"]) $(id).disabled = busy;
  $("status").textContent = busy ? what : "";
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, opts);
  } catch (e) {
    throw new Error("the server cannot be reached (" + e.message + ")");
  }
  let data;
  try {
    data = await response.json();
  } catch (e) {
    throw new Error("the server answered " + response.status + " without JSON");
  }
  if (!response.ok) throw new Error(data.error || ("the server answered " + response.status));
  return data;
}

// ------------------------------------------------------------------ colours (as in unmask.report.html)
function tokenColour(weight, signed) {
  const alpha = Math.min(1, 0.08 + 0.92 * weight);
  const rgb = signed >= 0 ? "220,50,47" : "38,139,210";
  return "rgba(" + rgb + "," + alpha.toFixed(3) + ")";
}

function heatmap(view) {
  const top = Math.max(...view.normalized, 0) || 1;
  const row = el("div", { class: "heatmap" });
  view.tokens.forEach((tok, i) => {
    const w = view.normalized[i] / top;
    const span = el("span", {
      class: view.special[i] ? "tok special" : "tok",
      title: tok + ": " + view.normalized[i].toFixed(3) + " of |attribution| (raw " +
        view.scores[i].toPrecision(4) + ")",
      text: tok,
    });
    span.style.background = tokenColour(w, view.scores[i]);
    row.append(span);
  });
  return row;
}

function probabilities(model) {
  const box = el("div", { class: "probs" });
  model.labels.forEach((name, i) => {
    const p = model.probabilities[i];
    const bar = el("span", { class: "bar" });
    bar.style.width = (100 * p).toFixed(1) + "%";
    box.append(el("div", { class: i === model.prediction ? "prob predicted" : "prob" },
      el("span", { class: "label", text: name }), el("span", { class: "track" }, bar),
      el("span", { class: "value", text: p.toFixed(3) })));
  });
  return box;
}

function inputTitle(data) {
  const title = el("h2", { class: "input-text", text: data.text });
  if (data.pair !== null && data.pair !== undefined) {
    title.append(el("span", { class: "meta", text: "  ||  " }), el("span", { text: data.pair }));
  }
  return title;
}

function renderExplanation(data) {
  const out = $("results");
  out.replaceChildren(inputTitle(data));
  const cards = el("div", { class: "grid", style: { gridTemplateColumns: "repeat(" + data.models.length + ", 1fr)" } });
  for (const m of data.models) {
    cards.append(el("div", { class: "card model" },
      el("h3", { text: m.name }),
      el("p", { class: "prediction" }, "predicted ", el("b", { text: m.prediction_name }),
        " (p = " + m.probabilities[m.prediction].toFixed(3) + ")"),
      probabilities(m)));
  }
  out.append(cards);
  const methods = Object.keys(data.models[0].methods);
  const table = el("table", { class: "heatmaps" });
  table.append(el("tr", {}, el("th", { text: "method" }), ...data.models.map((m) => el("th", { text: m.name }))));
  for (const method of methods) {
    const cells = data.models.map((m) => {
      const view = m.methods[method];
      const cell = el("td", {}, heatmap(view));
      const notes = ["explains " + view.target_name];
      if (view.extras && typeof view.extras.completeness_error === "number") {
        notes.push("completeness error " + view.extras.completeness_error.toExponential(1));
      }
      cell.append(el("div", { class: "meta", text: notes.join(" · ") }));
      return cell;
    });
    table.append(el("tr", { "data-method": method }, el("th", { text: method }), ...cells));
  }
  out.append(table, el("p", { class: "meta", text: "computed in " + data.seconds.toFixed(2) + " s" }));
}

function renderPerturbation(data) {
  const out = $("perturbation");
  out.hidden = false;
  const title = data.kind === "reduce" ? "Input reduction" : "HotFlip";
  const explanation = data.kind === "reduce"
    ? "Word pieces removed one at a time while the prediction holds."
    : "Word pieces replaced by the tokens that raise the loss most, until the prediction changes.";
  out.replaceChildren(el("h2", { text: title }), el("p", { class: "meta", text: explanation }));
  const grid = el("div", { class: "grid", style: { gridTemplateColumns: "repeat(" + data.models.length + ", 1fr)" } });
  for (const m of data.models) {
    const r = m.result;
    const names = r.label_names;
    const steps = el("ol", { class: "steps" });
    for (const s of r.steps) {
      const what = "removed" in s.change
        ? "remove \u201c" + s.change.removed + "\u201d"
        : "flip \u201c" + s.change.old + "\u201d \u2192 \u201c" + s.change.new + "\u201d";
      steps.append(el("li", { text: what + ": " + names[s.prediction] + ", p(original label) = " + s.probability.toFixed(3) }));
    }
    let verdict;
    if (data.kind === "reduce") {
      verdict = "still " + names[r.final_prediction] + " with " + r.final_tokens.length + " of " +
        r.original_tokens.length + " pieces";
    } else {
      verdict = r.success ? "flipped " + names[r.original_prediction] + " \u2192 " + names[r.final_prediction] +
        " after " + r.steps.length + " flip(s)" : "not flipped after " + r.steps.length + " flip(s) (" + r.stopped + ")";
    }
    grid.append(el("div", { class: "card" }, el("h3", { text: m.name }),
      el("p", {}, "original: ", el("b", { text: names[r.original_prediction] }),
        " (p = " + r.original_probability.toFixed(3) + ")"),
      steps, el("p", { class: "final" }, "final: ", el("q", { text: m.final_text })),
      el("p", { class: "verdict", text: verdict })));
  }
  out.append(grid);
}

function describeValue(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(3);
  if (typeof v === "string" || typeof v === "boolean") return String(v);
  if (v === null) return "-";
  return JSON.stringify(v);
}

function renderAudit(data) {
  const out = $("audit-result");
  out.hidden = false;
  out.replaceChildren(el("h2", { text: "Audit: can these explanations be trusted?" }),
    el("p", { class: "meta", text: "on the " + data.sample + " (" + data.seconds.toFixed(1) + " s)" }));
  const grid = el("div", { class: "grid", style: { gridTemplateColumns: "repeat(" + data.models.length + ", 1fr)" } });
  for (const m of data.models) {
    const rep = m.report || {};
    const card = el("div", { class: "card audit" }, el("h3", { text: m.name }),
      el("p", { class: "verdict" }, el("b", { text: describeValue(rep.verdict) })));
    if (rep.summary) card.append(el("p", { text: typeof rep.summary === "string" ? rep.summary : JSON.stringify(rep.summary) }));
    if (rep.methods && typeof rep.methods === "object") {
      const list = el("dl", { class: "methods" });
      for (const [name, value] of Object.entries(rep.methods)) {
        list.append(el("dt", { text: name }));
        if (value && typeof value === "object" && !Array.isArray(value)) {
          const parts = Object.entries(value).filter(([k, x]) => k !== "method" && (x === null || typeof x !== "object"))
            .map(([k, x]) => k + " " + describeValue(x));
          list.append(el("dd", { text: parts.join(" · ") }));
        } else {
          list.append(el("dd", { text: describeValue(value) }));
        }
      }
      card.append(list);
    }
    grid.append(card);
  }
  out.append(grid);
}

// ------------------------------------------------------------------ actions
function inputs() {
  const body = { text: $("text").value };
  if (state.info && state.info.pairs) body.pair = $("pair").value;
  return body;
}

function checkedMethods() {
  return [...document.querySelectorAll("#methods input:checked")].map((box) => box.value);
}

async function act(what, path, body, render) {
  if (state.busy) return;
  showError("");
  setBusy(true, what + "\u2026");
  try {
    render(await api(path, body));
  } catch (e) {
    showError(e.message);
  } finally {
    setBusy(false);
  }
}

function setUp(info) {
  state.info = info;
  $("models").textContent = "models: " + info.models.map((m) => m.name + " (" + m.labels.join(", ") + ")").join("  vs  ");
  if (info.pairs) {
    $("pair-row").hidden = false;
    $("text-label").textContent = "Premise";
  }
  const box = $("methods");
  for (const name of info.methods) {
    const input = el("input", { type: "checkbox", value: name, id: "m-" + name, name: "method" });
    input.checked = info.default_methods.includes(name);
    box.append(el("label", { class: "method", for: "m-" + name }, input, " " + name));
  }
  const lim = info.limits;
  $("limits").textContent = "limits: " + lim.max_chars + " characters, " + lim.max_tokens + " word pieces, " +
    lim.max_methods + " methods, " + lim.timeout + " s per request";
  $("audit").hidden = !info.audit;
}

function main() {
  $("input-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    act("explaining", "/api/explain", { ...inputs(), methods: checkedMethods() }, renderExplanation);
  });
  $("reduce").addEventListener("click", () => act("reducing", "/api/perturb", { ...inputs(), kind: "reduce" }, renderPerturbation));
  $("hotflip").addEventListener("click", () => act("flipping", "/api/perturb", { ...inputs(), kind: "hotflip" }, renderPerturbation));
  $("audit").addEventListener("click", () => act("auditing (this can take minutes)", "/api/audit", {}, renderAudit));
  api("/api/info").then(setUp).catch((e) => showError(e.message));
}

main();
