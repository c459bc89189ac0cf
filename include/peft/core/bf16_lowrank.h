// Rank-r products between bf16 activations (n, L) and float32 adapter factors (r, L), summed in float32
// and reading / writing the bf16 side directly: no float32 copy of the activations or gradients is made.
#pragma once
#include <ATen/ATen.h>

namespace peft {

// scale * M P^T, (n, r) float32. M (n, L) bfloat16 with unit column stride; P (r, L) float32.
at::Tensor bf16_rows_dot(const at::Tensor& M, const at::Tensor& P, double scale);
// M += scale * C P in place, each element as bf16(float(M) + scale * (C P)), rounded once to nearest even.
// M (n, L) bfloat16 with unit column stride; C (n, r) float32; P (r, L) float32.
void bf16_rows_add_(const at::Tensor& M, const at::Tensor& C, const at::Tensor& P, double scale);
// scale * C^T M, (r, L) float32. C (n, r) float32; M (n, L) bfloat16 with unit column stride.
at::Tensor bf16_outer(const at::Tensor& C, const at::Tensor& M, double scale);

}  // namespace peft
