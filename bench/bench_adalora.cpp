// Cost of AdaLoRA over LoRA on a real model's shape (random weights, adapters on all 7 projections):
// interleaved training steps, the stages of each, and update_and_allocate alone at full depth vs 4 layers.
#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "bench.h"
#include "shapes.h"
#include "core/compat.h"
#include "peft/models/model.h"
#include "peft/allocator/param_buffer.h"
#include "peft/adapters/peft_model.h"
#include "peft/models/model_family.h"

namespace {

using peft::bench::now_s;

using peft::bench::mean;
using peft::bench::median;

// The model shapes: SmolLM2-135M (30 layers, d=576) and Llama-3.2-1B (16 layers, d=2048).
struct Shape {
  std::string name;
  nlohmann::json config;  // without num_hidden_layers
  int64_t layers;
};

Shape shape_named(const std::string& name) {
  if (name == "smollm2-135m") return {name, peft::bench::smollm2_shape(), 30};
  if (name == "llama-3.2-1b")
    return {name,
            {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 2048},
             {"intermediate_size", 8192}, {"num_attention_heads", 32}, {"num_key_value_heads", 8},
             {"head_dim", 64}, {"vocab_size", 128256}, {"tie_word_embeddings", true}, {"rms_norm_eps", 1e-5},
             {"rope_theta", 500000.0}, {"max_position_embeddings", 131072},
             {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                               {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}}},
            16};
  throw std::invalid_argument("PEFT_BENCH_SHAPE=\"" + name + "\": expected smollm2-135m or llama-3.2-1b");
}

nlohmann::json with_layers(const Shape& shape, int64_t layers) {
  auto c = shape.config;
  c["num_hidden_layers"] = layers;
  return c;
}

// What the environment asks for: PEFT_BENCH_SHAPE, PEFT_BENCH_LAYERS, PEFT_BENCH_DEVICE,
// PEFT_BENCH_DTYPE (of the frozen base; adapters stay float32), PEFT_BENCH_BATCH ("8x1024"),
// PEFT_BENCH_STEPS (measured steps of each method).
struct Setup {
  Shape shape;
  int64_t layers, B, T;
  int steps;
  peft::LoadOptions load;
  std::string dtype_name;
};

Setup setup_from_env() {
  Setup s{shape_named(peft::bench::env_or("PEFT_BENCH_SHAPE", "smollm2-135m")), 0, 0, 0, 0, {}, ""};
  s.layers = std::stoll(peft::bench::env_or("PEFT_BENCH_LAYERS", std::to_string(s.shape.layers)));
  const std::string batch = peft::bench::env_or("PEFT_BENCH_BATCH", "2x128");
  const auto x = batch.find('x');
  if (x == std::string::npos) throw std::invalid_argument("PEFT_BENCH_BATCH=\"" + batch + "\": expected BxT, e.g. 8x1024");
  s.B = std::stoll(batch.substr(0, x));
  s.T = std::stoll(batch.substr(x + 1));
  s.steps = std::stoi(peft::bench::env_or("PEFT_BENCH_STEPS", "10"));
  s.dtype_name = peft::bench::env_or("PEFT_BENCH_DTYPE", "float32");
  s.load = peft::load_options(s.dtype_name, peft::bench::env_or("PEFT_BENCH_DEVICE", "cpu"));
  return s;
}

using peft::bench::bench_adalora_config;
using peft::bench::bench_lora_config;

// Seconds spent in each stage of one training step.
struct StepTimes {
  double forward = 0, backward = 0, optimizer = 0, allocate = 0, zero_grad = 0;
  bool mask = false;
  double total() const { return forward + backward + optimizer + allocate + zero_grad; }
};

// A model with adapters and its optimizer, driven as a training loop drives it.
struct Run {
  std::unique_ptr<peft::PeftModel> pm;
  std::unique_ptr<peft::AdamW> opt;
  at::Device device = at::kCPU;
  int64_t step = 0;

  Run(const nlohmann::json& model_config, const peft::LoadOptions& load, const peft::AdapterConfig& config)
      : device(load.device) {
    at::manual_seed(0);  // the same base weights for every run
    auto base = peft::build_model(peft::parse_model_config(model_config), load);
    pm = std::make_unique<peft::PeftModel>(base, config);
    pm->train();
    opt = std::make_unique<peft::AdamW>(pm->params(), peft::AdamW::Options{1e-3});
  }
  bool adalora() const { return pm->config().peft_type == peft::PeftType::AdaLora; }
  // Host time after the device has finished what was queued (CUDA runs asynchronously).
  double now() const {
    peft::compat::synchronize(device);
    return now_s();
  }

  StepTimes train_step(const peft::Batch& batch) {
    StepTimes t;
    ++step;
    double t0 = now();
    auto out = pm->forward(batch);
    double t1 = now();
    out.loss.backward();
    double t2 = now();
    opt->step();
    double t3 = now();
    if (adalora()) t.mask = pm->update_and_allocate(step).masked;
    double t4 = now();
    pm->params().zero_grad();
    double t5 = now();
    t.forward = t1 - t0, t.backward = t2 - t1, t.optimizer = t3 - t2, t.allocate = t4 - t3, t.zero_grad = t5 - t4;
    return t;
  }
};

