// metrics.jsonl and ranks.jsonl: their records built, appended with every write checked, cut back
// to a checkpoint on resume, and read back (tolerating a truncated last line) for the report.
#include "peft/observability/run_log.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "peft/core/file_io.h"
#include "peft/adapters/peft_model.h"
#include "peft/observability/rank_table.h"

namespace peft {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Python's json module writes NaN, Infinity and -Infinity; JSON has no such tokens. Outside strings
// they become null so the line still parses.
std::string null_non_finite(const std::string& line) {
  std::string out;
  bool in_str = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (in_str) {
      out += c;
      if (c == '\\' && i + 1 < line.size()) out += line[++i];
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    bool replaced = false;
    for (const char* tok : {"-Infinity", "Infinity", "NaN"}) {
      size_t n = std::char_traits<char>::length(tok);
      if (line.compare(i, n, tok) == 0) {
        out += "null";
        i += n - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += c;
  }
  return out;
}

// Keeps the records of a run up to its checkpoint after `steps` optimizer steps, atomically.
void truncate_jsonl(const fs::path& path, int64_t steps) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::ostringstream kept;
  std::string line;
  while (std::getline(in, line)) {
    try {
      auto j = json::parse(line);
      if (j.value("step", int64_t{0}) <= steps) kept << line << "\n";
    } catch (const json::exception&) {
      // a line cut by a crash: dropped
    }
  }
  in.close();
  write_text_atomic(path.string(), kept.str());
}

}  // namespace

json read_jsonl(const std::string& path, int* skipped) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open (check the path and that the run wrote it)");
  json out = json::array();
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      json j = json::parse(null_non_finite(line));
      if (j.is_object()) {
        out.push_back(std::move(j));
        continue;
      }
    } catch (const json::exception&) {
    }
    if (skipped) ++*skipped;
  }
  return out;
}

RunRecords read_run_records(const std::string& run_dir) {
  if (!fs::is_directory(run_dir))
    throw std::runtime_error(run_dir + ": not a directory (expected a run directory written by peft train)");
  RunRecords rec;
  std::string metrics = (fs::path(run_dir) / "metrics.jsonl").string();
  if (!fs::exists(metrics))
    throw std::runtime_error(metrics + ": not found (expected the run directory given to peft train --output-dir)");
  for (auto& r : read_jsonl(metrics, &rec.skipped_lines)) {
    const auto type = r.contains("type") && r["type"].is_string() ? r["type"].get<std::string>() : "train";
    if (type == "eval") {
      rec.eval.push_back(r);
    } else if (type == "train") {
      // records written before "loss" meant the task loss: loss included the penalty, task_loss not
      if (r.contains("task_loss") && r["task_loss"].is_number() && r.contains("loss") && r["loss"].is_number()) {
        r["orth_penalty"] = r["loss"].get<double>() - r["task_loss"].get<double>();
        r["loss"] = r["task_loss"];
        r.erase("task_loss");
      }
      rec.train.push_back(r);
    }
  }
  std::string ranks = (fs::path(run_dir) / "ranks.jsonl").string();
  if (fs::exists(ranks)) {
    rec.has_ranks = true;
    rec.ranks = read_jsonl(ranks, &rec.skipped_lines);
  }
  return rec;
}

