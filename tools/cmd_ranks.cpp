// `peft ranks ADAPTER_DIR`: prints the kept rank per layer and module type of an adapter (or of one
// record of a run's ranks.jsonl) as a table with totals and a shading heat-map.
#include <filesystem>
#include <iostream>

#include "command.h"
#include "peft/core/flags.h"
#include "peft/observability/rank_table.h"
#include "peft/observability/run_log.h"

namespace {

namespace fs = std::filesystem;

// The allocation record of `step` (or the last one when step < 0) of a ranks.jsonl file.
peft::RankTable table_from_jsonl(const std::string& path, int64_t step, std::string& title) {
  auto records = peft::read_jsonl(path);
  const nlohmann::json* rec = nullptr;
  std::string steps;
  for (auto& r : records) {
    auto s = r.contains("step") && r["step"].is_number() ? r["step"].get<int64_t>() : -1;
    steps += (steps.empty() ? "" : " ") + std::to_string(s);
    if (step < 0 || s == step) rec = &r;
  }
  if (!rec) {
    if (records.empty()) throw std::runtime_error(path + ": no allocation records (the run has not masked yet)");
    throw std::runtime_error(path + ": no record for step " + std::to_string(step) + " (steps recorded: " + steps + ")");
  }
  auto a = peft::parse_allocation(*rec);
  title = "allocation at step " + (a.step.is_null() ? std::string("?") : a.step.dump()) + " (" +
          (a.phase.empty() ? std::string("?") : a.phase) + (a.final_mask ? ", final mask" : "") + "), scheduled budget " +
          (a.budget.is_null() ? std::string("?") : a.budget.dump());
  return peft::build_rank_table(a.allocated, a.init_r, a.target_r);
}

int run_ranks(const std::vector<std::string>& args) {
  std::string dir, jsonl;
  int64_t step = -1;
  bool transpose = false, compact = false;
  peft::Flags flags(
      "ranks",
      "peft ranks ADAPTER_DIR|RUN_DIR [--transpose] [--compact]\n"
      "       peft ranks --jsonl RUN_DIR/ranks.jsonl [--step N] [--transpose] [--compact]",
      "Prints the rank table of an adapter: rows = layers, columns = module types, cells = kept rank\n"
      "(AdaLoRA: true entries of rank_pattern; LoRA: r or its rank_pattern override), with row and\n"
      "column totals, the total budget against init_r x modules and target_r x modules, and a heat-map\n"
      "shaded ' ░▒▓█' from 0 to init_r. A RUN_DIR is read through RUN_DIR/adapter.",
      "  peft ranks out/demo/adapter\n"
      "  peft ranks --jsonl out/demo/ranks.jsonl --step 64");
  flags.positional("ADAPTER_DIR", &dir);
  flags.flag("jsonl", "FILE", "read an allocation record of ranks.jsonl instead of an adapter", &jsonl);
  flags.flag("step", "N", "the record of optimizer step N (default: the last record)", &step);
  flags.toggle("transpose", "one row per module type, layers across", &transpose);
  flags.toggle("compact", "the short form the trainer logs at each allocation (fits 100 columns)", &compact);
  try {
    if (!flags.parse(args)) return 0;
    if (dir.empty() == jsonl.empty())
      throw std::invalid_argument("give either ADAPTER_DIR or --jsonl FILE; see peft ranks --help");
    if (step >= 0 && jsonl.empty())
      throw std::invalid_argument("--step needs --jsonl RUN_DIR/ranks.jsonl (an adapter holds one allocation)");
  } catch (const std::invalid_argument& e) {
    std::cerr << "peft ranks: error: " << e.what() << "\n";
    return 2;
  }
  try {
    peft::RankTable t;
    std::string title;
    if (!jsonl.empty()) {
      t = table_from_jsonl(jsonl, step, title);
    } else {
      if (!fs::exists(fs::path(dir) / "adapter_config.json") && fs::exists(fs::path(dir) / "adapter" / "adapter_config.json"))
        dir = (fs::path(dir) / "adapter").string();
      std::string note;
      t = peft::adapter_rank_table(dir, &note);
      title = dir + (note.empty() ? "" : "\n" + note);
    }
    if (t.n_modules() == 0) {
      std::cout << title << "\nno adapted modules found\n";
      return 1;
    }
    std::cout << title << "\n\n";
    if (compact) {
      std::cout << peft::render_rank_table_compact(t);
      return 0;
    }
    std::cout << peft::render_rank_table(t, {transpose, false, true}) << "\n";
    std::cout << "heat-map: ' ' 0   ░ ▒ ▓ below " << (t.fixed ? "the largest r" : "init_r") << "   █ "
              << (t.fixed ? "r" : "init_r") << " = " << t.init_r << "\n";
    std::cout << peft::render_rank_table(t, {transpose, true, false});
  } catch (const std::exception& e) {
    std::cerr << "peft ranks: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

PEFT_COMMAND("ranks", "print the rank table (layers x module types) of an adapter or an allocation record", run_ranks);