// Counts the ATen operators dispatched on this thread while it is alive.
struct OpCounter {
  static inline thread_local int64_t count = 0;
  at::CallbackHandle handle;
  OpCounter() {
    count = 0;
    handle = at::addThreadLocalCallback(at::RecordFunctionCallback(
        [](const at::RecordFunction&) -> std::unique_ptr<at::ObserverContext> {
          ++count;
          return nullptr;
        }));
  }
  ~OpCounter() { at::removeCallback(handle); }
};

struct AllocatorTimes {
  double plain_ms, mask_ms;
  int64_t plain_ops, mask_ops;
};

// update_and_allocate alone, on random gradients, over `calls` budgeting steps (every tenth masks).
AllocatorTimes time_allocator(Run& run, int calls) {
  {
    at::NoGradGuard no_grad;
    run.pm->params().grads().normal_();
  }
  std::vector<double> plain, mask;
  AllocatorTimes r{};
  for (int i = 0; i < calls; ++i) {
    ++run.step;
    bool counting = i < 20;  // the first plain and mask calls of the window are counted, then timed bare
    std::unique_ptr<OpCounter> counter;
    if (counting) counter = std::make_unique<OpCounter>();
    double t0 = run.now();
    bool masked = run.pm->update_and_allocate(run.step).masked;
    double dt = run.now() - t0;
    if (counting) {
      (masked ? r.mask_ops : r.plain_ops) = OpCounter::count;
      continue;
    }
    (masked ? mask : plain).push_back(dt * 1e3);
  }
  r.plain_ms = median(plain);
  r.mask_ms = median(mask);
  return r;
}

