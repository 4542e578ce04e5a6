// The rollout page's live charts (uPlot): stable vs canary, one point a second.
(function () {
  "use strict";
  var KEEP = 300;
  var COLORS = {stable: "#2f6fdf", canary: "#e0702a", preview: "#8a4fd0"};
  var byTime = {};  // t -> {subset: point}
  var subsets = [];
  function add(series) {
    Object.keys(series).forEach(function (subset) {
      if (subsets.indexOf(subset) < 0) subsets.push(subset);
      series[subset].forEach(function (p) { (byTime[p.t] = byTime[p.t] || {})[subset] = p; });
    });
    var ts = Object.keys(byTime).map(Number).sort(function (a, b) { return a - b; });
    ts.slice(0, Math.max(0, ts.length - KEEP)).forEach(function (t) { delete byTime[t]; });
    subsets.sort(function (a, b) { return a === "stable" ? -1 : b === "stable" ? 1 : a < b ? -1 : 1; });
  }
  function columns(field) {
    var ts = Object.keys(byTime).map(Number).sort(function (a, b) { return a - b; });
    var data = [ts];
    subsets.forEach(function (subset) {
      data.push(ts.map(function (t) {
        var p = byTime[t][subset];
        var v = p ? p[field] : null;
        if (v === null || v === undefined) return null;
        return field === "error_rate" ? v * 100 : v;
      }));
    });
    return data;
  }
  var charts = {};
  function draw() {
    document.querySelectorAll(".chart").forEach(function (el) {
      var field = el.getAttribute("data-field");
      var data = columns(field);
      var chart = charts[field];
      if (chart && chart.series.length !== subsets.length + 1) { chart.destroy(); chart = null; }
      if (!chart) {
        el.innerHTML = "";
        chart = charts[field] = new uPlot({
          title: el.getAttribute("data-title"), width: Math.max(320, el.clientWidth), height: 200,
          series: [{}].concat(subsets.map(function (s) {
            return {label: s, stroke: COLORS[s] || "#555", width: 2, spanGaps: false};
          })),
          axes: [{}, {size: 60}],
          scales: {y: {range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; }}},
        }, data, el);
      } else {
        chart.setData(data);
      }
      el.setAttribute("data-points", String(data[0].length));
    });
  }
  add(JSON.parse(document.getElementById("series").textContent));
  draw();
  document.addEventListener("mso:points", function (ev) { add(ev.detail); draw(); });
})();
