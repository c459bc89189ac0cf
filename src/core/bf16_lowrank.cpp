// Rank-r products between bf16 activations and float32 adapter factors (see peft/core/bf16_lowrank.h).
// Vectors of 16 floats, compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time.
#include "peft/core/bf16_lowrank.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "bf16_vec.h"

namespace peft {
namespace {

using namespace simd;

// out[q * r + k] = scale * m_q . P[k] for Q rows m_q of M (stride ldm) and NB rows of P (stride L): each
// load of P serves Q rows.
template <int Q, int NB>
PEFT_INLINE void dot_block(const uint16_t* m, int64_t ldm, const float* P, int64_t L, float scale, float* out,
                           int64_t r) {
  vf acc[Q][NB] = {};
  int64_t j = 0;
  for (; j + W <= L; j += W) {
    vf x[Q];
    for (int q = 0; q < Q; ++q) x[q] = load_bf16(m + q * ldm + j);
    for (int k = 0; k < NB; ++k) {
      const vf p = load_f32(P + k * L + j);
      for (int q = 0; q < Q; ++q) acc[q][k] += x[q] * p;
    }
  }
  for (int q = 0; q < Q; ++q) {
    float s[NB];
    for (int k = 0; k < NB; ++k) s[k] = hsum(acc[q][k]);
    for (int64_t jj = j; jj < L; ++jj) {
      const float x = to_float(m[q * ldm + jj]);
      for (int k = 0; k < NB; ++k) s[k] += x * P[k * L + jj];
    }
    for (int k = 0; k < NB; ++k) out[q * r + k] = scale * s[k];
  }
}

template <int Q>
PEFT_INLINE void dot_rows(const uint16_t* m, int64_t ldm, const float* P, int64_t r, int64_t L, float scale,
                          float* o) {
  int64_t k = 0;
  for (; k + 4 <= r; k += 4) dot_block<Q, 4>(m, ldm, P + k * L, L, scale, o + k, r);
  switch (r - k) {
    case 3: dot_block<Q, 3>(m, ldm, P + k * L, L, scale, o + k, r); break;
    case 2: dot_block<Q, 2>(m, ldm, P + k * L, L, scale, o + k, r); break;
    case 1: dot_block<Q, 1>(m, ldm, P + k * L, L, scale, o + k, r); break;
    default: break;
  }
}

PEFT_CLONES void rows_dot_kernel(const uint16_t* M, int64_t ldm, const float* P, int64_t r, int64_t L, float scale,
                                 float* out, int64_t i0, int64_t i1) {
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) dot_rows<4>(M + i * ldm, ldm, P, r, L, scale, out + i * r);
  for (; i < i1; ++i) dot_rows<1>(M + i * ldm, ldm, P, r, L, scale, out + i * r);
}

// Q rows of M += scale * C P: each load of P serves Q rows.
template <int Q>
PEFT_INLINE void add_rows(uint16_t* m, int64_t ldm, const float* c, const float* P, int64_t r, int64_t L,
                          float scale) {
  int64_t j = 0;
  for (; j + W <= L; j += W) {
    vf t[Q] = {};
    for (int64_t k = 0; k < r; ++k) {
      const vf p = load_f32(P + k * L + j);
      for (int q = 0; q < Q; ++q) t[q] += c[q * r + k] * p;
    }
    for (int q = 0; q < Q; ++q) store_bf16(m + q * ldm + j, load_bf16(m + q * ldm + j) + scale * t[q]);
  }
  for (; j < L; ++j) {
    for (int q = 0; q < Q; ++q) {
      float t = 0;
      for (int64_t k = 0; k < r; ++k) t += c[q * r + k] * P[k * L + j];
      m[q * ldm + j] = to_bf16(to_float(m[q * ldm + j]) + scale * t);
    }
  }
}

PEFT_CLONES void rows_add_kernel(uint16_t* M, int64_t ldm, const float* C, const float* P, int64_t r, int64_t L,
                                 float scale, int64_t i0, int64_t i1) {
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) add_rows<4>(M + i * ldm, ldm, C + i * r, P, r, L, scale);
  for (; i < i1; ++i) add_rows<1>(M + i * ldm, ldm, C + i * r, P, r, L, scale);
}

