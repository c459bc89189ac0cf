// Process-wide runtime settings: the CPU thread count, the allocator's reuse of large blocks, and the
// check for other processes on the cores.
#include "peft/core/runtime.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "peft/core/flags.h"
#include "peft/core/gemm.h"

namespace peft {

namespace {

// glibc serves every block above 32 MB (the logits of a large vocabulary, their gradient, the
// softmax) with a fresh mmap and unmaps it when freed, so each step faults in and zeroes those
// pages again: about a sixth of a SmolLM2 training step (bench/README.md). Served from the heap and
// kept after free, they are reused instead. The heap is never trimmed either: a backward pass frees
// more than a gigabyte at its top, and giving that back cost the next step 0.5-1 s of page faults
// (SmolLM2, 4 x 256: 8 % of the step), so the process keeps its peak. A GLIBC_TUNABLES that sets
// malloc options is left alone.
void keep_large_blocks() {
#if defined(__GLIBC__)
  static bool done = false;
  if (done) return;
  done = true;
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables && std::string(tunables).find("glibc.malloc.") != std::string::npos) return;
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);  // -1: never trim (mallopt(3))
#endif
}

}  // namespace

int init_runtime() {
  keep_large_blocks();
  int n = static_cast<int>(std::thread::hardware_concurrency());
  if (const char* env = std::getenv("PEFT_NUM_THREADS")) {
    const std::string v = env;
    int64_t parsed = 0;
    try {
      parsed = Flags::to_int64(v);
    } catch (const std::invalid_argument&) {
    }
    if (parsed < 1 || parsed > 4096)
      throw std::invalid_argument("PEFT_NUM_THREADS=\"" + v +
                                  "\": expected a whole number of threads from 1 to 4096 (unset it to use every core)");
    n = static_cast<int>(parsed);
  }
  if (n < 1) n = 1;
  if (at::get_num_threads() != n) at::set_num_threads(n);
  gemm_backend();  // a bad PEFT_GEMM stops here, before any work
  return at::get_num_threads();
}

namespace {

// Busy and total jiffies summed over all cores, from the first line of /proc/stat.
bool cpu_times(unsigned long long& busy, unsigned long long& total) {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
  if (!(in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) || cpu != "cpu") return false;
  busy = user + nice + system + irq + softirq + steal;
  total = busy + idle + iowait;
  return true;
}

}  // namespace

double busy_cores(double seconds) {
  unsigned long long b0, t0, b1, t1;
  if (!cpu_times(b0, t0)) return -1;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  if (!cpu_times(b1, t1) || t1 <= t0) return -1;
  const double cores = static_cast<double>(std::thread::hardware_concurrency());
  return cores * static_cast<double>(b1 - b0) / static_cast<double>(t1 - t0);
}

std::string shared_cores_note(int threads, double seconds) {
  if (threads <= 1) return "";
  const double busy = busy_cores(seconds);
  if (busy < 0.5) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", busy);
  std::ostringstream os;
  os << "note: other processes are using " << buf << " of the " << std::thread::hardware_concurrency()
     << " cores; with " << threads << " threads each step can take several times longer than with one, "
     << "because the threads wait for each other. On a shared machine run with PEFT_NUM_THREADS=1 "
        "(or fewer threads than free cores).";
  return os.str();
}

std::string cpuinfo_field(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos || line.find_first_not_of(" \t", key.size()) != colon) continue;
    const size_t start = line.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? "" : line.substr(start);
  }
  return "";
}

bool cpu_has_native_bf16() {
  std::istringstream words(cpuinfo_field("flags"));
  for (std::string w; words >> w;)
    if (w == "avx512_bf16" || w == "amx_bf16") return true;
  return false;
}

std::string bf16_cpu_note() {
  if (cpu_has_native_bf16()) return "";
  // Seconds per n^3 matmul in `dtype`, the best of three after one warm-up.
  auto seconds = [](at::ScalarType dtype, int64_t n) {
    at::NoGradGuard no_grad;
    auto a = at::randn({n, n}).to(dtype), b = at::randn({n, n}).to(dtype);
    at::mm(a, b);
    double best = 1e30;
    for (int i = 0; i < 3; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      at::mm(a, b);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  const double ratio = seconds(at::kBFloat16, 128) / std::max(seconds(at::kFloat, 128), 1e-9);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", ratio);
  return std::string("note: this CPU has no native bfloat16 units (no AVX512-BF16 or AMX): a bfloat16 matmul "
                     "measured here is ") + buf + "x slower than a float32 one, so a bfloat16 base makes every "
                     "step slower, not faster. Use --dtype float32 (without --bf16) on this machine.";
}

}  // namespace peft
