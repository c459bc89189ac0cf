// A projection and its low-rank adapter as one autograd function: y = x W^T + b + scale (h A^T) B^T.
// The rank-r products run wide (r x tokens) and accumulate into y and into x's gradient in place.
#pragma once
#include <ATen/ATen.h>

namespace peft {

// x (..., in) is the base input and h the adapter's input (x itself, or x after dropout); weight is
// (out, in) (a transposed view for fan_in_fan_out), bias (out) or undefined, A (r, in), B (out, r).
// The frozen base weight gets no gradient; x, h, bias, A and B get theirs where they require one.
// x, weight and bias share a dtype, h, A and B theirs (float32 adapters on a bf16 base: the adapter's
// output is added in float32 and rounded once); or h is x itself, bf16, with float32 A and B, and the
// rank-r products read and write bf16 directly (core/bf16_lowrank). Mathematically the same as
// at::linear(x, weight, bias) + at::linear(at::linear(h, A), B) * scale.
at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias,
                       const at::Tensor& A, const at::Tensor& B, double scale);

}  // namespace peft
