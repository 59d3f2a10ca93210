// Monoscope: draws every plot whose spec the server put in a <script type="application/json" class="plot-spec">.
// Data never goes through innerHTML: specs are parsed JSON, and plotly sets text as text. htmx.onLoad runs for the
// page and again for every swapped-in fragment, so charts inside htmx partials draw too.
(function () {
  "use strict";
  function drawPlots(root) {
    if (typeof Plotly === "undefined") return;
    root.querySelectorAll("script.plot-spec").forEach(function (script) {
      var area = script.nextElementSibling;
      if (!area || area.dataset.drawn) return;
      var spec = JSON.parse(script.textContent);
      var layout = Object.assign({ margin: { l: 50, r: 10, t: 30, b: 40 }, bargap: 0.02,
                                   font: { size: 11 }, showlegend: spec.data.length > 1 }, spec.layout || {});
      Plotly.newPlot(area, spec.data, layout, { displaylogo: false, responsive: true,
                                               modeBarButtonsToRemove: ["lasso2d", "select2d"] });
      area.dataset.drawn = "1";
    });
  }
  // Show the server's 404/422 message in place of the fragment instead of silently ignoring the response.
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var status = evt.detail.xhr.status;
    if (status === 404 || status === 422 || status === 503) { evt.detail.shouldSwap = true; evt.detail.isError = false; }
  });
  function start() {
    if (typeof htmx !== "undefined") htmx.onLoad(drawPlots);
    drawPlots(document);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
