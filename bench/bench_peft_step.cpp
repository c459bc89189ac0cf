// peft.cpp's side of `make bench-peft` (bench/bench_peft.py): training steps on a model directory and
// token batches that the PEFT side uses too; prints one JSON line of per-step times and peak RSS.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "bench.h"
#include "shapes.h"
#include "peft/adapters/peft_model.h"
#include "peft/allocator/param_buffer.h"
#include "peft/formats/safetensors.h"
#include "peft/models/model.h"

namespace {

// Peak resident set size of this process in bytes (VmHWM of /proc/self/status).
double peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024.0;
  return 0;
}

// bench_peft.py's rows: the benchmarks' LoRA and AdaLoRA settings (shapes.h), AdaLoRA budgeting from
// the first measured step on (tinit = the warm-up steps) and never reaching the final phase.
peft::AdapterConfig adapter_config(const std::string& method, int64_t warmup) {
  if (method == "lora") return peft::bench::bench_lora_config();
  peft::AdapterConfig c = peft::bench::bench_adalora_config();
  c.tinit = warmup;
  c.tfinal = 100;
  return c;
}

void bench_peft_step() {
  const std::string model_dir = peft::bench::env_or("PEFT_STEP_MODEL", "");
  if (model_dir.empty()) {
    std::printf("peft-step: skipped (run by make bench-peft, which sets PEFT_STEP_MODEL)\n");
    return;
  }
  const std::string method = peft::bench::env_or("PEFT_STEP_METHOD", "lora");
  const std::string dtype = peft::bench::env_or("PEFT_STEP_DTYPE", "float32");
  const int64_t warmup = std::stoll(peft::bench::env_or("PEFT_STEP_WARMUP", "2"));
  const int64_t steps = std::stoll(peft::bench::env_or("PEFT_STEP_STEPS", "5"));
  auto tokens = peft::load_safetensors(peft::bench::env_or("PEFT_STEP_TOKENS", ""));
  const at::Tensor ids = tokens.at("input_ids");  // (steps, batch, seq), int64

  peft::LoadOptions load;
  load.dtype = dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  auto base = peft::load_model(model_dir, load);
  // PEFT_STEP_GRADIENT_CHECKPOINTING=1: each block recomputed in backward (train --gradient-checkpointing).
  base->gradient_checkpointing = peft::bench::env_or("PEFT_STEP_GRADIENT_CHECKPOINTING", "0") == "1";
  at::manual_seed(0);
  peft::PeftModel pm(base, adapter_config(method, warmup));
  pm.train();
  peft::AdamW opt(pm.params(), peft::AdamW::Options{1e-4});
  const bool ada = method == "adalora";

  std::vector<double> step_s, allocate_s, losses;
  for (int64_t step = 0; step < warmup + steps; ++step) {
    peft::Batch b;
    b.input_ids = ids[step % ids.size(0)];
    b.labels = b.input_ids;
    const double t0 = peft::bench::now_s();
    auto out = pm.forward(b);
    out.loss.backward();
    opt.step();
    const double t1 = peft::bench::now_s();
    if (ada) pm.update_and_allocate(step);
    const double t2 = peft::bench::now_s();
    pm.params().zero_grad();
    const double t3 = peft::bench::now_s();
    if (step < warmup) continue;
    step_s.push_back(t3 - t0);
    allocate_s.push_back(t2 - t1);
    losses.push_back(out.loss.item<double>());
  }
  // PEFT_STEP_PROFILE=FILE: one more step under the profiler, its chrome trace written to FILE
  // (bench_peft.py --profile reads it); the timed steps above ran without it.
  const std::string profile = peft::bench::env_or("PEFT_STEP_PROFILE", "");
  if (!profile.empty()) {
    peft::Batch b;
    b.input_ids = ids[0];
    b.labels = b.input_ids;
    // Kineto, as torch.profiler on PEFT's side, so that both traces count the same way.
    namespace prof = torch::autograd::profiler;
    const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
    const std::set<torch::profiler::impl::ActivityType> cpu{torch::profiler::impl::ActivityType::CPU};
    prof::prepareProfiler(config, cpu);
    prof::enableProfiler(config, cpu);
    auto out = pm.forward(b);
    out.loss.backward();
    opt.step();
    if (ada) pm.update_and_allocate(warmup + steps);
    pm.params().zero_grad();
    prof::disableProfiler()->save(profile);
  }
  nlohmann::json j = {{"side", "peft.cpp"},           {"method", method},
                      {"dtype", dtype},               {"threads", at::get_num_threads()},
                      {"step_s", step_s},             {"allocate_s", allocate_s},
                      {"loss", losses},               {"peak_rss_bytes", peak_rss_bytes()},
                      {"trainable", pm.trainable_parameters()},
                      {"gradient_checkpointing", base->gradient_checkpointing}};
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

}  // namespace

PEFT_BENCH("peft-step", bench_peft_step);
