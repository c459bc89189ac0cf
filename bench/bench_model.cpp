// Full-training throughput of a ~110M-parameter Llama-shaped model (random weights, float32, every
// parameter trained): forward+backward tokens/s and GFLOP/s, against one large matmul as the ceiling.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "bench.h"
#include "peft/models/model.h"
#include "peft/models/model_family.h"

namespace {

using peft::bench::median;

void bench_model() {
  const int64_t hidden = 768, layers = 12, heads = 12, inter = 2048, vocab = 32000;
  const int64_t B = 2, T = 128;
  const int steps = 3;
  auto config = peft::parse_model_config({{"model_type", "llama"},
                                              {"hidden_size", hidden},
                                              {"intermediate_size", inter},
                                              {"num_hidden_layers", layers},
                                              {"num_attention_heads", heads},
                                              {"num_key_value_heads", heads},
                                              {"vocab_size", vocab},
                                              {"tie_word_embeddings", true},
                                              {"max_position_embeddings", 2048}});
  at::manual_seed(0);
  auto model = peft::build_model(config);
  model->train();
  int64_t params = 0;
  for (auto& p : model->parameters()) {
    p.requires_grad_(true);
    params += p.numel();
  }
  // Parameters that take part in a matrix product per token: every Linear plus the (tied) lm_head.
  int64_t matmul_params = vocab * hidden;
  for (auto& [path, linear] : model->linear_modules()) matmul_params += linear->weight.numel();

  peft::Batch batch;
  batch.input_ids = at::randint(vocab, {B, T}, at::kLong);
  batch.labels = batch.input_ids;

  std::vector<double> times;
  for (int s = 0; s <= steps; ++s) {  // step 0 is the warm-up
    double t0 = peft::bench::now_s();
    auto out = model->forward(batch);
    out.loss.backward();
    double dt = peft::bench::now_s() - t0;
    for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();
    if (s > 0) times.push_back(dt);
  }
  double step_s = median(times);
  double tokens = static_cast<double>(B * T);
  double flops = 6.0 * matmul_params * tokens + 12.0 * layers * T * T * hidden * B;
  double achieved = flops / step_s / 1e9;
  double ceiling = 1e-9 * peft::bench::matmul_flops(at::TensorOptions(at::kFloat), 2048, 5);

  std::printf("model llama-110m: load average %s, %.1fM params (%.1fM in matmuls), batch %ldx%ld, float32, "
              "all parameters trained\n",
              peft::bench::load_average().c_str(), params / 1e6, matmul_params / 1e6, static_cast<long>(B), static_cast<long>(T));
  std::printf("model llama-110m: forward+backward %.0f ms/step (median of %d), %.0f tokens/s\n", step_s * 1e3, steps,
              tokens / step_s);
  std::printf("model llama-110m: flops = 6 * N_matmul * tokens + 12 * layers * T^2 * hidden * batch = %.1f GFLOP/step\n",
              flops / 1e9);
  std::printf("model llama-110m: achieved %.1f GFLOP/s, matmul 2048^3 %.1f GFLOP/s, ratio %.2f\n", achieved, ceiling,
              achieved / ceiling);
}

}  // namespace

PEFT_BENCH("model", bench_model);
