// The training loop behind `peft train`: optimizer steps with gradient accumulation, AdamW with
// warm-up and decay, clipping, evaluation, exact-resume checkpoints, and AdaLoRA's allocator called
// once per optimizer step with total_step derived from the plan.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "peft/data_loader.h"
#include "peft/dataset.h"
#include "peft/evaluate.h"
#include "peft/model.h"
#include "peft/param_buffer.h"
#include "peft/peft_model.h"
#include "peft/tokenizer.h"
#include "peft/train_options.h"

namespace peft {

struct TrainResult {
  int64_t steps_done = 0;  // optimizer steps completed in total (resumed ones included)
  int64_t total_steps = 0;
  double last_loss = 0;
  std::optional<EvalResult> eval_before, eval_after;
  bool interrupted = false;  // stopped by Ctrl-C (a checkpoint was written)
  bool stopped_on_nan = false;
  std::string output_dir;
};

// Learning rate at optimizer step `step` (0-based) as transformers' schedulers compute it.
double lr_at(const std::string& scheduler, double peak, int64_t step, int64_t warmup, int64_t total);

class Trainer {
 public:
  // Loads the model, tokenizer and data, attaches the adapter, derives total_step and validates
  // the schedule (throws std::invalid_argument with the arithmetic when it cannot work).
  explicit Trainer(TrainOptions options);
  ~Trainer();

  TrainResult train();
  EvalResult evaluate();

  int64_t total_steps() const { return total_steps_; }
  const TrainOptions& options() const { return opt_; }
  PeftModel* peft_model() { return peft_.get(); }
  Model& model() { return *model_; }
  // Text printed to the console (progress, tables, notices); default: stdout.
  std::function<void(const std::string&)> print;
  // Called after every optimizer step with its 0-based index (tests use it to interrupt).
  std::function<void(int64_t)> after_step;

  // Set by the SIGINT handler: the loop checkpoints and stops after the current step.
  static std::atomic<bool> interrupt_requested;

 private:
  void plan();
  void load_data();
  Batch to_batch(const TokenBatch& tb) const;
  void write_checkpoint(int64_t steps_done);
  void restore(const std::string& path);
  void save_outputs();
  void log_allocation(const AllocationEvent& ev, bool show_table);
  void say(const std::string& s);

  TrainOptions opt_;
  std::shared_ptr<Model> model_;
  std::unique_ptr<PeftModel> peft_;
  std::unique_ptr<ParamBuffer> full_params_;  // --method full
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Dataset> train_data_, eval_data_;
  std::unique_ptr<DataLoader> loader_;
  at::Device device_{at::kCPU};
  int64_t total_steps_ = 0;
  int64_t warmup_ = 0;
  int64_t start_step_ = 0;
  int64_t micro_ = 0;
  bool explained_live_rank_ = false;
  Phase last_phase_ = Phase::Warmup;
};

}  // namespace peft
