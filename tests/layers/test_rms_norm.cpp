// The one-pass bf16 RMSNorm (core/bf16_rms_norm, used by RMSNormImpl) against transformers' ops run by
// autograd: the output to the bit but for float32 summation order (one bf16 unit), x's gradient as close
// to float64 arithmetic as the ops' own.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>

#include "peft/core/bf16_rms_norm.h"
#include "peft/layers/layers.h"

using namespace peft;

namespace {

// transformers' LlamaRMSNorm.forward, op by op.
at::Tensor reference(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor h = x.to(at::kFloat);
  at::Tensor var = h.pow(2).mean(-1, true);
  h = h * at::rsqrt(var + eps);
  return w * h.to(at::kBFloat16);
}

// got and want (bf16) within one bf16 unit of want everywhere, and equal in nearly all elements.
void expect_one_unit(const at::Tensor& got, const at::Tensor& want, const char* what) {
  ASSERT_EQ(got.scalar_type(), at::kBFloat16) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  const at::Tensor unit = at::exp2(at::floor(at::log2(w.abs().clamp_min(1e-30))) - 7);
  EXPECT_LE(((g - w).abs() / unit).max().item<double>(), 1.0) << what;
  EXPECT_GT(g.eq(w).to(at::kDouble).mean().item<double>(), 0.98) << what;
}

// x's gradient against float64 arithmetic on the same bf16 product g = dy * w: within half a bf16 unit of
// the exact value plus float32 error on the size of the terms rs g and x rs^3 mean(g x), which cancel.
void expect_gradient(const at::Tensor& got, const at::Tensor& x, const at::Tensor& w, const at::Tensor& dy,
                     double eps, const char* what) {
  const int64_t D = x.size(-1);
  const at::Tensor xd = x.to(at::kDouble), g = (dy * w).to(at::kDouble);
  const at::Tensor rs = at::rsqrt(xd.pow(2).mean(-1, true) + eps);
  const at::Tensor exact = rs * g - xd * rs.pow(3) * (g * xd).mean(-1, true);
  const at::Tensor terms = rs * g.abs() + xd.abs() * rs.pow(3) * (g * xd).abs().mean(-1, true);
  const at::Tensor half_unit = at::exp2(at::floor(at::log2(exact.abs().clamp_min(1e-30))) - 8);
  const at::Tensor allowed = half_unit + terms * (D + 4) * std::ldexp(1.0, -23);
  EXPECT_LE(((got.to(at::kDouble) - exact).abs() / allowed).max().item<double>(), 1.0) << what << ", D " << D;
}

}  // namespace

TEST(Bf16RmsNorm, ForwardAndGradientEqualTransformersOps) {
  at::manual_seed(21);
  for (int64_t D : {1, 37, 576}) {
    for (bool strided : {false, true}) {
      RMSNormImpl norm(D, 1e-5);
      {
        at::NoGradGuard no_grad;
        norm.weight.set_data((at::rand({D}) + 0.5).to(at::kBFloat16));
      }
      norm.weight.requires_grad_(false);
      at::Tensor base = (at::randn({3, 40, strided ? D + 5 : D}) * 3).to(at::kBFloat16);
      at::Tensor x = (strided ? base.narrow(-1, 2, D) : base).detach().requires_grad_(true);
      at::Tensor xr = x.detach().clone().requires_grad_(true);
      at::Tensor y = norm.forward(x), yr = reference(xr, norm.weight, 1e-5);
      expect_one_unit(y, yr, "output");
      at::Tensor gy = at::randn(y.sizes()).to(at::kBFloat16);
      y.backward(gy);
      yr.backward(gy);
      expect_gradient(x.grad(), x.detach(), norm.weight, gy, 1e-5, "x's gradient");
      expect_gradient(xr.grad(), x.detach(), norm.weight, gy, 1e-5, "x's gradient by transformers' ops");
      {
        at::NoGradGuard no_grad;
        EXPECT_TRUE(norm.forward(x).equal(y.detach())) << "no-grad path, D " << D;
      }
    }
  }
}

TEST(Bf16RmsNorm, TrainableWeightAndFloat32TakeTheOps) {
  // A trainable weight needs its gradient: the ops path, which autograd gives one.
  RMSNormImpl norm(8, 1e-6);
  norm.weight.set_data(norm.weight.to(at::kBFloat16));
  at::Tensor x = at::randn({2, 8}).to(at::kBFloat16);
  norm.forward(x).to(at::kFloat).sum().backward();
  ASSERT_TRUE(norm.weight.grad().defined());
  // Float32 is left to the ops, bit for bit (the golden runs replay them).
  RMSNormImpl f32(8, 1e-6);
  at::Tensor xf = at::randn({2, 8});
  EXPECT_TRUE(f32.forward(xf).equal(f32.weight * (xf * at::rsqrt(xf.pow(2).mean(-1, true) + 1e-6))));
}

TEST(Bf16RmsNorm, WrongShapesAreRefusedByName) {
  at::Tensor rstd;
  at::Tensor x = at::randn({2, 8}).to(at::kBFloat16), w = at::ones({7}).to(at::kBFloat16);
  try {
    bf16_rms_norm(x, w, 1e-6, rstd);
    FAIL() << "no error for rows of 8 against a weight of 7";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf16_rms_norm"), std::string::npos) << e.what();
  }
  EXPECT_THROW(bf16_rms_norm(x.to(at::kFloat), at::ones({8}).to(at::kBFloat16), 1e-6, rstd), c10::Error);
}
