// The mesh view: polls /api/v1/graph and draws it (SVG and a table, text only: no innerHTML). Positions come from
// the server (stable columns and rows), so a refresh never moves what did not change.
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 260, HEIGHT = 44, GAP_X = 170, GAP_Y = 22, PAD = 20;
let shown = "";

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function place(node) {
  return { x: PAD + node.column * (WIDTH + GAP_X), y: PAD + node.row * (HEIGHT + GAP_Y) };
}

function draw(graph) {
  const svg = document.getElementById("graph");
  const at = new Map(graph.nodes.map((n) => [n.id, place(n)]));
  const rows = Math.max(1, ...graph.nodes.map((n) => n.row + 1));
  svg.setAttribute("viewBox", `0 0 ${PAD * 2 + 3 * WIDTH + 2 * GAP_X} ${PAD * 2 + rows * (HEIGHT + GAP_Y)}`);
  svg.setAttribute("height", String(Math.min(900, PAD * 2 + rows * (HEIGHT + GAP_Y))));
  svg.replaceChildren();
  for (const e of graph.edges) {
    const a = at.get(e.from), b = at.get(e.to);
    if (!a || !b) continue;
    const g = el("g", { class: `edge health-${e.health || "idle"}`, "data-from": e.from, "data-to": e.to });
    const x1 = a.x + WIDTH, y1 = a.y + HEIGHT / 2, x2 = b.x, y2 = b.y + HEIGHT / 2;
    g.append(el("line", { x1, y1, x2, y2 }));
    if (e.label) g.append(el("text", { x: (x1 + x2) / 2 - 12, y: (y1 + y2) / 2 - 4, class: "weight" }, e.label));
    if (e.traffic && e.traffic.requests) {
      g.append(el("text", { x: (x1 + x2) / 2 - 60, y: (y1 + y2) / 2 + 12, class: "traffic" }, describeTraffic(e.traffic)));
    }
    svg.append(g);
  }
  for (const n of graph.nodes) {
    const p = at.get(n.id);
    const classes = ["node", { Service: "service", LoadBalancer: "lb", Gateway: "lb" }[n.kind] || "vn"];
    if (n.sync) classes.push(`sync-${n.sync.replace(" ", "_")}`);
    if (n.problem) classes.push("problem");
    const g = el("g", { class: classes.join(" "), "data-id": n.id, transform: `translate(${p.x},${p.y})` });
    g.append(el("rect", { width: WIDTH, height: HEIGHT, rx: 6 }));
    const label = n.kind === "LoadBalancer" ? `LoadBalancer ${n.name}` : `${n.kind} ${n.namespace}/${n.name}`;
    g.append(el("text", { x: 8, y: 17 }, label.slice(0, 40)));
    const detail = n.kind === "Service" ? "" : n.kind === "LoadBalancer" ? n.detail.slice(0, 44)
      : `${n.proxies} prox${n.proxies === 1 ? "y" : "ies"}${n.sync ? " · " + n.sync : ""}`;
    g.append(el("text", { x: 8, y: 34, class: n.rejected ? "why" : "" }, n.rejected ? `rejected: ${n.rejected}`.slice(0, 44) : detail));
    g.append(el("title", {}, n.rejected ? `${label}: ${n.rejected}` : label));
    svg.append(g);
  }
  const body = document.querySelector("#edges tbody");
  body.replaceChildren(...graph.edges.map((e) => {
    const tr = document.createElement("tr");
    const t = e.traffic && e.traffic.requests ? e.traffic : null;
    const figures = t ? [t.rps.toFixed(1), percent(t.errorRate), t.p99Ms === null ? "n/a" : `${t.p99Ms} ms`] : ["0", "", ""];
    for (const text of [e.from, e.to, e.label || "declared backend", ...figures, e.health || "idle"]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
  const problems = document.getElementById("problems");
  problems.replaceChildren(...(graph.problems.length ? graph.problems.map((p) => {
    const li = document.createElement("li");
    li.textContent = `${p.kind} ${p.namespace}/${p.name}: ` + p.conditions.map((c) => `${c.type} ${c.reason}: ${c.message}`).join("; ");
    return li;
  }) : [Object.assign(document.createElement("li"), { textContent: "none" })]));
  const count = (kind) => graph.nodes.filter((n) => n.kind === kind).length;
  const balancers = count("LoadBalancer");
  const gateways = count("Gateway");
  document.getElementById("summary").textContent =
    `${count("Service")} Services, ${count("VirtualNode")} VirtualNodes, ` +
    (balancers ? `${balancers} load balancers, ` : "") + (gateways ? `${gateways} gateways, ` : "") +
    `${graph.problems.length} problems`;
  fillServices(graph);
  document.documentElement.dataset.version = graph.version;
}

function percent(rate) {
  return `${(100 * rate).toFixed(rate < 0.001 && rate > 0 ? 2 : 1)}%`;
}

// Requests per second, the share answered 5xx, p99: over the control plane's last quarter minute of stats reads.
function describeTraffic(t) {
  return `${t.rps.toFixed(1)} rps · ${percent(t.errorRate)} 5xx` + (t.p99Ms === null ? "" : ` · p99 ${t.p99Ms} ms`);
}

function fillServices(graph) {
  const select = document.getElementById("service");
  const chosen = select.value;
  const services = graph.nodes.filter((n) => n.kind === "Service").map((n) => `${n.namespace}/${n.name}`);
  select.replaceChildren(...services.map((s) => Object.assign(document.createElement("option"), { value: s, textContent: s })));
  if (services.includes(chosen)) select.value = chosen;
  showRoutes();
}

function describeMatch(m) {
  const parts = [`${m.path.kind} ${m.path.value || "/"}`];
  for (const h of m.headers) parts.push(`${h.invert ? "not " : ""}header ${h.name}${h.string ? " " + h.string.kind + " " + h.string.value : h.range ? " in [" + h.range.join(", ") + ")" : " present"}`);
  for (const q of m.query) parts.push(`query ${q.name}${q.exact !== null && q.exact !== undefined ? " = " + q.exact : ""}`);
  if (m.grpc) parts.push("gRPC");
  return parts.join(", ");
}

// A Service's route table in evaluation order, as `meshctl get routes` shows it (GET /api/v1/routes?service=).
async function showRoutes() {
  const service = document.getElementById("service").value;
  const body = document.querySelector("#routes tbody");
  if (!service) { body.replaceChildren(); return; }
  const r = await fetch(`../api/v1/routes?service=${encodeURIComponent(service)}`, { cache: "no-store" });
  if (!r.ok) { body.replaceChildren(cells(["", "", (await r.text()).trim(), "", "", "", ""])); return; }
  const doc = await r.json();
  const rows = [];
  for (const vh of doc.virtualHosts) {
    vh.routes.forEach((route, i) => {
      const total = route.targets.reduce((a, t) => a + t.weight, 0) || 1;
      const targets = route.targets.map((t) => `${t.cluster} ${Math.round(100 * t.weight / total)}%`).join(", ");
      const retry = route.retry ? `${route.retry.numRetries} on ${route.retry.retryOn}` : "none";
      const timeout = route.timeoutMs === null || route.timeoutMs === undefined ? "default" : route.timeoutMs === 0 ? "none" : `${route.timeoutMs} ms`;
      rows.push(cells([vh.name, i + 1, route.name, describeMatch(route.match), targets, retry, timeout]));
    });
  }
  body.replaceChildren(...rows);
  body.dataset.service = service;
}


async function poll() {
  try {
    const r = await fetch("../api/v1/graph", { cache: "no-store" });
    if (r.ok) {
      const graph = await r.json();
      if (graph.version !== shown) {
        draw(graph);
        shown = graph.version;
      }
    } else {
      document.getElementById("summary").textContent = `the control plane answered ${r.status}`;
    }
  } catch (err) {
    document.getElementById("summary").textContent = "the control plane is not reachable";
  }
  setTimeout(poll, document.hidden ? 5000 : 1000);
}

function cells(values) {
  const tr = document.createElement("tr");
  for (const text of values) {
    const td = document.createElement("td");
    td.textContent = String(text);
    tr.append(td);
  }
  return tr;
}

// The same answer as `meshctl explain` (GET /api/v1/explain: the same document as `explain -o json`).
async function explainRequest(event) {
  event.preventDefault();
  const form = event.target;
  const query = new URLSearchParams({ method: form.method.value, url: form.url.value });
  if (form.from.value.trim()) query.set("from", form.from.value.trim());
  for (const h of form.headers.value.split(";")) if (h.trim()) query.append("header", h.trim());
  const answer = document.getElementById("explain-answer");
  const body = document.querySelector("#explain-routes tbody");
  const r = await fetch(`../api/v1/explain?${query}`, { cache: "no-store" });
  if (!r.ok) {
    answer.textContent = (await r.text()).trim();
    body.replaceChildren();
    form.dataset.answered = "error";
    return;
  }
  const e = await r.json();
  const targets = e.targets.map((t) => `${t.cluster} ${(t.probability * 100).toFixed(4).replace(/\.?0+$/, "")}%`);
  answer.textContent = e.matched
    ? `virtual host ${e.virtualHost}: route ${e.matched} -> ${targets.join(", ")}`
    : `${e.virtualHost ? "virtual host " + e.virtualHost + ": " : ""}no route: ${e.response}`;
  answer.dataset.matched = e.matched || "";
  body.replaceChildren(...e.routes.map((v) =>
    cells([v.index + 1, v.name, v.match, v.failure === null ? "match" : "no", v.failure || "every predicate holds"])));
  form.dataset.answered = String(Date.now());
}

document.getElementById("explain").addEventListener("submit", explainRequest);
document.getElementById("service").addEventListener("change", showRoutes);
poll();
