/* LLM Gateway dashboard: charts, copy buttons, confirmations and the
   playground. Loaded as a file (the Content-Security-Policy allows no inline
   script); every text from the server is set with textContent, never HTML. */
"use strict";
(function () {
  var PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#ec4899", "#14b8a6",
                 "#64748b", "#84cc16"];

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function readJSON(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function money(value) {
    return "$" + Number(value).toFixed(value > 0 && value < 0.01 ? 6 : 2);
  }

  function drawCharts() {
    if (typeof window.Chart === "undefined") return;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = "#6b7280";
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var data = readJSON(canvas.dataset.source);
      if (!data) return;
      var kind = canvas.dataset.chart;
      var config;
      if (kind === "bar") {
        var part = data[canvas.dataset.key];
        config = {
          type: "bar",
          data: {labels: part.labels, datasets: [{label: "Spend (USD)", data: part.cost,
                                                  backgroundColor: PALETTE[0], borderRadius: 4}]},
          options: {indexAxis: "y", maintainAspectRatio: false, plugins: {legend: {display: false},
                    tooltip: {callbacks: {label: function (c) { return money(c.parsed.x); }}}},
                    scales: {x: {beginAtZero: true, ticks: {callback: function (v) { return money(v); }}}}}
        };
      } else {
        var series = data[kind];
        var labels = data.days.map(function (d) { return d.slice(5); });
        var datasets = data.models.map(function (model, i) {
          return {label: model, data: series[model], backgroundColor: PALETTE[i % PALETTE.length],
                  borderRadius: 3, stack: "all"};
        });
        config = {
          type: "bar",
          data: {labels: labels, datasets: datasets},
          options: {maintainAspectRatio: false, animation: false,
                    plugins: {legend: {position: "bottom", labels: {boxWidth: 12}},
                              tooltip: {callbacks: {label: function (c) {
                                return c.dataset.label + ": " + (kind === "spend" ? money(c.parsed.y) : c.parsed.y);
                              }}}},
                    scales: {x: {stacked: true, grid: {display: false}},
                             y: {stacked: true, beginAtZero: true,
                                 ticks: kind === "spend" ? {callback: function (v) { return money(v); }}
                                                         : {precision: 0}}}}
        };
      }
      canvas.dataset.total = String(totalOf(config.data.datasets));
      new Chart(canvas, config);
    });
  }

  function totalOf(datasets) {
    var sum = 0;
    datasets.forEach(function (d) { d.data.forEach(function (v) { sum += Number(v); }); });
    return Math.round(sum * 1e6) / 1e6;
  }

  function wireCopyButtons() {
    document.querySelectorAll("[data-copy-target]").forEach(function (button) {
      button.addEventListener("click", function () {
        var text = document.getElementById(button.dataset.copyTarget).textContent;
        var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 2000); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { selectText(button.dataset.copyTarget); });
        } else {
          selectText(button.dataset.copyTarget);
          if (document.execCommand && document.execCommand("copy")) done();
        }
      });
    });
  }

  function selectText(id) {
    var range = document.createRange();
    range.selectNodeContents(document.getElementById(id));
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function wireForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
    // One submission per form: a double click sends it once (the server
    // also refuses a second credit with the same idempotency key).
    document.querySelectorAll("form[data-once]").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
      });
    });
  }

  function wirePlayground() {
    var form = document.getElementById("playground");
    if (!form) return;
    var output = document.getElementById("pg-output");
    var status = document.getElementById("pg-status");
    var meta = document.getElementById("pg-meta");
    var send = document.getElementById("pg-send");

    function addMeta(name, value) {
      var dt = document.createElement("dt"); dt.textContent = name;
      var dd = document.createElement("dd"); dd.textContent = value;
      meta.appendChild(dt); meta.appendChild(dd);
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var messages = [];
      var system = document.getElementById("pg-system").value.trim();
      if (system) messages.push({role: "system", content: system});
      messages.push({role: "user", content: document.getElementById("pg-message").value});
      var body = {model: document.getElementById("pg-model").value, messages: messages, stream: true,
                  stream_options: {include_usage: true}};
      var maxTokens = parseInt(document.getElementById("pg-max-tokens").value, 10);
      if (maxTokens > 0) body.max_tokens = maxTokens;
      output.textContent = ""; output.classList.remove("error"); meta.textContent = "";
      status.textContent = "· streaming…"; send.disabled = true;
      var started = performance.now();
      fetch("/ui/playground/chat", {
        method: "POST", credentials: "same-origin",
        headers: {"content-type": "application/json", "x-csrf-token": csrfToken()},
        body: JSON.stringify(body)
      }).then(function (response) {
        if (!response.ok) {
          return response.json().then(function (err) { throw new Error(err.error ? err.error.message : response.statusText); });
        }
        addMeta("Deployment", response.headers.get("x-gateway-deployment") || "—");
        return readStream(response.body.getReader(), output);
      }).then(function (usage) {
        status.textContent = "· done in " + Math.round(performance.now() - started) + " ms";
        if (usage) addMeta("Tokens", usage.prompt_tokens + " in · " + usage.completion_tokens + " out");
        return refreshBalance();
      }).catch(function (err) {
        output.classList.add("error"); output.textContent = err.message; status.textContent = "· failed";
      }).then(function () { send.disabled = false; });
    });
  }

  function readStream(reader, output) {
    var decoder = new TextDecoder();
    var buffer = "";
    var usage = null;
    function pump() {
      return reader.read().then(function (part) {
        if (part.done) return usage;
        buffer += decoder.decode(part.value, {stream: true});
        var events = buffer.split("\n\n");
        buffer = events.pop();
        events.forEach(function (event) {
          if (event.indexOf("data: ") !== 0) return;
          var data = event.slice(6);
          if (data === "[DONE]") return;
          var chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          (chunk.choices || []).forEach(function (choice) {
            if (choice.delta && choice.delta.content) output.textContent += choice.delta.content;
          });
        });
        return pump();
      });
    }
    return pump();
  }

  function refreshBalance() {
    return fetch("/ui/account.json", {credentials: "same-origin"}).then(function (r) { return r.json(); })
      .then(function (account) {
        if (account.balance === null) return;
        var meta = document.getElementById("pg-meta");
        var dt = document.createElement("dt"); dt.textContent = "Balance now";
        var dd = document.createElement("dd"); dd.textContent = account.balance; dd.id = "pg-balance";
        meta.appendChild(dt); meta.appendChild(dd);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireCopyButtons();
    wireForms();
    wirePlayground();
    drawCharts();
  });
})();
