// fluster dashboard: live updates without a build step. The server renders every page; this script reloads the
// page's <main> when the topics it shows change (server-sent events from /api/events), appends new log lines
// (/api/logstream/<job>), and keeps the "… ago" times current.
(function () {
  "use strict";
  var main = document.getElementById("content");
  var live = document.getElementById("live");
  var topics = (main && main.dataset.topics ? main.dataset.topics.split(" ") : []).filter(Boolean);
  var loading = false, again = false, lastLoad = 0;

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    return url.toString();
  }

  function reload() {
    if (loading) { again = true; return; }
    var wait = Math.max(0, 500 - (Date.now() - lastLoad)); // at most two reloads a second
    loading = true;
    setTimeout(function () {
      fetch(fragmentUrl(), { headers: { Accept: "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html !== null) { main.innerHTML = html; main.dataset.version = String(Number(main.dataset.version || 0) + 1); tickAges(); }
        })
        .catch(function () {})
        .then(function () {
          loading = false; lastLoad = Date.now();
          if (again) { again = false; reload(); }
        });
    }, wait);
  }

  if (topics.length && window.EventSource) {
    var events = new EventSource("/api/events");
    events.addEventListener("hello", function () { live.dataset.live = "1"; });
    events.addEventListener("change", function (ev) {
      var changed = JSON.parse(ev.data).topics || [];
      if (changed.some(function (t) { return topics.indexOf(t) >= 0; })) { reload(); }
    });
    events.onerror = function () { live.dataset.live = "0"; };
    events.onopen = function () { live.dataset.live = "1"; };
  }

  // -- the live log of a job page --------------------------------------------------------------------------
  var log = document.getElementById("log");
  if (log && window.EventSource) {
    var path = log.dataset.job.split("/").map(encodeURIComponent).join("/");
    var lines = new EventSource("/api/logstream/" + path + "?after=" + encodeURIComponent(log.dataset.after || "0"));
    var add = function (cls, attempt, text, seq) {
      var stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      var div = document.createElement("div");
      div.className = "line " + cls;
      if (seq) { div.dataset.seq = String(seq); }
      var a = document.createElement("span");
      a.className = "a";
      a.textContent = String(attempt);
      div.appendChild(a);
      div.appendChild(document.createTextNode(text));
      log.appendChild(div);
      log.dataset.after = String(seq || log.dataset.after);
      if (stick) { log.scrollTop = log.scrollHeight; }
    };
    lines.addEventListener("line", function (ev) {
      var d = JSON.parse(ev.data);
      add(d.stream, d.attempt, d.line, d.seq);
    });
    lines.addEventListener("end", function (ev) {
      var d = JSON.parse(ev.data);
      add("end", d.attempt, "(attempt " + d.attempt + " ended)", d.seq);
    });
  }

  // -- ages ----------------------------------------------------------------------------------------------
  function human(seconds) {
    if (seconds < 1) { return Math.round(seconds * 1000) + "ms"; }
    if (seconds < 60) { return seconds.toFixed(1) + "s"; }
    var m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
    if (m < 60) { return m + "m" + (s < 10 ? "0" : "") + s + "s"; }
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 24) { return h + "h" + (m < 10 ? "0" : "") + m + "m"; }
    return Math.floor(h / 24) + "d" + (h % 24 < 10 ? "0" : "") + (h % 24) + "h";
  }
  function tickAges() {
    var now = Date.now();
    document.querySelectorAll(".ago[data-ms]").forEach(function (el) {
      el.textContent = human(Math.max(0, (now - Number(el.dataset.ms)) / 1000)) + " ago";
    });
  }
  setInterval(tickAges, 1000);
})();
