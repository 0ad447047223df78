// ctbench leaderboard pages: sortable and filterable tables, offline (no library, no network).
// A table with class "sortable" sorts on a click (or Enter) on a header with data-col; cells
// sort by their data-sort value (numbers where the header says data-type="num", empty last).
// The first click puts the best first (header data-best="asc" or "desc"), the next reverses.
// An <input data-filter="ID"> hides rows of table #ID whose data-search text lacks the query;
// a checkbox <input data-hide-kind="random" data-table="ID"> hides rows of that kind when unticked.
(function () {
  "use strict";

  function cellKey(row, col, numeric) {
    var cell = row.cells[col];
    var raw = cell ? cell.getAttribute("data-sort") : null;
    if (raw === null && cell) raw = cell.textContent.trim();
    if (!numeric) return (raw || "").toLowerCase();
    var n = raw === "" || raw === null ? NaN : Number(raw);
    return isFinite(n) ? n : null;
  }

  function sortBy(table, th) {
    var col = Number(th.getAttribute("data-col"));
    var numeric = th.getAttribute("data-type") === "num";
    var best = th.getAttribute("data-best") || "asc";
    var current = th.getAttribute("aria-sort");
    var dir = current ? (current === "ascending" ? "desc" : "asc") : best;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var ka = cellKey(a, col, numeric), kb = cellKey(b, col, numeric);
      if (ka === null || kb === null) {
        if (ka === kb) return a.getAttribute("data-order") - b.getAttribute("data-order");
        return ka === null ? 1 : -1; // undefined values last, either way
      }
      var c = ka < kb ? -1 : ka > kb ? 1 : 0;
      if (dir === "desc") c = -c;
      return c || a.getAttribute("data-order") - b.getAttribute("data-order");
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
  }

  function applyFilters(table) {
    var box = document.querySelector('input[data-filter="' + table.id + '"]');
    var query = box ? box.value.trim().toLowerCase() : "";
    var hidden = {};
    document.querySelectorAll('input[data-hide-kind][data-table="' + table.id + '"]').forEach(function (c) {
      if (!c.checked) hidden[c.getAttribute("data-hide-kind")] = true;
    });
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var text = (row.getAttribute("data-search") || row.textContent).toLowerCase();
      row.hidden = (query && text.indexOf(query) < 0) || hidden[row.getAttribute("data-kind")] === true;
    });
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row, i) { row.setAttribute("data-order", i); });
    table.querySelectorAll("thead th[data-col]").forEach(function (th) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
      });
    });
  });
  document.querySelectorAll("input[data-filter], input[data-hide-kind]").forEach(function (input) {
    var id = input.getAttribute("data-filter") || input.getAttribute("data-table");
    var table = document.getElementById(id);
    if (table) input.addEventListener("input", function () { applyFilters(table); });
    if (table) input.addEventListener("change", function () { applyFilters(table); });
  });
})();
