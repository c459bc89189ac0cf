// report.html of a training run: a self-contained page (data embedded as JSON, charts drawn by
// inline JavaScript on canvas) with the run summary, rank heat-maps, budget curve and loss curves.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "peft/observability/run_log.h"

namespace peft {

struct ReportOptions {
  std::string title;        // page title; empty: "peft run <dir name>"
  std::string output_path;  // empty: RUN_DIR/report.html
};

// The page as a string.
std::string render_report_html(const RunRecords& records, const std::string& title);

// Writes the report atomically (temp file + rename) and returns its path.
// Throws std::runtime_error naming the file when the run directory or metrics.jsonl is unreadable.
std::string write_report(const std::string& run_dir, const ReportOptions& options = {});

}  // namespace peft
