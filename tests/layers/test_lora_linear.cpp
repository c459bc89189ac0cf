// The fused projection + adapter (lora_linear) against the composite it replaces, in float64:
// the same output and the same gradients for x, the dropout input, the bias, A and B.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "peft/layers/adapter.h"
#include "peft/layers/linear.h"
#include "peft/layers/lora_linear.h"

using namespace peft;

namespace {

struct Case {
  bool bias, dropout_input, transposed_weight, x_grad;
};

// y = x W^T + b + scale (h A^T) B^T by autograd through at::linear, and its gradients.
std::vector<at::Tensor> run(bool fused, const Case& c) {
  at::manual_seed(7);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t in = 24, out = 40, r = 3;
  at::Tensor x = at::randn({2, 5, in}, f64).requires_grad_(c.x_grad);
  at::Tensor w_stored = c.transposed_weight ? at::randn({in, out}, f64) : at::randn({out, in}, f64);
  at::Tensor weight = c.transposed_weight ? w_stored.t() : w_stored;
  at::Tensor bias = c.bias ? at::randn({out}, f64).requires_grad_(true) : at::Tensor();
  at::Tensor A = at::randn({r, in}, f64).requires_grad_(true), B = at::randn({out, r}, f64).requires_grad_(true);
  at::Tensor mask = (at::rand({2, 5, in}, f64) > 0.3).to(at::kDouble) / 0.7;
  at::Tensor h = c.dropout_input ? x * mask : x;
  const double scale = 1.7;
  at::Tensor y = fused ? lora_linear(x, h, weight, bias, A, B, scale)
                       : at::linear(x, weight, bias) + at::linear(at::linear(h, A), B) * scale;
  at::Tensor g = at::randn(y.sizes(), f64);
  (y * g).sum().backward();
  std::vector<at::Tensor> res{y.detach(), A.grad(), B.grad()};
  if (c.x_grad) res.push_back(x.grad());
  if (c.bias) res.push_back(bias.grad());
  return res;
}

}  // namespace

TEST(LoraLinear, OutputAndGradientsEqualTheComposite) {
  for (Case c : {Case{false, false, false, true}, Case{true, false, false, true}, Case{false, true, false, true},
                 Case{true, true, true, true}, Case{false, false, false, false}, Case{true, false, true, false}}) {
    auto ref = run(false, c), got = run(true, c);
    ASSERT_EQ(ref.size(), got.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_TRUE(got[i].defined()) << "tensor " << i;
      EXPECT_EQ(got[i].sizes(), ref[i].sizes()) << "tensor " << i;
      EXPECT_LT((got[i] - ref[i]).abs().max().item<double>(), 1e-12 * (1 + ref[i].abs().max().item<double>()))
          << "tensor " << i << " (bias " << c.bias << ", dropout " << c.dropout_input << ", fan_in_fan_out "
          << c.transposed_weight << ", x grad " << c.x_grad << ")";
    }
  }
}

TEST(LoraLinear, NoGradOutputEqualsTheGradPath) {
  Case c{true, false, false, true};
  auto ref = run(false, c);
  at::manual_seed(7);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor x = at::randn({2, 5, 24}, f64), w = at::randn({40, 24}, f64), b = at::randn({40}, f64);
  at::Tensor A = at::randn({3, 24}, f64), B = at::randn({40, 3}, f64);
  at::NoGradGuard no_grad;
  at::Tensor y = lora_linear(x, x, w, b, A, B, 1.7);
  EXPECT_LT((y - ref[0]).abs().max().item<double>(), 1e-12 * (1 + ref[0].abs().max().item<double>()));
}

