// Benchmark registry of `peft_bench` (`make bench`): each bench/*.cpp registers its figures with
// PEFT_BENCH; `peft_bench [name-substring]` runs all or a selection and prints one line per figure.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

namespace peft::bench {

struct Bench {
  std::string name;
  std::function<void()> run;
};

std::vector<Bench>& benches();

struct Registrar {
  Registrar(std::string name, std::function<void()> fn) { benches().push_back({std::move(name), std::move(fn)}); }
};

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The 1-minute load average (/proc/loadavg), to read timings taken on a busy machine with care.
inline std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string load;
  return in >> load ? load : "unknown";
}

// The value of environment variable `name`, or `fallback` when it is unset or empty.
inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

double median(std::vector<double> v);
double mean(const std::vector<double>& v);

// FLOP/s of an n x n x n matrix product in `options`' dtype and device (2 n^3 flops), median of
// `reps` timed products after one warm-up (synchronised on CUDA).
double matmul_flops(const at::TensorOptions& options, int64_t n, int reps);

}  // namespace peft::bench

#define PEFT_BENCH(name, fn) static ::peft::bench::Registrar peft_bench_registrar_##fn(name, fn)
