// Process-wide runtime settings: the CPU thread count.
// Debian's libtorch started with one intra-op thread on a two-core machine, so we set it ourselves.
#include "peft/runtime.h"

#include <ATen/Parallel.h>

#include <cstdlib>
#include <string>
#include <thread>

namespace peft {

int init_runtime() {
  int n = static_cast<int>(std::thread::hardware_concurrency());
  if (const char* env = std::getenv("PEFT_NUM_THREADS")) {
    try {
      n = std::stoi(env);
    } catch (...) {
      n = 0;
    }
  }
  if (n < 1) n = 1;
  if (at::get_num_threads() != n) at::set_num_threads(n);
  return at::get_num_threads();
}

}  // namespace peft
