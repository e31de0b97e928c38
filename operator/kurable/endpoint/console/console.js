// The Kurable console: plain JavaScript over the endpoint's own API (no build step).
// The bearer token stays in this tab's sessionStorage and goes with every request, so
// the API's authentication and RBAC decide what the page shows and may do.
"use strict";

const TOKEN_KEY = "kurable.token";
const POLL_MS = 2000;
const main = document.getElementById("main");
let timer = null;

// -- the API -------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const reply = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await reply.text();
  const data = text ? JSON.parse(text) : null;
  if (!reply.ok) {
    if (reply.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("the token was refused: " + ((data && data.detail) || "401"));
    }
    throw new ApiError(reply.status, data);
  }
  return data;
}

const enc = encodeURIComponent;
const runsPath = (ns) => `/v1/namespaces/${enc(ns)}/workflows`;
const runPath = (ns, name) => `${runsPath(ns)}/${enc(name)}`;

// -- small DOM helpers ------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function json(value) {
  return el("pre", {}, value === undefined ? "" : JSON.stringify(value, null, 2));
}

function phaseBadge(phase, colours) {
  const fill = (colours && colours[phase]) || PHASE_FILL[phase] || "#fff";
  return el("span", { class: "phase", "data-phase": phase || "", style: `background:${fill}` },
    phase || "Pending");
}

const PHASE_FILL = {
  Pending: "#e5e7eb", Running: "#93c5fd", Suspended: "#fde68a", Succeeded: "#86efac",
  Failed: "#fca5a5", Cancelled: "#d1d5db", Invalid: "#fca5a5",
};

function params() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent),
    query: new URLSearchParams(query || "") };
}

function schedule(fn) {
  clearTimeout(timer);
  timer = setTimeout(fn, POLL_MS);
}

function failure(where, error) {
  where.replaceChildren(el("p", { class: "error" }, error.message || String(error)));
}

// -- sign in --------------------------------------------------------------------------

function showLogin(message) {
  clearTimeout(timer);
  const form = document.getElementById("login").content.cloneNode(true);
  main.replaceChildren(form);
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    route();
  });
}

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
});

// -- runs -----------------------------------------------------------------------------

async function runsPage(query) {
  const ns = query.get("namespace") || "default";
  const template = query.get("template") || "";
  const phase = query.get("phase") || "";
  const filters = el("form", { class: "filters", id: "filters", onsubmit: (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const next = new URLSearchParams();
    for (const [key, value] of form) if (value) next.set(key, value);
    location.hash = "#/runs?" + next.toString();
  } },
  el("label", {}, "namespace", el("input", { name: "namespace", value: ns })),
  el("label", {}, "template", el("input", { name: "template", value: template })),
  el("label", {}, "phase", el("select", { name: "phase" },
    ["", "Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled", "Invalid"]
      .map((p) => el("option", { value: p, selected: p === phase }, p || "any")))),
  el("button", { type: "submit" }, "Filter"));
  const table = el("div", { id: "runs" }, "loading ...");
  main.replaceChildren(el("h2", {}, "Runs"), filters, table);

  async function refresh() {
    const q = new URLSearchParams({ limit: "500" });
    if (template) q.set("template", template);
    if (phase) q.set("phase", phase);
    try {
      const page = await api(`${runsPath(ns)}?${q}`);
      const rows = page.items.map((run) => el("tr", { "data-run": run.name, "data-phase": run.phase || "" },
        el("td", {}, el("a", { href: `#/run/${enc(ns)}/${enc(run.name)}` }, run.name)),
        el("td", {}, run.template || "(inline)"),
        el("td", {}, phaseBadge(run.phase)),
        el("td", {}, run.currentStep || ""),
        el("td", {}, run.startedAt || run.createdAt || ""),
        el("td", {}, run.finishedAt || "")));
      table.replaceChildren(rows.length ? el("table", {},
        el("tr", {}, ["run", "template", "phase", "step", "started", "finished"].map((h) => el("th", {}, h))),
        rows) : el("p", {}, "no runs"));
    } catch (error) {
      if (error.status === 401) return;
      failure(table, error);
    }
    if (location.hash.startsWith("#/runs") || location.hash === "" || location.hash === "#/") schedule(refresh);
  }
  await refresh();
}

// -- one run --------------------------------------------------------------------------

