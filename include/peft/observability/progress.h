// What `peft train` prints while it runs: a line per logged step, the evaluations, AdaLoRA's phase
// changes and rank tables (about six a run, the final mask's always), and the notes a user needs.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "peft/eval/evaluate.h"
#include "peft/observability/run_log.h"
#include "peft/allocator/schedule.h"

namespace peft {

class PeftModel;

class Progress {
 public:
  // `say` prints (nothing is printed when it is empty); the run makes `total_steps` optimizer
  // steps and starts after `start_step` of them (a resumed run).
  Progress(std::function<void(const std::string&)> say, int64_t total_steps, int64_t start_step);

  // "step 12/40  loss 5.49 (+orth 0.28)  lr 0.005  992 tok/s  ETA 16s  budget 28 (live 28)  [final]"
  void step(const StepRecord& r);
  // "eval before training: loss 5.557, perplexity 259.1" (`when`: "before training", "at step 20", ...)
  void eval(const std::string& when, const EvalResult& e);
  // After update_and_allocate: a phase change, and at a mask the rank table (paced) with, once, why
  // the live rank returns to init_r between masks.
  void allocation(const PeftModel& model, const AllocationEvent& ev, int64_t step);
  void note(const std::string& line);

 private:
  std::function<void(const std::string&)> say_;
  int64_t total_steps_, start_step_;
  int64_t table_every_ = 0, allocations_ = 0;
  bool phase_known_ = false, explained_live_rank_ = false;
  Phase phase_ = Phase::Warmup;
};

// "42s", "3m05s", "1h02m"; "?" when unknown.
std::string format_duration(double seconds);

}  // namespace peft
