// What depends on the libtorch build (CPU or CUDA) and the one attention call, in one place.
// peft.cpp is written against libtorch 2.x; everything else uses the API all 2.x releases share.
#pragma once
#include <ATen/ATen.h>
#include <torch/cuda.h>
#if PEFT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

namespace peft::compat {

// Scaled dot-product attention over (B, H, T, D) tensors, fused by libtorch (flash or
// memory-efficient kernels on CUDA). `mask` is an additive float mask broadcastable to
// (B, H, Tq, Tk) or undefined; `causal` lets query i see keys up to i + (Tk - Tq), so that a
// query of new tokens after a KV cache sees the whole cache. SDPA's own `is_causal` aligns the
// triangle to the top left when Tq < Tk, so it is only used for square attention.
inline at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& mask, bool causal, double scale) {
  const auto T = q.size(-2), S = k.size(-2);
  if (!mask.defined() && (!causal || T == S)) {
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal, scale);
  }
  if (!mask.defined()) {  // causal with a cache: a boolean mask, true where a key is visible
    auto visible = at::ones({T, S}, q.options().dtype(at::kBool)).tril(S - T);
    return at::scaled_dot_product_attention(q, k, v, visible, 0.0, false, scale);
  }
  at::Tensor m = mask;
  if (causal) {
    auto visible = at::ones({T, S}, q.options().dtype(at::kBool)).tril(S - T);
    m = m.masked_fill(visible.logical_not(), -std::numeric_limits<float>::infinity());
  }
  return at::scaled_dot_product_attention(q, k, v, m.to(q.scalar_type()), 0.0, false, scale);
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
