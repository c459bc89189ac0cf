// Gradient checkpointing as a custom autograd function: forward without a graph, backward recomputes
// the block with the forward's random state and back-propagates through the recomputed graph.
#include "peft/layers/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/ivalue.h>
#include <torch/autograd.h>
#include <torch/custom_class.h>

namespace peft {
namespace {

using Block = std::function<at::Tensor(const at::Tensor&)>;

thread_local bool checkpointed_forward = false;

// Sets checkpointed_forward for one scope (nested blocks restore the outer value).
struct CheckpointedForward {
  bool outer = checkpointed_forward;
  CheckpointedForward() { checkpointed_forward = true; }
  ~CheckpointedForward() { checkpointed_forward = outer; }
};

// The block, kept alive in the autograd context until backward has run it again.
struct BlockHolder : torch::CustomClassHolder {
  explicit BlockHolder(Block f) : fn(std::move(f)) {}
  Block fn;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const Block& fn) {
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::make_intrusive<BlockHolder>(fn));
    ctx->saved_data["rng"] = at::detail::getDefaultCPUGenerator().get_state();
    ctx->save_for_backward({x});
    at::NoGradGuard no_grad;
    CheckpointedForward training_kernels;
    return fn(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto holder = c10::static_intrusive_pointer_cast<BlockHolder>(ctx->saved_data["fn"].toCapsule());
    at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    // Replay the forward's random numbers (dropout), then give the generator its state back.
    auto gen = at::detail::getDefaultCPUGenerator();
    const at::Tensor now = gen.get_state();
    gen.set_state(ctx->saved_data["rng"].toTensor());
    at::Tensor y;
    {
      at::AutoGradMode enable(true);
      y = holder->fn(x);
    }
    gen.set_state(now);
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), at::Tensor()};
  }
};

}  // namespace

bool in_checkpointed_forward() { return checkpointed_forward; }

at::Tensor checkpoint(const Block& fn, const at::Tensor& x) {
  if (!at::GradMode::is_enabled()) return fn(x);
  return CheckpointFunction::apply(x, fn);
}

}  // namespace peft