// A Linear with an AdaLoRA adapter takes the fused path; its output and adapter gradients are those
// of PEFT's formula, x W^T + (x (A * E)^T B^T) * scaling / (ranknum + 1e-5).
TEST(LoraLinear, AdaLoraProjectionEqualsPeftsFormula) {
  at::manual_seed(3);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  Linear lin(16, 12, false);
  {
    at::NoGradGuard ng;
    lin->weight.normal_();
  }
  auto ada = std::make_shared<AdaLoraLayer>(16, 12, 4, 8.0, 0.0, f64);
  lin->to(at::kDouble);
  lin->weight.set_requires_grad(false);
  {
    at::NoGradGuard ng;
    ada->lora_E.normal_();
  }
  for (auto& [name, t] : ada->parameters()) t->set_requires_grad(true);
  lin->adapter = ada;
  at::Tensor x = at::randn({3, 16}, f64);
  at::Tensor y = lin->forward(x);
  at::Tensor g = at::randn(y.sizes(), f64);
  (y * g).sum().backward();
  std::vector<at::Tensor> got{y.detach(), ada->lora_A.grad().clone(), ada->lora_E.grad().clone(), ada->lora_B.grad().clone()};
  for (auto& [name, t] : ada->parameters()) t->mutable_grad() = at::Tensor();
  at::Tensor ref_y = at::linear(x, lin->weight) +
                     at::matmul(at::matmul(x, (ada->lora_A * ada->lora_E).t()), ada->lora_B.t()) * 8.0 / (4 + 1e-5);
  (ref_y * g).sum().backward();
  std::vector<at::Tensor> ref{ref_y.detach(), ada->lora_A.grad(), ada->lora_E.grad(), ada->lora_B.grad()};
  for (size_t i = 0; i < ref.size(); ++i) {
    // multiplier() is float32's scaling / (ranknum + 1e-5), as PEFT computes it: 1e-7 of the product.
    EXPECT_LT((got[i] - ref[i]).abs().max().item<double>(), 1e-6 * (1 + ref[i].abs().max().item<double>())) << i;
  }
}

// A bf16 base with float32 adapters (--bf16): the adapter runs in float32 and its output is added before
// one rounding to bf16, as in PEFT, where bf16 + float32 promotes to float32. Both fused paths: h a
// float32 copy of x (dropout), and h = x read as bf16 (core/bf16_lowrank); sizes with vector tails.
TEST(LoraLinear, Bf16BaseWithFloat32AdapterEqualsPeftsPromotion) {
  for (int64_t r : {5, 12}) {
    std::vector<at::Tensor> res[3];
    for (int mode = 0; mode < 3; ++mode) {
      at::manual_seed(11);
      at::Tensor x = at::randn({2, 6, 37}).to(at::kBFloat16).requires_grad_(true);
      at::Tensor w = at::randn({50, 37}).to(at::kBFloat16), b = at::randn({50}).to(at::kBFloat16);
      at::Tensor A = at::randn({r, 37}).requires_grad_(true), B = at::randn({50, r}).requires_grad_(true);
      at::Tensor h = x.to(at::kFloat);
      at::Tensor y = mode == 1   ? lora_linear(x, h, w, b, A, B, 2.5)
                     : mode == 2 ? lora_linear(x, x, w, b, A, B, 2.5)
                                 : (at::linear(x, w, b) + at::linear(at::linear(h, A), B) * 2.5).to(at::kBFloat16);
      ASSERT_EQ(y.scalar_type(), at::kBFloat16);
      at::Tensor g = at::randn(y.sizes()).to(at::kBFloat16);
      (y.to(at::kFloat) * g.to(at::kFloat)).sum().backward();
      res[mode] = {y.detach().to(at::kFloat), x.grad().to(at::kFloat), A.grad(), B.grad()};
      if (mode == 2) {
        at::NoGradGuard no_grad;
        EXPECT_TRUE(lora_linear(x, x, w, b, A, B, 2.5).equal(y.detach())) << "no-grad path, rank " << r;
      }
    }
    // y and x's gradient are bf16 (8 bits of mantissa: one rounding apart at most); A's and B's are
    // float32 products of the same bf16 gradient.
    const double tol[] = {1e-2, 1e-2, 1e-5, 1e-5};
    for (int mode = 1; mode < 3; ++mode) {
      for (int i = 0; i < 4; ++i) {
        const at::Tensor &ref = res[0][i], &got = res[mode][i];
        EXPECT_LT((got - ref).abs().max().item<double>(), tol[i] * ref.abs().max().item<double>())
            << "rank " << r << " mode " << mode << " tensor " << i;
      }
    }
  }
}
