// AdaLoRA's budget schedule and phases as PEFT computes them, their defaults and descriptions, and
// the learning-rate schedules of transformers (linear, cosine, constant, each after a warm-up).
#include "peft/allocator/schedule.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace peft {

BudgetStep budget_schedule(const AdapterConfig& c, int64_t n_modules, int64_t step) {
  int64_t init_bgt = c.init_r * n_modules, target_bgt = c.target_r * n_modules;
  if (step <= c.tinit) return {init_bgt, false};
  if (step > c.total_step - c.tfinal) return {target_bgt, true};
  double mul = 1.0 - static_cast<double>(step - c.tinit) / static_cast<double>(c.total_step - c.tfinal - c.tinit);
  auto budget = static_cast<int64_t>(static_cast<double>(init_bgt - target_bgt) * std::pow(mul, 3.0) +
                                     static_cast<double>(target_bgt));
  return {budget, step % c.deltaT == 0};
}

Phase schedule_phase(const AdapterConfig& c, int64_t step) {
  if (step <= c.tinit) return Phase::Warmup;
  if (step >= c.total_step - c.tfinal) return Phase::Final;
  return Phase::Budgeting;
}

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Warmup: return "warm-up";
    case Phase::Budgeting: return "budgeting";
    case Phase::Final: return "final";
  }
  return "?";
}

std::vector<std::string> apply_schedule_defaults(AdapterConfig& c, bool tinit_given, bool tfinal_given, bool deltaT_given) {
  std::vector<std::string> set;
  if (!tinit_given) {
    c.tinit = c.total_step / 10;
    set.push_back("tinit");
  }
  if (!tfinal_given) {
    c.tfinal = c.total_step / 5;
    set.push_back("tfinal");
  }
  if (!deltaT_given) {
    c.deltaT = std::max<int64_t>(1, c.total_step / 100);
    set.push_back("deltaT");
  }
  return set;
}

std::string describe_schedule(const AdapterConfig& c, const std::vector<std::string>& defaulted) {
  // PEFT's step s (from 0) is the update after optimizer step s + 1.
  const int64_t final_step = c.total_step - c.tfinal + 1;
  std::ostringstream s;
  s << "AdaLoRA schedule: warm-up steps 1.." << c.tinit + 1 << ", budgeting " << c.tinit + 2 << ".." << final_step - 1
    << " (mask every " << c.deltaT << "), final mask after step " << final_step << ", frozen after";
  if (!defaulted.empty()) {
    s << "\n  (";
    for (size_t i = 0; i < defaulted.size(); ++i) s << (i ? ", " : "") << defaulted[i];
    s << " from the defaults: tinit 10%, tfinal 20%, deltaT 1% of total_step; set them to choose)";
  }
  return s.str();
}

std::vector<std::string> schedule_warnings(const AdapterConfig& c) {
  std::vector<std::string> out;
  const int64_t budgeting = c.total_step - c.tfinal - c.tinit - 1;
  if (budgeting < c.deltaT) {
    out.push_back("deltaT (" + std::to_string(c.deltaT) + ") is longer than the budgeting phase (" +
                  std::to_string(std::max<int64_t>(0, budgeting)) + " steps): the budget will hardly be scheduled; lower --deltaT");
  }
  if (c.tfinal == 0) {
    out.push_back("tfinal is 0: the final mask (at step total_step) never runs, so the last allocation is the last "
                  "deltaT mask and nothing freezes it; set --tfinal > 0");
  }
  return out;
}

std::string phase_change_message(const AdapterConfig& c, Phase p, int64_t n_modules) {
  if (p == Phase::Budgeting) {
    return "-- budgeting begins: the budget shrinks from " + std::to_string(c.init_r * n_modules) + " to " +
           std::to_string(c.target_r * n_modules) + " by step " + std::to_string(c.total_step - c.tfinal + 1) +
           ", a new mask every " + std::to_string(c.deltaT) + " steps";
  }
  if (p == Phase::Final) return "-- final phase: the rank pattern is fixed; masked singular values stay at zero from now on";
  return "";
}

double lr_at(const std::string& scheduler, double peak, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return peak * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  if (scheduler == "constant") return peak;
  double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
  if (scheduler == "cosine") return peak * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  return peak * std::max(0.0, static_cast<double>(total - step) / static_cast<double>(std::max<int64_t>(1, total - warmup)));
}

}  // namespace peft
