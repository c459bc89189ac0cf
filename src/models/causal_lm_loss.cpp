// The causal-LM cross-entropy as one autograd function: the softmax is computed once, in forward, and
// its gradient (softmax minus one-hot) is written straight into the logits' gradient.
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <algorithm>

#include "peft/models/model.h"

namespace peft {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Over a large vocabulary (49152 for SmolLM2) the loss is a sizable part of a step. The composite
// (log_softmax, nll_loss and their gradients) takes an exp of every logit in forward and again in
// backward, and fills several tensors the size of the logits; this takes one exp, keeps
// exp(logits - max) for backward, and writes the gradient once.
struct CausalLmLoss : torch::autograd::Function<CausalLmLoss> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels) {
    const int64_t T = logits.size(1);
    const at::Tensor x = logits.narrow(1, 0, T - 1).to(at::kFloat);  // a view when the logits are float32
    const at::Tensor y = labels.narrow(1, 1, T - 1).to(at::kLong);
    const at::Tensor valid = y.ne(-100);
    const at::Tensor target = y.masked_fill(valid.logical_not(), 0).unsqueeze(-1);
    const at::Tensor max = at::amax(x, {-1}, true);
    at::Tensor e = at::empty(x.sizes(), x.options());
    at::sub_out(e, x, max).exp_();  // exp(logits - max)
    const at::Tensor sum = e.sum(-1, true);
    const at::Tensor nll = (max + sum.log() - x.gather(-1, target)).squeeze(-1).masked_fill_(valid.logical_not(), 0);
    const at::Tensor count = valid.sum().to(at::kFloat);
    if (logits.requires_grad()) {
      ctx->save_for_backward({e, sum, target, valid, count});
      ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    }
    return nll.sum() / count;  // mean over the counted tokens; NaN when none count, as in transformers
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &e = saved[0], &sum = saved[1], &target = saved[2], &valid = saved[3], &count = saved[4];
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    const int64_t B = e.size(0), T = e.size(1) + 1, V = e.size(2);
    // d loss / d logits[b, t] = (softmax(logits[b, t]) - onehot(label[b, t + 1])) * grad / count; 0 where
    // the label is ignored and at the last position, which predicts nothing.
    const at::Tensor scale = (valid.to(at::kFloat) * (grad_out[0].to(at::kFloat) / count)).unsqueeze(-1);
    at::Tensor grad = at::empty({B, T, V}, e.options().dtype(dtype));
    at::Tensor g = dtype == at::kFloat ? grad.narrow(1, 0, T - 1) : at::empty_like(e);
    at::mul_out(g, e, scale / sum);
    g.scatter_add_(-1, target, scale.neg());
    if (dtype != at::kFloat) grad.narrow(1, 0, T - 1).copy_(g);
    grad.select(1, T - 1).zero_();
    return {grad, at::Tensor()};
  }
};

// bf16 (or half) logits: a float32 copy of them, and of exp(logits - max), would be twice their size
// each (400 MB for 4 x 256 tokens of SmolLM2, 4 GB for 4 x 2048 of Llama 3's 128256). This works on
// blocks of rows that stay in cache, keeps nothing the size of the logits, and takes the softmax again
// in backward, written straight into the bf16 gradient: log_softmax and softmax in float32, as
// transformers' cross-entropy takes them (and with their vectorised exp, several times faster here
// than at::exp's).
constexpr int64_t kBlockFloats = int64_t{1} << 20;  // float32 temporaries per block of rows: 4 MB

struct CausalLmLossReduced : torch::autograd::Function<CausalLmLossReduced> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels) {
    const int64_t B = logits.size(0), T = logits.size(1), V = logits.size(2);
    const at::Tensor x = logits.narrow(1, 0, T - 1);
    const at::Tensor y = labels.narrow(1, 1, T - 1).to(at::kLong);
    const at::Tensor valid = y.ne(-100);
    const at::Tensor target = y.masked_fill(valid.logical_not(), 0).unsqueeze(-1);
    at::Tensor nll = at::empty({B, T - 1, 1}, x.options().dtype(at::kFloat));
    const int64_t rows = std::max<int64_t>(1, kBlockFloats / std::max<int64_t>(1, V));
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t0 = 0; t0 < T - 1; t0 += rows) {
        const int64_t n = std::min(rows, T - 1 - t0);
        const at::Tensor log_p = at::log_softmax(x.select(0, b).narrow(0, t0, n), -1, at::kFloat);
        nll.select(0, b).narrow(0, t0, n).copy_(log_p.gather(-1, target.select(0, b).narrow(0, t0, n)).neg_());
      }
    }
    nll = nll.squeeze(-1).masked_fill_(valid.logical_not(), 0);
    const at::Tensor count = valid.sum().to(at::kFloat);
    if (logits.requires_grad()) ctx->save_for_backward({logits, target, valid, count});
    return nll.sum() / count;  // mean over the counted tokens; NaN when none count, as in transformers
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &logits = saved[0], &target = saved[1], &valid = saved[2], &count = saved[3];
    const int64_t B = logits.size(0), T = logits.size(1), V = logits.size(2);
    // (softmax - onehot) * grad / count, 0 where the label is ignored and at the last position.
    const at::Tensor scale = (valid.to(at::kFloat) * (grad_out[0].to(at::kFloat) / count)).unsqueeze(-1);
    at::Tensor grad = at::empty({B, T, V}, logits.options());
    const int64_t rows = std::max<int64_t>(1, kBlockFloats / std::max<int64_t>(1, V));
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t0 = 0; t0 < T - 1; t0 += rows) {
        const int64_t n = std::min(rows, T - 1 - t0);
        const at::Tensor s = scale.select(0, b).narrow(0, t0, n);
        at::Tensor p = at::softmax(logits.select(0, b).narrow(0, t0, n), -1, at::kFloat).mul_(s);
        p.scatter_add_(-1, target.select(0, b).narrow(0, t0, n), s.neg());
        grad.select(0, b).narrow(0, t0, n).copy_(p);
      }
    }
    grad.select(1, T - 1).zero_();
    return {grad, at::Tensor()};
  }
};

}  // namespace

at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels) {
  if (logits.scalar_type() == at::kBFloat16 || logits.scalar_type() == at::kHalf) {
    return CausalLmLossReduced::apply(logits, labels);
  }
  return CausalLmLoss::apply(logits, labels);
}

}  // namespace peft
