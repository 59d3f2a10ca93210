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
      // A spec with links: each point's customdata is a same-site path; a click opens it.
      if (spec.links) area.on("plotly_click", function (evt) {
        var url = evt.points.length ? evt.points[0].customdata : null;
        if (typeof url === "string" && /^\/(?![\/\\])/.test(url)) window.location.assign(url);  // same-site paths only
      });
    });
  }
  // Show the server's 404/422 message in place of the fragment instead of silently ignoring the response.
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var status = evt.detail.xhr.status;
    if ([401, 403, 404, 409, 422, 503].indexOf(status) >= 0) { evt.detail.shouldSwap = true; evt.detail.isError = false; }
  });
  // Blind review, keyboard first: a number key sets the criterion that has focus, Tab moves on (each radio group
  // is one stop), Enter saves and opens the next item (on a disclosure's summary it opens the disclosure, on a link
  // it follows it). The effect-size gap is n/a when logit consistency is 3.
  function rubricKeys(form) {
    if (form.dataset.keysBound) return;
    form.dataset.keysBound = "1";
    function syncGap() {
      var logit = form.querySelector('input[name="logit_consistency"]:checked');
      var perfect = logit && logit.value === "3";
      form.querySelectorAll('input[name="effect_gap"]').forEach(function (input) {
        input.disabled = perfect ? input.value !== "na" : (logit !== null && input.value === "na");
        if (perfect && input.value === "na") input.checked = true;
        if (input.disabled) input.checked = false;
      });
      var gapChosen = form.querySelector('input[name="effect_gap"]:checked');
      form.querySelectorAll('input[name="effect_gap"]').forEach(function (input) { input.required = !gapChosen; });
    }
    form.addEventListener("change", syncGap);
    syncGap();
    form.addEventListener("keydown", function (evt) {
      var target = evt.target;
      if (evt.key === "Enter" && target.type !== "submit" && !target.closest("summary, a")) {
        evt.preventDefault();
        form.requestSubmit(form.querySelector("#save"));
        return;
      }
      var fieldset = target.closest && target.closest("fieldset.criterion");
      if (!fieldset || target.type === "text" || evt.ctrlKey || evt.metaKey || evt.altKey) return;
      var value = /^[0-9]$/.test(evt.key) ? evt.key : (evt.key === "n" ? "na" : null);
      if (value === null) return;
      var radio = fieldset.querySelector('input[type="radio"][value="' + value + '"]');
      if (!radio || radio.disabled) return;
      evt.preventDefault();
      radio.checked = true;
      radio.focus();
      radio.dispatchEvent(new Event("change", { bubbles: true }));
    });
  }
  // Unit pages: colour the context tokens by activation or by ablation effect; the choice is kept across pages.
  function colourBy(root) {
    var examples = document.getElementById("examples");
    if (!examples) return;
    var saved = null;
    try { saved = window.localStorage.getItem("monoscope.colourBy"); } catch (e) { /* storage off */ }
    root.querySelectorAll('input[name="colour-by"]').forEach(function (radio) {
      if (saved) radio.checked = radio.value === saved;
      radio.addEventListener("change", function () {
        examples.classList.toggle("by-effect", radio.value === "effect" && radio.checked);
        try { window.localStorage.setItem("monoscope.colourBy", radio.value); } catch (e) { /* storage off */ }
      });
    });
    var chosen = root.querySelector('input[name="colour-by"]:checked');
    examples.classList.toggle("by-effect", !!chosen && chosen.value === "effect");
  }
  function start() {
    document.querySelectorAll("form[data-keyboard-rubric]").forEach(rubricKeys);
    colourBy(document);
    if (typeof htmx !== "undefined") htmx.onLoad(drawPlots);
    drawPlots(document);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
