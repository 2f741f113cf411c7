// pilotfish's mesh dashboard: the service graph (Cytoscape.js), per-service charts and the
// proxies' xDS sync state, refreshed every REFRESH ms from the dashboard's /api/*.
"use strict";
const REFRESH = 5000;

const cy = cytoscape({
  container: document.getElementById("graph"),
  style: [
    { selector: "node[kind = 'service']", style: {
        "label": "data(label)", "text-valign": "top", "font-size": 12, "font-weight": "bold",
        "background-color": "#eef3fa", "border-color": "#9db3d3", "border-width": 1, "shape": "round-rectangle" } },
    { selector: "node[kind = 'workload']", style: {
        "label": "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4,
        "background-color": "#2f6fbf", "width": 26, "height": 26 } },
    { selector: "node[workload = 'unknown']", style: { "background-color": "#999" } },
    { selector: "edge", style: {
        "curve-style": "bezier", "target-arrow-shape": "triangle", "width": 2,
        "line-color": "#5a8f5a", "target-arrow-color": "#5a8f5a",
        "label": "data(label)", "font-size": 9, "text-background-color": "#fff",
        "text-background-opacity": 0.85, "text-rotation": "autorotate" } },
    { selector: "edge[error_rate > 0]", style: { "line-color": "#d08a1e", "target-arrow-color": "#d08a1e" } },
    { selector: "edge[error_rate > 0.1]", style: { "line-color": "#cf222e", "target-arrow-color": "#cf222e" } },
  ],
  layout: { name: "breadthfirst" },
  wheelSensitivity: 0.3,
});

let knownIds = "";
let services = [];

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  const doc = await r.json();
  if (!r.ok) throw new Error(doc.error || r.statusText);
  return doc;
}

async function refreshGraph() {
  const g = await getJSON("/api/graph");
  const elements = [...g.nodes, ...g.edges];
  const ids = elements.map(e => e.data.id).sort().join(",");
  if (ids !== knownIds) {
    cy.elements().remove();
    cy.add(elements);
    cy.layout({ name: "breadthfirst", directed: true, spacingFactor: 1.3, padding: 20 }).run();
    knownIds = ids;
  } else {
    for (const e of elements) cy.getElementById(e.data.id).data(e.data);
  }
  const names = [...new Set(g.nodes.filter(n => n.data.kind === "service" && n.data.label !== "unknown")
                                    .map(n => n.data.label))].sort();
  if (names.join() !== services.join()) {
    services = names;
    const sel = document.getElementById("service");
    const current = sel.value;
    sel.innerHTML = names.map(n => `<option>${n}</option>`).join("");
    if (names.includes(current)) sel.value = current;
  }
  // A text index of the graph (the canvas has none): screen readers and tests read it.
  document.getElementById("graph-index").innerHTML =
    g.nodes.filter(n => n.data.kind === "workload")
      .map(n => `<li class="node" data-id="${n.data.id}">${n.data.label}</li>`).join("") +
    g.edges.map(e => `<li class="edge" data-source="${e.data.source}" data-target="${e.data.target}"` +
      ` data-mtls="${e.data.mtls}">${e.data.source} → ${e.data.target}: ${e.data.label}</li>`).join("");
  document.body.dataset.graphNodes = cy.nodes("[kind = 'workload']").length;
  document.body.dataset.graphEdges = cy.edges().length;
}

function drawChart(id, values) {
  const svg = document.getElementById(id);
  const pts = values.map(([t, v]) => [Number(t), Number(v)]).filter(([, v]) => isFinite(v));
  if (!pts.length) { svg.innerHTML = '<text x="4" y="40">no data yet</text>'; return; }
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0] || t0 + 1;
  const vmax = Math.max(...pts.map(p => p[1]), 1e-9);
  const xy = pts.map(([t, v]) => `${((t - t0) / Math.max(t1 - t0, 1)) * 296 + 2},${76 - (v / vmax) * 66}`);
  svg.innerHTML = `<polyline points="${xy.join(" ")}"/><text x="4" y="10">max ${vmax.toPrecision(3)}</text>`;
}

async function refreshService() {
  const name = document.getElementById("service").value;
  if (!name) return;
  const s = await getJSON(`/api/service?name=${encodeURIComponent(name)}`);
  drawChart("chart-rps", s.series.rps);
  drawChart("chart-errors", s.series.errors);
  drawChart("chart-p99", s.series.p99);
}

async function refreshProxies() {
  const p = await getJSON("/api/proxies");
  const rows = p.proxies.map(x => {
    const types = x.types.map(t => `${t.type}${t.nack ? " ✗" : ""} ${t.version}`).join("<br>");
    const nacks = x.nacks.map(n => `<span class="bad">${n.type}: ${n.error}</span>`).join("<br>");
    const state = x.connected ? (x.synced ? '<span class="ok">SYNCED</span>' : '<span class="bad">NOT SYNCED</span>')
                              : '<span class="bad">DISCONNECTED</span>';
    return `<tr><td>${x.name}</td><td>${state}</td><td>${types}</td><td>${nacks || "-"}</td></tr>`;
  });
  document.querySelector("#proxies tbody").innerHTML = rows.join("");
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    await Promise.all([refreshGraph(), refreshProxies()]);
    await refreshService();
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (e) {
    status.textContent = `error: ${e.message}`;
  }
}

document.getElementById("service").addEventListener("change", refreshService);
refresh();
setInterval(refresh, REFRESH);
