// The frozen-weight projection (frozen_linear, tied_lm_head) against autograd's at::linear: the same
// output and the same gradients of x and the bias, in float64 and float32, plain and transposed weights.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "peft/layers/frozen_linear.h"

using namespace peft;

TEST(FrozenLinear, OutputAndGradientsEqualAutogradsLinear) {
  for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
    for (bool with_bias : {false, true}) {
      for (bool transposed : {false, true}) {
        at::manual_seed(11);
        auto opt = at::TensorOptions().dtype(dtype);
        const at::Tensor w_stored = transposed ? at::randn({96, 40}, opt) : at::randn({40, 96}, opt);
        const at::Tensor weight = transposed ? w_stored.t() : w_stored;  // (out 40, in 96)
        at::Tensor bias = with_bias ? at::randn({40}, opt).requires_grad_(true) : at::Tensor();
        at::Tensor x = at::randn({3, 7, 96}, opt).requires_grad_(true);
        const at::Tensor g = at::randn({3, 7, 40}, opt);

        at::Tensor y = frozen_linear(x, weight, bias);
        (y * g).sum().backward();
        const at::Tensor gx = x.grad().clone(), gb = with_bias ? bias.grad().clone() : at::Tensor();
        x.mutable_grad().reset();
        if (with_bias) bias.mutable_grad().reset();
        at::Tensor ref = at::linear(x, weight, bias);
        (ref * g).sum().backward();

        const double tol = dtype == at::kDouble ? 1e-12 : 1e-4;
        const std::string what = std::string(dtype == at::kDouble ? "float64" : "float32") +
                                 (with_bias ? " bias" : "") + (transposed ? " transposed" : "");
        EXPECT_EQ(y.sizes(), ref.sizes()) << what;
        EXPECT_TRUE(at::allclose(y, ref, tol, tol)) << what;
        EXPECT_TRUE(at::allclose(gx, x.grad(), tol, tol)) << what;
        if (with_bias) EXPECT_TRUE(at::allclose(gb, bias.grad(), tol, tol)) << what;
        EXPECT_FALSE(weight.grad().defined()) << what;
      }
    }
  }
}

TEST(FrozenLinear, TiedHeadEqualsTheEmbeddingProductAndTrainsATrainableEmbedding) {
  at::manual_seed(12);
  const at::Tensor frozen = at::randn({50, 16});
  const at::Tensor h = at::randn({2, 3, 16});
  EXPECT_TRUE(at::allclose(tied_lm_head(h, frozen), at::matmul(h, frozen.t()), 1e-5, 1e-5));
  at::Tensor trainable = frozen.clone().requires_grad_(true);
  tied_lm_head(h, trainable).sum().backward();
  ASSERT_TRUE(trainable.grad().defined());
  EXPECT_TRUE(at::allclose(trainable.grad(), h.reshape({-1, 16}).sum(0).expand({50, 16}), 1e-4, 1e-4));
}

TEST(FrozenLinear, ATrainableWeightIsRefused) {
  const at::Tensor w = at::randn({4, 3}).requires_grad_(true);
  EXPECT_THROW(frozen_linear(at::randn({2, 3}), w), c10::Error);
}
