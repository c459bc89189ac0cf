// Scaled dot-product attention as the models call it: grouped-query heads, causal, an optional mask.
// Causal training on the CPU runs by query blocks as one autograd function; everything else uses SDPA.
#pragma once
#include <ATen/ATen.h>

namespace peft {

// q (B, H, T, D) and k, v (B, Hkv, T, D) with H a multiple of Hkv (grouped-query attention: query
// head h reads key/value head h / (H / Hkv)); returns (B, H, T, D) = softmax(scale q k^T + mask) v,
// query i seeing keys up to i. The scores and the softmax are float32 (float64 for float64 inputs),
// the probabilities are kept in the inputs' dtype for backward; the key blocks a query block cannot
// see are skipped. The same function as SDPA's (is_causal) within float rounding.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

// What the models call. `mask` is additive (broadcastable to (B, H, Tq, Tk)) or undefined; `causal`
// lets query i see keys up to i + (Tk - Tq) (a KV cache). causal_attention where a gradient is
// wanted (or in a checkpointed block's forward, which backward recomputes with one) on the CPU with no
// mask and Tq == Tk; libtorch's SDPA otherwise.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     bool causal, double scale);

}  // namespace peft
