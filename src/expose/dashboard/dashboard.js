// rrguard dashboard: live updates over Server-Sent Events and overrides through the API.
// The page works without this script; with it, rows are replaced one by one as they change.
"use strict";
(() => {
  const body = document.body;
  body.classList.add("js");
  let v = Number(body.dataset.v);
  const layout = body.dataset.layout;
  const msg = document.getElementById("msg");
  const live = document.getElementById("live");
  const token = document.getElementById("token");
  token.value = sessionStorage.getItem("rrguard-token") || "";
  token.addEventListener("input", () => sessionStorage.setItem("rrguard-token", token.value));
  let updates = 0;

  function apply(u) {
    for (const r of u.rows) {
      const row = document.getElementById(r.id);
      if (!row) continue;
      if (r.html !== undefined) row.outerHTML = r.html;
      else if (r.spark !== undefined) row.querySelector(".spark").innerHTML = r.spark;
    }
    for (const b of u.blocks) {
      const el = document.getElementById(b.id);
      if (el) el.outerHTML = b.html;
    }
    v = u.v;
    body.dataset.v = String(v);
    body.dataset.updates = String(++updates);
  }

  function connect() {
    const es = new EventSource("dashboard/events?v=" + v + "&layout=" + layout);
    es.addEventListener("open", () => { live.classList.add("on"); live.textContent = "●"; });
    es.addEventListener("update", (ev) => apply(JSON.parse(ev.data)));
    es.addEventListener("reload", () => location.reload());
    es.addEventListener("error", () => {
      // Reconnect from the version this page shows, not the one the URL was opened with.
      live.classList.remove("on");
      live.textContent = "○";
      es.close();
      setTimeout(connect, 2000);
    });
  }
  connect();

  function say(text) { msg.textContent = text; }

  async function call(method, path, payload) {
    const headers = { Authorization: "Bearer " + token.value.trim() };
    if (payload) headers["Content-Type"] = "application/json";
    const res = await fetch(path, { method, headers, body: payload ? JSON.stringify(payload) : undefined });
    const text = await res.text();
    let detail = text;
    try { detail = JSON.parse(text).error || text; } catch (_) { /* not JSON */ }
    if (!res.ok) throw new Error(res.status + ": " + detail);
    return text;
  }

  const dialog = document.getElementById("override");
  const form = document.getElementById("override-form");
  const ovError = document.getElementById("ov-error");
  document.getElementById("ov-cancel").addEventListener("click", () => dialog.close());

  document.addEventListener("click", async (ev) => {
    const t = ev.target;
    if (!(t instanceof HTMLButtonElement)) return;
    const row = t.closest("tr");
    if (t.classList.contains("set") && row) {
      form.elements.endpoint.value = row.dataset.endpoint;
      form.elements.service.value = row.dataset.service;
      document.getElementById("ov-target").textContent = row.dataset.endpoint + " (" + row.dataset.service + ")";
      form.elements.token.value = token.value;
      ovError.textContent = "";
      dialog.showModal();
    } else if (t.classList.contains("clear")) {
      try {
        await call("DELETE", "api/v1/overrides/" + encodeURIComponent(t.dataset.id));
        say("Override " + t.dataset.id + " cleared.");
      } catch (e) { say("Could not clear the override: " + e.message); }
    }
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = form.elements;
    const payload = {
      endpoint: f.endpoint.value, service: f.service.value, kind: f.kind.value,
      for: f.for.value.trim(), comment: f.comment.value.trim(),
    };
    // The dialog is modal: the token is typed here too, and kept for the session like the header's.
    token.value = f.token.value;
    sessionStorage.setItem("rrguard-token", token.value);
    try {
      await call("POST", "api/v1/overrides", payload);
      dialog.close();
      say(payload.kind + " set on " + payload.endpoint + " for " + payload.for + ".");
    } catch (e) { ovError.textContent = e.message; }
  });
  body.dataset.ready = String(performance.now());
})();
