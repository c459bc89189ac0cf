// The schedules of a run in one place: AdaLoRA's budget b(t) and phases (docs/adalora.md), the
// defaults of tinit/tfinal/deltaT derived from total_step, and the learning rate per step.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "peft/formats/adapter_config.h"

namespace peft {

// The budget at PEFT's `step` (update_and_allocate's argument, counted from 0) and whether a mask
// is computed there: init_r x modules through warm-up (step <= tinit), then cubically down to
// target_r x modules by step total_step - tfinal, a mask every deltaT steps; fixed after.
struct BudgetStep {
  int64_t budget;
  bool mask;
};
BudgetStep budget_schedule(const AdapterConfig& c, int64_t n_modules, int64_t step);

enum class Phase { Warmup, Budgeting, Final };
Phase schedule_phase(const AdapterConfig& c, int64_t step);
const char* phase_name(Phase p);

// Sets tinit, tfinal and deltaT that were not given to 10%, 20% and 1% (at least 1) of
// total_step, and returns the names of those set. (PEFT's own defaults, 0/0/1, never run the
// final mask.)
std::vector<std::string> apply_schedule_defaults(AdapterConfig& c, bool tinit_given, bool tfinal_given, bool deltaT_given);

// The schedule in words, in optimizer steps counted from 1 (the numbering of every peft.cpp
// output; PEFT's update_and_allocate sees step - 1), naming the settings that came from defaults.
std::string describe_schedule(const AdapterConfig& c, const std::vector<std::string>& defaulted);
// Warnings for a schedule that validates but will hardly work (none: empty).
std::vector<std::string> schedule_warnings(const AdapterConfig& c);
// The line that announces phase `p` (empty for warm-up), for a run of `n_modules` modules.
std::string phase_change_message(const AdapterConfig& c, Phase p, int64_t n_modules);

// Learning rate at optimizer step `step` (0-based) as transformers' schedulers compute it: linear
// warm-up over `warmup` steps, then linear decay, cosine decay or constant to `total`.
double lr_at(const std::string& scheduler, double peak, int64_t step, int64_t warmup, int64_t total);

}  // namespace peft
