// Live updates: every data-refresh-ms of #live (10 s by default), fetch the page again and swap in the parts
// that change. Without JavaScript the page is the same, as of its load.
(function () {
  "use strict";
  var ids = ["outage", "timeline", "checks", "fleet", "rotation", "matrix"];
  function refresh() {
    fetch(location.pathname + location.search, { headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var now = document.getElementById(id), next = doc.getElementById(id);
          if (now && next) { now.replaceWith(next); }
        });
      })
      .catch(function () { /* keep what is shown; the next round retries */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    var ms = live ? parseInt(live.dataset.refreshMs, 10) : 10000;
    setInterval(refresh, ms > 0 ? ms : 10000);
  });
})();
