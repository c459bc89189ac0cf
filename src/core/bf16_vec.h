// Vectors of 16 floats for the bf16 kernels of core/: loads and stores of bf16 with c10::BFloat16's
// rounding, and the attribute that compiles a kernel for AVX-512, AVX2 and baseline x86-64.
#pragma once
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

// The vector helpers are always inlined into the AVX-512 / AVX2 clones: no vector crosses a call.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace peft::simd {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PEFT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PEFT_CLONES
#endif
#define PEFT_INLINE inline __attribute__((always_inline))

typedef float vf __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint16_t vh __attribute__((vector_size(32)));
constexpr int64_t W = 16;  // floats per vector

PEFT_INLINE vf load_bf16(const uint16_t* p) {
  vh h;
  std::memcpy(&h, p, sizeof h);
  return (vf)(__builtin_convertvector(h, vu) << 16);
}
PEFT_INLINE vf load_f32(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
PEFT_INLINE void store_f32(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// Round to nearest even, NaN to 0x7FC0: c10::BFloat16's rounding, 16 at a time.
PEFT_INLINE void store_bf16(uint16_t* p, vf v) {
  const vu u = (vu)v;
  const vu rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const vi is_nan = v != v;
  const vu bits = is_nan ? vu{} + 0x7FC0u : rounded;
  const vh h = __builtin_convertvector(bits, vh);
  std::memcpy(p, &h, sizeof h);
}
// v rounded to bf16 and back, in registers.
PEFT_INLINE vf round_bf16(vf v) {
  const vu u = (vu)v;
  const vu rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  const vi is_nan = v != v;
  return (vf)(is_nan ? vu{} + 0x7FC00000u : rounded);
}
PEFT_INLINE float to_float(uint16_t b) { return static_cast<float>(c10::BFloat16(b, c10::BFloat16::from_bits())); }
PEFT_INLINE uint16_t to_bf16(float f) { return c10::BFloat16(f).x; }
PEFT_INLINE float round_bf16(float v) { return to_float(to_bf16(v)); }
PEFT_INLINE float hsum(vf v) {
  float s = 0;
  for (int64_t l = 0; l < W; ++l) s += v[l];
  return s;
}

}  // namespace peft::simd
