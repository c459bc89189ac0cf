// Causal attention for training on the CPU (see peft/layers/attention.h): the query heads of one
// key/value head are one matrix, processed by blocks of 64 positions, each block against the keys it sees.
#include "peft/layers/attention.h"

#include <torch/autograd.h>

#include <algorithm>
#include <limits>

#include "core/compat.h"
#include "peft/layers/checkpoint.h"
#include "peft/layers/layers.h"

namespace peft {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kBlock = 64;  // positions per query block

// Shapes of one call. Rows of the (N, T * rep, D) matrices are position-major: row t * rep + r is
// query head r of the group at position t, so a block of positions is a contiguous block of rows.
struct Dims {
  int64_t B, H, Hkv, T, D, rep, N;
  Dims(int64_t B_, int64_t H_, int64_t Hkv_, int64_t T_, int64_t D_)
      : B(B_), H(H_), Hkv(Hkv_), T(T_), D(D_), rep(H_ / Hkv_), N(B_ * Hkv_) {}
  int64_t blocks() const { return (T + kBlock - 1) / kBlock; }
};

// (B, H, T, D) -> (N, T * rep, D), position-major rows; and back.
at::Tensor to_rows(const at::Tensor& x, const Dims& d) {
  return x.reshape({d.B, d.Hkv, d.rep, d.T, d.D}).transpose(2, 3).reshape({d.N, d.T * d.rep, d.D});
}
at::Tensor from_rows(const at::Tensor& x, const Dims& d) {
  return x.view({d.B, d.Hkv, d.T, d.rep, d.D}).transpose(2, 3).reshape({d.B, d.H, d.T, d.D});
}

// True where a row of the diagonal block (positions t0 .. t1) may not see a key of that block.
at::Tensor diagonal_mask(int64_t t0, int64_t t1, int64_t rep, const at::TensorOptions& options) {
  auto pos = at::arange(t0, t1, options.dtype(at::kLong));
  return pos.repeat_interleave(rep).unsqueeze(1) < pos.unsqueeze(0);
}

// A block of rows as bmm takes it without a copy of its own: float32 and float64 products take strided
// views; bf16 ones (oneDNN) copy any view that is not a whole tensor or its transpose.
at::Tensor whole(const at::Tensor& view) {
  return view.scalar_type() == at::kFloat || view.scalar_type() == at::kDouble ? view : view.contiguous();
}

// Probabilities and score gradients are one contiguous (N, rows, t1) tensor per query block, and
// every product takes whole tensors or their transposes: oneDNN's bf16 products copy any other view.
struct CausalAttention : torch::autograd::Function<CausalAttention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            double scale) {
    const Dims d(q.size(0), q.size(1), k.size(1), q.size(2), q.size(3));
    const at::Tensor Q = to_rows(q, d), K = k.reshape({d.N, d.T, d.D}), V = v.reshape({d.N, d.T, d.D});
    const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;  // scores and softmax
    const at::Tensor Qs = Q.to(acc), Ks = K.to(acc);
    at::Tensor O = at::empty({d.N, d.T * d.rep, d.D}, q.options());
    variable_list saved = {Q, K, V, O};  // then P of every query block
    for (int64_t i = 0; i < d.blocks(); ++i) {
      const int64_t t0 = i * kBlock, t1 = std::min(d.T, t0 + kBlock), r0 = t0 * d.rep, rows = (t1 - t0) * d.rep;
      at::Tensor S = at::bmm(Qs.narrow(1, r0, rows), Ks.narrow(1, 0, t1).transpose(1, 2));  // (N, rows, t1)
      S.narrow(2, t0, t1 - t0).masked_fill_(diagonal_mask(t0, t1, d.rep, q.options()),
                                             -std::numeric_limits<double>::infinity());
      S.mul_(scale);
      at::Tensor P = at::softmax(S, -1).to(q.scalar_type());
      O.narrow(1, r0, rows).copy_(at::bmm(P, whole(V.narrow(1, 0, t1))));
      saved.push_back(P);
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["B"] = d.B;
    ctx->saved_data["H"] = d.H;
    ctx->saved_data["Hkv"] = d.Hkv;
    return from_rows(O, d);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &Q = saved[0], &K = saved[1], &V = saved[2], &O = saved[3];
    const double scale = ctx->saved_data["scale"].toDouble();
    const Dims d(ctx->saved_data["B"].toInt(), ctx->saved_data["H"].toInt(), ctx->saved_data["Hkv"].toInt(),
                 K.size(1), K.size(2));
    const auto acc = Q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const at::Tensor dO = to_rows(grad_out[0], d);
    const at::Tensor delta = (dO.to(acc) * O.to(acc)).sum(-1, /*keepdim=*/true);  // rowsum(dO o O) = rowsum(dP o P)
    at::Tensor dQ = at::empty_like(Q);
    // Key position c is seen by query blocks from its own on: dK and dV sum one product per block, in `acc`.
    at::Tensor dK = at::zeros(K.sizes(), K.options().dtype(acc)), dV = at::zeros(V.sizes(), V.options().dtype(acc));
    for (int64_t i = 0; i < d.blocks(); ++i) {
      const int64_t t0 = i * kBlock, t1 = std::min(d.T, t0 + kBlock), r0 = t0 * d.rep, rows = (t1 - t0) * d.rep;
      const at::Tensor& P = saved[4 + i];  // (N, rows, t1)
      const at::Tensor dOi = whole(dO.narrow(1, r0, rows)), Qi = whole(Q.narrow(1, r0, rows));
      const at::Tensor Ki = whole(K.narrow(1, 0, t1)), Vi = whole(V.narrow(1, 0, t1));
      // dS = P o (dO V^T - delta) scale: zero where the mask hid a key (P is 0 there).
      at::Tensor g = at::bmm(dOi, Vi.transpose(1, 2)).to(acc);
      g.sub_(delta.narrow(1, r0, rows)).mul_(P).mul_(scale);
      const at::Tensor dS = g.to(Q.scalar_type());
      dQ.narrow(1, r0, rows).copy_(at::bmm(dS, Ki));
      if (acc == Q.scalar_type()) {
        dK.narrow(1, 0, t1).baddbmm_(dS.transpose(1, 2), Qi);
        dV.narrow(1, 0, t1).baddbmm_(P.transpose(1, 2), dOi);
      } else {  // bf16 products, summed in float32
        dK.narrow(1, 0, t1).add_(at::bmm(dS.transpose(1, 2), Qi));
        dV.narrow(1, 0, t1).add_(at::bmm(P.transpose(1, 2), dOi));
      }
    }
    return {from_rows(dQ, d), dK.to(K.scalar_type()).view({d.B, d.Hkv, d.T, d.D}),
            dV.to(V.scalar_type()).view({d.B, d.Hkv, d.T, d.D}), at::Tensor()};
  }
};

}  // namespace

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && q.size(0) == k.size(0) &&
                  q.size(2) == k.size(2) && q.size(3) == k.size(3) && k.size(1) > 0 && q.size(1) % k.size(1) == 0,
              "causal_attention: q (B, H, T, D) and k, v (B, Hkv, T, D) with H a multiple of Hkv, got q ",
              q.sizes(), ", k ", k.sizes(), ", v ", v.sizes());
  return CausalAttention::apply(q, k, v, scale);
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     bool causal, double scale) {
  const auto dtype = q.scalar_type();
  const bool grad = (at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad())) ||
                    in_checkpointed_forward();
  if (grad && causal && !mask.defined() && q.is_cpu() && q.size(2) == k.size(2) &&
      (dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kDouble)) {
    return causal_attention(q, k, v, scale);
  }
  const int64_t rep = q.size(1) / k.size(1);
  return compat::attention(q, repeat_kv(k, rep), repeat_kv(v, rep), mask, causal, scale);
}

}  // namespace peft
