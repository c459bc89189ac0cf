// report.html of a training run: a self-contained page (data embedded as JSON, charts drawn by
// inline JavaScript on canvas) with the run summary, rank heat-maps, budget curve and loss curves.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace peft {

struct ReportOptions {
  std::string title;        // page title; empty: "peft run <dir name>"
  std::string output_path;  // empty: RUN_DIR/report.html
};

// What the report reads from a run directory (docs/formats.md), in the shape the page embeds.
struct RunRecords {
  nlohmann::json train = nlohmann::json::array();   // metrics.jsonl records with type "train"
  nlohmann::json eval = nlohmann::json::array();    // records with type "eval"
  nlohmann::json ranks = nlohmann::json::array();   // ranks.jsonl records (empty for LoRA)
  bool has_ranks = false;   // ranks.jsonl exists
  int skipped_lines = 0;    // unparsable lines (a truncated last line of a running job)
};

// Reads one JSON object per line; NaN / Infinity tokens (as Python writes them) become null, lines
// that do not parse are counted in `skipped` and left out. Throws std::runtime_error naming the file
// when it cannot be opened.
nlohmann::json read_jsonl(const std::string& path, int* skipped = nullptr);

// RUN_DIR/metrics.jsonl (required) and RUN_DIR/ranks.jsonl (optional).
RunRecords read_run_records(const std::string& run_dir);

// The page as a string.
std::string render_report_html(const RunRecords& records, const std::string& title);

// Writes the report atomically (temp file + rename) and returns its path.
// Throws std::runtime_error naming the file when the run directory or metrics.jsonl is unreadable.
std::string write_report(const std::string& run_dir, const ReportOptions& options = {});

}  // namespace peft
