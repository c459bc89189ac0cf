// Gradient checkpointing changes memory, not results: the loss and every adapter gradient of a step
// equal those without it (each family, with dropout replayed), and a KV-cached forward is untouched.
#include <gtest/gtest.h>

#include <string>

#include "peft/adapters/peft_model.h"
#include "peft/allocator/param_buffer.h"
#include "peft/models/model.h"
#include "test_util.h"

using namespace peft;
using namespace peft::test;

namespace {

struct StepResult {
  double loss;
  at::Tensor grads;
};

// One forward + backward of the golden case's first batch from its initial adapter.
StepResult step(const std::string& name, bool checkpointing, double dropout, at::ScalarType dtype = at::kFloat) {
  auto data = read_json(golden(name) + "/data.json");
  LoadOptions load;
  load.dtype = dtype;
  auto base = load_model(golden(name) + "/base", load);
  auto pm = PeftModel::load(base, golden(name) + "/adapter_init");
  for (auto& m : pm->modules()) m.adapter->dropout = dropout;
  base->gradient_checkpointing = checkpointing;
  pm->train(true);
  Batch b;
  b.input_ids = golden_batch(data, 0);
  if (data.contains("labels") && !data["labels"].is_null()) {
    b.labels = at::tensor(data["labels"][0].get<std::vector<int64_t>>(), at::kLong);
  } else {
    b.labels = b.input_ids;
  }
  at::manual_seed(7);  // the same dropout masks for both runs
  pm->params().zero_grad();
  auto out = pm->forward(b);
  out.loss.backward();
  return {out.loss.item<double>(), pm->params().grads().clone()};
}

}  // namespace

TEST(GradientCheckpointing, SameLossAndGradientsInEveryFamily) {
  for (const std::string name : {"llama_a", "gpt2_a", "bert_a", "llama_lora"}) {
    for (double dropout : {0.0, 0.1}) {
      auto plain = step(name, false, dropout);
      auto ckpt = step(name, true, dropout);
      EXPECT_NEAR(ckpt.loss, plain.loss, 1e-6 * std::abs(plain.loss)) << name << " dropout " << dropout;
      const double scale = plain.grads.abs().max().item<double>();
      ASSERT_GT(scale, 0) << name;
      EXPECT_LE(max_abs_diff(ckpt.grads, plain.grads), 1e-5 * scale) << name << " dropout " << dropout;
    }
  }
}

// The forward under checkpointing runs the kernels of the recomputation (and of a step without it), so
// the loss is the same number, not one within rounding: a bf16 base, where kernels differ most, shows it.
TEST(GradientCheckpointing, TheForwardRunsTheKernelsOfTheRecomputation) {
  auto plain = step("llama_a", false, 0.0, at::kBFloat16);
  auto ckpt = step("llama_a", true, 0.0, at::kBFloat16);
  EXPECT_EQ(ckpt.loss, plain.loss);
  const double scale = plain.grads.abs().max().item<double>();
  EXPECT_LE(max_abs_diff(ckpt.grads, plain.grads), 1e-6 * scale);
}

TEST(GradientCheckpointing, EvaluationAndNoGradAreUnaffected) {
  auto base = load_model(golden("llama_a") + "/base");
  auto data = read_json(golden("llama_a") + "/data.json");
  Batch b;
  b.input_ids = golden_batch(data, 0);
  base->eval();
  at::Tensor plain = base->forward(b).logits;
  at::Tensor plain_no_grad;  // without a gradient attention may take another kernel: compared like with like
  {
    at::NoGradGuard no_grad;
    plain_no_grad = base->forward(b).logits;
  }
  base->gradient_checkpointing = true;
  at::Tensor eval_logits = base->forward(b).logits;
  EXPECT_EQ(max_abs_diff(plain, eval_logits), 0.0);
  base->train(true);
  at::NoGradGuard no_grad;
  EXPECT_EQ(max_abs_diff(plain_no_grad, base->forward(b).logits), 0.0);
}
