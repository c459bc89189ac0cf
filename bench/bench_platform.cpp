// What the numbers of every other benchmark stand on: the libtorch build (version, BLAS, oneDNN, the
// CPU kernels it dispatches to) and the float32 and bfloat16 matmul rates measured on this machine.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/version.h>

#include <cstdio>
#include <sstream>
#include <string>

#include "bench.h"

namespace {

// The value of `key=` in at::show_config()'s build settings line, or "unknown".
std::string config_value(const std::string& config, const std::string& key) {
  auto at = config.find(key + "=");
  if (at == std::string::npos) return "unknown";
  auto from = at + key.size() + 1, to = config.find_first_of(", \n", from);
  return config.substr(from, to - from);
}

// Matmul rate in GFLOP/s for `dtype`, at 2048^3 unless that would take too long (a slow fallback
// path, as bf16 on CPUs without native bf16 units): a 256^3 probe picks the size.
void report_matmul(at::ScalarType dtype, const char* name) {
  const auto options = at::TensorOptions(dtype);
  const double probe = peft::bench::matmul_flops(options, 256, 1);
  const int64_t n = probe > 5e9 ? 2048 : 512;
  const double rate = peft::bench::matmul_flops(options, n, n == 2048 ? 5 : 2);
  std::printf("platform: matmul %s %ld^3: %.1f GFLOP/s on %d threads%s\n", name, static_cast<long>(n), rate / 1e9,
              at::get_num_threads(), n == 2048 ? "" : " (a slow path: measured at a smaller size)");
}

void bench_platform() {
  const std::string config = at::show_config();
  std::printf("platform: libtorch %s, BLAS %s, LAPACK %s, oneDNN %s, CPU kernels %s\n", TORCH_VERSION,
              config_value(config, "BLAS_INFO").c_str(), config_value(config, "LAPACK_INFO").c_str(),
              config_value(config, "USE_MKLDNN").c_str(), at::get_cpu_capability().c_str());
  std::istringstream lines(config);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("Build settings") != std::string::npos) continue;  // summarised in the first line
    if (line.find("MKL") != std::string::npos || line.find("OpenMP") != std::string::npos ||
        line.find("oneDNN") != std::string::npos || line.find("MKL-DNN") != std::string::npos) {
      auto first = line.find_first_not_of(" -");
      if (first != std::string::npos) std::printf("platform: %s\n", line.substr(first).c_str());
    }
  }
  report_matmul(at::kFloat, "float32");
  report_matmul(at::kBFloat16, "bfloat16");
  std::fflush(stdout);
}

}  // namespace

PEFT_BENCH("platform", bench_platform);
