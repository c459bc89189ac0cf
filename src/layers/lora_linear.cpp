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

// t (n, last) viewed with the leading dimensions of `like` (..., *).
at::Tensor with_leading_dims(const at::Tensor& t, const at::Tensor& like, int64_t last) {
  auto shape = like.sizes().vec();
  shape.back() = last;
  return t.view(shape);
}

// x W^T + b (no b when it is empty), x (n, in).
at::Tensor base_product(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return bias.numel() > 0 ? peft::addmm(bias, x, weight.t()) : peft::mm(x, weight.t());
}

// y (n, out) = x W^T + b + scale (h A^T) B^T, with xa^T = A h^T (r, n) returned for backward.
at::Tensor forward_2d(const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias,
                      const at::Tensor& A, const at::Tensor& B, double scale, at::Tensor& xa_t) {
  at::Tensor y = base_product(x, weight, bias);
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
    return with_leading_dims(y, x, weight.size(0));
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
    if (need_x) {
      grad_x = peft::mm(g, weight);
      if (same_input && ctx->needs_input_grad(1)) peft::addmm_(grad_x, gb_t.t(), A);
      grad_x = with_leading_dims(grad_x, grad_out[0], weight.size(1));
    }
    if (need_h) grad_h = with_leading_dims(peft::mm(gb_t.t(), A), grad_out[0], weight.size(1));
    if (need_bias) grad_bias = g.sum(0);
    if (need_A) grad_A = peft::mm(gb_t, h2);
    if (need_B) grad_B = peft::mm(xa_t, g_adapter).mul_(scale).t().contiguous();
    return {grad_x, grad_h, at::Tensor(), grad_bias, grad_A, grad_B, at::Tensor()};
  }
};

// A bf16 base with float32 adapters reading x itself (no dropout): the rank-r products read and write bf16
// directly, summing in float32 (core/bf16_lowrank), so x and its gradients are never copied to float32.
// Bt is B^T (r, out), contiguous; xa = x A^T (n, r) is returned for backward.
at::Tensor forward_bf16(const at::Tensor& x2, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& A,
                        const at::Tensor& Bt, double scale, at::Tensor& xa) {
  at::Tensor y = base_product(x2, weight, bias);
  xa = bf16_rows_dot(x2, A, 1.0);
  bf16_rows_add_(y, xa, Bt, scale);  // y += scale xa B^T, rounded once
  return y;
}

at::Tensor rows_of(const at::Tensor& t, int64_t cols) {
  at::Tensor m = t.reshape({-1, cols});
  return m.stride(1) == 1 ? m : m.contiguous();
}

struct LoraLinearBf16 : torch::autograd::Function<LoraLinearBf16> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& A, const at::Tensor& B, double scale) {
    const at::Tensor x2 = rows_of(x, x.size(-1)), Bt = B.t().contiguous();
    at::Tensor xa;
    at::Tensor y = forward_bf16(x2, weight, bias, A, Bt, scale, xa);
    ctx->save_for_backward({x2, weight, A, Bt, xa});
    ctx->saved_data["scale"] = scale;
    return with_leading_dims(y, x, weight.size(0));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x2 = saved[0], &weight = saved[1], &A = saved[2], &Bt = saved[3], &xa = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor g = rows_of(grad_out[0], weight.size(0));  // (n, out) bf16
    const bool need_x = ctx->needs_input_grad(0), need_bias = ctx->needs_input_grad(2);
    const bool need_A = ctx->needs_input_grad(3), need_B = ctx->needs_input_grad(4);
    at::Tensor grad_x, grad_bias, grad_A, grad_B;
    at::Tensor gb;  // d(x A^T) = scale g B, (n, r)
    if (need_x || need_A) gb = bf16_rows_dot(g, Bt, scale);
    if (need_x) {
      grad_x = peft::mm(g, weight);
      bf16_rows_add_(grad_x, gb, A, 1.0);
      grad_x = with_leading_dims(grad_x, grad_out[0], weight.size(1));
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
  // An autograd function takes no undefined tensor: no bias is an empty one.
  const at::Tensor no_bias = bias.defined() ? bias : at::empty({0}, weight.options());
  if (h.is_same(x) && x.scalar_type() == at::kBFloat16 && A.scalar_type() == at::kFloat && x.device().is_cpu()) {
    if (grad) return LoraLinearBf16::apply(x, weight, no_bias, A.contiguous(), B, scale);
    at::Tensor xa;
    at::Tensor y = forward_bf16(rows_of(x, x.size(-1)), weight, no_bias, A.contiguous(), B.t().contiguous(), scale, xa);
    return with_leading_dims(y, x, weight.size(0));
  }
  if (grad) return LoraLinear::apply(x, h, weight, no_bias, A, B, scale);
  const int64_t in = x.size(-1);
  at::Tensor xa_t;
  at::Tensor y = forward_2d(x.reshape({-1, in}), h.is_same(x) ? x.reshape({-1, in}) : h.reshape({-1, in}), weight,
                            no_bias, A, B, scale, xa_t);
  return with_leading_dims(y, x, weight.size(0));
}

}  // namespace peft
