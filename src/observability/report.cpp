// report.html: reads a run's metrics.jsonl and ranks.jsonl, embeds them as JSON in one HTML page
// whose inline script draws the rank heat-maps, budget curve and loss curves on canvas.
#include "peft/observability/report.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

#include "peft/core/file_io.h"
#include "peft/observability/rank_table.h"

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

// src/observability/report.html, embedded by CMake (report_page.inc in the build tree).
const char* kPage =
#include "report_page.inc"
    ;

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
