// mso dashboard: applies the page's Server-Sent Events (see mso/web/app.py).
//   swap   {id: html}         replace the inner HTML of element #id (server-rendered, escaped)
//   log    [{ts, replica, stream, line}]  append log lines (as text) under their replica
//   events html               new event rows, newest first
//   points {subset: [point]}  new chart points (charts.js listens for "mso:points")
(function () {
  "use strict";
  document.addEventListener("submit", function (ev) {
    var button = ev.submitter;
    var question = button && button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) ev.preventDefault();
  });
  var url = document.body.getAttribute("data-stream");
  if (!url || !window.EventSource) return;
  var live = document.getElementById("live");
  var source = new EventSource(url);
  source.onopen = function () { live.className = "live on"; };
  source.onerror = function () { live.className = "live off"; };
  source.addEventListener("swap", function (ev) {
    var fragments = JSON.parse(ev.data);
    Object.keys(fragments).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) el.innerHTML = fragments[id];
    });
    document.body.setAttribute("data-updated", String(Date.now()));
  });
  source.addEventListener("log", function (ev) {
    var logs = document.getElementById("logs");
    JSON.parse(ev.data).forEach(function (r) {
      var section = logs.querySelector('section[data-replica="' + CSS.escape(r.replica) + '"]');
      if (!section) {
        section = document.createElement("section");
        section.className = "log";
        section.setAttribute("data-replica", r.replica);
        var h = document.createElement("h3");
        h.textContent = r.replica;
        section.appendChild(h);
        section.appendChild(document.createElement("pre"));
        logs.appendChild(section);
      }
      var pre = section.querySelector("pre");
      var span = document.createElement("span");
      span.className = r.stream;
      span.textContent = new Date(r.ts * 1000).toTimeString().slice(0, 8) + " " + r.line + "\n";
      pre.appendChild(span);
      while (pre.childNodes.length > 200) pre.removeChild(pre.firstChild);
      pre.scrollTop = pre.scrollHeight;
    });
  });
  source.addEventListener("events", function (ev) {
    var rows = document.getElementById("event-rows");
    if (rows) rows.insertAdjacentHTML("afterbegin", JSON.parse(ev.data));
  });
  source.addEventListener("points", function (ev) {
    document.dispatchEvent(new CustomEvent("mso:points", {detail: JSON.parse(ev.data)}));
  });
})();
