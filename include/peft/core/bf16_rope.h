// Rotary position embedding of bf16 heads in one pass, x * cos + rotate_half(x) * sin with transformers'
// roundings (each product rounded to bf16, then the sum), and its input gradient in one pass.
#pragma once
#include <ATen/ATen.h>

namespace peft {

// x (B, H, T, D) bfloat16 with unit stride along D (any other strides), cos and sin (B, T, D) bfloat16,
// D even. Returns the rotated x, (B, H, T, D) contiguous.
at::Tensor bf16_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// x's gradient for dy (B, H, T, D), as autograd takes it through those ops: bf16(dy cos) plus (or minus)
// bf16(dy sin) of the rotated half, summed in bf16.
at::Tensor bf16_rope_backward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace peft
