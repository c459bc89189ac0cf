// Causal attention by query blocks (causal_attention) against attention written out in float64:
// softmax(scale q k^T) v with the causal mask and repeated key/value heads, its output and gradients.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <limits>

#include "peft/layers/attention.h"

using namespace peft;

namespace {

// The definition: key/value heads repeated to H, scores masked above the diagonal, softmax, values.
at::Tensor reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const int64_t rep = q.size(1) / k.size(1), T = q.size(2);
  auto kk = k.repeat_interleave(rep, 1), vv = v.repeat_interleave(rep, 1);
  auto s = at::matmul(q, kk.transpose(-1, -2)) * scale;
  auto hidden = at::ones({T, T}, q.options().dtype(at::kBool)).triu(1);
  return at::matmul(at::softmax(s.masked_fill(hidden, -std::numeric_limits<double>::infinity()), -1), vv);
}

struct Result {
  at::Tensor out, dq, dk, dv;
};

// Output and gradients of `f` in `dtype` from float64 inputs (the same inputs for every call).
template <class F>
Result run(F f, int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t D, at::ScalarType dtype) {
  at::manual_seed(3);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto q0 = at::randn({B, H, T, D}, f64) * 1.5, k0 = at::randn({B, Hkv, T, D}, f64) * 1.5,
       v0 = at::randn({B, Hkv, T, D}, f64), g0 = at::randn({B, H, T, D}, f64);
  auto q = q0.to(dtype).requires_grad_(), k = k0.to(dtype).requires_grad_(), v = v0.to(dtype).requires_grad_();
  auto out = f(q, k, v, 1.0 / std::sqrt(static_cast<double>(D)));
  out.backward(g0.to(dtype));
  return {out.detach().to(at::kDouble), q.grad().to(at::kDouble), k.grad().to(at::kDouble), v.grad().to(at::kDouble)};
}

double rel(const at::Tensor& a, const at::Tensor& b) { return ((a - b).norm() / b.norm()).item<double>(); }

}  // namespace

TEST(CausalAttention, OutputAndGradientsEqualTheDefinitionInFloat64) {
  struct Shape {
    int64_t B, H, Hkv, T, D;
  };
  // One block, several with a partial last one, grouped-query and plain heads, T = 1.
  for (Shape s : {Shape{2, 4, 4, 7, 8}, Shape{2, 6, 2, 150, 16}, Shape{1, 3, 1, 128, 8}, Shape{1, 2, 2, 1, 4},
                  Shape{1, 4, 2, 65, 8}}) {
    auto ref = run(reference, s.B, s.H, s.Hkv, s.T, s.D, at::kDouble);
    auto got = run(causal_attention, s.B, s.H, s.Hkv, s.T, s.D, at::kDouble);
    const char* names[] = {"output", "grad q", "grad k", "grad v"};
    at::Tensor r[] = {ref.out, ref.dq, ref.dk, ref.dv}, g[] = {got.out, got.dq, got.dk, got.dv};
    for (int i = 0; i < 4; ++i) {
      ASSERT_EQ(g[i].sizes(), r[i].sizes()) << names[i];
      EXPECT_LT((g[i] - r[i]).abs().max().item<double>(), 1e-12 * (1 + r[i].abs().max().item<double>()))
          << names[i] << " for B " << s.B << " H " << s.H << " Hkv " << s.Hkv << " T " << s.T << " D " << s.D;
    }
  }
}

// In float32 and bf16 the blocks are no less accurate than libtorch's SDPA against the float64
// definition (scores and softmax in float32 on both; bf16 probabilities and products on both).
TEST(CausalAttention, AsAccurateAsSdpaInFloat32AndBf16) {
  auto sdpa = [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
    const int64_t rep = q.size(1) / k.size(1);
    return at::scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), {}, 0.0,
                                            /*is_causal=*/true, scale);
  };
  const int64_t B = 2, H = 6, Hkv = 2, T = 200, D = 32;
  auto ref = run(reference, B, H, Hkv, T, D, at::kDouble);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    auto ours = run(causal_attention, B, H, Hkv, T, D, dtype), theirs = run(sdpa, B, H, Hkv, T, D, dtype);
    const double bound = dtype == at::kFloat ? 1e-5 : 3e-2;  // sanity: each within float rounding of the definition
    const char* names[] = {"output", "grad q", "grad k", "grad v"};
    at::Tensor r[] = {ref.out, ref.dq, ref.dk, ref.dv}, o[] = {ours.out, ours.dq, ours.dk, ours.dv},
               t[] = {theirs.out, theirs.dq, theirs.dk, theirs.dv};
    for (int i = 0; i < 4; ++i) {
      const double e_ours = rel(o[i], r[i]), e_sdpa = rel(t[i], r[i]);
      EXPECT_LT(e_ours, bound) << names[i] << " " << c10::toString(dtype);
      EXPECT_LT(e_ours, 1.5 * e_sdpa) << names[i] << " " << c10::toString(dtype) << ": ours " << e_ours << ", SDPA "
                                      << e_sdpa;
    }
  }
}

// attention() takes the blocks only where a gradient is wanted; without one, or with a mask, it is
// SDPA over repeated key/value heads, and both agree.
TEST(CausalAttention, AttentionAgreesWithAndWithoutGradient) {
  at::manual_seed(5);
  auto q = at::randn({2, 4, 70, 8}), k = at::randn({2, 2, 70, 8}), v = at::randn({2, 2, 70, 8});
  at::Tensor no_grad;
  {
    at::NoGradGuard guard;
    no_grad = attention(q, k, v, {}, true, 0.3);
  }
  auto with_grad = attention(q.clone().requires_grad_(), k, v, {}, true, 0.3).detach();
  EXPECT_LT((with_grad - no_grad).abs().max().item<double>(), 1e-5);
  auto zero_mask = at::zeros({2, 1, 1, 70});
  auto masked = attention(q.clone().requires_grad_(), k, v, zero_mask, true, 0.3).detach();
  EXPECT_LT((masked - no_grad).abs().max().item<double>(), 1e-5);
}
