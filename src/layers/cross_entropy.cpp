// Mean cross-entropy as one autograd function: logsumexp per row in forward, softmax - one_hot in one
// buffer in backward (ignored rows zero), so no log-softmax or one-hot tensor of the logits' size exists.
#include "peft/layers/cross_entropy.h"

#include <torch/autograd.h>

namespace peft {
namespace {

constexpr int64_t kIgnore = -100;

struct FusedCrossEntropy : public torch::autograd::Function<FusedCrossEntropy> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels) {
    at::NoGradGuard no_grad;
    const at::Tensor valid = labels.ne(kIgnore);
    const at::Tensor safe = labels.masked_fill(valid.logical_not(), 0);
    const at::Tensor lse = at::logsumexp(logits, -1);                        // (N)
    const at::Tensor picked = logits.gather(1, safe.unsqueeze(1)).squeeze(1);  // (N)
    const at::Tensor count = valid.sum();
    const at::Tensor loss = ((lse - picked) * valid).sum() / count.to(logits.scalar_type());
    ctx->save_for_backward({logits, lse, safe, valid, count});
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &lse = saved[1], &safe = saved[2], &valid = saved[3], &count = saved[4];
    at::Tensor grad = at::sub(logits, lse.unsqueeze(1)).exp_();  // softmax, the one (N, V) buffer
    grad.scatter_add_(1, safe.unsqueeze(1), at::full({safe.size(0), 1}, -1.0, grad.options()));
    const at::Tensor scale = (grad_out[0] / count.to(grad.scalar_type())) * valid.to(grad.scalar_type());  // (N)
    grad.mul_(scale.unsqueeze(1));
    return {grad, at::Tensor()};
  }
};

}  // namespace

at::Tensor fused_cross_entropy(const at::Tensor& logits, const at::Tensor& labels) {
  TORCH_CHECK(logits.dim() == 2 && labels.dim() == 1 && logits.size(0) == labels.size(0),
              "fused_cross_entropy: logits (N, V) and labels (N) expected");
  return FusedCrossEntropy::apply(logits, labels);
}

}  // namespace peft
