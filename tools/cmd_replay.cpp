// `peft replay CASE_DIR`: re-runs a recorded reference training run and compares every step.
// Prints one JSON line per step and a summary; exits 0 only when all deviations are in tolerance.
#include <iostream>

#include "command.h"
#include "peft/core/flags.h"
#include "peft/train/replay.h"

namespace {

int run_replay(const std::vector<std::string>& args) {
  std::string dir, save, dtype = "float32", device = "cpu";
  bool quiet = false;
  peft::Flags flags(
      "replay", "peft replay CASE_DIR [--save-adapter DIR] [--dtype float32|bfloat16] [--device cpu|cuda] [--quiet]",
      "Replays a golden case: loads CASE_DIR/base and CASE_DIR/adapter_init, trains exactly as\n"
      "CASE_DIR/data.json says (AdamW, gradient accumulation, update_and_allocate after each\n"
      "optimizer step), prints one JSON line per step {step, loss, ranks, budget}, then compares\n"
      "with trace.json, adapter_final/ and ref_logits.safetensors when present and prints the\n"
      "worst deviation of each. Exit code 0: all within tolerance (loss 1e-4 relative, budgets\n"
      "and rank_pattern equal, adapter 1e-3 relative, logits 1e-4 absolute); 1 otherwise.\n"
      "--dtype bfloat16 keeps the base weights in bfloat16 (adapters stay float32) to see how far\n"
      "that moves the run; --device cuda replays on the GPU (TF32 off).",
      "  peft replay tests/fixtures/golden/llama_a");
  flags.positional("CASE_DIR", &dir);
  flags.flag("save-adapter", "DIR", "also save the replayed adapter to DIR", &save);
  flags.flag("dtype", "NAME", "base weights float32 (default) or bfloat16", &dtype);
  flags.flag("device", "NAME", "cpu (default) or cuda", &device);
  flags.toggle("quiet", "no per-step lines, only the summary", &quiet);
  try {
    if (!flags.parse(args)) return 0;
    flags.require("CASE_DIR", dir);
  } catch (const std::invalid_argument& e) {
    std::cerr << "peft replay: error: " << e.what() << "\n";
    return 2;  // a usage error (1 means: a deviation beyond tolerance)
  }
  const peft::LoadOptions load = peft::load_options(dtype, device);
  auto report = peft::replay_golden(
      dir, [&](const nlohmann::json& line) { if (!quiet) std::cout << line.dump() << "\n" << std::flush; }, {}, save, load);
  std::cout << nlohmann::json{{"summary", report.to_json()}}.dump() << "\n";
  if (!report.ok) std::cerr << "peft replay: deviation beyond tolerance: " << report.first_failure << "\n";
  return report.ok ? 0 : 1;
}

}  // namespace

PEFT_COMMAND("replay", "re-run a recorded reference training run and compare every step", run_replay);
