// Entry point of peft_bench: runs the registered benchmarks (all, or those whose name contains argv[1]).
// Figures are printed as they are measured; compare ratios taken in the same run.
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "bench.h"
#include "peft/runtime.h"

namespace peft::bench {
std::vector<Bench>& benches() {
  static std::vector<Bench> all;
  return all;
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
  for (auto& b : peft::bench::benches()) {
    if (!filter.empty() && b.name.find(filter) == std::string::npos) continue;
    std::cout << "== " << b.name << "\n" << std::flush;
    b.run();
  }
  return 0;
}