async function runPage(ns, name) {
  const head = el("div", { id: "run-head" });
  const diagram = el("div", { id: "diagram", class: "card" });
  const actions = el("div", { id: "actions", class: "card" });
  const data = el("div", { id: "data" });
  const timeline = el("ol", { id: "timeline", class: "timeline" });
  main.replaceChildren(head, diagram, actions,
    el("div", { class: "grid" }, data, el("div", { class: "card" }, el("h3", {}, "Journal"), timeline)));
  let allowed = { signal: false, control: false };
  try {
    allowed = await api(`/ui/api/namespaces/${enc(ns)}/workflows/${enc(name)}/access`);
  } catch (error) {
    if (error.status === 401) return;
  }
  const message = el("span", { id: "action-result" });
  const signalName = el("input", { id: "signal-name", placeholder: "signal name" });
  const payload = el("input", { id: "signal-payload", placeholder: "payload (JSON)", value: "{}" });
  async function act(what, request) {
    try {
      await request();
      message.textContent = `${what}: sent`;
      message.className = "";
      refresh();
    } catch (error) {
      message.textContent = `${what}: ${error.message}`;
      message.className = "error";
    }
  }
  actions.append(el("div", { class: "actions" },
    signalName, payload,
    el("button", { id: "signal", disabled: !allowed.signal, title: allowed.signal ? "" : "RBAC: create workflows/signal not granted",
      onclick: () => act("signal", () => api(`${runPath(ns, name)}/signals/${enc(signalName.value)}`,
        { method: "POST", body: JSON.parse(payload.value || "null") })) }, "Send signal"),
    ["suspend", "resume", "cancel"].map((verb) => el("button", { id: verb, disabled: !allowed.control,
      title: allowed.control ? "" : "RBAC: patch workflows not granted",
      onclick: () => act(verb, () => api(`${runPath(ns, name)}/${verb}`, { method: "POST" })) }, verb)),
    message));

  async function refresh() {
    let run;
    try {
      const [got, graph, history] = await Promise.all([
        api(runPath(ns, name)),
        api(`/ui/api/namespaces/${enc(ns)}/workflows/${enc(name)}/graph`),
        api(`${runPath(ns, name)}/history?limit=1000`),
      ]);
      run = got;
      head.replaceChildren(el("h2", {}, `${ns}/${name} `, phaseBadge(run.phase)),
        el("p", {}, run.message || ""));
      diagram.replaceChildren(drawGraph(graph));
      const started = history.items.find((r) => r.type === "WorkflowStarted");
      data.replaceChildren(
        el("div", { class: "card" }, el("h3", {}, "Input"), json(started && started.data ? started.data.input : null)),
        el("div", { class: "card" }, el("h3", {}, "Output"), json(run.output)),
        el("div", { class: "card" }, el("h3", {}, "Error"), json(run.error)));
      timeline.replaceChildren(...history.items.map((r) => el("li", { class: r.type, "data-type": r.type },
        el("span", { class: "at" }, r.at), " ", el("strong", {}, r.type),
        r.step ? ` ${r.step}` : "", r.attempt ? ` (attempt ${r.attempt})` : "",
        r.data && r.type !== "WorkflowStarted" ? el("div", {}, el("code", {}, JSON.stringify(r.data).slice(0, 300))) : null)));
    } catch (error) {
      if (error.status === 401) return;
      failure(head, error);
    }
    if (location.hash.startsWith(`#/run/`)) schedule(refresh);
  }
  await refresh();
}

