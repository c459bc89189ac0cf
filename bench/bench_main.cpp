// Entry point of peft_bench: runs the registered benchmarks (all, or those whose name contains argv[1]).
// Figures are printed as they are measured; compare ratios taken in the same run.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "bench.h"
#include "core/compat.h"
#include "peft/core/runtime.h"

namespace peft::bench {
std::vector<Bench>& benches() {
  static std::vector<Bench> all;
  return all;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

double matmul_flops(const at::TensorOptions& options, int64_t n, int reps) {
  auto a = at::randn({n, n}, options), b = at::randn({n, n}, options);
  auto c = at::mm(a, b);  // warm-up
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    compat::synchronize(options.device());
    double t0 = now_s();
    at::mm_out(c, a, b);
    compat::synchronize(options.device());
    t.push_back(now_s() - t0);
  }
  return 2.0 * n * n * n / median(t);
}
}  // namespace peft::bench

int main(int argc, char** argv) {
  int threads = peft::init_runtime();
  std::string filter = argc > 1 ? argv[1] : "";
  const double busy = peft::busy_cores(0.5);
  std::printf("peft_bench: %d threads, load average %s, other processes busy on %.2f cores\n", threads,
              peft::bench::load_average().c_str(), busy);
  if (busy >= 0.3) {
    std::printf("peft_bench: other processes are using the cores: timings are slower and noisier than on an idle "
                "machine, most of all with several threads (PEFT_NUM_THREADS=1 suffers least); compare ratios\n");
  }
  std::fflush(stdout);
  auto& all = peft::bench::benches();  // the platform's figures first: the others are read against them
  std::stable_partition(all.begin(), all.end(), [](const auto& b) { return b.name == "platform"; });
  for (auto& b : all) {
    if (!filter.empty() && b.name.find(filter) == std::string::npos) continue;
    std::cout << "== " << b.name << "\n" << std::flush;
    b.run();
  }
  return 0;
}
