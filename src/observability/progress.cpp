// The console side of a training run: progress lines, evaluation lines, AdaLoRA's narration (phase
// changes, paced rank tables, the live-rank note). The files of the run are RunLog's.
#include "peft/observability/progress.h"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "peft/adapters/peft_model.h"
#include "peft/observability/rank_table.h"

namespace peft {
namespace {

std::string fmt(double v, int prec = 4) {
  std::ostringstream os;
  os << std::setprecision(prec) << v;
  return os.str();
}

}  // namespace

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  int64_t t = static_cast<int64_t>(s + 0.5);
  std::ostringstream os;
  if (t >= 3600) os << t / 3600 << "h" << std::setw(2) << std::setfill('0') << (t % 3600) / 60 << "m";
  else if (t >= 60) os << t / 60 << "m" << std::setw(2) << std::setfill('0') << t % 60 << "s";
  else os << t << "s";
  return os.str();
}

Progress::Progress(std::function<void(const std::string&)> say, int64_t total_steps, int64_t start_step)
    : say_(std::move(say)), total_steps_(total_steps), start_step_(start_step) {}

void Progress::note(const std::string& line) {
  if (say_) say_(line + "\n");
}

void Progress::step(const StepRecord& r) {
  const double done = static_cast<double>(r.step - start_step_);
  const double eta = done > 0 ? r.elapsed_s / done * static_cast<double>(total_steps_ - r.step) : NAN;
  std::ostringstream os;
  os << "step " << r.step << "/" << total_steps_ << "  loss " << fmt(r.loss);
  if (!std::isnan(r.orth_penalty)) os << " (+orth " << fmt(r.orth_penalty, 3) << ")";
  os << "  lr " << fmt(r.lr, 3) << "  " << static_cast<int64_t>(r.tokens_per_s) << " tok/s  ETA " << format_duration(eta);
  if (r.phase) os << "  budget " << r.budget << " (live " << r.live_rank << ")  [" << r.phase << "]";
  note(os.str());
}

void Progress::eval(const std::string& when, const EvalResult& e) {
  note("eval " + when + ": loss " + fmt(e.loss) +
       (e.accuracy >= 0 ? ", accuracy " + fmt(e.accuracy) : ", perplexity " + fmt(e.perplexity)));
}

void Progress::allocation(const PeftModel& model, const AllocationEvent& ev, int64_t step) {
  const auto& c = model.config();
  const auto* alloc = model.allocator();
  if (!phase_known_) {  // the phase the run (or its resumed part) starts in
    phase_known_ = true;
    phase_ = start_step_ == 0 ? Phase::Warmup : schedule_phase(c, start_step_ - 1);
  }
  if (ev.phase != phase_) {
    phase_ = ev.phase;
    auto m = phase_change_message(c, ev.phase, alloc->num_modules());
    if (!m.empty()) note(m);
  }
  if (!ev.masked) return;
  if (table_every_ == 0) {  // about six tables a run, whatever its length; the final one always
    const int64_t masks = std::max<int64_t>(1, (c.total_step - c.tfinal - c.tinit) / c.deltaT);
    table_every_ = std::max<int64_t>(1, (masks + 5) / 6);
  }
  if (ev.final_mask || allocations_++ % table_every_ == 0) {
    auto rec = parse_allocation(allocation_record(model, ev, step));
    int64_t kept = 0;
    for (auto& [path, r] : rec.allocated) kept += r;
    std::ostringstream os;
    os << "allocation at step " << step << (ev.final_mask ? " (final mask, frozen from here)" : "") << ": budget " << kept
       << " of " << alloc->init_budget() << " (scheduled " << ev.budget << ")\n"
       << render_rank_table_compact(build_rank_table(rec.allocated, c.init_r, c.target_r), 100);
    if (say_) say_(os.str());
  }
  if (!explained_live_rank_ && !ev.final_mask) {
    explained_live_rank_ = true;
    note("   note: between masks the optimizer's momentum moves masked singular values away from zero, so the\n"
         "   live rank (non-zero lora_E) returns to init_r one step after each mask; the allocated pattern is what\n"
         "   counts, and it is frozen from the final mask on.");
  }
}

}  // namespace peft
