// The float32 products of a training step on OpenBLAS or libtorch (see peft/core/gemm.h): the layout
// of each operand is read from its strides, and a product is split into one block per thread.
#include "peft/core/gemm.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>

#include "peft/core/runtime.h"

#if defined(PEFT_WITH_OPENBLAS)
// The few functions of scipy-openblas32's libscipy_openblas (32-bit integers, names prefixed scipy_).
extern "C" {
void scipy_cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                       const float* b, int ldb, float beta, float* c, int ldc);
void scipy_openblas_set_num_threads(int num_threads);
char* scipy_openblas_get_corename(void);
char* scipy_openblas_get_config(void);
}
#endif

namespace peft {
namespace {

bool amd_cpu() { return cpuinfo_field("vendor_id") == "AuthenticAMD"; }

GemmBackend choose_backend() {
  const char* env = std::getenv("PEFT_GEMM");
  const std::string v = env ? env : "auto";
  if (v == "libtorch") return GemmBackend::libtorch;
  if (v == "openblas") {
    if (!openblas_available())
      throw std::invalid_argument("PEFT_GEMM=openblas: this build of peft.cpp has no OpenBLAS (scipy-openblas32 was "
                                  "not in .venv when CMake configured it; run scripts/setup.sh and rebuild)");
    return GemmBackend::openblas;
  }
  if (v == "auto" || v.empty()) return openblas_available() && amd_cpu() ? GemmBackend::openblas : GemmBackend::libtorch;
  throw std::invalid_argument("PEFT_GEMM=\"" + v + "\": expected auto, openblas or libtorch (unset it for auto)");
}

std::once_flag chosen_once;
GemmBackend chosen = GemmBackend::libtorch;

void init_backend() {
  std::call_once(chosen_once, [] {
    chosen = choose_backend();
#if defined(PEFT_WITH_OPENBLAS)
    scipy_openblas_set_num_threads(1);  // threads come from libtorch's pool (one block each)
#endif
  });
}

#if defined(PEFT_WITH_OPENBLAS)
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// A 2-D float32 operand as BLAS reads it: row-major (unit column stride) or the transpose of a
// row-major matrix (unit row stride), with its leading dimension.
struct Operand {
  const float* data;
  bool trans;
  int64_t ld;
};

bool as_operand(const at::Tensor& t, Operand& op) {
  const int64_t rows = t.size(0), cols = t.size(1), s0 = t.stride(0), s1 = t.stride(1);
  if (s1 == 1 && (s0 >= cols || rows == 1)) {
    op = {t.data_ptr<float>(), false, std::max<int64_t>({s0, cols, 1})};
    return true;
  }
  if (s0 == 1 && (s1 >= rows || cols == 1)) {
    op = {t.data_ptr<float>(), true, std::max<int64_t>({s1, rows, 1})};
    return true;
  }
  return false;
}

bool fits_int(int64_t v) { return v <= std::numeric_limits<int>::max(); }

// c (m, n, row stride ldc) = beta c + alpha a b. Split into one block of rows (or of columns, when
// there are fewer rows than columns) per thread, each a single-threaded BLAS call. OpenBLAS blocks a
// product by its size, so another split can round differently (by about 1e-7): the blocks depend on the
// thread count only, never on timing.
void openblas_gemm(const Operand& a, const Operand& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
                   float alpha, float beta) {
  auto call = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    const float* pa = a.data + (a.trans ? r0 : r0 * a.ld);
    const float* pb = b.data + (b.trans ? c0 * b.ld : c0);
    scipy_cblas_sgemm(kRowMajor, a.trans ? kTrans : kNoTrans, b.trans ? kTrans : kNoTrans, static_cast<int>(r1 - r0),
                      static_cast<int>(c1 - c0), static_cast<int>(k), alpha, pa, static_cast<int>(a.ld), pb,
                      static_cast<int>(b.ld), beta, c + r0 * ldc + c0, static_cast<int>(ldc));
  };
  const int threads = at::get_num_threads();
  // Below about a million multiply-adds a thread hand-off costs more than it saves.
  if (threads <= 1 || m * n * k < (int64_t{1} << 20) || at::in_parallel_region()) {
    call(0, m, 0, n);
    return;
  }
  const bool by_rows = m >= n;
  const int64_t extent = by_rows ? m : n;
  const int64_t parts = std::min<int64_t>(threads, extent);
  // Blocks of a multiple of 16 rows or columns: whole tiles of the kernels.
  const int64_t block = ((extent + parts - 1) / parts + 15) / 16 * 16;
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t lo = p * block, hi = std::min(extent, (p + 1) * block);
      if (lo >= hi) continue;
      if (by_rows) {
        call(lo, hi, 0, n);
      } else {
        call(0, m, lo, hi);
      }
    }
  });
}

