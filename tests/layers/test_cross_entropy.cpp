// The fused language-model loss against libtorch's own cross_entropy_loss: the same loss and logits
// gradient (ignored labels included), at a large vocabulary.
#include <gtest/gtest.h>

#include "peft/layers/cross_entropy.h"
#include "test_util.h"

using namespace peft;
using namespace peft::test;

TEST(FusedCrossEntropy, EqualsLibtorchsLossAndGradient) {
  at::manual_seed(3);
  for (int64_t vocab : {7, 49152}) {
    at::Tensor logits = (at::randn({37, vocab}) * 4).requires_grad_(true);
    at::Tensor labels = at::randint(0, vocab, {37}, at::kLong);
    labels.index_put_({at::arange(0, 37, 5)}, -100);  // every fifth position ignored
    at::Tensor ours = fused_cross_entropy(logits, labels);
    ours.backward(at::full({}, 0.7));
    at::Tensor grad_ours = logits.grad().clone();
    logits.mutable_grad().zero_();
    at::Tensor ref = at::cross_entropy_loss(logits, labels, {}, at::Reduction::Mean, -100);
    ref.backward(at::full({}, 0.7));
    EXPECT_NEAR(ours.item<double>(), ref.item<double>(), 1e-6 * ref.item<double>()) << vocab;
    // Both sides normalise by a float32 sum of up to 49152 exponentials, summed in different orders:
    // the softmax entries differ by that sum's rounding (measured: 1.1e-5 of the largest entry).
    const double scale = logits.grad().abs().max().item<double>();
    EXPECT_LE(max_abs_diff(grad_ours, logits.grad()), 5e-5 * scale) << vocab;
    // Ignored rows get no gradient at all.
    EXPECT_EQ(grad_ours.index({at::arange(0, 37, 5)}).abs().max().item<double>(), 0.0);
  }
}
