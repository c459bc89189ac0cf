// `peft report RUN_DIR`: (re)generates RUN_DIR/report.html from the run's metrics.jsonl and
// ranks.jsonl, e.g. while the run is still going or after copying a run directory.
#include <iostream>

#include "command.h"
#include "peft/report.h"

namespace {

int run_report(const std::vector<std::string>& args) {
  std::string dir;
  peft::ReportOptions opts;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::cout << "usage: peft report RUN_DIR [--title TEXT] [--output FILE]\n\n"
                   "Writes RUN_DIR/report.html (or FILE): one self-contained page with the run summary, the\n"
                   "rank heat-maps (at the end and per allocation), the budget curve with its phases and the\n"
                   "loss curves, drawn from RUN_DIR/metrics.jsonl and RUN_DIR/ranks.jsonl (absent for LoRA).\n"
                   "Open it in any browser; it needs no network. Prints the path written.\n\n"
                   "example: peft report runs/llama-adalora\n";
      return 0;
    } else if (args[i] == "--title" && i + 1 < args.size()) {
      opts.title = args[++i];
    } else if (args[i] == "--output" && i + 1 < args.size()) {
      opts.output_path = args[++i];
    } else if (dir.empty() && args[i].rfind("--", 0) != 0) {
      dir = args[i];
    } else {
      std::cerr << "peft report: unexpected argument '" << args[i] << "' (see peft report --help)\n";
      return 2;
    }
  }
  if (dir.empty()) {
    std::cerr << "peft report: missing RUN_DIR (see peft report --help)\n";
    return 2;
  }
  try {
    std::cout << peft::write_report(dir, opts) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "peft report: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

PEFT_COMMAND("report", "write RUN_DIR/report.html: rank heat-maps, budget and loss curves", run_report);
