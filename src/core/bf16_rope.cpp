// Rotary position embedding of bf16 heads and its gradient, one pass each (see peft/core/bf16_rope.h):
// the bf16 roundings of torch's mul, neg, cat and add, done per row of D in float32 registers.
#include "peft/core/bf16_rope.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "bf16_vec.h"

namespace peft {
namespace {

using namespace simd;


// One row: out[j] = bf16(bf16(x[j] c[j]) + bf16(rot[j] s[j])), rot = (-x[h:], x[:h]). With `backward`, the
// gradient instead: out[j] = bf16(bf16(x[j] c[j]) +- bf16(x[j +- h] s[j +- h])), x being dy.
template <bool backward>
PEFT_INLINE void row(const uint16_t* x, const uint16_t* c, const uint16_t* s, uint16_t* out, int64_t h) {
  int64_t j = 0;
  for (; j + W <= h; j += W) {
    const vf x1 = load_bf16(x + j), x2 = load_bf16(x + h + j);
    const vf c1 = load_bf16(c + j), c2 = load_bf16(c + h + j), s1 = load_bf16(s + j), s2 = load_bf16(s + h + j);
    if (backward) {
      store_bf16(out + j, round_bf16(x1 * c1) + round_bf16(x2 * s2));
      store_bf16(out + h + j, round_bf16(x2 * c2) - round_bf16(x1 * s1));
    } else {
      store_bf16(out + j, round_bf16(x1 * c1) + round_bf16(-x2 * s1));
      store_bf16(out + h + j, round_bf16(x2 * c2) + round_bf16(x1 * s2));
    }
  }
  for (; j < h; ++j) {
    const float x1 = to_float(x[j]), x2 = to_float(x[h + j]);
    const float c1 = to_float(c[j]), c2 = to_float(c[h + j]), s1 = to_float(s[j]), s2 = to_float(s[h + j]);
    if (backward) {
      out[j] = to_bf16(round_bf16(x1 * c1) + round_bf16(x2 * s2));
      out[h + j] = to_bf16(round_bf16(x2 * c2) - round_bf16(x1 * s1));
    } else {
      out[j] = to_bf16(round_bf16(x1 * c1) + round_bf16(-x2 * s1));
      out[h + j] = to_bf16(round_bf16(x2 * c2) + round_bf16(x1 * s2));
    }
  }
}

// Rows i0 .. i1 of (B, H, T): x's rows at strides sx (B, H, T), cos / sin rows at sc (B, T), out contiguous.
template <bool backward>
PEFT_CLONES void rope_kernel(const uint16_t* x, const int64_t* sx, const uint16_t* c, const uint16_t* s,
                             const int64_t* sc, uint16_t* out, int64_t H, int64_t T, int64_t D, int64_t i0,
                             int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t b = i / (H * T), hh = i / T % H, t = i % T;
    const int64_t cs = b * sc[0] + t * sc[1];
    row<backward>(x + b * sx[0] + hh * sx[1] + t * sx[2], c + cs, s + cs, out + i * D, D / 2);
  }
}

template <bool backward>
at::Tensor run(const at::Tensor& x_in, const at::Tensor& cos_in, const at::Tensor& sin_in, const char* what) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.scalar_type() == at::kBFloat16 && x_in.device().is_cpu() && x_in.size(3) % 2 == 0,
              what, ": expected x (B, H, T, D) bfloat16 on the CPU with D even, got ", x_in.sizes(), " ",
              x_in.scalar_type());
  const int64_t B = x_in.size(0), H = x_in.size(1), T = x_in.size(2), D = x_in.size(3);
  for (const at::Tensor* t : {&cos_in, &sin_in}) {
    TORCH_CHECK(t->dim() == 3 && t->size(0) == B && t->size(1) == T && t->size(2) == D &&
                    t->scalar_type() == at::kBFloat16,
                what, ": expected cos and sin (", B, ", ", T, ", ", D, ") bfloat16, got ", t->sizes(), " ",
                t->scalar_type());
  }
  const at::Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
  const at::Tensor c = cos_in.contiguous(), s = sin_in.contiguous();
  at::Tensor out = at::empty({B, H, T, D}, x.options());
  if (out.numel() == 0) return out;
  const int64_t sx[3] = {x.stride(0), x.stride(1), x.stride(2)}, sc[2] = {c.stride(0), c.stride(1)};
  const auto* px = reinterpret_cast<const uint16_t*>(x.const_data_ptr<at::BFloat16>());
  const auto* pc = reinterpret_cast<const uint16_t*>(c.const_data_ptr<at::BFloat16>());
  const auto* ps = reinterpret_cast<const uint16_t*>(s.const_data_ptr<at::BFloat16>());
  auto* po = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  at::parallel_for(0, B * H * T, std::max<int64_t>(1, 16384 / D), [&](int64_t i0, int64_t i1) {
    rope_kernel<backward>(px, sx, pc, ps, sc, po, H, T, D, i0, i1);
  });
  return out;
}

}  // namespace

at::Tensor bf16_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return run<false>(x, cos, sin, "bf16_rope");
}

at::Tensor bf16_rope_backward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin) {
  return run<true>(dy, cos, sin, "bf16_rope_backward");
}

}  // namespace peft
