// Cost of AdaLoRA over LoRA on the SmolLM2-135M shape (random weights, adapters on all 7 projections):
// interleaved training steps, the stages of each, and update_and_allocate alone at 30 vs 4 layers.
#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "bench.h"
#include "peft/model.h"
#include "peft/param_buffer.h"
#include "peft/peft_model.h"

namespace {

using peft::bench::now_s;

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

nlohmann::json smollm2_config(int64_t layers) {
  return {{"model_type", "llama"},        {"architectures", {"LlamaForCausalLM"}},
          {"hidden_size", 576},           {"intermediate_size", 1536},
          {"num_hidden_layers", layers},  {"num_attention_heads", 9},
          {"num_key_value_heads", 3},     {"vocab_size", 49152},
          {"tie_word_embeddings", true},  {"rms_norm_eps", 1e-5},
          {"rope_theta", 100000.0},       {"max_position_embeddings", 2048}};
}

const std::vector<std::string> kTargets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

// AdaLoRA init_r 12 -> target_r 8: steps 1-2 are warm-up, the measured steps 3.. are in the
// budgeting phase, with a mask every deltaT = 10 steps.
peft::AdapterConfig adalora_config() {
  peft::AdapterConfig c;
  c.peft_type = peft::PeftType::AdaLora;
  c.target_modules = kTargets;
  c.lora_alpha = 16;
  c.init_r = 12;
  c.target_r = 8;
  c.tinit = 2;
  c.tfinal = 20;
  c.deltaT = 10;
  c.total_step = 1000;
  return c;
}

peft::AdapterConfig lora_config() {
  peft::AdapterConfig c;
  c.peft_type = peft::PeftType::Lora;
  c.target_modules = kTargets;
  c.lora_alpha = 16;
  c.r = 8;
  return c;
}

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
  int64_t step = 0;

  Run(int64_t layers, const peft::AdapterConfig& config) {
    at::manual_seed(0);  // the same base weights for every run
    auto base = peft::build_model(peft::ModelConfig::from_json(smollm2_config(layers)));
    pm = std::make_unique<peft::PeftModel>(base, config);
    pm->train();
    opt = std::make_unique<peft::AdamW>(pm->params(), peft::AdamW::Options{1e-3});
  }
  bool adalora() const { return pm->config().peft_type == peft::PeftType::AdaLora; }

