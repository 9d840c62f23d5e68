/* The operator console's charts: drawn with the vendored Chart.js (static/vendor/chartjs) from the
 * JSON block the page carries (#ccsso-chart-data). No inline script, nothing fetched: the console's
 * Content-Security-Policy allows scripts from its own origin only. The same numbers are in the
 * table beside each chart; the canvas has an aria-label and a figcaption. */
(function () {
  "use strict";
  var block = document.getElementById("ccsso-chart-data");
  if (!block || typeof window.Chart === "undefined") {
    return;
  }
  var data;
  try {
    data = JSON.parse(block.textContent);
  } catch (e) {
    return;
  }
  var Chart = window.Chart;
  var reduced = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  Chart.defaults.color = "#1d2433";
  if (reduced) {
    Chart.defaults.animation = false;
  }

  function dataset(series, chartKind, reference) {
    var kind = series.kind || chartKind;
    var ds = {
      label: series.label,
      data: series.data,
      borderColor: series.color,
      backgroundColor: kind === "bar" ? series.color + "cc" : series.color,
      borderWidth: reference ? 2 : (kind === "bar" ? 1 : 2.5),
      pointStyle: series.point,
      pointRadius: reference ? 0 : 3,
      pointHoverRadius: reference ? 0 : 5,
      borderDash: series.dash ? [6, 4] : [],
      tension: 0,
      fill: false,
      order: reference ? 0 : (kind === "bar" ? 2 : 1)
    };
    if (series.kind) {
      ds.type = series.kind;
    }
    return ds;
  }

  function draw(spec) {
    var canvas = document.getElementById("chart-" + spec.id);
    if (!canvas) {
      return;
    }
    var datasets = spec.series.map(function (s) { return dataset(s, spec.kind, false); });
    (spec.reference || []).forEach(function (r) { datasets.push(dataset(r, "line", true)); });
    /* a reference line (the alert threshold) has no tooltip of its own: its value is in the legend */
    new Chart(canvas, {
      type: spec.kind,
      data: { labels: spec.labels, datasets: datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        indexAxis: spec.horizontal ? "y" : "x",
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { beginAtZero: true, ticks: { precision: 0, maxRotation: 0, autoSkip: true } },
          y: { beginAtZero: true, ticks: { precision: 0 } }
        },
        plugins: {
          legend: { labels: { usePointStyle: true } },
          tooltip: {
            filter: function (item) { return item.datasetIndex < spec.series.length; }
          }
        }
      }
    });
  }

  (data.charts || []).forEach(draw);
}());
