// LoRA and AdaLoRA layers: forward, weight delta and initialisation exactly as PEFT computes them.
// AdaLoRA divides by (ranknum + 1e-5) in float32, with ranknum = init_r for the whole run.
#include "peft/layers/adapter.h"

#include <cmath>

namespace peft {

at::Tensor AdapterLayer::apply_dropout(const at::Tensor& x) const {
  if (dropout > 0.0 && training) return at::dropout(x, dropout, true);
  return x;
}

LoraLayer::LoraLayer(int64_t in, int64_t out, int64_t r, double alpha, bool use_rslora, double dropout,
                     const at::TensorOptions& options)
    : AdapterLayer(in, out, dropout) {
  lora_A = at::empty({r, in}, options);
  lora_B = at::zeros({out, r}, options);
  scaling = r > 0 ? (use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r)) : 0.0;
  reset_parameters();
}

void LoraLayer::reset_parameters() {
  at::NoGradGuard no_grad;
  double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  lora_A.uniform_(-bound, bound);
  lora_B.zero_();
}

at::Tensor LoraLayer::forward(const at::Tensor& x) {
  at::Tensor h = apply_dropout(x.to(lora_A.scalar_type()));
  return at::linear(at::linear(h, lora_A), lora_B) * scaling;
}

at::Tensor LoraLayer::delta_weight() const { return at::matmul(lora_B, lora_A) * scaling; }

std::vector<std::pair<std::string, at::Tensor*>> LoraLayer::parameters() {
  return {{"lora_A", &lora_A}, {"lora_B", &lora_B}};
}

AdaLoraLayer::AdaLoraLayer(int64_t in, int64_t out, int64_t r, double lora_alpha, double dropout,
                           const at::TensorOptions& options)
    : AdapterLayer(in, out, dropout) {
  lora_A = at::empty({r, in}, options);
  lora_E = at::zeros({r, 1}, options);
  lora_B = at::empty({out, r}, options);
  scaling = lora_alpha > 0 ? lora_alpha : static_cast<double>(r);
  ranknum = static_cast<double>(r);
  reset_parameters();
}

void AdaLoraLayer::reset_parameters() {
  at::NoGradGuard no_grad;
  lora_A.normal_(0.0, 0.02);
  lora_B.normal_(0.0, 0.02);
  lora_E.zero_();
}

double AdaLoraLayer::multiplier() const {
  float denom = static_cast<float>(ranknum) + 1e-5f;
  return static_cast<double>(static_cast<float>(scaling) / denom);
}

static at::Tensor ranknum_tensor(double ranknum, const at::Tensor& like) {
  // PEFT keeps ranknum as a float32 tensor and adds 1e-5 to it in float32.
  float denom = static_cast<float>(ranknum) + 1e-5f;
  return at::full({1}, denom, like.options().dtype(at::kFloat)).to(like.scalar_type());
}

at::Tensor AdaLoraLayer::forward(const at::Tensor& x) {
  at::Tensor h = apply_dropout(x.to(lora_A.scalar_type()));
  at::Tensor out = at::matmul(at::matmul(h, (lora_A * lora_E).t()), lora_B.t());
  return out.mul(scaling).div(ranknum_tensor(ranknum, out));
}

at::Tensor AdaLoraLayer::delta_weight() const {
  at::Tensor d = at::matmul(lora_B, lora_A * lora_E);
  return d.mul(scaling).div(ranknum_tensor(ranknum, d));
}

std::vector<std::pair<std::string, at::Tensor*>> AdaLoraLayer::parameters() {
  return {{"lora_A", &lora_A}, {"lora_E", &lora_E}, {"lora_B", &lora_B}};
}

}  // namespace peft
