// Entry point of peft_bench: runs the registered benchmarks (all, or those whose name contains argv[1]).
// Figures are printed as they are measured; compare ratios taken in the same run.
#include <ATen/Parallel.h>

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
  std::cout << "peft_bench: " << threads << " threads, load average " << peft::bench::load_average() << "\n";
  if (std::atof(peft::bench::load_average().c_str()) >= 1.0) {
    std::cout << "peft_bench: other processes are using the cores: timings are slower and noisier than on an idle "
                 "machine, most of all with several threads (PEFT_NUM_THREADS=1 suffers least); compare ratios\n";
  }
  for (auto& b : peft::bench::benches()) {
    if (!filter.empty() && b.name.find(filter) == std::string::npos) continue;
    std::cout << "== " << b.name << "\n" << std::flush;
    b.run();
  }
  return 0;
}