AllocationRecord parse_allocation(const json& r) {
  AllocationRecord a;
  if (!r.is_object()) return a;
  auto number = [&](const char* key) { return r.contains(key) && r[key].is_number() ? r[key] : json(); };
  a.step = number("step");
  a.budget = number("budget");
  if (r.contains("phase") && r["phase"].is_string()) a.phase = r["phase"].get<std::string>();
  a.final_mask = r.contains("final_mask") && r["final_mask"].is_boolean() && r["final_mask"].get<bool>();
  if (r.contains("init_r") && r["init_r"].is_number_integer()) a.init_r = r["init_r"].get<int64_t>();
  if (r.contains("target_r") && r["target_r"].is_number_integer()) a.target_r = r["target_r"].get<int64_t>();
  if (!r.contains("modules") || !r["modules"].is_array()) return a;
  for (auto& m : r["modules"]) {
    if (!m.is_object()) continue;
    int64_t kept = 0;
    if (m.contains("allocated") && m["allocated"].is_number_integer()) {
      kept = m["allocated"].get<int64_t>();
    } else if (m.contains("pattern") && m["pattern"].is_array()) {
      for (auto& b : m["pattern"]) kept += b.is_boolean() && b.get<bool>();
    }
    // records written before init_r was kept once per record carry it per module
    if (m.contains("init_r") && m["init_r"].is_number_integer()) a.init_r = std::max(a.init_r, m["init_r"].get<int64_t>());
    a.allocated.emplace_back(m.contains("path") && m["path"].is_string() ? m["path"].get<std::string>() : "?", kept);
  }
  return a;
}

json allocation_record(const PeftModel& model, const AllocationEvent& ev, int64_t step) {
  const auto& cfg = model.config();
  const auto live = model.allocator()->live_ranks();
  json rec = {{"step", step},          {"phase", phase_name(ev.phase)}, {"budget", ev.budget},
              {"final_mask", ev.final_mask}, {"init_r", cfg.init_r},    {"target_r", cfg.target_r}};
  json mods = json::array();
  for (size_t i = 0; i < model.modules().size(); ++i) {
    const auto& path = model.modules()[i].path;
    auto it = cfg.rank_pattern.find(path + ".lora_E");
    std::vector<bool> pattern;
    int64_t allocated = 0;
    if (it != cfg.rank_pattern.end()) {
      pattern = it->second;
      for (bool b : pattern) allocated += b;
    }
    auto loc = parse_module_path(path);
    mods.push_back({{"path", path}, {"layer", loc.layer}, {"type", loc.type}, {"allocated", allocated},
                    {"live", live[i]}, {"pattern", pattern}});
  }
  rec["modules"] = std::move(mods);
  return rec;
}

RunLog::RunLog(std::string run_dir) : dir_(std::move(run_dir)) {}

void RunLog::start(int64_t completed_steps) {
  for (auto* f : {"metrics.jsonl", "ranks.jsonl"}) {
    fs::path p = fs::path(dir_) / f;
    if (completed_steps == 0) {  // emptied in place (RunDir has checked it may be written)
      std::ofstream out(p, std::ios::trunc);
      if (!out) throw RunWriteError("cannot write " + p.string() + " (" + std::strerror(errno) + ")");
    } else {
      truncate_jsonl(p, completed_steps);
    }
  }
}

void RunLog::append(const std::string& file, const json& record) {
  const std::string path = (fs::path(dir_) / file).string();
  std::ofstream out(path, std::ios::app);
  out << record.dump() << "\n";
  out.flush();
  if (!out) throw RunWriteError("cannot write " + path + " (" + std::strerror(errno) + ")");
}

void RunLog::step(const StepRecord& r) {
  json m = {{"type", "train"}, {"step", r.step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm},
            {"tokens", r.tokens}, {"tokens_per_s", r.tokens_per_s}, {"elapsed_s", r.elapsed_s}, {"epoch", r.epoch}};
  if (!std::isnan(r.orth_penalty)) m["orth_penalty"] = r.orth_penalty;
  if (r.phase) {
    m["phase"] = r.phase;
    m["budget"] = r.budget;
    m["live_rank"] = r.live_rank;
  }
  append("metrics.jsonl", m);
}

void RunLog::eval(int64_t step, const EvalResult& e) {
  json j = {{"type", "eval"}, {"step", step}, {"eval_loss", e.loss}, {"eval_tokens", e.tokens}};
  if (e.accuracy >= 0) j["eval_accuracy"] = e.accuracy;
  else j["eval_ppl"] = e.perplexity;
  append("metrics.jsonl", j);
}

void RunLog::allocation(const json& record) { append("ranks.jsonl", record); }

}  // namespace peft
