// report.html: reads a run's metrics.jsonl and ranks.jsonl, embeds them as JSON in one HTML page
// whose inline script draws the rank heat-maps, budget curve and loss curves on canvas.
#include "peft/report.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

#include "peft/file_io.h"
#include "peft/rank_table.h"

namespace peft {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {


std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

// JSON safe inside <script>: '<' only occurs in strings, where \u003c means the same.
std::string script_json(const json& j) {
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string o;
  for (char c : s) o += c == '<' ? std::string("\\u003c") : std::string(1, c);
  return o;
}

std::string fmt(double v, int digits = 4) {
  if (!std::isfinite(v)) return "NaN";
  std::ostringstream s;
  s.precision(digits);
  s << v;
  return s.str();
}

// Last finite number of `key` over the records, if any.
const json* last_number(const json& records, const std::string& key) {
  for (auto it = records.rbegin(); it != records.rend(); ++it)
    if (it->contains(key) && (*it)[key].is_number()) return &(*it)[key];
  return nullptr;
}

json column(const json& records, const std::string& key) {
  json c = json::array();
  for (auto& r : records) c.push_back(r.contains(key) && !r[key].is_null() ? r[key] : json());
  return c;
}

bool any_key(const json& records, const std::string& key) {
  for (auto& r : records)
    if (r.contains(key) && !r[key].is_null()) return true;
  return false;
}

// The ranks section of the page data: module grid and, per allocation, the allocated rank per module.
json rank_data(const RunRecords& rec) {
  if (rec.ranks.empty()) return nullptr;
  std::vector<AllocationRecord> records;
  std::vector<std::string> paths;
  std::map<std::string, size_t> index;
  int64_t init_r = 0, target_r = 0;
  for (auto& r : rec.ranks) {
    records.push_back(parse_allocation(r));
    init_r = std::max(init_r, records.back().init_r);
    target_r = std::max(target_r, records.back().target_r);
    for (auto& [p, kept] : records.back().allocated) {
      if (p != "?" && !index.count(p)) {
        index[p] = paths.size();
        paths.push_back(p);
      }
    }
  }
  std::vector<std::pair<std::string, int64_t>> zero;
  for (auto& p : paths) zero.push_back({p, 0});
  RankTable grid = build_rank_table(zero, init_r, target_r);
  json modules = json::array();
  for (auto& p : paths) {
    auto s = parse_module_path(p);
    size_t row = std::find(grid.layers.begin(), grid.layers.end(), s.layer) - grid.layers.begin();
    size_t col = std::find(grid.types.begin(), grid.types.end(), s.type) - grid.types.begin();
    modules.push_back({{"path", p}, {"row", row}, {"col", col}});
  }
  json allocs = json::array();
  for (auto& a : records) {
    json allocated(paths.size(), nullptr);
    for (auto& [p, kept] : a.allocated) {
      auto it = index.find(p);
      if (it != index.end()) allocated[it->second] = kept;
    }
    allocs.push_back({{"step", a.step}, {"phase", a.phase}, {"budget", a.budget}, {"final_mask", a.final_mask},
                      {"allocated", allocated}});
  }
  json layers = json::array();
  for (auto l : grid.layers) layers.push_back(l < 0 ? std::string("other") : "L" + std::to_string(l));
  return {{"init_r", init_r}, {"target_r", target_r}, {"layers", layers}, {"types", grid.types},
          {"labels", short_type_labels(grid.types)}, {"modules", modules}, {"allocs", allocs}};
}

std::string summary_html(const RunRecords& rec, const json& ranks, bool adalora) {
  std::vector<std::pair<std::string, std::string>> items;
  items.push_back({"method", adalora ? "AdaLoRA" : "LoRA"});
  if (!rec.train.empty()) {
    auto* step = last_number(rec.train, "step");
    items.push_back({"steps", step ? std::to_string(step->get<int64_t>()) : std::to_string(rec.train.size())});
    if (auto* loss = last_number(rec.train, "loss")) items.push_back({"final loss", fmt(loss->get<double>())});
    else items.push_back({"final loss", "NaN"});
  } else {
    items.push_back({"steps", "0"});
  }
  if (auto* v = last_number(rec.eval, "eval_loss")) items.push_back({"final eval loss", fmt(v->get<double>())});
  if (auto* v = last_number(rec.eval, "eval_ppl")) items.push_back({"final eval perplexity", fmt(v->get<double>())});
  if (auto* v = last_number(rec.eval, "eval_accuracy")) items.push_back({"final eval accuracy", fmt(v->get<double>())});
  if (!ranks.is_null() && !ranks["allocs"].empty()) {
    int64_t n = ranks["modules"].size(), init_r = ranks["init_r"].get<int64_t>();
    int64_t kept = 0;
    for (auto& a : ranks["allocs"].back()["allocated"])  // the last allocation's kept triplets
      if (a.is_number()) kept += a.get<int64_t>();
    int64_t initial = init_r * n;
    std::string pct = initial > 0 ? " (" + fmt(100.0 * kept / initial, 3) + "%)" : "";
    items.push_back({"final budget", std::to_string(kept) + " of " + std::to_string(initial) + pct});
    items.push_back({"modules", std::to_string(n) + " x init_r " + std::to_string(init_r) +
                                    (ranks["target_r"].get<int64_t>() > 0
                                         ? ", target_r " + std::to_string(ranks["target_r"].get<int64_t>())
                                         : "")});
  }
  if (auto* v = last_number(rec.train, "elapsed_s")) items.push_back({"elapsed", fmt(v->get<double>(), 4) + " s"});
  std::string h = "<div class=\"summary\">";
  for (auto& [k, v] : items)
    h += "<div class=\"stat\"><div class=\"k\">" + html_escape(k) + "</div><div class=\"v\">" + html_escape(v) +
         "</div></div>";
  h += "</div>";
  if (rec.skipped_lines > 0)
    h += "<p class=\"note\">" + std::to_string(rec.skipped_lines) +
         " unreadable line(s) skipped (a run still writing leaves its last line incomplete).</p>";
  return h;
}

const char* kPage = R"PAGE(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@TITLE@</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
main{max-width:1120px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:4px 0 14px}
h2{font-size:16px;margin:0 0 6px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 16px;margin:14px 0}
.summary{display:flex;flex-wrap:wrap;gap:10px}
.stat{flex:0 0 auto;background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:8px 14px;min-width:110px}
.stat .k{font-size:12px;color:#5b6577}.stat .v{font-size:18px;font-weight:600}
.note{color:#5b6577;margin:4px 0 8px}
canvas{display:block;width:100%}
.controls{display:flex;align-items:center;gap:10px;margin:6px 0}
.controls input[type=range]{flex:1}
button{font:inherit;padding:2px 10px}
#errors{color:#b00020;white-space:pre-wrap}
</style></head>
<body><main>
<h1>@TITLE@</h1>
@SUMMARY@
<div id="sections"></div>
<pre id="errors"></pre>
</main>
<script type="application/json" id="run-data">@DATA@</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("run-data").textContent);
const errors = [];
let charts = 0;
window.addEventListener("error", e => { errors.push(String(e.message)); mark(); });
function mark() {
  document.body.dataset.rendered = errors.length ? "error" : "ok";
  document.body.dataset.charts = charts;
  document.body.dataset.errors = errors.length;
  document.getElementById("errors").textContent = errors.join("\n");
}
const PHASE_COLOR = {"warm-up": "#fff4d6", "budgeting": "#e4efff", "final": "#e2f5e6"};
const fin = v => typeof v === "number" && isFinite(v);

// One section with a title, an optional note and a canvas of the given CSS height.
function section(title, note, height) {
  const s = document.createElement("section");
  s.innerHTML = "<h2></h2>" + (note ? "<p class='note'></p>" : "");
  s.querySelector("h2").textContent = title;
  if (note) s.querySelector(".note").textContent = note;
  document.getElementById("sections").appendChild(s);
  if (!height) return {s};
  const c = document.createElement("canvas");
  s.appendChild(c);
  return {s, c, ctx: sizeCanvas(c, height)};
}
function sizeCanvas(c, height) {
  const dpr = window.devicePixelRatio || 1, w = c.parentElement.clientWidth - 32;
  c.style.height = height + "px"; c.width = w * dpr; c.height = height * dpr;
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.W = w; ctx.H = height; ctx.font = "12px system-ui, sans-serif";
  return ctx;
}

// Colour scale 0..1: pale to deep blue; text turns white on the dark half.
const STOPS = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
function colour(t) {
  t = Math.max(0, Math.min(1, t)) * (STOPS.length - 1);
  const i = Math.min(Math.floor(t), STOPS.length - 2), f = t - i;
  const c = STOPS[i].map((a, k) => Math.round(a + (STOPS[i + 1][k] - a) * f));
  return "rgb(" + c.join(",") + ")";
}

// Heat-map: value(r, c) is a number, or null where no module sits; scale(r) its row's maximum.
function heatmap(ctx, rows, cols, value, scale, opts) {
  opts = opts || {};
  ctx.clearRect(0, 0, ctx.W, ctx.H);
  const left = opts.left || 70, top = 22, legend = 34;
  const cw = (ctx.W - left) / cols.length, ch = (ctx.H - top - legend) / rows.length;
  ctx.textAlign = "center"; ctx.textBaseline = "middle";
  const every = Math.max(1, Math.ceil(60 / cw)), gx = cw >= 8 ? 1 : 0, gy = ch >= 8 ? 1 : 0;
  ctx.fillStyle = "#333";
  cols.forEach((c, j) => {
    const x = left + (j + 0.5) * cw, half = ctx.measureText(c).width / 2;
    if (j % every === 0 && x + half <= ctx.W) ctx.fillText(c, x, top / 2);
  });
  const rowEvery = Math.max(1, Math.ceil(13 / ch));
  rows.forEach((r, i) => {
    ctx.textAlign = "right"; ctx.fillStyle = "#333";
    if (i % rowEvery === 0) ctx.fillText(r, left - 6, top + (i + 0.5) * ch);
    ctx.textAlign = "center";
    cols.forEach((c, j) => {
      // whole pixels, so narrow cells leave no seams
      const v = value(i, j), x = Math.round(left + j * cw), y = Math.round(top + i * ch);
      const cw_ = Math.round(left + (j + 1) * cw) - x, ch_ = Math.round(top + (i + 1) * ch) - y;
      if (v === null || v === undefined) { ctx.fillStyle = "#eceef1"; ctx.fillRect(x, y, cw_ - gx, ch_ - gy); return; }
      const t = scale(i) > 0 ? v / scale(i) : 0;
      ctx.fillStyle = colour(t); ctx.fillRect(x, y, cw_ - gx, ch_ - gy);
      if (cw >= 18 && ch >= 12) {
        ctx.fillStyle = t > 0.55 ? "#fff" : "#1d2330";
        ctx.fillText(String(v), x + cw_ / 2, y + ch_ / 2);
      }
    });
  });
  // legend: the colour bar with its ends
  const ly = ctx.H - legend + 12, lw = Math.min(240, ctx.W - left - 140);
  for (let k = 0; k < lw; k++) { ctx.fillStyle = colour(k / lw); ctx.fillRect(left + k, ly, 1, 10); }
  ctx.fillStyle = "#333"; ctx.textAlign = "left";
  ctx.fillText(opts.legend || "", left + lw + 10, ly + 5);
  ctx.textAlign = "center"; ctx.fillText("0", left, ly + 18); ctx.fillText(opts.max || "max", left + lw, ly + 18);
}

function niceTicks(lo, hi, n) {
  const span = hi - lo || Math.abs(hi) || 1, raw = span / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * p).find(s => s >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

// Line chart. series: {name, xs, ys, color, dash, dots}; bands: {x0, x1, color, label}.
function lineChart(ctx, series, opts) {
  const L = 60, R = 16, T = 34, B = 36, w = ctx.W - L - R, h = ctx.H - T - B;
  const xs = [], ys = [];
  series.forEach(s => s.xs.forEach((x, i) => { if (fin(x) && fin(s.ys[i])) { xs.push(x); ys.push(s.ys[i]); } }));
  if (!xs.length) { ctx.fillStyle = "#5b6577"; ctx.fillText("no finite values to plot", L + 10, T + 20); return; }
  let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = opts.zero ? 0 : Math.min(...ys), y1 = Math.max(...ys);
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.06; y1 += pad; if (!opts.zero) y0 -= pad;
  const X = x => L + (x - x0) / (x1 - x0) * w, Y = y => T + h - (y - y0) / (y1 - y0) * h;
  (opts.bands || []).forEach(b => {
    const a = X(Math.max(b.x0, x0)), z = X(Math.min(b.x1, x1));
    ctx.fillStyle = b.color; ctx.fillRect(a, T, Math.max(z - a, 1), h);
    ctx.fillStyle = "#5b6577"; ctx.textAlign = "center";
    if (z - a > 50) ctx.fillText(b.label, (a + z) / 2, T + 10);
  });
  ctx.strokeStyle = "#e3e6ea"; ctx.fillStyle = "#333"; ctx.lineWidth = 1;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  niceTicks(y0, y1, 5).forEach(v => {
    ctx.beginPath(); ctx.moveTo(L, Y(v)); ctx.lineTo(L + w, Y(v)); ctx.stroke(); ctx.fillText(String(v), L - 6, Y(v));
  });
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  niceTicks(x0, x1, 8).forEach(v => ctx.fillText(String(v), X(v), T + h + 6));
  ctx.fillText(opts.xlabel || "step", L + w / 2, T + h + 20);
  if (opts.ylabel) {
    ctx.save(); ctx.translate(14, T + h / 2); ctx.rotate(-Math.PI / 2); ctx.fillText(opts.ylabel, 0, -6); ctx.restore();
  }
  ctx.strokeStyle = "#8a93a3"; ctx.strokeRect(L, T, w, h);
  series.forEach(s => {
    ctx.strokeStyle = ctx.fillStyle = s.color; ctx.lineWidth = s.width || 1.6; ctx.setLineDash(s.dash || []);
    if (!s.dots) {
      ctx.beginPath(); let on = false, n = 0;
      s.xs.forEach((x, i) => {
        const y = s.ys[i];
        if (!fin(x) || !fin(y)) { on = false; return; }
        on ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y)); on = true; n++;
      });
      ctx.stroke(); ctx.setLineDash([]);
      if (n === 1) s.dots = true;  // a single point has no line: draw it as a dot
    }
    if (s.dots) s.xs.forEach((x, i) => {
      if (fin(x) && fin(s.ys[i])) { ctx.beginPath(); ctx.arc(X(x), Y(s.ys[i]), s.r || 3.5, 0, 7); ctx.fill(); }
    });
  });
  ctx.setLineDash([]);
  // legend above the plot
  let lx = L; ctx.textAlign = "left"; ctx.textBaseline = "middle";
  series.forEach(s => {
    ctx.fillStyle = s.color;
    if (s.dots) { ctx.beginPath(); ctx.arc(lx + 7, 12, 4, 0, 7); ctx.fill(); } else ctx.fillRect(lx, 11, 14, 3);
    ctx.fillStyle = "#1d2330"; ctx.fillText(s.name, lx + 18, 12); lx += ctx.measureText(s.name).width + 34;
  });
}

// Contiguous runs of the train records' phase, as shaded bands.
function phaseBands(tr) {
  const bands = [];
  (tr.phase || []).forEach((p, i) => {
    if (!p) return;
    const x = tr.step[i], last = bands[bands.length - 1];
    if (last && last.label === p) last.x1 = x; else bands.push({x0: x, x1: x, label: p, color: PHASE_COLOR[p] || "#eee"});
  });
  bands.forEach((b, i) => { if (bands[i + 1]) b.x1 = bands[i + 1].x0; });
  if (bands.length) bands[0].x0 = Math.min(bands[0].x0, 0);  // the first phase starts at step 0, logged or not
  return bands;
}

function drawRanks(R) {
  const rows = R.layers, cols = R.labels, A = R.allocs, n = A.length;
  const grid = alloc => {
    const g = rows.map(() => cols.map(() => null));
    R.modules.forEach((m, k) => { if (alloc.allocated[k] !== null) g[m.row][m.col] = alloc.allocated[k]; });
    return g;
  };
  const height = Math.min(760, Math.max(140, 56 + rows.length * 24));
  const last = A[n - 1], gl = grid(last);
  const fm = section("Rank allocation at the end",
    "Kept rank per layer and module type after the last allocation (step " + last.step + ", " + (last.phase || "") +
    (last.final_mask ? ", final mask" : "") + "). Colour scale 0.." + R.init_r + " (init_r).", height);
  heatmap(fm.ctx, rows, cols, (i, j) => gl[i][j], () => R.init_r, {legend: "kept rank", max: String(R.init_r)});
  charts++;

  // one allocation at a time, chosen with a slider
  const ov = section("Rank allocation over time", "Choose an allocation to see its heat-map; " + n + " allocation(s) recorded.");
  const ctl = document.createElement("div"); ctl.className = "controls";
  ctl.innerHTML = "<button id='prev'>&#9664;</button><input id='alloc' type='range' min='0' step='1'>" +
    "<button id='next'>&#9654;</button><span id='alloc-label'></span>";
  ov.s.appendChild(ctl);
  const c = document.createElement("canvas"); ov.s.appendChild(c);
  const ctx = sizeCanvas(c, height), slider = ctl.querySelector("#alloc");
  slider.max = n - 1; slider.value = 0;
  const show = k => {
    const a = A[k], g = grid(a);
    const kept = a.allocated.reduce((s, v) => s + (v || 0), 0);
    ctl.querySelector("#alloc-label").textContent = "allocation " + (k + 1) + " of " + n + ": step " + a.step +
      ", " + (a.phase || "") + ", budget " + a.budget + ", kept " + kept + (a.final_mask ? " (final mask)" : "");
    heatmap(ctx, rows, cols, (i, j) => g[i][j], () => R.init_r, {legend: "kept rank", max: String(R.init_r)});
  };
  slider.oninput = () => show(+slider.value);
  ctl.querySelector("#prev").onclick = () => { slider.value = Math.max(0, +slider.value - 1); show(+slider.value); };
  ctl.querySelector("#next").onclick = () => { slider.value = Math.min(n - 1, +slider.value + 1); show(+slider.value); };
  show(0);
  charts++;

  // where the budget went: per layer and per module type, against allocation steps (at most 400 columns)
  const pick = [];
  for (let k = 0; k < n; k += Math.ceil(n / 400)) pick.push(k);
  if (pick[pick.length - 1] !== n - 1) pick.push(n - 1);
  const steps = pick.map(k => String(A[k].step));
  const sums = (key) => {
    const size = key === "row" ? rows.length : cols.length;
    const full = new Array(size).fill(0);
    R.modules.forEach(m => full[m[key]] += R.init_r);
    const per = pick.map(k => A[k]).map(a => { const s = new Array(size).fill(0); R.modules.forEach((m, k) => s[m[key]] += a.allocated[k] || 0); return s; });
    return {full, value: (i, j) => per[j][i]};
  };
  const byLayer = sums("row"), byType = sums("col");
  const tl = section("Budget per layer over time",
    "Rows: layers; columns: allocation steps; cell: the layer's kept rank, coloured by its share of the layer's init_r total.",
    Math.min(760, Math.max(140, 56 + rows.length * 20)));
  heatmap(tl.ctx, rows, steps, byLayer.value, i => byLayer.full[i], {legend: "share of init_r total", max: "100%"});
  charts++;
  const tt = section("Budget per module type over time",
    "Rows: module types; columns: allocation steps; cell: the type's kept rank, coloured by its share of the type's init_r total.",
    Math.max(140, 56 + cols.length * 24));
  heatmap(tt.ctx, cols, steps, byType.value, i => byType.full[i], {legend: "share of init_r total", max: "100%", left: 110});
  charts++;
}

function drawBudget(tr, R) {
  const b = section("Budget over steps",
    "Scheduled budget b(t) and the live rank (non-zero singular values) per step, phases shaded. " +
    "During budgeting the live rank jumps back to init_r between masks because the optimizer's momentum moves " +
    "masked singular values away from zero again; only the final mask keeps them at zero.", 360);
  const series = [  // live rank first, so the budget curve is drawn over its spikes
    {name: "live rank", xs: tr.step, ys: tr.live_rank, color: "rgba(217, 83, 79, 0.6)", width: 1},
    {name: "budget b(t)", xs: tr.step, ys: tr.budget, color: "#1f5fbf", width: 2.2}];
  if (R) series.push({name: "kept at allocation", xs: R.allocs.map(a => a.step), color: "#2e7d32", dots: true, r: R.allocs.length > 100 ? 1.8 : 3,
    ys: R.allocs.map(a => a.allocated.reduce((s, v) => s + (v || 0), 0))});
  lineChart(b.ctx, series, {bands: phaseBands(tr), zero: true, ylabel: "total rank"});
  charts++;
}

function drawLoss(tr, ev) {
  const l = section("Loss", "Training loss per optimizer step" + (ev.step.length ? " and evaluation loss." : "."), 340);
  const series = [{name: "train loss", xs: tr.step, ys: tr.loss, color: "#1f5fbf"}];
  if ((tr.orth_penalty || []).some(fin)) series.push({name: "loss + orthogonal penalty", xs: tr.step,
    ys: tr.loss.map((l, i) => fin(l) && fin(tr.orth_penalty[i]) ? l + tr.orth_penalty[i] : null), color: "#7a8699", dash: [4, 3], width: 1.2});
  if (ev.step.length) series.push({name: "eval loss", xs: ev.step, ys: ev.eval_loss, color: "#e07b00", dots: true, r: 4.5});
  lineChart(l.ctx, series, {bands: phaseBands(tr), ylabel: "loss"});
  charts++;
}

const tasks = [];
if (D.ranks && D.ranks.allocs.length) tasks.push(() => drawRanks(D.ranks));
else section("Rank allocation", D.adalora
  ? "No ranks.jsonl records yet: no allocation has happened, every module is at init_r."
  : "LoRA run: ranks are fixed (no ranks.jsonl), so the rank heat-maps and budget curve are omitted.");
if (D.adalora && (D.train.budget || []).some(fin)) tasks.push(() => drawBudget(D.train, D.ranks));
tasks.push(() => drawLoss(D.train, D.eval));
tasks.forEach(f => { try { f(); } catch (e) { errors.push(String(e && e.stack || e)); } });
mark();
</script>
</body></html>
)PAGE";

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
}

}  // namespace

