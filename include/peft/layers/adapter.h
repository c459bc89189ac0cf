// Adapter layers attached to a Linear: LoRA (y += B A x * alpha/r) and AdaLoRA's SVD form
// (y += B (A * E) x * alpha/(ranknum + 1e-5)), with PEFT's parameter names, shapes and initialisation.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace peft {

class AdapterLayer {
 public:
  AdapterLayer(int64_t in_features, int64_t out_features, double dropout)
      : in_features(in_features), out_features(out_features), dropout(dropout) {}
  virtual ~AdapterLayer() = default;

  // The adapter's contribution to the projection's output for input x (…, in).
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // The same contribution as a weight delta, (out, in).
  virtual at::Tensor delta_weight() const = 0;
  // Trainable tensors with PEFT's local names ("lora_A", "lora_E", "lora_B").
  virtual std::vector<std::pair<std::string, at::Tensor*>> parameters() = 0;
  virtual int64_t rank() const = 0;
  // The dtype the adapter's factors are trained in (float32 on a bf16 base).
  virtual at::ScalarType dtype() const = 0;
  // The delta as scale * B A, A (r, in) and B (out, r) (for AdaLoRA A is lora_A * lora_E), which the
  // projection uses to run base and adapter as one function (peft/layers/lora_linear.h).
  struct LowRank {
    at::Tensor A, B;
    double scale;
  };
  virtual LowRank low_rank() const = 0;
  // The adapter's dropout on its input (in training, when dropout > 0; x itself otherwise).
  at::Tensor apply_dropout(const at::Tensor& x) const;

  int64_t in_features, out_features;
  double dropout;
  bool training = true;
};

// Plain LoRA: lora_A (r, in), lora_B (out, r); scaling alpha/r, or alpha/sqrt(r) with rsLoRA.
class LoraLayer : public AdapterLayer {
 public:
  LoraLayer(int64_t in_features, int64_t out_features, int64_t r, double alpha, bool use_rslora,
            double dropout, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor delta_weight() const override;
  std::vector<std::pair<std::string, at::Tensor*>> parameters() override;
  int64_t rank() const override { return lora_A.size(0); }
  at::ScalarType dtype() const override { return lora_A.scalar_type(); }
  LowRank low_rank() const override { return {lora_A, lora_B, scaling}; }
  // PEFT's init_lora_weights=True: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0.
  void reset_parameters();

  at::Tensor lora_A, lora_B;
  double scaling;
};

// AdaLoRA's SVD form: lora_A = P (r, in), lora_E = Lambda (r, 1), lora_B = Q (out, r).
// `ranknum` is init_r for the whole run (never changed by pruning, never saved).
class AdaLoraLayer : public AdapterLayer {
 public:
  AdaLoraLayer(int64_t in_features, int64_t out_features, int64_t r, double lora_alpha, double dropout,
               const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor delta_weight() const override;
  std::vector<std::pair<std::string, at::Tensor*>> parameters() override;
  int64_t rank() const override { return lora_A.size(0); }
  at::ScalarType dtype() const override { return lora_A.scalar_type(); }
  LowRank low_rank() const override { return {lora_A * lora_E, lora_B, multiplier()}; }
  // PEFT's init: A, B ~ normal(0, 0.02), E = 0.
  void reset_parameters();
  // The effective multiplier scaling / (ranknum + 1e-5), computed as PEFT does in float32.
  double multiplier() const;

  at::Tensor lora_A, lora_E, lora_B;
  double scaling;  // lora_alpha, or init_r when lora_alpha is 0
  double ranknum;  // init_r
};

}  // namespace peft
