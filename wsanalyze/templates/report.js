// Click a header to sort its table (table.sortable; numbers as numbers, empty cells
// last; a cell's data-sort, when present, is its key); type in the box above a table
// to keep only the rows containing that text (input.filter, case-insensitive).
// A link to a collapsed pair opens it. No external library, no inline handlers.
(function () {
  "use strict";
  function headRow(t) { return t.tHead ? t.tHead.rows[0] : t.rows[0]; }
  function bodyRows(t) {
    var head = headRow(t);
    return Array.prototype.filter.call(t.rows, function (r) { return r !== head; });
  }
  function key(cell) {
    var k = cell ? cell.getAttribute("data-sort") : null;
    return k !== null ? k : (cell ? cell.textContent.trim() : "");
  }
  function num(s) { return s === "" ? NaN : Number(s); }
  document.querySelectorAll("table.sortable").forEach(function (t) {
    var head = headRow(t);
    Array.prototype.forEach.call(head.cells, function (th, i) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("data-asc") !== "1";
        var rows = bodyRows(t).map(function (r) {
          var k = key(r.cells[i]);
          return { row: r, text: k, n: num(k) };
        });
        rows.sort(function (a, b) {
          var an = !isNaN(a.n), bn = !isNaN(b.n), r;
          if ((a.text === "") !== (b.text === "")) { return a.text === "" ? 1 : -1; }
          if (an && bn) { r = a.n - b.n; }
          else if (an !== bn) { r = an ? -1 : 1; }
          else { r = a.text.localeCompare(b.text, undefined, { numeric: true }); }
          return asc ? r : -r;
        });
        var body = t.tBodies[0] || t, frag = document.createDocumentFragment();
        rows.forEach(function (e) { frag.appendChild(e.row); });
        body.appendChild(frag);
        Array.prototype.forEach.call(head.cells, function (h) { h.removeAttribute("data-asc"); });
        th.setAttribute("data-asc", asc ? "1" : "0");
      });
    });
  });
  document.querySelectorAll("input.filter").forEach(function (box) {
    var t = document.getElementById(box.getAttribute("data-table"));
    if (!t) { return; }
    var count = box.nextElementSibling;
    box.addEventListener("input", function () {
      var q = box.value.trim().toLowerCase(), rows = bodyRows(t), shown = 0;
      rows.forEach(function (r) {
        if (r.filterText === undefined) { r.filterText = r.textContent.toLowerCase(); }
        var hit = q === "" || r.filterText.indexOf(q) !== -1;
        r.hidden = !hit;
        if (hit) { shown += 1; }
      });
      if (count) { count.textContent = q === "" ? "" : shown + " of " + rows.length + " rows"; }
    });
  });
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var el = id ? document.getElementById(id) : null;
    if (el && el.tagName === "DETAILS") { el.open = true; }
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();
})();
