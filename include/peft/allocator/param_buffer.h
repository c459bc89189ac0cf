// Trainable tensors regrouped as views of one flat buffer, with their gradients as views of a
// second: the optimizer and the rank allocator then touch every parameter with a few tensor ops.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace peft {

class ParamBuffer {
 public:
  ParamBuffer() = default;
  // Moves each tensor's values into the buffer, in the given order, and makes it a leaf that
  // requires grad and whose .grad is a view of grads(). Each tensor must be float32 on one device.
  // Tensors are modified in place (set_data), so modules that hold them keep working.
  void assign(std::vector<std::pair<std::string, at::Tensor>> params);

  at::Tensor& values() { return values_; }
  at::Tensor& grads() { return grads_; }
  int64_t numel() const { return values_.defined() ? values_.numel() : 0; }
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }
  const std::vector<int64_t>& offsets() const { return offsets_; }  // start of each tensor in the buffer
  void zero_grad();

 private:
  at::Tensor values_, grads_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<int64_t> offsets_;
};

// AdamW with PyTorch's semantics (decoupled weight decay, bias correction, eps outside the sqrt),
// applied to a whole ParamBuffer at once.
class AdamW {
 public:
  struct Options {
    double lr = 1e-3;
    double beta1 = 0.9, beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.01;
  };
  AdamW(ParamBuffer& params, Options options);
  void step();
  void set_lr(double lr) { options_.lr = lr; }
  double lr() const { return options_.lr; }
  int64_t step_count() const { return step_; }
  // Optimizer state for checkpoints.
  at::Tensor& exp_avg() { return exp_avg_; }
  at::Tensor& exp_avg_sq() { return exp_avg_sq_; }
  void set_step_count(int64_t s) { step_ = s; }
  const Options& options() const { return options_; }

 private:
  ParamBuffer& params_;
  Options options_;
  at::Tensor exp_avg_, exp_avg_sq_;
  at::Tensor denom_;  // step()'s scratch
  int64_t step_ = 0;
};

}  // namespace peft
