// The training loop behind `peft train`: optimizer steps with gradient accumulation, AdamW with
// warm-up and decay, clipping, evaluation, exact-resume checkpoints, and AdaLoRA's allocator called
// once per optimizer step with total_step derived from the plan; data-parallel over a World.
#pragma once
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "peft/data/data_loader.h"
#include "peft/data/dataset.h"
#include "peft/eval/evaluate.h"
#include "peft/models/model.h"
#include "peft/models/model_tokenizer.h"
#include "peft/allocator/param_buffer.h"
#include "peft/adapters/peft_model.h"
#include "peft/observability/progress.h"
#include "peft/train/distributed.h"
#include "peft/train/run_dir.h"
#include "peft/observability/run_log.h"
#include "peft/allocator/schedule.h"
#include "peft/train/train_options.h"

namespace peft {

struct TrainResult {
  int64_t steps_done = 0;  // optimizer steps completed in total (resumed ones included)
  int64_t total_steps = 0;
  double last_loss = 0;    // the task loss of the last logged step
  std::optional<EvalResult> eval_before, eval_after;
  bool interrupted = false;  // stopped by SIGINT or SIGTERM (a checkpoint was written)
  bool stopped_on_nan = false;
  bool already_finished = false;  // --resume of a run that had made all its steps: nothing done
  std::string output_dir;
};

class Trainer {
 public:
  // Takes the output directory (RunDir: lock, earlier run, writability), loads the model,
  // tokenizer and data, attaches the adapter, derives total_step and validates the schedule
  // (throws std::invalid_argument with the arithmetic when it cannot work), restores --resume.
  // With a distributed `world`, this process is one of world->size() that train together: each
  // reads its share of every global batch, the gradients are summed before clipping, and only rank
  // 0 prints and writes files; a failure on any process stops them all (see docs/distributed.md).
  explicit Trainer(TrainOptions options, std::shared_ptr<World> world = nullptr);
  ~Trainer();

  TrainResult train();
  EvalResult evaluate();

  int64_t total_steps() const { return total_steps_; }
  const TrainOptions& options() const { return opt_; }
  PeftModel* peft_model() { return peft_.get(); }
  Model& model() { return *model_; }
  World& world() { return *world_; }
  // Text printed to the console (progress, tables, notices); default: stdout.
  std::function<void(const std::string&)> print;
  // Called after every optimizer step with its 0-based index (tests use it to interrupt).
  std::function<void(int64_t)> after_step;

  // Set by the SIGINT / SIGTERM handler: the loop checkpoints and stops after the current step.
  static std::atomic<bool> interrupt_requested;

 private:
  struct StepLoss {
    // summed over the micro-batches, each divided by grad_accum x processes; over every process
    // once reduce_step() has run
    at::Tensor total, task;
    int64_t tokens = 0;
    bool interrupt = false;  // a process was asked to stop (distributed: agreed by all)
  };
  void setup();
  void plan();
  void load_data();
  void report_finished(TrainResult& res);  // a resumed run that has no step left
  void begin(TrainResult& res);            // log start, model line, evaluation before training
  StepLoss forward_backward();
  void reduce_step(StepLoss& loss, int64_t done);  // distributed: gradients and the step's figures
  void check_same_mask(int64_t done);
  at::Tensor clip_gradients();
  StepRecord step_record(int64_t done, const StepLoss& loss, const at::Tensor& grad_norm, const AllocationEvent& ev,
                         double lr);
  void watch_divergence(const StepRecord& r);
  EvalResult evaluate_and_log(int64_t step, const std::string& when);
  bool checkpoint_if_finite(int64_t steps_done);
  void write_checkpoint(int64_t steps_done);
  std::string stop_on_non_finite(const StepRecord& r) const;
  void restore(const std::string& path);
  void save_outputs();
  void say(const std::string& s);
  ParamBuffer& trainable() { return peft_ ? peft_->params() : *full_params_; }
  bool adalora() const { return peft_ && peft_->allocator(); }

  TrainOptions opt_;
  std::shared_ptr<World> world_;
  std::unique_ptr<RunDir> run_dir_;
  std::unique_ptr<RunLog> log_;
  std::unique_ptr<Progress> progress_;
  std::shared_ptr<Model> model_;
  std::unique_ptr<PeftModel> peft_;
  std::unique_ptr<ParamBuffer> full_params_;  // --method full
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<ModelTokenizer> text_;
  std::unique_ptr<Dataset> train_data_, eval_data_;
  std::unique_ptr<DataLoader> loader_;
  at::Device device_{at::kCPU};
  int64_t total_steps_ = 0;
  int64_t warmup_ = 0;
  int64_t start_step_ = 0;
  int64_t micro_ = 0;
  int64_t tokens_since_log_ = 0;
  std::chrono::steady_clock::time_point last_log_;
  // divergence watch: recent task losses and orthogonal penalties, the step it was first seen
  std::vector<double> recent_loss_, recent_orth_;
  double first_loss_ = NAN, first_orth_ = NAN;  // of this process's first step: the baseline before the window fills
  int64_t diverging_since_ = -1;
  std::string last_finite_checkpoint_, checkpoint_before_divergence_;
};

}  // namespace peft
