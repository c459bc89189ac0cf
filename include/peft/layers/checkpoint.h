// Gradient checkpointing: a block's activations are not kept for backward but recomputed there,
// trading one more forward of the block for memory (transformers' gradient_checkpointing_enable()).
#pragma once
#include <ATen/ATen.h>

#include <functional>

namespace peft {

// fn(x) as usual, but its intermediate results are freed after the forward; backward runs fn again
// (with the same random state, for dropout) and differentiates through it. Gradients reach x and the
// trainable tensors fn uses, as without checkpointing. Only when grad mode is on and x or a
// parameter needs grad does it checkpoint; otherwise it is a plain call.
at::Tensor checkpoint(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x);

// True inside checkpoint's first forward of a block (run without a graph, on this thread): kernels
// that differ with and without a gradient take their training kernel there, so that forward and its
// recomputation in backward compute the same numbers.
bool in_checkpointed_forward();

}  // namespace peft
