// AdaLoRA's rank allocator: importance EMAs of every adapter parameter, the budget schedule, the
// mask to budget and rank_pattern, all computed over flat buffers so its cost does not grow with the
// number of modules.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "peft/formats/adapter_config.h"
#include "peft/allocator/schedule.h"

namespace peft {

class AdaLoraLayer;

// What update_and_allocate did at one step, for logs and the rank monitor.
struct AllocationEvent {
  int64_t step = 0;
  int64_t budget = 0;       // scheduled budget b(t)
  bool masked = false;      // a new mask was computed at this step
  bool final_mask = false;  // the forced mask at total_step - tfinal
  Phase phase = Phase::Warmup;
};

class RankAllocator {
 public:
  // `names[i]` is the path of module i (relative to the model); `layers[i]` its adapter. The
  // adapters' A, E and B must be views of `values` at the given offsets (see PeftModel): A and E
  // and B of all modules contiguous, in module order, as [A..., E..., B...].
  RankAllocator(const AdapterConfig& config, std::vector<std::string> names, std::vector<AdaLoraLayer*> layers,
                at::Tensor values, at::Tensor grads, int64_t offset);

  // PEFT's AdaLoraModel.update_and_allocate(step): call once per optimizer step, after
  // optimizer.step() and before zero_grad(). Updates `config.rank_pattern` when it masks.
  AllocationEvent update_and_allocate(AdapterConfig& config, int64_t step);

  // The stages, exposed for tests and tools.
  void update_ipt();
  std::map<std::string, std::vector<bool>> mask_to_budget(int64_t budget);
  void mask_using_rank_pattern(const std::map<std::string, std::vector<bool>>& pattern);
  void reset_ipt();
  // Per-triplet scores S_i (init_bgt entries, module order) from the current EMAs.
  at::Tensor triplet_scores() const;

  int64_t init_budget() const { return total_rank_; }
  int64_t num_modules() const { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }
  // Live non-zero lora_E entries per module (one host sync).
  std::vector<int64_t> live_ranks() const;
  int64_t calls() const { return calls_; }

  // Checkpoint state: the EMAs (empty before the first update) and the call count.
  std::map<std::string, at::Tensor> state() const;
  void load_state(const std::map<std::string, at::Tensor>& state);

 private:
  std::vector<std::string> names_;  // "model.layers.0.self_attn.q_proj"
  std::vector<int64_t> ranks_;      // r of each module
  int64_t total_rank_ = 0;
  at::Tensor values_, grads_;       // the adapter region [A..., E..., B...] of the parameter buffer
  int64_t a_len_ = 0, e_len_ = 0, b_len_ = 0;
  at::Tensor a_triplet_, b_triplet_;  // triplet index of every A and B element
  at::Tensor a_count_, b_count_;      // columns of A / rows of B per triplet (float64)
  at::Tensor ipt_ema_, unc_ema_;      // undefined until the first update
  at::Tensor ipt_, tmp_;              // update_ipt's scratch, allocated once
  at::Tensor pattern_mask_;           // (total_rank) bool, kept triplets of the last rank_pattern
  int64_t calls_ = 0;
  double beta1_, beta2_;
};

}  // namespace peft
