"""The listening report's single page: data inlined as JSON (file:// pages cannot fetch), no external resources.
It stays quick at thousands of rows: sorting and filtering run on the data, only one page of rows is in the DOM,
images load lazily and an audio player is created only when a row is played."""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<link rel="icon" href="data:,">
<style>
  body { font: 13px/1.35 system-ui, sans-serif; margin: 16px; color: #222; }
  h1 { font-size: 18px; margin: 0 0 6px; }
  .meta { color: #555; margin-bottom: 8px; }
  .bar { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin: 8px 0; }
  .keys { color: #555; font-size: 12px; }
  kbd { border: 1px solid #bbb; border-radius: 3px; padding: 0 4px; background: #f6f6f6; font-size: 11px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { border-bottom: 1px solid #e4e4e4; padding: 3px 6px; text-align: left; vertical-align: middle; }
  th { cursor: pointer; user-select: none; background: #fafafa; position: sticky; top: 0; z-index: 1; }
  th.sorted-asc::after { content: " \25B2"; } th.sorted-desc::after { content: " \25BC"; }
  tr.focus { outline: 2px solid #2b6cb0; outline-offset: -2px; background: #eef5ff; }
  .keep { color: #2f6f3a; font-weight: 600; } .drop { color: #a62a3a; font-weight: 600; }
  .v-keep { background: #e3f4e6; } .v-drop { background: #fbe4e7; }
  .flag { color: #a62a3a; font-size: 12px; } .num { font-variant-numeric: tabular-nums; text-align: right; }
  audio { width: 170px; height: 28px; } button.play { min-width: 34px; }
  #pager button:disabled { opacity: 0.4; } img.spec { width: 240px; height: 80px; display: block; }
  #csv { width: 100%; height: 70px; font: 11px monospace; }
  .audit { background: #fff4e5; border: 1px solid #f0c36d; padding: 6px 8px; margin: 6px 0; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div class="meta" id="meta"></div>
<div id="auditbox"></div>
<div class="bar">
  <label>cleaner <select id="cleaner"></select></label>
  <label>filter <input id="filter" type="search" placeholder="song, label, defect, audit..."></label>
  <label>decision <select id="decision"><option value="">all</option><option>keep</option><option>drop</option></select></label>
  <label>label <select id="label"><option value="">all</option><option>vocals</option><option>bass</option><option>drums</option><option>other</option></select></label>
  <button id="download" type="button">Download verdicts CSV</button>
  <a id="dl" download="verdicts.csv" hidden>verdicts.csv</a>
</div>
<div class="keys"><kbd>&darr;</kbd>/<kbd>j</kbd> next, <kbd>&uarr;</kbd> previous, <kbd>k</kbd> keep stem, <kbd>d</kbd> drop stem,
  <kbd>K</kbd>/<kbd>D</kbd> keep / drop the whole song, <kbd>u</kbd> clear, <kbd>space</kbd> play stem, <kbd>m</kbd> play mixture,
  <kbd>PgDn</kbd>/<kbd>PgUp</kbd> next / previous page.
  Verdicts stay in this browser until downloaded; point <code>filter.verdicts</code> at the file.</div>
<img id="hist" alt="song-score histogram with the cut line">
<div class="bar" id="pager"><button id="prev" type="button">&larr; previous page</button><span id="pageinfo"></span>
  <button id="next" type="button">next page &rarr;</button></div>
<table id="table">
  <thead><tr>
    <th data-key="track">song</th><th data-key="label">stem</th><th data-key="score" class="num">score</th>
    <th data-key="rank" class="num">rank</th><th data-key="song_score" class="num">song score</th>
    <th data-key="song_rank" class="num">song rank</th><th data-key="decision">decision</th>
    <th data-key="verdict">verdict</th><th data-key="truth">defect (truth)</th><th data-key="audit">audit</th>
    <th data-key="">stem</th><th data-key="">mixture</th><th data-key="">log-mel</th>
  </tr></thead>
  <tbody id="rows"></tbody>
</table>
<p>verdicts.csv (what the download holds):</p>
<textarea id="csv" readonly></textarea>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const STORE = "stemsift-verdicts:" + DATA.stemset;
const verdicts = new Map();  // "track|stem" -> keep | drop (stem: a label or "song")
try { for (const [k, v] of JSON.parse(localStorage.getItem(STORE) || "[]")) verdicts.set(k, v); } catch (e) { /* no storage */ }
let cleaner = DATA.filter_cleaner && DATA.cleaners[DATA.filter_cleaner] ? DATA.filter_cleaner : Object.keys(DATA.cleaners)[0];
let sortKey = "score", sortDir = 1, focus = 0, view = [], page = 0;  // focus: an index into view (every page)
const PAGE_ROWS = DATA.page_rows || 200;  // rows in the DOM at once
const $ = (id) => document.getElementById(id);

function verdictOf(r) { return verdicts.get(r.track + "|" + r.label) || verdicts.get(r.track + "|song") || ""; }
function csvText() {
  const lines = ["track,stem,verdict"];
  for (const [k, v] of [...verdicts.entries()].sort()) { const [t, s] = k.split("|"); lines.push(t + "," + s + "," + v); }
  return lines.join("\n") + "\n";
}
function save() {
  try { localStorage.setItem(STORE, JSON.stringify([...verdicts.entries()])); } catch (e) { /* no storage */ }
  $("csv").value = csvText();
}
function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
function fmt(x) { return typeof x === "number" ? (Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(4)) : x; }

function header() {
  const c = DATA.cleaners[cleaner];
  $("meta").textContent = "stem set " + DATA.stemset + " | cleaner " + cleaner + " (" + c.source + ") | kept " + c.kept +
    " of " + c.songs + " training songs (ratio " + c.ratio + ")" + (c.cut === null ? "" : " | cut at song score " + fmt(c.cut)) +
    " | " + c.rows.length / 4 + " lowest-scored songs shown";
  $("hist").src = c.hist;
  $("auditbox").innerHTML = DATA.audit.length ? '<div class="audit"><b>Audit: leakage across splits</b><br>' +
    DATA.audit.map(esc).join("<br>") + "</div>" : "";
}

function render() {
  const q = $("filter").value.trim().toLowerCase(), dec = $("decision").value, lab = $("label").value;
  view = DATA.cleaners[cleaner].rows.filter((r) =>
    (!dec || r.decision === dec) && (!lab || r.label === lab) &&
    (!q || [r.track, r.label, r.truth || "", r.audit.join(" "), verdictOf(r)].join(" ").toLowerCase().includes(q)));
  if (sortKey) {
    view.sort((a, b) => {
      const x = sortKey === "verdict" ? verdictOf(a) : sortKey === "audit" ? a.audit.join(" ") : a[sortKey];
      const y = sortKey === "verdict" ? verdictOf(b) : sortKey === "audit" ? b.audit.join(" ") : b[sortKey];
      return (x === y ? 0 : (x === null ? 1 : y === null ? -1 : x < y ? -1 : 1)) * sortDir;
    });
  }
  focus = Math.min(focus, Math.max(0, view.length - 1));
  const pages = Math.max(1, Math.ceil(view.length / PAGE_ROWS));
  page = Math.min(page, pages - 1);
  const start = page * PAGE_ROWS, shown = view.slice(start, start + PAGE_ROWS);
  $("pageinfo").textContent = view.length ? "rows " + (start + 1) + "\u2013" + (start + shown.length) + " of " + view.length +
    " \u00b7 page " + (page + 1) + " of " + pages : "no rows match";
  $("prev").disabled = page === 0; $("next").disabled = page >= pages - 1;
  $("rows").innerHTML = shown.map((r, j) => {
    const i = start + j, v = verdictOf(r);
    return '<tr data-i="' + i + '" class="' + (i === focus ? "focus " : "") + (v ? "v-" + v : "") + '">' +
      "<td>" + esc(r.track) + "</td><td>" + esc(r.label) + '</td><td class="num">' + fmt(r.score) +
      '</td><td class="num">' + r.rank + '</td><td class="num">' + fmt(r.song_score) + '</td><td class="num">' +
      r.song_rank + '</td><td class="' + r.decision + '">' + r.decision + "</td><td>" + (v ? '<span class="' + v + '">' + v + "</span>" : "") +
      "</td><td>" + esc(r.truth === null ? "n/a" : r.truth) + (r.true_instruments && r.truth !== "clean" ? "<br><small>holds " +
      esc(r.true_instruments.join(" + ")) + "</small>" : "") + '</td><td class="flag">' + r.audit.map(esc).join("<br>") +
      '</td>' + playCell("assets/" + r.track + "-" + r.label + ".ogg", 0, "play stem (space)") +
      playCell("assets/" + r.track + "-mixture.ogg", 1, "play mixture (m)") +
      '<td><img class="spec" loading="lazy" alt="log-mel ' + esc(r.track) + " " + esc(r.label) + '" src="assets/' +
      esc(r.track) + "-" + esc(r.label) + '.png"></td></tr>';
  }).join("");
  document.querySelectorAll("th").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.key === sortKey && sortDir === 1);
    th.classList.toggle("sorted-desc", th.dataset.key === sortKey && sortDir === -1);
  });
}

function playCell(src, which, title) {  // a button now, an <audio> once played: no player per row up front
  return '<td class="player" data-src="' + esc(src) + '"><button type="button" class="play" data-w="' + which +
    '" title="' + title + '">\u25B6</button></td>';
}

function setPage(p) {
  page = p; focus = page * PAGE_ROWS; render();
  window.scrollTo(0, $("table").offsetTop);
}

function setFocus(i) {
  focus = Math.max(0, Math.min(view.length - 1, i));
  if (Math.floor(focus / PAGE_ROWS) !== page) { page = Math.floor(focus / PAGE_ROWS); render(); }
  document.querySelectorAll("#rows tr").forEach((tr) => tr.classList.toggle("focus", Number(tr.dataset.i) === focus));
  const tr = document.querySelector('#rows tr[data-i="' + focus + '"]');
  if (tr) tr.scrollIntoView({block: "nearest"});
}

function mark(r, whole, v) {
  const key = r.track + "|" + (whole ? "song" : r.label);
  if (v) verdicts.set(key, v); else { verdicts.delete(r.track + "|" + r.label); if (whole) verdicts.delete(r.track + "|song"); }
  save(); render();
}

function play(which) {
  const tr = document.querySelector('#rows tr[data-i="' + focus + '"]');
  if (!tr) return;
  const cell = tr.querySelectorAll("td.player")[which];
  let a = cell.querySelector("audio");
  if (!a) {
    a = document.createElement("audio");
    a.controls = true; a.preload = "auto"; a.src = cell.dataset.src;
    cell.replaceChildren(a);
  }
  document.querySelectorAll("audio").forEach((o) => { if (o !== a) o.pause(); });
  if (a.paused) a.play().catch(() => {}); else a.pause();
}

document.querySelectorAll("th").forEach((th) => th.addEventListener("click", () => {
  if (!th.dataset.key) return;
  if (sortKey === th.dataset.key) sortDir = -sortDir; else { sortKey = th.dataset.key; sortDir = 1; }
  focus = 0; page = 0; render();
}));
$("rows").addEventListener("click", (e) => {
  const tr = e.target.closest("tr");
  if (!tr) return;
  setFocus(Number(tr.dataset.i));
  const b = e.target.closest("button.play");
  if (b) play(Number(b.dataset.w));
});
$("prev").addEventListener("click", () => setPage(page - 1));
$("next").addEventListener("click", () => setPage(page + 1));
for (const id of ["filter", "decision", "label"]) $(id).addEventListener("input", () => { focus = 0; page = 0; render(); });
$("cleaner").addEventListener("change", () => { cleaner = $("cleaner").value; focus = 0; page = 0; header(); render(); });
$("download").addEventListener("click", () => {
  const a = $("dl");
  a.href = URL.createObjectURL(new Blob([csvText()], {type: "text/csv"}));
  a.click();
});
document.addEventListener("keydown", (e) => {
  if (e.target.matches("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
  const r = view[focus];
  const keys = {
    ArrowDown: () => setFocus(focus + 1), j: () => setFocus(focus + 1), ArrowUp: () => setFocus(focus - 1),
    k: () => r && mark(r, false, "keep"), d: () => r && mark(r, false, "drop"),
    K: () => r && mark(r, true, "keep"), D: () => r && mark(r, true, "drop"), u: () => r && mark(r, true, ""),
    " ": () => play(0), m: () => play(1), PageDown: () => setPage(Math.min(page + 1, Math.floor((view.length - 1) / PAGE_ROWS))),
    PageUp: () => setPage(Math.max(page - 1, 0)),
  };
  if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
});
for (const name of Object.keys(DATA.cleaners)) {
  const o = document.createElement("option"); o.value = o.textContent = name; $("cleaner").appendChild(o);
}
$("cleaner").value = cleaner;
window.stemsift = {csv: csvText, verdicts};
header(); render(); save();
</script>
</body>
</html>
"""
