// A projection with a frozen weight as one autograd function (see peft/layers/frozen_linear.h): forward
// x W^T and backward g W on the step's GEMM, where autograd's linear would take libtorch's.
#include "peft/layers/frozen_linear.h"

#include <torch/autograd.h>

#include "peft/core/gemm.h"

namespace peft {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor forward_2d(const at::Tensor& x2, const at::Tensor& weight, const at::Tensor& bias) {
  return bias.numel() > 0 ? peft::addmm(bias, x2, weight.t()) : peft::mm(x2, weight.t());
}

at::Tensor with_rows(const at::Tensor& y2, const at::Tensor& x, int64_t last) {
  auto shape = x.sizes().vec();
  shape.back() = last;
  return y2.view(shape);
}

struct FrozenLinear : torch::autograd::Function<FrozenLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias) {
    ctx->save_for_backward({weight});
    ctx->saved_data["in_shape"] = x.sizes().vec();
    return with_rows(forward_2d(x.reshape({-1, x.size(-1)}), weight, bias), x, weight.size(0));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const at::Tensor weight = ctx->get_saved_variables()[0];
    const at::Tensor g = grad_out[0].reshape({-1, weight.size(0)});
    at::Tensor grad_x, grad_bias;
    if (ctx->needs_input_grad(0)) grad_x = peft::mm(g, weight).view(ctx->saved_data["in_shape"].toIntVector());
    if (ctx->needs_input_grad(2)) grad_bias = g.sum(0);
    return {grad_x, at::Tensor(), grad_bias};
  }
};

}  // namespace

at::Tensor frozen_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(!weight.requires_grad(), "frozen_linear: the weight is frozen (it gets no gradient)");
  const at::Tensor b = bias.defined() ? bias : at::empty({0}, weight.options());
  const bool grad = at::GradMode::is_enabled() && (x.requires_grad() || b.requires_grad());
  if (grad) return FrozenLinear::apply(x, weight, b);
  return with_rows(forward_2d(x.reshape({-1, x.size(-1)}), weight, b), x, weight.size(0));
}

at::Tensor tied_lm_head(const at::Tensor& h, const at::Tensor& embedding) {
  if (embedding.requires_grad() || h.scalar_type() != embedding.scalar_type()) return at::matmul(h, embedding.t());
  return frozen_linear(h, embedding);
}

}  // namespace peft
