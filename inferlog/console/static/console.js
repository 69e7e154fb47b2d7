// Draws the charts whose data the server embedded as JSON (<script type="application/json">): nothing of a
// payload is ever evaluated or inserted as HTML here; Plotly draws text as SVG text.
"use strict";
(function () {
  function data(el) { return JSON.parse(document.getElementById(el.dataset.source).textContent); }
  var config = { displayModeBar: false, responsive: true, staticPlot: false };
  function draw(el) {
    var d = data(el), kind = el.dataset.chart, traces, layout;
    var base = { margin: { l: 40, r: 10, t: 24, b: 30 }, showlegend: kind !== "spark", legend: { orientation: "h" } };
    if (kind === "spark") {
      traces = [{ x: d.x, y: d.records, type: "scatter", mode: "lines", name: "records", line: { width: 1 } },
                { x: d.x, y: d.failed, type: "scatter", mode: "lines", name: "failed", line: { width: 1, color: "#a4161a" } }];
      layout = Object.assign(base, { margin: { l: 0, r: 0, t: 0, b: 0 }, xaxis: { visible: false }, yaxis: { visible: false } });
    } else if (kind === "records") {
      traces = [{ x: d.x, y: d.records, type: "bar", name: "records" },
                { x: d.x, y: d.failed, type: "bar", name: "failed (request only)", marker: { color: "#a4161a" } }];
      layout = Object.assign(base, { title: { text: "records per interval", font: { size: 13 } }, barmode: "overlay" });
    } else if (kind === "latency") {
      traces = [{ x: d.x, y: d.p50, type: "scatter", mode: "lines+markers", name: "p50 ms", connectgaps: false },
                { x: d.x, y: d.p99, type: "scatter", mode: "lines+markers", name: "p99 ms", connectgaps: false }];
      layout = Object.assign(base, { title: { text: "latency (ms)", font: { size: 13 } } });
    } else {
      traces = [{ x: d.x, y: d.tokens, type: "bar", name: "tokens" }];
      layout = Object.assign(base, { title: { text: "tokens per interval", font: { size: 13 } } });
    }
    window.Plotly.newPlot(el, traces, layout, config).then(function () { el.dataset.drawn = "1"; });
  }
  function init() {
    if (!window.Plotly) { return; }
    document.querySelectorAll("[data-chart]").forEach(draw);
  }
  document.addEventListener("DOMContentLoaded", init);
  document.querySelectorAll("select#range").forEach(function (s) {
    s.addEventListener("change", function () { s.form.submit(); });
  });
})();
