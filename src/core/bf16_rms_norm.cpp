// RMSNorm of bf16 rows and its input gradient, one pass each (see peft/core/bf16_rms_norm.h).
// Where autograd runs a dozen elementwise ops over float32 copies of x, this reads x once per pass.
#include "peft/core/bf16_rms_norm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "bf16_vec.h"

namespace peft {
namespace {

using namespace simd;

PEFT_INLINE float sum_squares(const uint16_t* x, int64_t D) {
  vf acc = {};
  int64_t j = 0;
  for (; j + W <= D; j += W) {
    const vf h = load_bf16(x + j);
    acc += h * h;
  }
  float s = hsum(acc);
  for (; j < D; ++j) s += to_float(x[j]) * to_float(x[j]);
  return s;
}

PEFT_CLONES void forward_kernel(const uint16_t* X, int64_t ldx, const uint16_t* w, int64_t D, float eps, uint16_t* Y,
                                float* rstd, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const uint16_t* x = X + i * ldx;
    uint16_t* y = Y + i * D;
    // mean as at::mean takes it: the float32 sum, then divided by D.
    const float rs = 1.0f / std::sqrt(sum_squares(x, D) / static_cast<float>(D) + eps);
    rstd[i] = rs;
    int64_t j = 0;
    for (; j + W <= D; j += W) {
      // h * rsqrt(...) rounded to bf16, times the weight: a bf16 product
      store_bf16(y + j, load_bf16(w + j) * round_bf16(load_bf16(x + j) * rs));
    }
    for (; j < D; ++j) y[j] = to_bf16(to_float(w[j]) * to_float(to_bf16(to_float(x[j]) * rs)));
  }
}

PEFT_CLONES void backward_kernel(const uint16_t* G, int64_t ldg, const uint16_t* X, int64_t ldx, const uint16_t* w,
                                 int64_t D, const float* rstd, uint16_t* DX, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const uint16_t *g = G + i * ldg, *x = X + i * ldx;
    uint16_t* dx = DX + i * D;
    const float rs = rstd[i];
    // g_n = dy * weight as the bf16 product autograd forms; s = sum g_n x.
    vf acc = {};
    int64_t j = 0;
    for (; j + W <= D; j += W) acc += round_bf16(load_bf16(g + j) * load_bf16(w + j)) * load_bf16(x + j);
    float s = hsum(acc);
    for (; j < D; ++j) s += to_float(to_bf16(to_float(g[j]) * to_float(w[j]))) * to_float(x[j]);
    // d/dx of x * rs(x): g_n rs + x * (2 / D) * (-rs^3 / 2) * s.
    const float c = -s * rs * rs * rs / static_cast<float>(D);
    for (j = 0; j + W <= D; j += W) {
      store_bf16(dx + j, round_bf16(load_bf16(g + j) * load_bf16(w + j)) * rs + load_bf16(x + j) * c);
    }
    for (; j < D; ++j) dx[j] = to_bf16(to_float(to_bf16(to_float(g[j]) * to_float(w[j]))) * rs + to_float(x[j]) * c);
  }
}

at::Tensor rows(const at::Tensor& t, int64_t D, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 && t.device().is_cpu() && t.dim() >= 1 && t.size(-1) == D, what,
              ": expected bfloat16 CPU rows of ", D, ", got ", t.sizes(), " ", t.scalar_type());
  at::Tensor m = t.reshape({-1, D});
  return m.stride(1) == 1 ? m : m.contiguous();
}
const uint16_t* bits(const at::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.const_data_ptr<at::BFloat16>()); }
int64_t grain(int64_t D) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, D)); }

}  // namespace

at::Tensor bf16_rms_norm(const at::Tensor& x_in, const at::Tensor& weight, double eps, at::Tensor& rstd) {
  TORCH_CHECK(weight.dim() == 1, "bf16_rms_norm: weight must be (D), got ", weight.sizes());
  const int64_t D = weight.size(0);
  const at::Tensor x = rows(x_in, D, "bf16_rms_norm"), w = rows(weight, D, "bf16_rms_norm (weight)").contiguous();
  const int64_t n = x.size(0);
  at::Tensor y = at::empty(x_in.sizes(), x_in.options().memory_format(at::MemoryFormat::Contiguous));
  rstd = at::empty({n}, x.options().dtype(at::kFloat));
  if (n == 0 || D == 0) return y;
  const uint16_t *px = bits(x), *pw = bits(w);
  uint16_t* py = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  float* pr = rstd.data_ptr<float>();
  at::parallel_for(0, n, grain(D), [&](int64_t b, int64_t e) {
    forward_kernel(px, x.stride(0), pw, D, static_cast<float>(eps), py, pr, b, e);
  });
  return y;
}

at::Tensor bf16_rms_norm_backward(const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& weight,
                                  const at::Tensor& rstd) {
  const int64_t D = weight.size(0);
  const at::Tensor g = rows(dy_in, D, "bf16_rms_norm_backward (dy)"), x = rows(x_in, D, "bf16_rms_norm_backward (x)");
  const at::Tensor w = rows(weight, D, "bf16_rms_norm_backward (weight)").contiguous();
  const int64_t n = x.size(0);
  TORCH_CHECK(g.size(0) == n && rstd.numel() == n && rstd.scalar_type() == at::kFloat && rstd.is_contiguous(),
              "bf16_rms_norm_backward: dy, x and rstd disagree on the number of rows");
  at::Tensor dx = at::empty(x_in.sizes(), x_in.options().memory_format(at::MemoryFormat::Contiguous));
  if (n == 0 || D == 0) return dx;
  const uint16_t *pg = bits(g), *px = bits(x), *pw = bits(w);
  uint16_t* pd = reinterpret_cast<uint16_t*>(dx.data_ptr<at::BFloat16>());
  const float* pr = rstd.const_data_ptr<float>();
  at::parallel_for(0, n, grain(D), [&](int64_t b, int64_t e) {
    backward_kernel(pg, g.stride(0), px, x.stride(0), pw, D, pr, pd, b, e);
  });
  return dx;
}

}  // namespace peft