// The diagram: kurable.engine.graph's nodes and edges, laid out top-down by rank.
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) if (value !== undefined && value !== null) node.setAttribute(key, value);
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function drawGraph(graph) {
  const W = 180, H = 40, GX = 30, GY = 36, PAD = 20;
  const index = new Map(graph.nodes.map((n, i) => [n.id, i]));
  const rank = new Map([[graph.nodes[0].id, 0]]);
  for (const node of graph.nodes) {
    if (node.kind === "compensation") continue;
    let r = rank.get(node.id) || 0;
    for (const e of graph.edges) {
      if (e.target === node.id && e.kind !== "compensate" && index.get(e.source) < index.get(e.target) && rank.has(e.source)) {
        r = Math.max(r, rank.get(e.source) + 1);
      }
    }
    rank.set(node.id, r);
  }
  for (const e of graph.edges) if (e.kind === "compensate") rank.set(e.target, rank.get(e.source) || 0);
  const rows = new Map();
  for (const node of graph.nodes) {
    const r = rank.get(node.id) || 0;
    if (!rows.has(r)) rows.set(r, []);
    rows.get(r).push(node);
  }
  const place = new Map();
  let width = 0, height = 0;
  for (const [r, nodes] of rows) {
    nodes.sort((a, b) => (a.kind === "compensation") - (b.kind === "compensation") || index.get(a.id) - index.get(b.id));
    nodes.forEach((node, col) => {
      const x = PAD + 60 + col * (W + GX), y = PAD + r * (H + GY);
      place.set(node.id, { x, y });
      width = Math.max(width, x + W + PAD + 60);
      height = Math.max(height, y + H + PAD);
    });
  }
  const root = svg("svg", { class: "diagram", width, height, viewBox: `0 0 ${width} ${height}`, "data-phase": graph.phase || "" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#6b7280" }))));
  for (const e of graph.edges) {
    const a = place.get(e.source), b = place.get(e.target);
    if (!a || !b) continue;
    let d, lx, ly;
    if (e.kind === "compensate") {
      d = `M ${a.x + W} ${a.y + H / 2} L ${b.x} ${b.y + H / 2}`;
      lx = a.x + W + 4; ly = a.y - 4;
    } else if (b.y > a.y) {
      d = `M ${a.x + W / 2} ${a.y + H} C ${a.x + W / 2} ${a.y + H + GY / 2}, ${b.x + W / 2} ${b.y - GY / 2}, ${b.x + W / 2} ${b.y}`;
      lx = (a.x + b.x) / 2 + W / 2 + 4; ly = (a.y + H + b.y) / 2;
    } else {
      const left = Math.min(a.x, b.x) - 40;
      d = `M ${a.x} ${a.y + H / 2} C ${left} ${a.y + H / 2}, ${left} ${b.y + H / 2}, ${b.x} ${b.y + H / 2}`;
      lx = left - 10; ly = (a.y + b.y) / 2 + H / 2;
    }
    root.append(svg("path", { class: `edge ${e.kind}`, d, "marker-end": "url(#arrow)", "data-source": e.source, "data-target": e.target }));
    if (e.label) root.append(svg("text", { x: lx, y: ly, "font-size": "11", fill: "#4b5563" }, e.label));
  }
  for (const node of graph.nodes) {
    const p = place.get(node.id);
    const phase = node.phase || "";
    const fill = node.phase ? graph.colours[node.phase] : (node.kind === "step" || node.kind === "compensation" ? "#ffffff" : "#f3f4f6");
    const detail = [node.stepKind ? node.stepKind + (node.forEach ? " forEach" : "") : null,
      node.phase, node.attempts > 1 ? `${node.attempts} attempts` : null].filter(Boolean).join(" · ");
    const g = svg("g", { class: `node ${node.kind}`, "data-id": node.id, "data-phase": phase, "data-attempts": node.attempts },
      svg("title", {}, `${node.id}${detail ? " — " + detail : ""}`),
      svg("rect", { x: p.x, y: p.y, width: W, height: H, rx: node.kind === "start" || node.kind === "end" ? 20 : 5, fill }),
      svg("text", { x: p.x + 8, y: p.y + 16, "font-weight": "600" }, node.label.length > 26 ? node.label.slice(0, 25) + "…" : node.label),
      svg("text", { x: p.x + 8, y: p.y + 32, fill: "#374151" }, detail));
    root.append(g);
  }
  return root;
}

// -- entities and schedules -------------------------------------------------------------

function lookup(kind, query, render) {
  const ns = query.get("namespace") || "default";
  const name = query.get("name") || "";
  const out = el("div", { id: `${kind}-view` });
  main.replaceChildren(el("h2", {}, kind === "entity" ? "Entities" : "Schedules"),
    el("form", { class: "filters", onsubmit: (event) => {
      event.preventDefault();
      const form = new FormData(event.target);
      location.hash = `#/${kind === "entity" ? "entities" : "schedules"}?namespace=${enc(form.get("namespace"))}&name=${enc(form.get("name"))}`;
    } },
    el("label", {}, "namespace", el("input", { name: "namespace", value: ns })),
    el("label", {}, "name", el("input", { name: "name", value: name, required: true })),
    el("button", { type: "submit" }, "Show")), out);
  if (name) render(ns, name, out).catch((error) => { if (error.status !== 401) failure(out, error); });
}

async function entityView(ns, name, out) {
  const base = `/v1/namespaces/${enc(ns)}/entities/${enc(name)}`;
  const [entity, events] = await Promise.all([api(base), api(`${base}/events?limit=1000`)]);
  out.replaceChildren(
    el("div", { class: "card" }, el("h3", {}, `${entity.type} ${ns}/${name} (version ${entity.version})`), json(entity.state)),
    el("div", { class: "card" }, el("h3", {}, "Event log"),
      el("ol", { class: "timeline" }, events.items.map((e) => el("li", {}, el("code", {}, JSON.stringify(e)))))));
}

async function scheduleView(ns, name, out) {
  const found = await api(`/ui/api/namespaces/${enc(ns)}/schedules/${enc(name)}`);
  out.replaceChildren(
    el("div", { class: "card" }, el("h3", {}, `${ns}/${name}`), el("h4", {}, "Status"), json(found.status)),
    el("div", { class: "card" }, el("h4", {}, "Spec"), json(found.spec)),
    el("p", {}, el("a", { href: `#/runs?namespace=${enc(ns)}` }, "its runs are listed with the others")));
}

// -- routing ----------------------------------------------------------------------------

function route() {
  clearTimeout(timer);
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    showLogin();
    return;
  }
  const { parts, query } = params();
  if (parts[0] === "run" && parts.length === 3) runPage(parts[1], parts[2]);
  else if (parts[0] === "entities") lookup("entity", query, entityView);
  else if (parts[0] === "schedules") lookup("schedule", query, scheduleView);
  else runsPage(query);
}

window.addEventListener("hashchange", route);
route();