std::string render_report_html(const RunRecords& rec, const std::string& title) {
  bool adalora = rec.has_ranks || !rec.ranks.empty() || any_key(rec.train, "budget") || any_key(rec.train, "phase");
  json ranks = rank_data(rec);
  json train = json::object();
  for (auto* k : {"step", "loss", "orth_penalty", "lr", "budget", "live_rank", "phase"}) train[k] = column(rec.train, k);
  json eval = json::object();
  for (auto* k : {"step", "eval_loss", "eval_ppl", "eval_accuracy"}) eval[k] = column(rec.eval, k);
  json data = {{"adalora", adalora}, {"train", train}, {"eval", eval}, {"ranks", ranks},
               {"skipped_lines", rec.skipped_lines}};
  std::string page = kPage;
  replace_all(page, "@SUMMARY@", summary_html(rec, ranks, adalora));
  replace_all(page, "@TITLE@", html_escape(title));
  replace_all(page, "@DATA@", script_json(data));  // last: the data may contain the other markers
  return page;
}

std::string write_report(const std::string& run_dir, const ReportOptions& options) {
  RunRecords rec = read_run_records(run_dir);
  std::string name = fs::path(run_dir).lexically_normal().filename().string();
  if (name.empty() || name == ".") name = fs::absolute(run_dir).lexically_normal().parent_path().filename().string();
  std::string title = options.title.empty() ? "peft run " + name : options.title;
  std::string path = options.output_path.empty() ? (fs::path(run_dir) / "report.html").string() : options.output_path;
  write_text_atomic(path, render_report_html(rec, title));
  return path;
}

}  // namespace peft
