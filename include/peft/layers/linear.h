// The linear projection every model family is built from, able to carry one adapter.
// Holds the base weight (out, in) or, for GPT-2's Conv1D (fan_in_fan_out), (in, out).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>

namespace peft {

class AdapterLayer;

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias, bool fan_in_fan_out = false);

  at::Tensor forward(const at::Tensor& x);
  // The same, with x as the adapter reads it given: adapter_input(x) of this or another projection that
  // reads the same x (q, k and v; gate and up), so that a bf16 x that needs a float32 copy (for dropout)
  // is copied once, not per projection. An x_adapter of another dtype than the adapter's is ignored.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& x_adapter);
  // x as this projection's adapter reads it: x itself when there is no unmerged adapter, when x has the
  // adapter's dtype, or when float32 factors read a bf16 x directly (no dropout: core/bf16_lowrank);
  // a float32 copy for float32 adapters with dropout on a bf16 base.
  at::Tensor adapter_input(const at::Tensor& x) const;

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  bool fan_in_fan_out() const { return fan_in_fan_out_; }

  at::Tensor weight;  // (out, in), or (in, out) when fan_in_fan_out
  at::Tensor bias;    // (out) or undefined

  // The adapter (LoRA, AdaLoRA) added to this projection's output, or null.
  std::shared_ptr<AdapterLayer> adapter;
  // True while the adapter's delta is folded into `weight` (then forward skips the adapter).
  bool merged = false;

  // Adds / subtracts the adapter's delta to / from the base weight. `safe` checks the merged
  // weight is finite first and throws (leaving the weight untouched) if it is not.
  void merge(bool safe = false);
  void unmerge();

 private:
  int64_t in_features_, out_features_;
  bool fan_in_fan_out_;
};
TORCH_MODULE(Linear);

}  // namespace peft
