// Shared building blocks of the model families, matching transformers' arithmetic:
// RMSNorm in float32, RoPE frequencies in float32 (with linear and llama3 scaling), repeat_kv.
#include "peft/layers/layers.h"

#include <torch/autograd.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "peft/core/bf16_rms_norm.h"
#include "peft/core/bf16_rope.h"

namespace peft {
namespace {

// A bf16 RMSNorm with a frozen weight as one autograd function (core/bf16_rms_norm): the same
// arithmetic as the ops below, without their float32 copies of x.
struct Bf16RmsNorm : torch::autograd::Function<Bf16RmsNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    at::Tensor rstd;
    at::Tensor y = bf16_rms_norm(x, weight, eps, rstd);
    ctx->save_for_backward({x, weight, rstd});
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    return {bf16_rms_norm_backward(grad_out[0], saved[0], saved[1], saved[2]), at::Tensor(), at::Tensor()};
  }
};

// Rotary embedding of bf16 heads as one autograd function (core/bf16_rope), the ops' roundings in one pass.
struct Bf16Rope : torch::autograd::Function<Bf16Rope> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return bf16_rope(x, cos, sin);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    return {bf16_rope_backward(grad_out[0], saved[0], saved[1]), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  if (x.scalar_type() == at::kBFloat16 && weight.scalar_type() == at::kBFloat16 && x.device().is_cpu() &&
      !weight.requires_grad() && x.dim() >= 1 && x.size(-1) == weight.size(0)) {
    if (at::GradMode::is_enabled() && x.requires_grad()) return Bf16RmsNorm::apply(x, weight, eps);
    at::Tensor rstd;
    return bf16_rms_norm(x, weight, eps, rstd);
  }
  auto dtype = x.scalar_type();
  auto h = x.to(at::kFloat);
  auto var = h.pow(2).mean(-1, true);
  h = h * at::rsqrt(var + eps);
  return weight * h.to(dtype);
}

Rope::Rope(const ModelConfig& c) {
  int64_t dim = c.head_dim;
  auto exponent = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<float>(dim);
  inv_freq_ = 1.0 / at::pow(c.rope_theta, exponent);
  const auto& s = c.rope_scaling;
  if (s.type == "linear") {
    inv_freq_ = inv_freq_ / s.factor;
  } else if (s.type == "llama3") {
    double old_len = static_cast<double>(s.original_max_position_embeddings);
    double low_wavelen = old_len / s.low_freq_factor;
    double high_wavelen = old_len / s.high_freq_factor;
    auto wavelen = 2 * M_PI / inv_freq_;
    auto scaled = at::where(wavelen > low_wavelen, inv_freq_ / s.factor, inv_freq_);
    auto smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    auto medium = (wavelen < high_wavelen).logical_not().logical_and((wavelen > low_wavelen).logical_not());
    inv_freq_ = at::where(medium, smoothed, scaled);
  }
}

std::pair<at::Tensor, at::Tensor> Rope::cos_sin(const at::Tensor& positions, at::ScalarType dtype) const {
  auto inv = inv_freq_.to(positions.device());
  // (B, D/2, 1) @ (B, 1, T) -> (B, D/2, T), as transformers does, then (B, T, D/2).
  auto freqs = at::matmul(inv.view({1, -1, 1}).expand({positions.size(0), -1, 1}),
                          positions.to(at::kFloat).unsqueeze(1))
                   .transpose(1, 2);
  auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

at::Tensor Rope::apply(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  if (x.scalar_type() == at::kBFloat16 && cos.scalar_type() == at::kBFloat16 && sin.scalar_type() == at::kBFloat16 &&
      x.is_cpu() && x.dim() == 4 && cos.dim() == 3 && x.size(-1) % 2 == 0 && !cos.requires_grad() &&
      !sin.requires_grad() && cos.sizes() == sin.sizes() && cos.size(0) == x.size(0) && cos.size(1) == x.size(2)) {
    if (at::GradMode::is_enabled() && x.requires_grad()) return Bf16Rope::apply(x, cos, sin);
    return bf16_rope(x, cos, sin);
  }
  auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  auto rotated = at::cat({-x2, x1}, -1);
  return x * c + rotated * s;
}

at::Tensor repeat_kv(const at::Tensor& x, int64_t n_rep) {
  if (n_rep == 1) return x;
  auto B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  return x.unsqueeze(2).expand({B, H, n_rep, T, D}).reshape({B, H * n_rep, T, D});
}

at::Tensor activation(const at::Tensor& x, const std::string& name) {
  if (name == "silu") return at::silu(x);
  if (name == "gelu") return at::gelu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return at::gelu(x, "tanh");
  if (name == "relu") return at::relu(x);
  throw std::runtime_error("activation \"" + name + "\" is not supported");
}

at::Tensor padding_mask(const at::Tensor& attention_mask, at::ScalarType dtype) {
  auto m = attention_mask.to(at::kFloat).view({attention_mask.size(0), 1, 1, attention_mask.size(1)});
  double lowest = dtype == at::kBFloat16 ? -3.3895313892515355e38
                : dtype == at::kHalf     ? -65504.0
                                         : static_cast<double>(std::numeric_limits<float>::lowest());
  return ((1.0 - m) * lowest).to(dtype);
}

}  // namespace peft
