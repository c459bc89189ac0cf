// The float32 GEMM backends side by side (peft/core/gemm.h): a training step's matrix products at the
// SmolLM2 shape timed alone on libtorch's BLAS and on OpenBLAS, and one 2048^3 product on each.
#include <ATen/ATen.h>

#include <cstdio>
#include <string>
#include <vector>

#include "bench.h"
#include "peft/core/gemm.h"
#include "shapes.h"

namespace {

using peft::GemmBackend;

// Best of `reps` seconds for `f` after one untimed call.
template <class F>
double best_s(F f, int reps = 3) {
  f();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const double t0 = peft::bench::now_s();
    f();
    best = std::min(best, peft::bench::now_s() - t0);
  }
  return best;
}

// The frozen-base step's products at batch x seq tokens, each timed alone: every projection forward
// (x W^T) and its input gradient (g W), the tied lm_head both ways, and attention's Q K^T and P V
// forward and backward (batched products, on libtorch in both: the step computes them there). Returns
// seconds per step and the step's FLOPs.
std::pair<double, double> step_products_s(int64_t batch, int64_t seq) {
  const auto c = peft::bench::smollm2_shape();
  const int64_t d = c["hidden_size"], inter = c["intermediate_size"], vocab = c["vocab_size"], layers = 30;
  const int64_t heads = c["num_attention_heads"], head_dim = d / heads, kv = int64_t(c["num_key_value_heads"]) * head_dim;
  const int64_t n = batch * seq;
  const std::vector<std::pair<int64_t, int64_t>> projections{{d, d}, {d, kv}, {d, kv}, {d, d}, {d, inter}, {d, inter},
                                                             {inter, d}};
  auto product = [](int64_t m, int64_t in, int64_t out) {  // x W^T and g W
    const at::Tensor x = at::randn({m, in}), w = at::randn({out, in}), g = at::randn({m, out});
    return best_s([&] { peft::mm(x, w.t()); }) + best_s([&] { peft::mm(g, w); });
  };
  double layer = 0, flops = 0;
  for (const auto& [in, out] : projections) {
    layer += product(n, in, out);
    flops += 2.0 * 2 * n * in * out;
  }
  const at::Tensor q = at::randn({batch * heads, seq, head_dim}), k = at::randn({batch * heads, head_dim, seq});
  const at::Tensor p = at::randn({batch * heads, seq, seq}), v = at::randn({batch * heads, seq, head_dim});
  layer += 3 * (best_s([&] { at::bmm(q, k); }) + best_s([&] { at::bmm(p, v); }));
  flops += 3 * 2.0 * 2 * batch * heads * seq * seq * head_dim;
  const double head = product(n, d, vocab);
  return {layer * layers + head, flops * layers + 2.0 * 2 * n * d * vocab};
}

void bench_gemm() {
  const std::string shape = peft::bench::env_or("PEFT_GEMM_SHAPE", "4x256");
  const auto x = shape.find('x');
  const int64_t batch = std::stoll(shape.substr(0, x)), seq = std::stoll(shape.substr(x + 1));
  const GemmBackend saved = peft::gemm_backend();
  std::vector<GemmBackend> backends{GemmBackend::libtorch};
  if (peft::openblas_available()) backends.push_back(GemmBackend::openblas);
  std::string json = "{\"threads\":" + std::to_string(at::get_num_threads());
  for (GemmBackend be : backends) {
    peft::set_gemm_backend(be);
    const std::string name = be == GemmBackend::openblas ? "openblas" : "libtorch";
    const at::Tensor a = at::randn({2048, 2048}), b = at::randn({2048, 2048});
    const double rate = 2.0 * 2048 * 2048 * 2048 / best_s([&] { peft::mm(a, b); });
    const auto [step_s, flops] = step_products_s(batch, seq);
    std::printf("gemm %s: 2048^3 %.1f GFLOP/s; SmolLM2 step products at %s alone %.0f ms (%.1f GFLOP/s)%s\n",
                peft::gemm_backend_description().c_str(), rate / 1e9, shape.c_str(), 1e3 * step_s,
                flops / step_s / 1e9, be == saved ? "  <- in effect" : "");
    json += ",\"" + name + "\":{\"mm2048_flops\":" + std::to_string(rate) + ",\"step_products_s\":" +
            std::to_string(step_s) + ",\"step_flops\":" + std::to_string(flops) + "}";
  }
  peft::set_gemm_backend(saved);
  std::printf("%s,\"in_effect\":\"%s\"}\n", json.c_str(), saved == GemmBackend::openblas ? "openblas" : "libtorch");
}

}  // namespace

PEFT_BENCH("gemm", bench_gemm);
