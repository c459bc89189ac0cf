// A projection whose weight is frozen (the tied or untied lm_head of a PEFT run): y = x W^T + b, with
// x's gradient g W and no weight gradient, both products on peft::mm (peft/core/gemm.h).
#pragma once
#include <ATen/ATen.h>

namespace peft {

// x (..., in), weight (out, in) that requires no gradient, bias (out) or undefined. Mathematically
// at::linear(x, weight, bias); the bias gets its gradient where it requires one.
at::Tensor frozen_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

// The logits of an lm_head tied to the input embedding (vocab, hidden): h E^T, by frozen_linear when E
// is frozen, else by autograd's matmul (E then also gets its gradient).
at::Tensor tied_lm_head(const at::Tensor& h, const at::Tensor& embedding);

}  // namespace peft
