// The differences between libtorch 1.13 (Debian, CPU) and libtorch 2.x (CUDA builds), in one place.
// Everything else in the project is written against the API the two versions share.
#pragma once
#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <torch/version.h>
#if PEFT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

#define PEFT_TORCH_2 (TORCH_VERSION_MAJOR >= 2)

namespace peft::compat {

// Scaled dot-product attention over (B, H, T, D) tensors. `mask` is an additive float mask
// broadcastable to (B, H, Tq, Tk) or undefined; `causal` adds the lower-triangular mask.
// libtorch 2.x uses the fused kernel (flash / memory-efficient on CUDA); 1.13 computes it
// explicitly with the softmax in float32, as transformers' eager path does.
inline at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& mask, bool causal, double scale) {
#if PEFT_TORCH_2
  if (!mask.defined()) {
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal, scale);
  }
  at::Tensor m = mask;
  if (causal) {
    auto T = q.size(-2), S = k.size(-2);
    auto tri = at::ones({T, S}, q.options().dtype(at::kBool)).tril(S - T);
    m = m.masked_fill(tri.logical_not(), -std::numeric_limits<float>::infinity());
  }
  return at::scaled_dot_product_attention(q, k, v, m.to(q.scalar_type()), 0.0, false, scale);
#else
  auto scores = at::matmul(q, k.transpose(-2, -1)).mul_(scale);
  if (causal) {
    auto T = q.size(-2), S = k.size(-2);
    auto tri = at::ones({T, S}, q.options().dtype(at::kBool)).tril(S - T);
    scores.masked_fill_(tri.logical_not(), -std::numeric_limits<float>::infinity());
  }
  if (mask.defined()) scores = scores + mask.to(scores.scalar_type());
  auto probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, v);
#endif
}

// "cpu" or "cuda" (or "cuda:N"). On CUDA, TF32 matmuls are turned off so float32 means float32.
inline at::Device device_from_name(const std::string& name) {
  if (name == "cpu") return at::kCPU;
  if (name.rfind("cuda", 0) == 0) {
    if (!at::hasCUDA()) throw std::invalid_argument("device \"" + name + "\": this libtorch build has no CUDA");
    at::globalContext().setAllowTF32CuBLAS(false);
    return at::Device(name);
  }
  throw std::invalid_argument("unknown device \"" + name + "\" (use cpu or cuda)");
}

// Waits for the work queued on `device` (a no-op on the CPU), so that host timers measure it.
inline void synchronize(const at::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// Peak bytes allocated on a CUDA device since the last reset_peak_memory; -1 when unknown (the CPU,
// or a build without CUDA; PEFT_WITH_CUDA is set by CMake when libtorch has it).
inline int64_t peak_memory_bytes(const at::Device& device) {
#if PEFT_WITH_CUDA
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.has_index() ? device.index() : 0);
    return stats.allocated_bytes[0].peak;  // index 0: StatType::AGGREGATE
  }
#endif
  return -1;
}

inline void reset_peak_memory(const at::Device& device) {
#if PEFT_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.has_index() ? device.index() : 0);
#endif
}

}  // namespace peft::compat
