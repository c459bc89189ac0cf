// RMSNorm of bf16 rows in one pass, with transformers' arithmetic: x to float32, x * rsqrt(mean(x^2) + eps)
// rounded to bf16, times the bf16 weight; and its input gradient in one pass, for a frozen weight.
#pragma once
#include <ATen/ATen.h>

namespace peft {

// x (n, D) bfloat16 with unit column stride, weight (D) bfloat16. Returns y (n, D) bfloat16 and sets
// rstd (n) float32 to rsqrt(mean(x^2) + eps) per row, which the backward reads.
at::Tensor bf16_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& rstd);
// dx (n, D) bfloat16 for dy (n, D) bfloat16, as autograd takes it through transformers' ops: the bf16
// product dy * weight, then rstd * (g - x rstd^2 mean(g x)) in float32, rounded once.
at::Tensor bf16_rms_norm_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& rstd);

}  // namespace peft