// Whether this product goes to OpenBLAS: float32 CPU operands that autograd does not track.
bool for_openblas(const at::Tensor& a, const at::Tensor& b) {
  if (gemm_backend() != GemmBackend::openblas) return false;
  if (a.dim() != 2 || b.dim() != 2 || a.scalar_type() != at::kFloat || b.scalar_type() != at::kFloat) return false;
  if (!a.device().is_cpu() || !b.device().is_cpu()) return false;
  if (c10::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad())) return false;
  if (a.size(1) != b.size(0) || a.numel() == 0 || b.numel() == 0) return false;
  return fits_int(a.size(0)) && fits_int(a.size(1)) && fits_int(b.size(1)) && fits_int(a.stride(0)) &&
         fits_int(a.stride(1)) && fits_int(b.stride(0)) && fits_int(b.stride(1));
}

// An operand as BLAS reads it, copied contiguous when its strides are neither layout.
Operand operand(const at::Tensor& t, at::Tensor& keep) {
  Operand op{};
  if (as_operand(t, op)) return op;
  keep = t.contiguous();
  as_operand(keep, op);
  return op;
}
#endif

}  // namespace

bool openblas_available() {
#if defined(PEFT_WITH_OPENBLAS)
  return true;
#else
  return false;
#endif
}

GemmBackend gemm_backend() {
  init_backend();
  return chosen;
}

void set_gemm_backend(GemmBackend backend) {
  init_backend();
  if (backend == GemmBackend::openblas && !openblas_available())
    throw std::invalid_argument("set_gemm_backend: this build of peft.cpp has no OpenBLAS");
  chosen = backend;
}

std::string gemm_backend_description() {
  if (gemm_backend() == GemmBackend::openblas) {
#if defined(PEFT_WITH_OPENBLAS)
    std::string config = scipy_openblas_get_config();
    const auto space = config.find(' ', config.find(' ') + 1);  // "OpenBLAS 0.3.34 ..." -> "OpenBLAS 0.3.34"
    return config.substr(0, space) + " (" + scipy_openblas_get_corename() + " kernels)";
#endif
  }
  return "libtorch's BLAS";
}

at::Tensor mm(const at::Tensor& a, const at::Tensor& b) {
#if defined(PEFT_WITH_OPENBLAS)
  if (for_openblas(a, b)) {
    at::Tensor keep_a, keep_b;
    const Operand oa = operand(a, keep_a), ob = operand(b, keep_b);
    at::Tensor c = at::empty({a.size(0), b.size(1)}, a.options());
    openblas_gemm(oa, ob, c.data_ptr<float>(), c.size(1), a.size(0), b.size(1), a.size(1), 1.0f, 0.0f);
    return c;
  }
#endif
  return at::mm(a, b);
}

void addmm_(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, double beta, double alpha) {
#if defined(PEFT_WITH_OPENBLAS)
  if (for_openblas(a, b) && c.dim() == 2 && c.scalar_type() == at::kFloat && c.size(0) == a.size(0) &&
      c.size(1) == b.size(1) && c.stride(1) == 1 && (c.stride(0) >= c.size(1) || c.size(0) == 1) &&
      fits_int(c.stride(0)) && !(c10::GradMode::is_enabled() && c.requires_grad())) {
    at::Tensor keep_a, keep_b;
    const Operand oa = operand(a, keep_a), ob = operand(b, keep_b);
    openblas_gemm(oa, ob, c.data_ptr<float>(), std::max<int64_t>(c.stride(0), c.size(1)), a.size(0), b.size(1),
                  a.size(1), static_cast<float>(alpha), static_cast<float>(beta));
    return;
  }
#endif
  c.addmm_(a, b, beta, alpha);
}

at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
#if defined(PEFT_WITH_OPENBLAS)
  if (for_openblas(a, b) && bias.scalar_type() == at::kFloat && bias.dim() == 1 && bias.size(0) == b.size(1) &&
      !(c10::GradMode::is_enabled() && bias.requires_grad())) {
    // A fresh tensor: bias.expand(...).contiguous() is the bias itself when there is one row.
    at::Tensor c = at::empty({a.size(0), b.size(1)}, a.options());
    c.copy_(bias.expand({a.size(0), b.size(1)}));
    addmm_(c, a, b, 1.0, 1.0);
    return c;
  }
#endif
  return at::addmm(bias, a, b);
}

}  // namespace peft
