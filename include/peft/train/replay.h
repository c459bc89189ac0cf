// Replay of a golden case (a reference training run recorded step by step): trains exactly as its
// data.json says and compares trace, final adapter and logits with the reference's tolerances.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "peft/models/model.h"

namespace peft {

struct ReplayTolerances {
  double loss_rel = 1e-4;     // every step's loss, relative
  double adapter_rel = 1e-3;  // final adapter tensors, ||ours - ref||_F / ||ref||_F
  double logits_abs = 1e-4;   // ref_logits, max absolute difference
};

struct ReplayReport {
  int64_t steps = 0;
  double max_loss_rel = 0;       // worst relative loss error over the run
  int64_t first_loss_step = -1;  // first step beyond tolerance
  int64_t budget_mismatches = 0;
  int64_t first_budget_step = -1;
  int64_t rank_pattern_mismatches = 0;  // modules whose final rank_pattern differs
  std::string first_rank_pattern_module;
  double max_adapter_rel = 0;
  std::string worst_adapter_tensor;
  double max_logits_abs = 0;       // max over the logits compared
  std::string logits_detail;       // which logits were compared
  bool has_trace = false, has_final = false, has_logits = false;
  bool ok = false;
  std::string first_failure;  // human-readable: first diverging step / tensor
  nlohmann::json to_json() const;
};

// Replays `case_dir` (base/, adapter_init/, data.json, optional trace.json, adapter_final/,
// ref_logits.safetensors). `on_step` receives one JSON object per optimizer step
// ({"step","loss","ranks","budget"}). `save_dir`, if not empty, receives the final adapter.
// `load` picks the base weights' dtype and the device (adapters stay float32); the tolerances are
// those of float32 — a bfloat16 base is expected to exceed them and is for comparison only.
ReplayReport replay_golden(const std::string& case_dir, const std::function<void(const nlohmann::json&)>& on_step,
                           const ReplayTolerances& tol = {}, const std::string& save_dir = "",
                           const LoadOptions& load = {});

}  // namespace peft
