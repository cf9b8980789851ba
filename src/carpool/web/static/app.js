// carpool WUI: live refresh of the dashboard and confirmations; no framework, no build.
"use strict";

function refreshLive(box) {
  fetch(box.dataset.refresh, {headers: {"X-Requested-With": "fetch"}, credentials: "same-origin"})
    .then(function (r) {
      if (r.status === 401) { window.location = "/login"; return null; }
      return r.ok ? r.text() : null;
    })
    .then(function (html) {
      if (html !== null && html !== undefined) {
        box.innerHTML = html;
        box.dataset.updated = String(Date.now());
      }
    })
    .catch(function () { /* the unit may be restarting: try again at the next tick */ });
}

document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("live");
  if (box) { setInterval(function () { refreshLive(box); }, 2000); }
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.dataset.confirm)) { e.preventDefault(); }
    });
  });
});
