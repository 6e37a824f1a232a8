// The adasp results page: renders the query list from the JSON in #adasp-data, one page of
// rows at a time (thousands of queries stay responsive), with sort, filters and search.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("adasp-data").textContent);
  const compare = data.runs.length === 2;
  const state = { set: 0, sort: compare ? "delta-abs" : "ap-asc", pid: "", cam: "", search: "",
    page: 0, pageSize: data.page_size };
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const num = (x, d) => (x === null || x === undefined ? "–" : x.toFixed(d));

  // null (a query without a valid match) sorts last in every order.
  function byValue(values, sign) {
    return (a, b) => {
      const x = values[a], y = values[b];
      if (x === null || y === null) return (x === null) - (y === null);
      return sign * (x - y);
    };
  }
  function delta(ts) {  // computed once per test set
    if (!ts.delta) {
      const a = ts.runs[0].ap, b = ts.runs[1].ap;
      ts.delta = a.map((x, i) => (x === null || b[i] === null ? null : b[i] - x));
    }
    return ts.delta;
  }
  const SORTS = compare ? {
    "delta-abs": ["largest |ΔAP| first", (ts) => byValue(delta(ts).map((d) => (d === null ? null : Math.abs(d))), -1)],
    "delta-asc": ["most worsened first", (ts) => byValue(delta(ts), 1)],
    "delta-desc": ["most improved first", (ts) => byValue(delta(ts), -1)],
  } : {
    "ap-asc": ["AP, worst first", (ts) => byValue(ts.runs[0].ap, 1)],
    "ap-desc": ["AP, best first", (ts) => byValue(ts.runs[0].ap, -1)],
  };
  SORTS.pid = ["identity", (ts) => byValue(ts.queries.pid, 1)];
  SORTS.cam = ["camera", (ts) => byValue(ts.queries.cam, 1)];
  SORTS.name = ["file name", (ts) => (a, b) => (ts.queries.name[a] < ts.queries.name[b] ? -1 : ts.queries.name[a] > ts.queries.name[b] ? 1 : 0)];

  function selected(ts) {
    const q = ts.queries, pid = state.pid.trim(), cam = state.cam, text = state.search.trim().toLowerCase();
    const rows = [];
    for (let i = 0; i < q.name.length; i++) {
      if (pid !== "" && String(q.pid[i]) !== pid) continue;
      if (cam !== "" && String(q.cam[i]) !== cam) continue;
      if (text !== "" && q.name[i].toLowerCase().indexOf(text) < 0) continue;
      rows.push(i);
    }
    const order = SORTS[state.sort][1](ts);
    rows.sort((a, b) => order(a, b) || a - b);
    return rows;
  }

  function image(thumb, title) {
    return thumb >= 0 ? `<img src="${data.thumbs[thumb]}" alt="" title="${esc(title)}">`
      : `<div class="missing" title="${esc(title)} (image not found)"></div>`;
  }
  function rankedList(ts, run, i, label) {
    const g = ts.gallery, qpid = ts.queries.pid[i];
    let html = `<div class="list">${label ? `<span class="list-label">${esc(label)}</span>` : ""}`;
    run.ranked[i].forEach((j, r) => {
      const match = g.pid[j] === qpid;
      html += `<div class="hit ${match ? "match" : "miss"}" data-match="${match}">` +
        image(g.thumb[j], g.name[j]) +
        `<span class="mark">${match ? "✓" : "✗"}</span> #${r + 1}<br>` +
        `<span class="dist">${num(run.dist[i][r], 3)}</span><br>id ${g.pid[j]} · c${g.cam[j]}</div>`;
    });
    return html + "</div>";
  }
  function row(ts, i) {
    const q = ts.queries;
    let html = `<tr class="query-row" data-query="${i}" data-pid="${q.pid[i]}" data-cam="${q.cam[i]}"` +
      ` data-ap="${ts.runs.map((r) => (r.ap[i] === null ? "null" : r.ap[i])).join(" ")}">` +
      `<td><div class="q">${image(q.thumb[i], q.name[i])}</div></td>` +
      `<td class="query-name">${esc(q.name[i])}<br>id ${q.pid[i]} · c${q.cam[i]}</td>`;
    ts.runs.forEach((r) => {
      html += `<td class="num ap">${num(r.ap[i], 4)}</td><td class="num first">${r.first[i] || "–"}</td>`;
    });
    if (compare) {
      const d = delta(ts)[i];
      html += `<td class="num delta ${d > 0 ? "better" : d < 0 ? "worse" : ""}">${d === null ? "–" : (d > 0 ? "+" : "") + d.toFixed(4)}</td>`;
    }
    html += "<td>" + ts.runs.map((r, k) => rankedList(ts, r, i, compare ? data.runs[k] : "")).join("") + "</td></tr>";
    return html;
  }

  function render() {
    const ts = data.test_sets[state.set];
    const rows = selected(ts);
    const size = state.pageSize > 0 ? state.pageSize : Math.max(rows.length, 1);
    const pages = Math.max(1, Math.ceil(rows.length / size));
    state.page = Math.min(state.page, pages - 1);
    const shown = rows.slice(state.page * size, (state.page + 1) * size);
    $("rows").innerHTML = shown.map((i) => row(ts, i)).join("");
    $("count").textContent = `${rows.length} of ${ts.queries.name.length} queries`;
    $("page-info").textContent = `page ${state.page + 1} of ${pages}`;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
  }

  function header() {
    const ts = data.test_sets[state.set];
    let html = "<tr><th>query</th><th>file</th>";
    ts.runs.forEach((_, k) => {
      const tag = compare ? ` ${esc(data.runs[k])}` : "";
      html += `<th>AP${tag}</th><th title="rank of the first true match">1st match${tag}</th>`;
    });
    if (compare) html += "<th>ΔAP</th>";
    $("head").innerHTML = html + `<th>top-${ts.runs[0].ranked.length ? ts.runs[0].ranked[0].length : 0} gallery (✓ same identity, ✗ other; distance; identity · camera)</th></tr>`;
    const cams = Array.from(new Set(ts.queries.cam)).sort((a, b) => a - b);
    $("filter-cam").innerHTML = '<option value="">all</option>' + cams.map((c) => `<option value="${c}">${c}</option>`).join("");
    state.cam = "";
  }

  $("sort").innerHTML = Object.entries(SORTS).map(([k, v]) => `<option value="${k}">${esc(v[0])}</option>`).join("");
  $("sort").value = state.sort;
  $("test-set").innerHTML = data.test_sets.map((t, k) => `<option value="${k}">${esc(t.name)}</option>`).join("");
  $("page-size").value = String(state.pageSize);
  const on = (id, event, apply) => $(id).addEventListener(event, (e) => { apply(e.target.value); render(); });
  on("sort", "change", (v) => { state.sort = v; state.page = 0; });
  on("filter-pid", "input", (v) => { state.pid = v; state.page = 0; });
  on("filter-cam", "change", (v) => { state.cam = v; state.page = 0; });
  on("search", "input", (v) => { state.search = v; state.page = 0; });
  on("page-size", "change", (v) => { state.pageSize = Number(v); state.page = 0; });
  on("test-set", "change", (v) => { state.set = Number(v); state.page = 0; header(); });
  $("prev").addEventListener("click", () => { state.page -= 1; render(); });
  $("next").addEventListener("click", () => { state.page += 1; render(); });
  header();
  render();
  window.adaspReady = performance.now();
})();
