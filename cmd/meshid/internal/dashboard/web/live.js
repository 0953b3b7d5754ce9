// Live updates: every 10 s, fetch the page again and swap in the parts
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
  setInterval(refresh, 10000);
})();
