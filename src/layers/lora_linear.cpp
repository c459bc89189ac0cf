// A projection and its low-rank adapter as one autograd function (see peft/layers/lora_linear.h).
// Skinny products (tokens x r) run far below the rate of wide ones (r x tokens) on CPU BLAS; this uses the latter.
#include "peft/layers/lora_linear.h"

#include <torch/autograd.h>

#include "peft/core/bf16_lowrank.h"
#include "peft/core/gemm.h"

namespace peft {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y (n, out) = x W^T + b + scale (h A^T) B^T (no b when it is empty), with xa^T = A h^T (r, n) returned for backward.
at::Tensor forward_2d(const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias,
                      const at::Tensor& A, const at::Tensor& B, double scale, at::Tensor& xa_t) {
  at::Tensor y = bias.numel() > 0 ? peft::addmm(bias, x, weight.t()) : peft::mm(x, weight.t());
  xa_t = peft::mm(A, h.t());
  if (A.scalar_type() == y.scalar_type()) {
    peft::addmm_(y, xa_t.t(), B.t(), 1.0, scale);
  } else {  // a bf16 base with float32 adapters: the sum in float32, rounded once into y, as PEFT's
    y.add_(peft::mm(xa_t.t(), B.t()), scale);
  }
  return y;
}

struct LoraLinear : torch::autograd::Function<LoraLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& A, const at::Tensor& B, double scale) {
    const int64_t in = x.size(-1);
    const at::Tensor x2 = x.reshape({-1, in});
    const bool same_input = h.is_same(x);
    const at::Tensor h2 = same_input ? x2 : h.reshape({-1, in});
    at::Tensor xa_t;
    at::Tensor y = forward_2d(x2, h2, weight, bias, A, B, scale, xa_t);
    ctx->save_for_backward({h2, weight, A, B, xa_t});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["same_input"] = same_input;
    auto out_shape = x.sizes().vec();
    out_shape.back() = weight.size(0);
    return y.view(out_shape);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h2 = saved[0], &weight = saved[1], &A = saved[2], &B = saved[3], &xa_t = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool same_input = ctx->saved_data["same_input"].toBool();
    const at::Tensor g = grad_out[0].reshape({-1, weight.size(0)});  // (n, out)
    const at::Tensor g_adapter = g.to(A.scalar_type());
    const bool need_x = ctx->needs_input_grad(0), need_h = ctx->needs_input_grad(1) && !same_input;
    const bool need_bias = ctx->needs_input_grad(3), need_A = ctx->needs_input_grad(4), need_B = ctx->needs_input_grad(5);

    // d(h A^T) = scale g B, kept as its transpose (r, n).
    at::Tensor gb_t;
    if (need_x || need_h || need_A) gb_t = peft::mm(B.t(), g_adapter.t()).mul_(scale);
    at::Tensor grad_x, grad_h, grad_bias, grad_A, grad_B;
    auto in_shape = [&](const at::Tensor& t) {
      auto shape = grad_out[0].sizes().vec();
      shape.back() = weight.size(1);
      return t.view(shape);
    };
    if (need_x) {
      grad_x = peft::mm(g, weight);
      if (same_input && ctx->needs_input_grad(1)) peft::addmm_(grad_x, gb_t.t(), A);
      grad_x = in_shape(grad_x);
    }
    if (need_h) grad_h = in_shape(peft::mm(gb_t.t(), A));
    if (need_bias) grad_bias = g.sum(0);
    if (need_A) grad_A = peft::mm(gb_t, h2);
    if (need_B) grad_B = peft::mm(xa_t, g_adapter).mul_(scale).t().contiguous();
    return {grad_x, grad_h, at::Tensor(), grad_bias, grad_A, grad_B, at::Tensor()};
  }
};

// A bf16 base with float32 adapters reading x itself (no dropout): the rank-r products read and write bf16
// directly, summing in float32 (core/bf16_lowrank), so x and its gradients are never copied to float32.
at::Tensor forward_bf16(const at::Tensor& x2, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& A,
                        const at::Tensor& B, double scale, at::Tensor& xa) {
  at::Tensor y = bias.numel() > 0 ? peft::addmm(bias, x2, weight.t()) : peft::mm(x2, weight.t());
  xa = bf16_rows_dot(x2, A, 1.0);                       // (n, r)
  bf16_rows_add_(y, xa, B.t().contiguous(), scale);     // y += scale xa B^T, rounded once
  return y;
}

