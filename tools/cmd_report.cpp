// `peft report RUN_DIR`: (re)generates RUN_DIR/report.html from the run's metrics.jsonl and
// ranks.jsonl, e.g. while the run is still going or after copying a run directory.
#include <iostream>

#include "command.h"
#include "peft/core/file_io.h"
#include "peft/core/flags.h"
#include "peft/observability/report.h"

namespace {

int run_report(const std::vector<std::string>& args) {
  std::string dir;
  peft::ReportOptions opts;
  peft::Flags flags(
      "report", "peft report RUN_DIR [--title TEXT] [--output FILE]",
      "Writes RUN_DIR/report.html (or FILE): one self-contained page with the run summary, the\n"
      "rank heat-maps (at the end and per allocation), the budget curve with its phases and the\n"
      "loss curves, drawn from RUN_DIR/metrics.jsonl and RUN_DIR/ranks.jsonl (absent for LoRA).\n"
      "Open it in any browser; it needs no network. Prints the path written.",
      "  peft report out/demo");
  flags.positional("RUN_DIR", &dir);
  flags.flag("title", "TEXT", "page title (default: \"peft run\" and the run directory's name)", &opts.title);
  flags.flag("output", "FILE", "where to write the page (default: RUN_DIR/report.html)", &opts.output_path);
  try {
    if (!flags.parse(args)) return 0;
    flags.require("RUN_DIR", dir);
  } catch (const std::invalid_argument& e) {
    std::cerr << "peft report: error: " << e.what() << "\n";
    return 2;
  }
  try {
    if (!opts.output_path.empty()) {
      peft::refuse_output_over_inputs("output", opts.output_path,
                                      {{"the run's metrics", dir + "/metrics.jsonl"}, {"the run's ranks", dir + "/ranks.jsonl"}});
    }
    std::cout << peft::write_report(dir, opts) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "peft report: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

PEFT_COMMAND("report", "write RUN_DIR/report.html: rank heat-maps, budget and loss curves", run_report);
