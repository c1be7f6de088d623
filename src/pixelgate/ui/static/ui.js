// pixelgate web UI: the generate page's estimate, submit and live progress (no inline
// script anywhere: the Content-Security-Policy allows only this file).
"use strict";

(function () {
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // a confirmation on dangerous buttons (data-confirm="...")
  document.addEventListener("click", function (ev) {
    const button = ev.target.closest("button[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) ev.preventDefault();
  });

  const form = document.getElementById("generate-form");
  if (!form) return;
  const csrf = form.dataset.csrf;
  const catalog = JSON.parse(document.getElementById("catalog").dataset.catalog || "[]");
  const provider = document.getElementById("provider");
  const model = document.getElementById("model");
  const caps = document.getElementById("capabilities");
  const estimate = document.getElementById("estimate");
  const errorBox = document.getElementById("generate-error");
  const jobs = document.getElementById("jobs");

  function describe(m) {
    const c = m.capabilities || {};
    const parts = [];
    if (c.sizes && c.sizes.length) parts.push("sizes " + c.sizes.join(", "));
    if (c.max_n) parts.push("up to " + c.max_n + " images");
    for (const [k, v] of Object.entries(c)) if (v === true) parts.push(k.replace(/_/g, " "));
    return m.name + ": $" + m.price_usd + " per image" + (parts.length ? " · " + parts.join(" · ") : "");
  }

  function fillModels() {
    model.replaceChildren(el("option", { value: "" }, "default"));
    const p = catalog.find((x) => x.name === provider.value);
    if (!p) { caps.textContent = "Automatic routing picks the provider."; return; }
    for (const m of p.models) model.appendChild(el("option", { value: m.name }, m.name));
    caps.replaceChildren(...p.models.map((m) => el("div", {}, describe(m))));
  }

  async function post(url) {
    return fetch(url, {
      method: "POST",
      body: new FormData(form),
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
      credentials: "same-origin",
    });
  }

  let timer = null;
  async function refreshEstimate() {
    const prompt = document.getElementById("prompt").value.trim();
    const template = document.getElementById("template").value;
    if (!prompt && !template) { estimate.textContent = "Cost estimate: fill in a prompt."; return; }
    const r = await post("/ui/estimate");
    const body = await r.json();
    if (!r.ok) { estimate.textContent = "Cost estimate: " + body.error.message; return; }
    estimate.textContent = "Cost estimate: " + body.credits + " credits ($" + body.usd + ") on " +
      body.provider + "/" + body.model + (body.affordable ? "" : " · more than your balance");
  }
  function scheduleEstimate() { clearTimeout(timer); timer = setTimeout(refreshEstimate, 300); }

  function track(gen) {
    const item = el("li", { class: "job", "data-generation": gen.id });
    const title = el("a", { href: "/ui/generations/" + gen.id }, gen.prompt.slice(0, 60) || gen.id);
    const status = el("span", { class: "badge" }, gen.status);
    const bar = el("progress", { max: "100", value: String(gen.progress || 0) });
    const percent = el("span", { class: "percent" }, (gen.progress || 0) + " %");
    const detail = el("div", { class: "muted detail" }, "");
    const images = el("div", { class: "results" });
    item.append(title, " ", status, el("br"), bar, " ", percent, detail, images);
    jobs.prepend(item);

    const stream = new EventSource("/v1/generations/" + gen.id + "/events");
    const STATES = { queued: "PENDING", requeued: "PENDING", released: "PENDING", started: "PROCESSING",
      succeeded: "SUCCEEDED", failed: "FAILED", canceled: "CANCELED" };
    function show(data) {
      if (STATES[data.type]) status.textContent = STATES[data.type];
      if (typeof data.progress === "number") {
        bar.value = data.progress; percent.textContent = data.progress + " %";
      }
      const bits = [];
      if (data.provider) bits.push("provider " + data.provider);
      if (data.type === "retrying") bits.push("retrying after attempt " + data.attempt);
      if (data.type === "attempt_failed") bits.push("attempt " + data.attempt + " failed");
      if (data.message) bits.push(data.message);
      if (bits.length) detail.textContent = bits.join(" · ");
      if (data.type === "partial_image" && data.url) {
        images.replaceChildren(el("img", { src: data.url, class: "partial", alt: "partial image" }));
      }
    }
    async function finish() {
      stream.close();
      try { await showFinal(); } finally {
        // counted once the item shows the final state, not before its fetch returns
        jobs.dataset.finished = String(Number(jobs.dataset.finished || 0) + 1);
      }
    }
    async function showFinal() {
      const r = await fetch("/v1/generations/" + gen.id, { headers: { "Accept": "application/json" } });
      if (!r.ok) return;
      const g = await r.json();
      status.textContent = g.status;
      status.className = "badge status-" + g.status.toLowerCase();
      if (g.status === "SUCCEEDED") { bar.value = 100; percent.textContent = "100 %"; }
      if (g.error) detail.textContent = g.error.code + ": " + (g.error.message || "");
      images.replaceChildren(...g.images.map((img) => {
        const a = el("a", { href: img.url, download: "" });
        a.appendChild(el("img", { src: img.url, class: "result", alt: "result " + img.id }));
        return a;
      }));
    }
    let done = false;
    function end() { if (!done) { done = true; finish(); } }
    for (const type of ["queued", "waiting", "started", "provider_selected", "provider_job", "progress",
      "partial_image", "retrying", "attempt_failed", "breaker", "race", "released", "requeued"]) {
      stream.addEventListener(type, (ev) => show(JSON.parse(ev.data)));
    }
    for (const type of ["succeeded", "failed", "canceled"]) {
      stream.addEventListener(type, (ev) => { show(JSON.parse(ev.data)); end(); });
    }
    // the server closes the stream after the final event: do not reconnect then
    stream.onerror = () => { if (done) stream.close(); };
  }

  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    errorBox.hidden = true;
    const r = await post("/ui/generate");
    const body = await r.json();
    if (!r.ok) {
      errorBox.textContent = body.error.message + " (request " + body.error.request_id + ")";
      errorBox.hidden = false;
      return;
    }
    track(body);
  });
  provider.addEventListener("change", () => { fillModels(); scheduleEstimate(); });
  form.addEventListener("input", scheduleEstimate);
  form.addEventListener("change", scheduleEstimate);
  fillModels();
})();
