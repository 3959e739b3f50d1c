// medsort report: gallery, large view, map and review marks. No server, no libraries.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("medsort-data").textContent);
  var I = D.items, N = I.path.length, PAGE = 60;
  var STORE = "medsort-review:" + D.run_id;
  var groups = {}, groupIds = [];
  D.groups.forEach(function (g) { groups[g.id] = g; groupIds.push(g.id); });
  var $ = function (id) { return document.getElementById(id); };

  // ---- review state: per-image marks, whole-group marks, moves; kept in localStorage ----
  var state = loadState();
  function loadState() {
    var empty = { marks: {}, groupMarks: {}, moves: {} };
    try {
      var saved = JSON.parse(window.localStorage.getItem(STORE) || "null");
      if (saved && saved.marks && saved.groupMarks && saved.moves) return saved;
    } catch (e) { /* storage unavailable or corrupt: start empty */ }
    return empty;
  }
  function saveState() {
    try { window.localStorage.setItem(STORE, JSON.stringify(state)); } catch (e) {
      status("This browser does not keep marks (storage is off): download before closing.");
    }
  }
  function key(i) { return I.path[i] + "\u0000" + I.item[i]; }
  var rowOf = new Map();
  for (var r = 0; r < N; r++) rowOf.set(key(r), r);
  function groupOf(i) { var m = state.moves[key(i)]; return m === undefined ? I.group[i] : m; }
  function labelOf(i) {
    var own = state.marks[key(i)];
    if (own) return { label: own, whole: false };
    var g = state.groupMarks[groupOf(i)];
    return g ? { label: g, whole: true } : null;
  }
  function className() { return $("class-name").value.trim(); }
  function status(text) { $("review-status").textContent = text; }
  function needClass() {
    var name = className();
    if (!name) { status("Type a class name first."); $("class-name").focus(); }
    return name;
  }

  // ---- members of each group (after moves), most typical first ----
  var members = {};
  function rebuildMembers() {
    members = {};
    groupIds.forEach(function (g) { members[g] = []; });
    for (var i = 0; i < N; i++) members[groupOf(i)].push(i);
    groupIds.forEach(function (g) {
      members[g].sort(function (a, b) { return I.distance[a] - I.distance[b] || a - b; });
    });
  }

  // ---- thumbnails ----
  function caption(i) {
    var p = I.path[i], base = p.slice(p.lastIndexOf("/") + 1);
    return base + (I.item[i] ? " [" + I.item[i] + "]" : "");
  }
  function figure(i) {
    var f = document.createElement("figure");
    f.dataset.row = i;
    f.title = I.path[i] + (I.item[i] ? " [" + I.item[i] + "]" : "");
    if (I.thumb[i]) {
      var img = document.createElement("img");
      img.loading = "lazy"; img.src = I.thumb[i]; img.alt = f.title;
      f.appendChild(img);
    } else {
      var na = document.createElement("div");
      na.className = "muted"; na.style.height = "112px"; na.textContent = "no preview";
      f.appendChild(na);
    }
    var c = document.createElement("figcaption");
    c.textContent = caption(i);
    f.appendChild(c);
    if (D.flags[i]) {
      var fl = document.createElement("span");
      fl.className = "flag"; fl.textContent = "⚑"; fl.title = D.flags[i].join("; ");
      f.appendChild(fl);
    }
    if (groupOf(i) !== I.group[i]) f.classList.add("moved-in");
    decorate(f, i);
    return f;
  }
  function decorate(f, i) {
    var old = f.querySelector(".mark");
    if (old) old.remove();
    var l = labelOf(i);
    f.classList.toggle("marked", !!(l && !l.whole));
    if (!l) return;
    var s = document.createElement("span");
    s.className = "mark" + (l.whole ? " group-mark" : "");
    s.textContent = l.label;
    f.appendChild(s);
  }
  function redecorateAll() {
    document.querySelectorAll("figure[data-row]").forEach(function (f) {
      decorate(f, +f.dataset.row);
    });
    updateCount();
  }

  // ---- gallery: every image of every group, one page at a time ----
  var view = {};  // group -> {page, reverse}
  function renderGallery() {
    var root = $("gallery");
    if (!root) return;
    root.textContent = "";
    var byModality = {};
    D.groups.forEach(function (g) { (byModality[g.modality] = byModality[g.modality] || []).push(g); });
    Object.keys(byModality).sort(function (a, b) { return a - b; }).forEach(function (m) {
      var box = document.createElement("div");
      box.className = "modality";
      var n = byModality[m].reduce(function (s, g) { return s + g.total; }, 0);
      var h = document.createElement("h3");
      h.textContent = (D.modality_titles && D.modality_titles[m]) || "Modality group " + m;
      var c = document.createElement("span");
      c.className = "muted"; c.textContent = " (" + n + " images)";
      h.appendChild(c);
      box.appendChild(h);
      if (D.modality_views && D.modality_views[m]) {
        var note = document.createElement("p");
        note.className = "muted views-note"; note.textContent = D.modality_views[m];
        box.appendChild(note);
      }
      byModality[m].forEach(function (g) { box.appendChild(groupBlock(g)); });
      root.appendChild(box);
    });
  }
  function groupBlock(g) {
    var div = document.createElement("div");
    div.className = "group"; div.id = "group-" + g.id; div.dataset.group = g.id;
    var h = document.createElement("h4");
    var sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = g.color;
    h.appendChild(sw);
    h.appendChild(document.createTextNode(g.title + " "));
    var size = document.createElement("span");
    size.className = "muted group-size";
    h.appendChild(size);
    var badge = document.createElement("span");
    badge.className = "badge group-class";
    h.appendChild(badge);
    div.appendChild(h);
    var tools = document.createElement("div");
    tools.className = "gtools";
    tools.innerHTML =
      '<button type="button" data-act="mark-group">This whole group is …</button>' +
      '<button type="button" data-act="unmark-group">Remove group mark</button>' +
      '<button type="button" data-act="order">Least typical first</button>' +
      '<span class="pages"><button type="button" data-act="prev">‹ Previous</button> ' +
      '<span class="page-info"></span> <button type="button" data-act="next">Next ›</button>' +
      "</span>";
    div.appendChild(tools);
    var grid = document.createElement("div");
    grid.className = "grid";
    div.appendChild(grid);
    view[g.id] = view[g.id] || { page: 0, reverse: false };
    fillGroup(div);
    return div;
  }
  function fillGroup(div) {
    var g = +div.dataset.group, v = view[g], rows = members[g];
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    v.page = Math.min(Math.max(v.page, 0), pages - 1);
    var ordered = v.reverse ? rows.slice().reverse() : rows;
    var start = v.page * PAGE, shown = ordered.slice(start, start + PAGE);
    var grid = div.querySelector(".grid");
    grid.textContent = "";
    var frag = document.createDocumentFragment();
    shown.forEach(function (i) { frag.appendChild(figure(i)); });
    grid.appendChild(frag);
    var total = groups[g].total;
    div.querySelector(".group-size").textContent = "(" + (total > groups[g].size
      ? total + " images, " + rows.length + " shown" : rows.length + " images") + ")";
    var cls = state.groupMarks[g];
    div.querySelector(".group-class").textContent = cls ? "all: " + cls : "";
    div.querySelector(".group-class").hidden = !cls;
    div.querySelector(".page-info").textContent = rows.length
      ? (start + 1) + "–" + (start + shown.length) + " of " + rows.length +
        (v.reverse ? ", least typical first" : ", most typical first")
      : "empty";
    div.querySelector('[data-act="prev"]').disabled = v.page === 0;
    div.querySelector('[data-act="next"]').disabled = v.page >= pages - 1;
    div.querySelector('[data-act="order"]').textContent =
      v.reverse ? "Most typical first" : "Least typical first";
    div.querySelector('[data-act="mark-group"]').textContent =
      "This whole group is " + (className() || "…");
  }
  function refreshGroup(g) {
    var div = $("group-" + g);
    if (div) fillGroup(div);
  }

  function onGroupTool(btn) {
    var div = btn.closest(".group"), g = +div.dataset.group, act = btn.dataset.act;
    if (act === "prev") view[g].page--;
    else if (act === "next") view[g].page++;
    else if (act === "order") { view[g].reverse = !view[g].reverse; view[g].page = 0; }
    else if (act === "mark-group") {
      var name = needClass();
      if (!name) return;
      state.groupMarks[g] = name; saveState(); remember(name);
      status("Group " + g + " marked as " + name + ".");
      fillGroup(div); updateCount();
      return;
    } else if (act === "unmark-group") {
      delete state.groupMarks[g]; saveState();
    }
    fillGroup(div); updateCount();
  }

  // ---- marking single images ----
  function toggleMark(i) {
    var name = needClass();
    if (!name) return;
    var k = key(i);
    if (state.marks[k] === name) delete state.marks[k];
    else state.marks[k] = name;
    saveState(); remember(name);
    document.querySelectorAll('figure[data-row="' + i + '"]').forEach(function (f) {
      decorate(f, i);
    });
    updateCount();
  }
  function remember(name) {
    var list = $("class-list");
    var known = Array.prototype.some.call(list.options, function (o) { return o.value === name; });
    if (!known) { var o = document.createElement("option"); o.value = name; list.appendChild(o); }
  }
  function labelledRows() {
    var rows = [];
    for (var i = 0; i < N; i++) { var l = labelOf(i); if (l) rows.push([i, l.label]); }
    return rows;
  }
  function updateCount() {
    var n = labelledRows().length;
    $("mark-count").textContent = n + (n === 1 ? " image" : " images") + " marked";
  }

  // ---- labels.csv: path,label (and item where a file has several), as `medsort label` reads it
  function csvField(s) { return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }
  function labelsCsv() {
    var rows = labelledRows();
    var withItem = rows.some(function (r) { return I.item[r[0]] !== ""; });
    var lines = [withItem ? "path,item,label" : "path,label"];
    rows.forEach(function (r) {
      var cells = [I.path[r[0]]];
      if (withItem) cells.push(I.item[r[0]]);
      cells.push(r[1]);
      lines.push(cells.map(csvField).join(","));
    });
    return lines.join("\n") + "\n";
  }
  function download() {
    var rows = labelledRows().length;
    if (!rows) { status("Nothing marked yet."); return; }
    var blob = new Blob([labelsCsv()], { type: "text/csv" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = "labels.csv";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 10000);
    status("labels.csv with " + rows + " images downloaded.");
  }

  // ---- large view ----
  var current = -1;
  function openViewer(i) {
    current = i;
    var g = groupOf(i), rows = members[g], pos = rows.indexOf(i);
    $("v-img").src = I.thumb[i] || "";
    $("v-img").alt = I.path[i];
    $("v-pos").textContent = groups[g].title + " · " + (pos + 1) + " of " + rows.length +
      " (by typicality)";
    var info = [
      ["file", I.path[i] + (I.item[i] ? " [" + I.item[i] + "]" : "")],
      ["format", I.format[i] || "?"],
      ["size", I.width[i] && I.height[i] ? I.width[i] + " × " + I.height[i] + " px" : "?"],
      ["modality group", (D.modality_titles && D.modality_titles[I.modality[i]]) ||
        String(I.modality[i])],
      ["group", groups[g].title + (g !== I.group[i] ? " (moved from group " + I.group[i] + ")" : "")],
      ["distance to centre", I.distance[i].toFixed(3) + " (rank " + (pos + 1) + " of " +
        rows.length + ")"],
      ["flags", D.flags[i] ? D.flags[i].join("; ") : "none"],
      ["predicted", (D.predicted && D.predicted[i]) || "not yet (medsort label)"],
      ["mark", (labelOf(i) || { label: "none" }).label +
        (labelOf(i) && labelOf(i).whole ? " (from its group)" : "")]
    ];
    var table = $("v-info");
    table.textContent = "";
    info.forEach(function (pair) {
      var tr = table.insertRow(), a = tr.insertCell(), b = tr.insertCell();
      a.textContent = pair[0]; b.textContent = pair[1];
    });
    $("v-mark").textContent = "Mark as " + (className() || "…");
    var move = $("v-move");
    move.textContent = "";
    groupIds.forEach(function (id) {
      var o = document.createElement("option");
      o.value = id; o.textContent = groups[id].title; o.selected = id === g;
      move.appendChild(o);
    });
    $("v-open").href = fileUrl(I.path[i]);
    var nn = $("v-neighbours");
    nn.textContent = "";
    (D.neighbours[i] || []).forEach(function (j) { nn.appendChild(figure(j)); });
    if (!nn.childNodes.length) nn.textContent = "not computed for this many images";
    $("viewer").hidden = false;
    $("v-close").focus();
  }
  function fileUrl(path) {
    var base = D.input_dir.replace(/\\/g, "/").replace(/\/$/, "");
    var full = base + "/" + path;
    return "file://" + (full.charAt(0) === "/" ? "" : "/") + full.split("/").map(encodeURIComponent).join("/");
  }
  function closeViewer() { $("viewer").hidden = true; current = -1; }
  function step(delta) {
    if (current < 0) return;
    var rows = members[groupOf(current)], pos = rows.indexOf(current) + delta;
    if (pos >= 0 && pos < rows.length) openViewer(rows[pos]);
  }
  function moveTo(i, g) {
    var k = key(i), from = groupOf(i);
    if (g === I.group[i]) delete state.moves[k]; else state.moves[k] = g;
    saveState(); rebuildMembers();
    refreshGroup(from); refreshGroup(g); updateCount();
    status(caption(i) + " moved to group " + g + ".");
    openViewer(i);
  }

  // ---- map: canvas of dots, hover thumbnail, click to open, lasso, group highlight ----
  var canvas = $("map-canvas"), ctx = canvas && canvas.getContext("2d");
  var mapRows = D.map_rows || null, highlighted = {}, selection = [];
  var SIZE = 640, PAD = 16, cells = {}, CELL = 16;
  function px(i) { return PAD + I.x[i] * (SIZE - 2 * PAD); }
  function py(i) { return SIZE - PAD - I.y[i] * (SIZE - 2 * PAD); }
  function eachMapRow(fn) {
    if (mapRows) mapRows.forEach(fn); else for (var i = 0; i < N; i++) fn(i);
  }
  function indexMap() {
    cells = {};
    eachMapRow(function (i) {
      var c = Math.floor(px(i) / CELL) + "," + Math.floor(py(i) / CELL);
      (cells[c] = cells[c] || []).push(i);
    });
  }
  function drawMap() {
    if (!ctx) return;
    ctx.clearRect(0, 0, SIZE, SIZE);
    var any = Object.keys(highlighted).length > 0, chosen = {};
    selection.forEach(function (i) { chosen[i] = true; });
    var draw = function (faded) {
      eachMapRow(function (i) {
        var g = groupOf(i), on = !any || highlighted[g];
        if (on === faded) return;
        ctx.fillStyle = on ? groups[g].color : "#d0d0d0";
        ctx.globalAlpha = on ? 0.85 : 0.5;
        ctx.beginPath(); ctx.arc(px(i), py(i), chosen[i] ? 4.5 : 2.8, 0, 6.2832); ctx.fill();
        if (chosen[i]) { ctx.globalAlpha = 1; ctx.strokeStyle = "#000"; ctx.stroke(); }
      });
    };
    draw(true); draw(false);
    ctx.globalAlpha = 1;
  }
  function toCanvas(ev) {
    var b = canvas.getBoundingClientRect();
    return [(ev.clientX - b.left) * SIZE / b.width, (ev.clientY - b.top) * SIZE / b.height];
  }
  function nearest(x, y) {
    var best = -1, bestD = 64, cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    for (var a = cx - 1; a <= cx + 1; a++) for (var b = cy - 1; b <= cy + 1; b++) {
      (cells[a + "," + b] || []).forEach(function (i) {
        var d = (px(i) - x) * (px(i) - x) + (py(i) - y) * (py(i) - y);
        if (d < bestD) { bestD = d; best = i; }
      });
    }
    return best;
  }
  function inside(poly, x, y) {
    var hit = false;
    for (var a = 0, b = poly.length - 1; a < poly.length; b = a++) {
      if ((poly[a][1] > y) !== (poly[b][1] > y) &&
          x < (poly[b][0] - poly[a][0]) * (y - poly[a][1]) / (poly[b][1] - poly[a][1]) + poly[a][0]) {
        hit = !hit;
      }
    }
    return hit;
  }
  function setupMap() {
    if (!canvas) return;
    indexMap();
    var legend = $("legend"), tip = $("map-tip"), lasso = null;
    D.groups.forEach(function (g) {
      var b = document.createElement("button");
      b.type = "button"; b.dataset.group = g.id;
      b.innerHTML = '<span class="swatch"></span>';
      b.firstChild.style.background = g.color;
      b.appendChild(document.createTextNode(g.title + " (" + g.total + ")"));
      b.addEventListener("click", function () {
        if (highlighted[g.id]) delete highlighted[g.id]; else highlighted[g.id] = true;
        b.classList.toggle("on", !!highlighted[g.id]);
        drawMap();
      });
      legend.appendChild(b);
    });
    canvas.addEventListener("pointerdown", function (ev) {
      lasso = [toCanvas(ev)];
      canvas.setPointerCapture(ev.pointerId);
    });
    canvas.addEventListener("pointermove", function (ev) {
      var p = toCanvas(ev);
      if (lasso) {
        lasso.push(p);
        if (lasso.length > 2) {
          drawMap();
          ctx.strokeStyle = "#333"; ctx.setLineDash([4, 3]); ctx.beginPath();
          ctx.moveTo(lasso[0][0], lasso[0][1]);
          lasso.forEach(function (q) { ctx.lineTo(q[0], q[1]); });
          ctx.stroke(); ctx.setLineDash([]);
        }
        tip.hidden = true;
        return;
      }
      var i = nearest(p[0], p[1]);
      if (i < 0) { tip.hidden = true; return; }
      tip.innerHTML = "";
      if (I.thumb[i]) { var img = document.createElement("img"); img.src = I.thumb[i]; tip.appendChild(img); }
      var t = document.createElement("div");
      t.textContent = I.path[i] + " · " + groups[groupOf(i)].title;
      tip.appendChild(t);
      var b = canvas.getBoundingClientRect();
      tip.style.left = Math.min(ev.clientX - b.left + 12, b.width - 150) + "px";
      tip.style.top = (ev.clientY - b.top + 12) + "px";
      tip.hidden = false;
    });
    canvas.addEventListener("pointerleave", function () { tip.hidden = true; });
    canvas.addEventListener("pointerup", function (ev) {
      var path = lasso || [];
      lasso = null;
      var span = path.reduce(function (s, q) {
        return Math.max(s, Math.abs(q[0] - path[0][0]) + Math.abs(q[1] - path[0][1]));
      }, 0);
      if (path.length < 4 || span < 8) {
        var p = toCanvas(ev), i = nearest(p[0], p[1]);
        drawMap();
        if (i >= 0) openViewer(i);
        return;
      }
      selection = [];
      eachMapRow(function (i) { if (inside(path, px(i), py(i))) selection.push(i); });
      selection.sort(function (a, b) { return I.distance[a] - I.distance[b]; });
      drawMap(); showSelection(0);
    });
  }
  function showSelection(page) {
    var box = $("selection");
    box.textContent = "";
    if (!selection.length) {
      box.innerHTML = '<p class="muted">No image in the lasso. Draw one around dots.</p>';
      return;
    }
    var head = document.createElement("div");
    head.className = "gtools";
    var pages = Math.ceil(selection.length / PAGE);
    head.innerHTML = "<b>" + selection.length + " images in the lasso</b>" +
      '<button type="button" data-sel="mark">Mark all as …</button>' +
      '<button type="button" data-sel="clear">Clear selection</button>' +
      '<span class="pages"><button type="button" data-sel="prev">‹</button> page ' +
      (page + 1) + " of " + pages + ' <button type="button" data-sel="next">›</button></span>';
    head.querySelector('[data-sel="mark"]').textContent = "Mark all as " + (className() || "…");
    head.querySelector('[data-sel="prev"]').disabled = page === 0;
    head.querySelector('[data-sel="next"]').disabled = page >= pages - 1;
    head.addEventListener("click", function (ev) {
      var act = ev.target.dataset && ev.target.dataset.sel;
      if (act === "prev") showSelection(page - 1);
      else if (act === "next") showSelection(page + 1);
      else if (act === "clear") { selection = []; drawMap(); showSelection(0); }
      else if (act === "mark") {
        var name = needClass();
        if (!name) return;
        selection.forEach(function (i) { state.marks[key(i)] = name; });
        saveState(); remember(name); redecorateAll();
        status(selection.length + " images marked as " + name + ".");
      }
    });
    box.appendChild(head);
    var grid = document.createElement("div");
    grid.className = "grid";
    selection.slice(page * PAGE, (page + 1) * PAGE).forEach(function (i) { grid.appendChild(figure(i)); });
    box.appendChild(grid);
  }

  // ---- wiring ----
  function rowOfFigure(f) {
    if (f.dataset.row !== undefined) return +f.dataset.row;
    var r = rowOf.get((f.dataset.path || "") + "\u0000" + (f.dataset.item || ""));
    return r === undefined ? -1 : r;
  }
  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest("button[data-act]");
    if (btn && btn.closest(".group")) { onGroupTool(btn); return; }
    var f = ev.target.closest("figure");
    if (!f) return;
    var i = rowOfFigure(f);
    if (i < 0) return;
    if ($("mark-mode").checked && !f.closest("#viewer")) toggleMark(i);
    else openViewer(i);
  });
  document.addEventListener("keydown", function (ev) {
    if ($("viewer").hidden) return;
    if (ev.key === "Escape") closeViewer();
    else if (ev.key === "ArrowLeft") step(-1);
    else if (ev.key === "ArrowRight") step(1);
  });
  $("viewer").addEventListener("click", function (ev) { if (ev.target === $("viewer")) closeViewer(); });
  $("v-close").addEventListener("click", closeViewer);
  $("v-prev").addEventListener("click", function () { step(-1); });
  $("v-next").addEventListener("click", function () { step(1); });
  $("v-mark").addEventListener("click", function () {
    var name = needClass();
    if (!name || current < 0) return;
    state.marks[key(current)] = name; saveState(); remember(name);
    redecorateAll(); openViewer(current);
  });
  $("v-unmark").addEventListener("click", function () {
    if (current < 0) return;
    delete state.marks[key(current)]; saveState(); redecorateAll(); openViewer(current);
  });
  $("v-move").addEventListener("change", function (ev) { moveTo(current, +ev.target.value); });
  $("download").addEventListener("click", download);
  $("clear-marks").addEventListener("click", function () {
    state = { marks: {}, groupMarks: {}, moves: {} };
    saveState(); rebuildMembers(); renderGallery(); drawMap(); updateCount();
    status("All marks cleared.");
  });
  $("mark-mode").addEventListener("change", function (ev) {
    $("review").classList.toggle("marking", ev.target.checked);
    if (ev.target.checked) needClass();
  });
  $("class-name").addEventListener("input", function () {
    var label = "This whole group is " + (className() || "…");
    document.querySelectorAll('[data-act="mark-group"]').forEach(function (b) { b.textContent = label; });
  });

  function buildNav() {
    var nav = $("nav");
    document.querySelectorAll("main h2").forEach(function (h, n) {
      if (!h.id) h.id = "section-" + n;
      var a = document.createElement("a");
      a.href = "#" + h.id; a.textContent = h.textContent;
      nav.appendChild(a);
    });
  }

  var known = {};
  Object.keys(state.marks).forEach(function (k) { known[state.marks[k]] = 1; });
  Object.keys(state.groupMarks).forEach(function (g) { known[state.groupMarks[g]] = 1; });
  Object.keys(known).forEach(remember);
  rebuildMembers();
  renderGallery();
  setupMap();
  drawMap();
  buildNav();
  updateCount();
  document.body.dataset.ready = "1";
  window.medsortReadyAt = performance.now();
})();
