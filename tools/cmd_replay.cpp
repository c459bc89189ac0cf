// `peft replay CASE_DIR`: re-runs a recorded reference training run and compares every step.
// Prints one JSON line per step and a summary; exits 0 only when all deviations are in tolerance.
#include <iostream>

#include "command.h"
#include "peft/compat.h"
#include "peft/replay.h"

namespace {

int run_replay(const std::vector<std::string>& args) {
  std::string dir, save;
  bool quiet = false;
  peft::LoadOptions load;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::cout << "usage: peft replay CASE_DIR [--save-adapter DIR] [--dtype float32|bfloat16] [--device cpu|cuda] [--quiet]\n\n"
                   "Replays a golden case: loads CASE_DIR/base and CASE_DIR/adapter_init, trains exactly as\n"
                   "CASE_DIR/data.json says (AdamW, gradient accumulation, update_and_allocate after each\n"
                   "optimizer step), prints one JSON line per step {step, loss, ranks, budget}, then compares\n"
                   "with trace.json, adapter_final/ and ref_logits.safetensors when present and prints the\n"
                   "worst deviation of each. Exit code 0: all within tolerance (loss 1e-4 relative, budgets\n"
                   "and rank_pattern equal, adapter 1e-3 relative, logits 1e-4 absolute); 1 otherwise.\n"
                   "--dtype bfloat16 keeps the base weights in bfloat16 (adapters stay float32) to see how far\n"
                   "that moves the run; --device cuda replays on the GPU (TF32 off).\n\n"
                   "example: peft replay tests/fixtures/golden/llama_a\n";
      return 0;
    } else if (args[i] == "--save-adapter" && i + 1 < args.size()) {
      save = args[++i];
    } else if (args[i] == "--dtype" && i + 1 < args.size()) {
      load.dtype = peft::parse_dtype(args[++i]);
    } else if (args[i] == "--device" && i + 1 < args.size()) {
      load.device = peft::compat::device_from_name(args[++i]);
    } else if (args[i] == "--quiet") {
      quiet = true;
    } else if (dir.empty()) {
      dir = args[i];
    } else {
      std::cerr << "peft replay: unexpected argument '" << args[i] << "' (see peft replay --help)\n";
      return 2;
    }
  }
  if (dir.empty()) {
    std::cerr << "peft replay: missing CASE_DIR (see peft replay --help)\n";
    return 2;
  }
  auto report = peft::replay_golden(
      dir, [&](const nlohmann::json& line) { if (!quiet) std::cout << line.dump() << "\n" << std::flush; }, {}, save, load);
  std::cout << nlohmann::json{{"summary", report.to_json()}}.dump() << "\n";
  if (!report.ok) std::cerr << "peft replay: deviation beyond tolerance: " << report.first_failure << "\n";
  return report.ok ? 0 : 1;
}

}  // namespace

PEFT_COMMAND("replay", "re-run a recorded reference training run and compare every step", run_replay);
