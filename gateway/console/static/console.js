// driftgate console: error display for htmx requests, and the shadow charts (uPlot).
// Loaded as a file (the CSP forbids inline scripts); no build step.
"use strict";

(function () {
  function flash(text, ok) {
    const box = document.getElementById("flash");
    if (!box) return;
    const p = document.createElement("p");
    p.className = "flash " + (ok ? "ok" : "error");
    p.textContent = text;
    box.replaceChildren(p);
  }

  // a refusal is the API's own JSON error body: show its code and message as they are
  document.addEventListener("htmx:responseError", function (event) {
    const xhr = event.detail.xhr;
    let text = "request failed: HTTP " + xhr.status;
    try {
      const body = JSON.parse(xhr.responseText);
      if (body && body.error) text = body.error.code + ": " + body.error.message;
    } catch (e) { /* not JSON: keep the status line */ }
    if (xhr.status === 401) text += " (sign in again)";
    flash(text, false);
  });
  document.addEventListener("htmx:sendError", function () {
    flash("the gateway did not answer; check that it is running", false);
  });

  // ---- shadow charts ----------------------------------------------------------------------
  const charts = {};

  function size(el) {
    return { width: Math.max(300, el.clientWidth || 600), height: 200 };
  }

  function draw(id, data, series) {
    const el = document.getElementById(id);
    if (!el) return;
    if (charts[id]) {
      charts[id].setData(data);
      return;
    }
    const opts = Object.assign(size(el), {
      series: [{}].concat(series),
      axes: [{}, { size: 50 }],
      legend: { live: false },
    });
    charts[id] = new uPlot(opts, data, el);
  }

  function column(points, key) {
    return points.map(function (p) { return p[key] === null || p[key] === undefined ? null : p[key]; });
  }

  async function refreshCharts() {
    const box = document.getElementById("charts");
    if (!box || typeof uPlot === "undefined") return;
    let body;
    try {
      const reply = await fetch(box.dataset.series, { credentials: "same-origin" });
      if (!reply.ok) return;
      body = await reply.json();
    } catch (e) {
      return;
    }
    const points = body.points || [];
    document.getElementById("charts-empty").hidden = points.length > 0;
    box.dataset.points = String(points.length);
    if (!points.length) return;
    const t = column(points, "t");
    draw("chart-agreement", [t, column(points, "overlap"), column(points, "rbo"),
      column(points, "floor_overlap"), column(points, "floor_rbo")], [
      { label: "overlap@k", stroke: "#2b59c3", width: 2 },
      { label: "RBO", stroke: "#1c7c43", width: 2 },
      { label: "A/A floor overlap", stroke: "#2b59c3", dash: [6, 4] },
      { label: "A/A floor RBO", stroke: "#1c7c43", dash: [6, 4] },
    ]);
    draw("chart-latency", [t, column(points, "latency_ratio")], [
      { label: "shadow / read latency", stroke: "#a15c00", width: 2 },
    ]);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (document.getElementById("charts")) {
      refreshCharts();
      setInterval(refreshCharts, 5000);
    }
  });
})();
