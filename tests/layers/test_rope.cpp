// The one-pass bf16 rotary embedding (core/bf16_rope, used by Rope::apply) against transformers' ops
// (x * cos + rotate_half(x) * sin) run by autograd: the same roundings, so the same bits both ways.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "peft/core/bf16_rope.h"
#include "peft/layers/layers.h"

using namespace peft;

namespace {

at::Tensor reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  int64_t half = x.size(-1) / 2;
  auto rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * c + rotated * s;
}

}  // namespace

TEST(Bf16Rope, OutputAndGradientAreTheOpsBits) {
  at::manual_seed(41);
  // (B, T, H, D) viewed as (B, H, T, D) as the attention makes it; D with and without a vector tail.
  for (int64_t D : {64, 6, 40}) {
    for (int64_t T : {1, 37}) {
      at::Tensor base = (at::randn({2, T, 5, D}) * 3).to(at::kBFloat16);
      at::Tensor cos = at::randn({2, T, D}).to(at::kBFloat16), sin = at::randn({2, T, D}).to(at::kBFloat16);
      at::Tensor x = base.transpose(1, 2).detach().requires_grad_(true);
      at::Tensor xr = base.transpose(1, 2).detach().requires_grad_(true);
      at::Tensor y = Rope::apply(x, cos, sin), yr = reference(xr, cos, sin);
      EXPECT_TRUE(y.equal(yr)) << "D " << D << " T " << T;
      at::Tensor dy = at::randn(y.sizes()).to(at::kBFloat16);
      y.backward(dy);
      yr.backward(dy);
      EXPECT_TRUE(x.grad().equal(xr.grad())) << "D " << D << " T " << T;
      at::NoGradGuard no_grad;
      EXPECT_TRUE(Rope::apply(x, cos, sin).equal(yr)) << "no-grad path";
    }
  }
}

TEST(Bf16Rope, Float32TakesTheOpsAndBadShapesAreRefused) {
  at::Tensor x = at::randn({1, 2, 3, 8}), cos = at::randn({1, 3, 8}), sin = at::randn({1, 3, 8});
  EXPECT_TRUE(Rope::apply(x, cos, sin).equal(reference(x, cos, sin)));
  at::Tensor xb = x.to(at::kBFloat16);
  try {
    bf16_rope(xb, cos.to(at::kBFloat16).narrow(1, 0, 2), sin.to(at::kBFloat16));
    FAIL() << "no error for cos of 2 positions against x of 3";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf16_rope"), std::string::npos) << e.what();
  }
}