void bench_adalora() {
  const Setup S = setup_from_env();
  const std::string methods = peft::bench::env_or("PEFT_BENCH_METHODS", "lora,adalora");
  const bool run_lora = methods.find("lora") == 0 || methods.find(",lora") != std::string::npos;
  const bool run_ada = methods.find("adalora") != std::string::npos;
  const int64_t B = S.B, T = S.T;
  const int measured = S.steps;  // AdaLoRA's steps 3.. : one in ten masks
  const char* name = S.shape.name.c_str();
  const auto model_config = with_layers(S.shape, S.layers);
  std::unique_ptr<Run> lora, ada;
  if (run_lora) lora = std::make_unique<Run>(model_config, S.load, bench_lora_config());
  if (run_ada) ada = std::make_unique<Run>(model_config, S.load, bench_adalora_config());
  Run& any = ada ? *ada : *lora;
  const double frozen = static_cast<double>(any.pm->total_parameters() - any.pm->trainable_parameters());
  std::printf("adalora %s: load average %s, %ld layers, %ld modules, base %.1fM params frozen (%s on %s), trainable lora %.2fM, adalora %.2fM\n",
              name, peft::bench::load_average().c_str(), static_cast<long>(S.layers),
              static_cast<long>(any.pm->modules().size()), frozen / 1e6, S.dtype_name.c_str(),
              S.load.device.str().c_str(), lora ? lora->pm->trainable_parameters() / 1e6 : 0.0,
              ada ? ada->pm->trainable_parameters() / 1e6 : 0.0);

  peft::Batch batch;
  at::manual_seed(1);
  const int64_t vocab = model_config["vocab_size"].get<int64_t>();
  batch.input_ids = at::randint(vocab, {B, T}, at::TensorOptions(at::kLong).device(S.load.device));
  batch.labels = batch.input_ids;

  for (int i = 0; i < 2; ++i) {  // warm-up (AdaLoRA's tinit)
    if (lora) lora->train_step(batch);
    if (ada) ada->train_step(batch);
  }
  peft::compat::reset_peak_memory(S.load.device);
  std::vector<StepTimes> tl, ta;
  for (int i = 0; i < measured; ++i) {  // A B, B A, ... so drift affects both alike
    if (i % 2 == 0) {
      if (lora) tl.push_back(lora->train_step(batch));
      if (ada) ta.push_back(ada->train_step(batch));
    } else {
      if (ada) ta.push_back(ada->train_step(batch));
      if (lora) tl.push_back(lora->train_step(batch));
    }
  }
  const int64_t peak = peft::compat::peak_memory_bytes(S.load.device);

  auto ms = [](const std::vector<StepTimes>& v, double (*f)(const StepTimes&)) {
    std::vector<double> x;
    for (auto& t : v) x.push_back(f(t) * 1e3);
    return x;
  };
  auto total = [](const StepTimes& t) { return t.total(); };
  auto lora_ms = ms(tl, total), ada_ms = ms(ta, total);
  int mask_steps = 0;
  for (auto& t : ta) mask_steps += t.mask;
  std::printf("adalora %s: batch %ldx%ld, %d %ssteps each (%d AdaLoRA mask step, deltaT 10)\n", name,
              static_cast<long>(B), static_cast<long>(T), measured, lora && ada ? "interleaved " : "", mask_steps);

  // Model FLOPs of a frozen-base step: 2N forward and 2N for the input gradients per token, plus
  // attention (Q K^T and P V, forward and twice backward) as if not causal.
  int64_t matmul_params = vocab * model_config["hidden_size"].get<int64_t>();
  for (auto& [path, linear] : any.pm->base().linear_modules()) matmul_params += linear->weight.numel();
  const double hidden = model_config["hidden_size"].get<double>();
  const double flops = 4.0 * matmul_params * B * T + 12.0 * S.layers * T * T * hidden * B;
  const double ceiling = 1e-12 * peft::bench::matmul_flops(at::TensorOptions(S.load.dtype).device(S.load.device),
                                       S.load.device.is_cuda() ? 8192 : 2048, 5);
  auto summary = [&](const char* method, const std::vector<double>& v) {
    if (v.empty()) return;
    const double step_s = median(v) / 1e3;
    std::printf("adalora %s: %s %.1f ms/step (median), %.0f tokens/s, %.3g TFLOP/s = %.2f of a %s matmul (%.3g TFLOP/s)\n",
                name, method, median(v), B * T / step_s, flops / step_s / 1e12, flops / step_s / 1e12 / ceiling,
                S.dtype_name.c_str(), ceiling);
  };
  summary("lora", lora_ms);
  summary("adalora", ada_ms);
  if (lora && ada)
    std::printf("adalora %s: lora %.1f ms/step, adalora %.1f ms/step, ratio %.3f (median); "
                "mean lora %.1f, adalora %.1f, ratio %.3f\n",
                name, median(lora_ms), median(ada_ms), median(ada_ms) / median(lora_ms), mean(lora_ms), mean(ada_ms),
                mean(ada_ms) / mean(lora_ms));
  if (peak >= 0)
    std::printf("adalora %s: peak memory %.2f GiB (%s alive)\n", name, peak / 1073741824.0,
                lora && ada ? "both models" : methods.c_str());
  if (ada) {
    std::vector<double> alloc_plain, alloc_mask;
    for (auto& t : ta) (t.mask ? alloc_mask : alloc_plain).push_back(t.allocate * 1e3);
    double alloc_ms = median(ms(ta, [](const StepTimes& t) { return t.allocate; }));
    std::printf("adalora %s: update_and_allocate %.1f ms (%.1f%% of the AdaLoRA step); "
                "plain step %.1f ms, mask step %.1f ms\n",
                name, alloc_ms, 100.0 * alloc_ms / median(ada_ms), median(alloc_plain), median(alloc_mask));
  }
  const char* names[] = {"forward", "backward", "optimizer", "zero_grad"};
  double (*stages[])(const StepTimes&) = {[](const StepTimes& t) { return t.forward; },
                                          [](const StepTimes& t) { return t.backward; },
                                          [](const StepTimes& t) { return t.optimizer; },
                                          [](const StepTimes& t) { return t.zero_grad; }};
  std::printf("adalora %s: stages (median ms, lora / adalora):", name);
  for (int s = 0; s < 4; ++s)
    std::printf(" %s %.1f / %.1f%s", names[s], median(ms(tl, stages[s])), median(ms(ta, stages[s])), s < 3 ? "," : "\n");
  if (!ada || peft::bench::env_or("PEFT_BENCH_ALLOCATOR", "1") == "0") return;

  // The allocator alone: its operator count must not depend on the number of modules.
  lora.reset();
  Run small(with_layers(S.shape, 4), S.load, bench_adalora_config());
  small.step = ada->step = 2;  // back to the start of the budgeting phase
  auto big_t = time_allocator(*ada, 60);
  auto small_t = time_allocator(small, 60);
  auto line = [](const std::string& what, const Run& r, const AllocatorTimes& t) {
    double n = static_cast<double>(r.pm->trainable_parameters());
    std::printf("adalora allocator %s: %ld modules, %.2fM adapter params: plain %.2f ms (%ld ops, %.2f ns/param), "
                "mask %.2f ms (%ld ops, %.2f ns/param)\n",
                what.c_str(), static_cast<long>(r.pm->modules().size()), n / 1e6, t.plain_ms,
                static_cast<long>(t.plain_ops), t.plain_ms * 1e6 / n, t.mask_ms, static_cast<long>(t.mask_ops),
                t.mask_ms * 1e6 / n);
  };
  line(std::to_string(S.layers) + " layers", *ada, big_t);
  line(" 4 layers", small, small_t);
  double elems = static_cast<double>(ada->pm->trainable_parameters()) / small.pm->trainable_parameters();
  std::printf("adalora allocator: %ld/4 layers: %.1fx the modules and elements, plain %.1fx, mask %.1fx the time\n",
              static_cast<long>(S.layers), elems, big_t.plain_ms / small_t.plain_ms, big_t.mask_ms / small_t.mask_ms);
}

}  // namespace

PEFT_BENCH("adalora", bench_adalora);
