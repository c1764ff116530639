// clearance dashboard: the few things a page does by itself.
// - The approvals list follows a Server-Sent Events stream and fetches itself again when it changes,
//   keeping any comment being typed.
// - A form with data-confirm asks before it is sent (the kill switch).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  const list = document.getElementById("approvals");
  const status = document.getElementById("live");
  if (!list || !window.EventSource) return;
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const kept = {};
      list.querySelectorAll("textarea[data-keep]").forEach((t) => { if (t.value) kept[t.dataset.keep] = t.value; });
      const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.keep : null;
      const response = await fetch(list.dataset.list, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.redirected || !response.ok) { window.location.reload(); return; }
      list.innerHTML = await response.text();
      list.querySelectorAll("textarea[data-keep]").forEach((t) => {
        if (kept[t.dataset.keep]) t.value = kept[t.dataset.keep];
        if (focused && t.dataset.keep === focused) t.focus();
      });
      list.dataset.updated = String(Date.now());
      if (status) status.textContent = "Updated " + new Date().toLocaleTimeString();
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  const source = new EventSource(list.dataset.live);
  source.addEventListener("ready", () => { list.dataset.live_ready = "1"; if (status) status.textContent = "Live"; });
  source.addEventListener("changed", refresh);
  source.addEventListener("signed-out", () => { source.close(); window.location.assign("/login"); });
  source.onerror = () => { if (status) status.textContent = "Reconnecting…"; };
});
