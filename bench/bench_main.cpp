// Entry point of peft_bench: runs the registered benchmarks (all, or those whose name contains argv[1]).
// Figures are printed as they are measured; compare ratios taken in the same run.
#include <ATen/Parallel.h>

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
  std::cout << "peft_bench: " << threads << " threads\n";
  for (auto& b : peft::bench::benches()) {
    if (!filter.empty() && b.name.find(filter) == std::string::npos) continue;
    std::cout << "== " << b.name << "\n" << std::flush;
    b.run();
  }
  return 0;
}
