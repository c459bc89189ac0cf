// Data-parallel throughput on the SmolLM2-135M shape (random weights, AdaLoRA on all 7 projections):
// 2 processes x 1 thread (Gloo all-reduce of the adapter's gradients) against 1 process x 2 threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "bench.h"
#include "shapes.h"
#include "peft/adapters/peft_model.h"
#include "peft/allocator/param_buffer.h"
#include "peft/models/model.h"
#include "peft/models/model_family.h"
#include "peft/train/distributed.h"

namespace {

using peft::bench::median;
using peft::bench::now_s;

nlohmann::json smollm2_config() {
  nlohmann::json c = peft::bench::smollm2_shape();
  c["num_hidden_layers"] = std::stoll(peft::bench::env_or("PEFT_BENCH_LAYERS", "30"));
  return c;
}

struct StepTimes {
  double step = 0, wait = 0, all_reduce = 0;  // wait: for the slower process, before the all-reduce
};

// Optimizer steps of `micro` micro-batches of B x T each, the gradients summed over `world`: the
// loop of peft train without its data and files. The first step is a warm-up, left out.
std::vector<StepTimes> train_steps(peft::World& world, int micro, int steps, int64_t B, int64_t T, int seed) {
  at::manual_seed(0);  // the same base and adapter in every process
  auto base = peft::build_model(peft::parse_model_config(smollm2_config()), peft::LoadOptions{});
  peft::PeftModel pm(base, peft::bench::bench_adalora_config());
  pm.train();
  peft::AdamW opt(pm.params(), peft::AdamW::Options{1e-3});
  at::manual_seed(seed);
  peft::Batch batch;
  batch.input_ids = at::randint(49152, {B, T}, at::kLong);
  batch.labels = batch.input_ids;
  std::vector<StepTimes> out;
  for (int s = 0; s <= steps; ++s) {
    const double t0 = now_s();
    for (int m = 0; m < micro; ++m) (pm.forward(batch).loss * (1.0 / (micro * world.size()))).backward();
    world.take_collective_seconds();
    world.barrier("the end of the backward passes");
    const double wait = world.take_collective_seconds();
    world.all_reduce_sum(pm.params().grads(), "the gradients");
    const double reduce = world.take_collective_seconds();
    opt.step();
    pm.update_and_allocate(s + 1);
    pm.params().zero_grad();
    if (s > 0) out.push_back({now_s() - t0, wait, reduce});
  }
  return out;
}

double median_of(const std::vector<StepTimes>& v, double StepTimes::*field) {
  std::vector<double> x;
  for (auto& t : v) x.push_back(t.*field);
  return median(x);
}

const int64_t B = 2, T = 128;

int steps() { return std::stoi(peft::bench::env_or("PEFT_BENCH_STEPS", "3")); }

// One of the two processes (started by the bench below with the torchrun variables).
void worker() {
  const auto env = peft::parse_world_env();
  auto world = peft::World::connect(env, at::kCPU, std::chrono::milliseconds(600000));
  auto t = train_steps(*world, 1, steps(), B, T, 1 + world->rank());
  if (!world->is_main()) return;
  const char* result = std::getenv("PEFT_BENCH_RESULT");
  std::ofstream(result ? result : "/dev/null") << median_of(t, &StepTimes::step) << " " << median_of(t, &StepTimes::all_reduce)
                                               << " " << median_of(t, &StepTimes::wait);
}

void bench_distributed() {
  if (std::getenv("RANK")) return worker();
  const int n = steps();
  const double global_tokens = 2.0 * B * T;
  int64_t modules = 0;
  double floats = 0;  // what each step all-reduces: the adapter's flat gradient buffer
  {
    peft::PeftModel probe(peft::build_model(peft::parse_model_config(smollm2_config()), peft::LoadOptions{}), peft::bench::bench_adalora_config());
    modules = static_cast<int64_t>(probe.modules().size());
    floats = static_cast<double>(probe.params().numel());
  }
  // 1 process x 2 threads: the global batch of two processes as 2 micro-batches.
  const int threads_before = at::get_num_threads();
  at::set_num_threads(2);
  peft::World single;
  auto one = train_steps(single, 2, n, B, T, 1);
  at::set_num_threads(threads_before);
  const double one_ms = 1e3 * median_of(one, &StepTimes::step);
  std::printf("distributed smollm2-135m: load average %s; global batch %ldx%ld (AdaLoRA init_r 12, %ld modules), %d measured steps\n",
              peft::bench::load_average().c_str(), static_cast<long>(2 * B), static_cast<long>(T), static_cast<long>(modules), n);
  std::printf("distributed 1 process x 2 threads: %.0f ms/step, %.0f tokens/s\n", one_ms, global_tokens / one_ms * 1e3);
  std::fflush(stdout);

  // 2 processes x 1 thread, batch 2 x 128 each.
  const std::string result = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/peft-bench-distributed-" +
                             std::to_string(::getpid());
  peft::LaunchOptions lo;
  lo.nprocs = 2;
  lo.argv = {peft::this_program(), "distributed"};
  lo.env = {{"PEFT_NUM_THREADS", "1"}, {"PEFT_BENCH_RESULT", result}};
  if (peft::launch_local(lo) != 0) {
    std::printf("distributed 2 processes x 1 thread: failed (see above)\n");
    return;
  }
  double two_s = 0, reduce_s = 0, wait_s = 0;
  std::ifstream(result) >> two_s >> reduce_s >> wait_s;
  std::remove(result.c_str());
  std::printf("distributed 2 processes x 1 thread: %.0f ms/step, %.0f tokens/s; all-reduce %.1f ms/step (%.2fM floats = %.1f MB, "
              "%.1f%% of the step), after waiting %.1f ms for the slower process\n",
              two_s * 1e3, global_tokens / two_s, reduce_s * 1e3, floats / 1e6, floats * 4 / 1e6, 100 * reduce_s / two_s,
              wait_s * 1e3);
  std::printf("distributed: 2 x 1 thread / 1 x 2 threads throughput %.2f\n", one_ms / (two_s * 1e3));
}

}  // namespace

PEFT_BENCH("distributed", bench_distributed);