// acc (r, L) += C[i0:i1]^T M[i0:i1], four rows of M per pass over acc.
PEFT_CLONES void outer_kernel(const float* C, int64_t r, const uint16_t* M, int64_t ldm, int64_t L, int64_t i0,
                              int64_t i1, float* acc) {
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) {
    const uint16_t *m0 = M + i * ldm, *m1 = m0 + ldm, *m2 = m1 + ldm, *m3 = m2 + ldm;
    const float *c0 = C + i * r, *c1 = c0 + r, *c2 = c1 + r, *c3 = c2 + r;
    int64_t j = 0;
    for (; j + W <= L; j += W) {
      const vf x0 = load_bf16(m0 + j), x1 = load_bf16(m1 + j), x2 = load_bf16(m2 + j), x3 = load_bf16(m3 + j);
      for (int64_t k = 0; k < r; ++k) {
        float* a = acc + k * L + j;
        store_f32(a, load_f32(a) + c0[k] * x0 + c1[k] * x1 + c2[k] * x2 + c3[k] * x3);
      }
    }
    for (; j < L; ++j) {
      const float x0 = to_float(m0[j]), x1 = to_float(m1[j]), x2 = to_float(m2[j]), x3 = to_float(m3[j]);
      for (int64_t k = 0; k < r; ++k) acc[k * L + j] += c0[k] * x0 + c1[k] * x1 + c2[k] * x2 + c3[k] * x3;
    }
  }
  for (; i < i1; ++i) {
    const uint16_t* m = M + i * ldm;
    const float* c = C + i * r;
    int64_t j = 0;
    for (; j + W <= L; j += W) {
      const vf x = load_bf16(m + j);
      for (int64_t k = 0; k < r; ++k) {
        float* a = acc + k * L + j;
        store_f32(a, load_f32(a) + c[k] * x);
      }
    }
    for (; j < L; ++j) {
      const float x = to_float(m[j]);
      for (int64_t k = 0; k < r; ++k) acc[k * L + j] += c[k] * x;
    }
  }
}

void check_bf16_rows(const at::Tensor& M, const char* what) {
  TORCH_CHECK(M.dim() == 2 && M.scalar_type() == at::kBFloat16 && M.device().is_cpu() && M.stride(1) == 1,
              what, ": expected a (n, L) bfloat16 CPU matrix with unit column stride, got ", M.sizes(), " ",
              M.scalar_type(), " with strides ", M.strides());
}
at::Tensor float_rows(const at::Tensor& t, int64_t rows, int64_t cols, const char* what) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols && t.scalar_type() == at::kFloat,
              what, ": expected a (", rows, ", ", cols, ") float32 matrix, got ", t.sizes(), " ", t.scalar_type());
  return t.contiguous();
}
// Rows per task: enough work (about 64K multiply-adds) to be worth a thread.
int64_t grain(int64_t L, int64_t r) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, L * r)); }
const uint16_t* bits(const at::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.const_data_ptr<at::BFloat16>()); }

}  // namespace

at::Tensor bf16_rows_dot(const at::Tensor& M, const at::Tensor& P_in, double scale) {
  check_bf16_rows(M, "bf16_rows_dot");
  const int64_t n = M.size(0), L = M.size(1);
  TORCH_CHECK(P_in.dim() == 2, "bf16_rows_dot: P must be (r, L)");
  const at::Tensor P = float_rows(P_in, P_in.size(0), L, "bf16_rows_dot");
  const int64_t r = P.size(0);
  at::Tensor out = at::empty({n, r}, M.options().dtype(at::kFloat));
  if (n == 0 || r == 0) return out;
  const uint16_t* m = bits(M);
  const float* p = P.const_data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, n, grain(L, r), [&](int64_t b, int64_t e) {
    rows_dot_kernel(m, M.stride(0), p, r, L, static_cast<float>(scale), o, b, e);
  });
  return out;
}

void bf16_rows_add_(const at::Tensor& M, const at::Tensor& C_in, const at::Tensor& P_in, double scale) {
  check_bf16_rows(M, "bf16_rows_add_");
  const int64_t n = M.size(0), L = M.size(1);
  TORCH_CHECK(C_in.dim() == 2, "bf16_rows_add_: C must be (n, r)");
  const int64_t r = C_in.size(1);
  const at::Tensor C = float_rows(C_in, n, r, "bf16_rows_add_");
  const at::Tensor P = float_rows(P_in, r, L, "bf16_rows_add_");
  if (n == 0 || L == 0) return;
  uint16_t* m = reinterpret_cast<uint16_t*>(M.data_ptr<at::BFloat16>());
  const float *c = C.const_data_ptr<float>(), *p = P.const_data_ptr<float>();
  at::parallel_for(0, n, grain(L, r), [&](int64_t b, int64_t e) {
    rows_add_kernel(m, M.stride(0), c, p, r, L, static_cast<float>(scale), b, e);
  });
}

at::Tensor bf16_outer(const at::Tensor& C_in, const at::Tensor& M, double scale) {
  check_bf16_rows(M, "bf16_outer");
  const int64_t n = M.size(0), L = M.size(1);
  TORCH_CHECK(C_in.dim() == 2, "bf16_outer: C must be (n, r)");
  const int64_t r = C_in.size(1);
  const at::Tensor C = float_rows(C_in, n, r, "bf16_outer");
  // One accumulator per block of rows (per thread), summed at the end: the same blocks, the same bits.
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / 64));
  at::Tensor acc = at::zeros({blocks, r, L}, M.options().dtype(at::kFloat));
  if (n > 0 && r > 0 && L > 0) {
    const uint16_t* m = bits(M);
    const float* c = C.const_data_ptr<float>();
    float* a = acc.data_ptr<float>();
    at::parallel_for(0, blocks, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        outer_kernel(c, r, m, M.stride(0), L, n * t / blocks, n * (t + 1) / blocks, a + t * r * L);
      }
    });
  }
  at::Tensor out = blocks == 1 ? acc[0] : acc.sum(0);
  if (scale != 1.0) out.mul_(scale);
  return out;
}

}  // namespace peft
