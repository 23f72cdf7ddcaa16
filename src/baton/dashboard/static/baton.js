// Baton dashboard: live refresh from the server's change events (one EventSource per tab),
// debounced, paused while the tab is hidden or the user paused it, and slowed down when
// the page itself is slow to answer. Plus toasts for action results.
(function () {
  "use strict";
  var body = document.body;
  var paused = localStorage.getItem("baton.live") === "off";
  var dirty = false, timer = null, minGap = 500, lastRefresh = 0, started = 0;
  var toggle = document.getElementById("live-toggle");

  function show() {
    if (!toggle) return;
    toggle.classList.toggle("off", paused);
    toggle.querySelector(".live-label").textContent = paused ? "paused" : "live";
  }

  function refresh() {
    timer = null;
    if (paused || document.hidden) { dirty = true; return; }
    dirty = false;
    lastRefresh = Date.now();
    htmx.trigger(body, "baton:changed");
  }

  function schedule() {
    if (timer) return;
    var wait = Math.max(150, minGap - (Date.now() - lastRefresh));
    timer = setTimeout(refresh, wait);
  }

  document.addEventListener("htmx:beforeRequest", function (e) {
    if (e.detail.elt && e.detail.elt.id === "live") started = Date.now();
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    if (e.detail.elt && e.detail.elt.id === "live" && started) {
      var took = Date.now() - started;
      // A slow page refreshes less often: at least four times its own duration apart.
      minGap = Math.min(30000, Math.max(500, took * 4));
    }
  });
  // A page that is not complete yet (the chart's older minutes) asks for a refresh soon.
  function soon() {
    if (document.querySelector("[data-refresh-soon]")) setTimeout(schedule, 600);
  }
  document.addEventListener("htmx:afterSettle", function (e) {
    if (e.detail.elt && e.detail.elt.id === "live") soon();
  });
  soon();

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && dirty) schedule();
  });
  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      localStorage.setItem("baton.live", paused ? "off" : "on");
      show();
      if (!paused) schedule();
    });
  }
  show();

  if (window.EventSource && body.dataset.events) {
    var source = new EventSource(body.dataset.events);
    source.addEventListener("change", schedule);
    source.addEventListener("open", function () { if (toggle) toggle.classList.remove("down"); });
    source.addEventListener("error", function () { if (toggle) toggle.classList.add("down"); });
    window.addEventListener("beforeunload", function () { source.close(); });
  }

  // Information toasts fade after a few seconds; an error (bad) or a partial refusal (warn)
  // stays until dismissed with its close button (a real <button>: Tab reaches it).
  function toast(text, kind) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var el = document.createElement("div");
    el.className = "toast " + (kind || "");
    var msg = document.createElement("span");
    msg.className = "toast-text";
    msg.textContent = text;  // text, never HTML
    el.appendChild(msg);
    if (kind === "bad" || kind === "warn") {
      el.setAttribute("role", "alert");
      var close = document.createElement("button");
      close.type = "button";
      close.className = "toast-close";
      close.setAttribute("aria-label", "Dismiss");
      close.textContent = "\u00d7";
      close.addEventListener("click", function () { el.remove(); });
      el.appendChild(close);
      box.appendChild(el);
      return;
    }
    box.appendChild(el);
    setTimeout(function () { el.classList.add("gone"); }, 3500);
    setTimeout(function () { el.remove(); }, 4200);
  }
  body.addEventListener("baton:toast", function (e) {
    var d = e.detail || {};
    toast(d.message || "done", d.kind || "");
  });
  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr, text = xhr.status + " " + (xhr.statusText || "error");
    try { var data = JSON.parse(xhr.responseText); if (data.message || data.error) text = data.message || data.error; } catch (err) {
      if (xhr.responseText && xhr.responseText.length < 200) text = xhr.responseText;
    }
    toast(text, "bad");
  });
})();
