// The language-model loss over a large vocabulary without log-softmax tensors of the logits' size:
// mean cross-entropy of `logits` (N, V) against `labels` (N), ignoring label -100.
#pragma once
#include <ATen/ATen.h>

namespace peft {

// Forward keeps the logits and one logsumexp per row; backward writes softmax - one_hot into a single
// (N, V) buffer. The same loss and gradient as at::cross_entropy_loss(..., ignore_index -100, mean)
// within float rounding, with two fewer tensors of the logits' size alive. logits must be float32.
at::Tensor fused_cross_entropy(const at::Tensor& logits, const at::Tensor& labels);

}  // namespace peft