at::Tensor rows_of(const at::Tensor& t, int64_t cols) {
  at::Tensor m = t.reshape({-1, cols});
  return m.stride(1) == 1 ? m : m.contiguous();
}

struct LoraLinearBf16 : torch::autograd::Function<LoraLinearBf16> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& A, const at::Tensor& B, double scale) {
    const at::Tensor x2 = rows_of(x, x.size(-1));
    at::Tensor xa;
    at::Tensor y = forward_bf16(x2, weight, bias, A, B, scale, xa);
    ctx->save_for_backward({x2, weight, A, B, xa});
    ctx->saved_data["scale"] = scale;
    auto out_shape = x.sizes().vec();
    out_shape.back() = weight.size(0);
    return y.view(out_shape);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x2 = saved[0], &weight = saved[1], &A = saved[2], &B = saved[3], &xa = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor g = rows_of(grad_out[0], weight.size(0));  // (n, out) bf16
    const bool need_x = ctx->needs_input_grad(0), need_bias = ctx->needs_input_grad(2);
    const bool need_A = ctx->needs_input_grad(3), need_B = ctx->needs_input_grad(4);
    at::Tensor grad_x, grad_bias, grad_A, grad_B;
    at::Tensor gb;  // d(x A^T) = scale g B, (n, r)
    if (need_x || need_A) gb = bf16_rows_dot(g, B.t().contiguous(), scale);
    if (need_x) {
      grad_x = peft::mm(g, weight);
      bf16_rows_add_(grad_x, gb, A, 1.0);
      auto shape = grad_out[0].sizes().vec();
      shape.back() = weight.size(1);
      grad_x = grad_x.view(shape);
    }
    if (need_bias) grad_bias = g.sum(0);
    if (need_A) grad_A = bf16_outer(gb, x2, 1.0);
    if (need_B) grad_B = bf16_outer(xa, g, scale).t().contiguous();
    return {grad_x, at::Tensor(), grad_bias, grad_A, grad_B, at::Tensor()};
  }
};

}  // namespace

at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias,
                       const at::Tensor& A, const at::Tensor& B, double scale) {
  TORCH_CHECK(!weight.requires_grad(), "lora_linear: the base weight is frozen (it gets no gradient)");
  const bool grad = at::GradMode::is_enabled() &&
                    (x.requires_grad() || h.requires_grad() || A.requires_grad() || B.requires_grad() ||
                     (bias.defined() && bias.requires_grad()));
  const at::Tensor no_bias = bias.defined() ? bias : at::empty({0}, weight.options());
  if (h.is_same(x) && x.scalar_type() == at::kBFloat16 && A.scalar_type() == at::kFloat && x.device().is_cpu()) {
    if (grad) return LoraLinearBf16::apply(x, weight, no_bias, A.contiguous(), B, scale);
    at::Tensor xa;
    at::Tensor y = forward_bf16(rows_of(x, x.size(-1)), weight, no_bias, A.contiguous(), B, scale, xa);
    auto out_shape = x.sizes().vec();
    out_shape.back() = weight.size(0);
    return y.view(out_shape);
  }
  // An autograd function takes no undefined tensor: no bias is an empty one.
  if (grad) return LoraLinear::apply(x, h, weight, bias.defined() ? bias : at::empty({0}, weight.options()), A, B, scale);
  const int64_t in = x.size(-1);
  at::Tensor xa_t;
  at::Tensor y = forward_2d(x.reshape({-1, in}), h.is_same(x) ? x.reshape({-1, in}) : h.reshape({-1, in}), weight,
                            bias.defined() ? bias : at::empty({0}, weight.options()), A, B, scale, xa_t);
  auto out_shape = x.sizes().vec();
  out_shape.back() = weight.size(0);
  return y.view(out_shape);
}

}  // namespace peft