  StepTimes train_step(const peft::Batch& batch) {
    StepTimes t;
    ++step;
    double t0 = now_s();
    auto out = pm->forward(batch);
    double t1 = now_s();
    out.loss.backward();
    double t2 = now_s();
    opt->step();
    double t3 = now_s();
    if (adalora()) t.mask = pm->update_and_allocate(step).masked;
    double t4 = now_s();
    pm->params().zero_grad();
    double t5 = now_s();
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
    double t0 = now_s();
    bool masked = run.pm->update_and_allocate(run.step).masked;
    double dt = now_s() - t0;
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
  const int64_t B = 2, T = 128, layers = 30;
  const int measured = 10;  // steps 3..12 of AdaLoRA: one of them (step 10) masks
  Run lora(layers, lora_config());
  Run ada(layers, adalora_config());
  std::printf("adalora smollm2-135m: load average %s, %ld modules, base %.1fM params frozen, trainable lora %.2fM, adalora %.2fM\n",
              peft::bench::load_average().c_str(), static_cast<long>(ada.pm->modules().size()), (ada.pm->total_parameters() - ada.pm->trainable_parameters()) / 1e6,
              lora.pm->trainable_parameters() / 1e6, ada.pm->trainable_parameters() / 1e6);

  peft::Batch batch;
  at::manual_seed(1);
  batch.input_ids = at::randint(49152, {B, T}, at::kLong);
  batch.labels = batch.input_ids;

  for (int i = 0; i < 2; ++i) lora.train_step(batch), ada.train_step(batch);  // warm-up (AdaLoRA's tinit)
  std::vector<StepTimes> tl, ta;
  for (int i = 0; i < measured; ++i) {  // A B, B A, ... so drift affects both alike
    if (i % 2 == 0) {
      tl.push_back(lora.train_step(batch));
      ta.push_back(ada.train_step(batch));
    } else {
      ta.push_back(ada.train_step(batch));
      tl.push_back(lora.train_step(batch));
    }
  }

  auto ms = [](const std::vector<StepTimes>& v, double (*f)(const StepTimes&)) {
    std::vector<double> x;
    for (auto& t : v) x.push_back(f(t) * 1e3);
    return x;
  };
  auto total = [](const StepTimes& t) { return t.total(); };
  auto lora_ms = ms(tl, total), ada_ms = ms(ta, total);
  std::vector<double> alloc_plain, alloc_mask;
  int mask_steps = 0;
  for (auto& t : ta) {
    (t.mask ? alloc_mask : alloc_plain).push_back(t.allocate * 1e3);
    mask_steps += t.mask;
  }
  double alloc_ms = median(ms(ta, [](const StepTimes& t) { return t.allocate; }));

  std::printf("adalora smollm2-135m: batch %ldx%ld, %d interleaved steps each (%d AdaLoRA mask step, deltaT 10)\n",
              static_cast<long>(B), static_cast<long>(T), measured, mask_steps);
  std::printf("adalora smollm2-135m: lora %.1f ms/step, adalora %.1f ms/step, ratio %.3f (median); "
              "mean lora %.1f, adalora %.1f, ratio %.3f\n",
              median(lora_ms), median(ada_ms), median(ada_ms) / median(lora_ms), mean(lora_ms), mean(ada_ms),
              mean(ada_ms) / mean(lora_ms));
  std::printf("adalora smollm2-135m: update_and_allocate %.1f ms (%.1f%% of the AdaLoRA step); "
              "plain step %.1f ms, mask step %.1f ms\n",
              alloc_ms, 100.0 * alloc_ms / median(ada_ms), median(alloc_plain), median(alloc_mask));
  const char* names[] = {"forward", "backward", "optimizer", "zero_grad"};
  double (*stages[])(const StepTimes&) = {[](const StepTimes& t) { return t.forward; },
                                          [](const StepTimes& t) { return t.backward; },
                                          [](const StepTimes& t) { return t.optimizer; },
                                          [](const StepTimes& t) { return t.zero_grad; }};
  std::printf("adalora smollm2-135m: stages (median ms, lora / adalora):");
  for (int s = 0; s < 4; ++s) std::printf(" %s %.1f / %.1f%s", names[s], median(ms(tl, stages[s])), median(ms(ta, stages[s])), s < 3 ? "," : "\n");

  // The allocator alone: its operator count must not depend on the number of modules.
  Run small(4, adalora_config());
  small.step = ada.step = 2;  // back to the start of the budgeting phase
  auto big_t = time_allocator(ada, 60);
  auto small_t = time_allocator(small, 60);
  auto line = [](const char* what, const Run& r, const AllocatorTimes& t) {
    double n = static_cast<double>(r.pm->trainable_parameters());
    std::printf("adalora allocator %s: %ld modules, %.2fM adapter params: plain %.2f ms (%ld ops, %.2f ns/param), "
                "mask %.2f ms (%ld ops, %.2f ns/param)\n",
                what, static_cast<long>(r.pm->modules().size()), n / 1e6, t.plain_ms, static_cast<long>(t.plain_ops),
                t.plain_ms * 1e6 / n, t.mask_ms, static_cast<long>(t.mask_ops), t.mask_ms * 1e6 / n);
  };
  line("30 layers", ada, big_t);
  line(" 4 layers", small, small_t);
  double elems = static_cast<double>(ada.pm->trainable_parameters()) / small.pm->trainable_parameters();
  std::printf("adalora allocator: 30/4 layers: %.1fx the modules and elements, plain %.1fx, mask %.1fx the time\n",
              elems, big_t.plain_ms / small_t.plain_ms, big_t.mask_ms / small_t.mask_ms);
}

}  // namespace

PEFT_BENCH("adalora", bench_adalora);
