// The step's GEMM (peft::mm, addmm_, addmm) against float64 products: every operand layout (row-major,
// transposed view, strided rows, neither), skinny and wide shapes, alpha and beta, products split over
// 1 to 3 threads; the bias is left alone. PEFT_GEMM is refused when it names nothing.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include "peft/core/gemm.h"
#include "peft/core/runtime.h"

using namespace peft;

namespace {

// (rows, cols) float32 in the layout `kind`: 0 row-major, 1 a transposed view, 2 rows with a padded
// stride (a column slice), 3 every other column (neither layout: copied).
at::Tensor operand(int64_t rows, int64_t cols, int kind) {
  switch (kind) {
    case 1: return at::randn({cols, rows}).t();
    case 2: return at::randn({rows, cols + 5}).narrow(1, 2, cols);
    case 3: return at::randn({rows, 2 * cols}).slice(1, 0, 2 * cols, 2);
    default: return at::randn({rows, cols});
  }
}

// Max |got - want| relative to the size of the terms: float32 products of length k err by about
// k * 2^-24 of sum |a||b|.
double rel_err(const at::Tensor& got, const at::Tensor& want, const at::Tensor& scale) {
  return ((got.to(at::kDouble) - want) / (scale + 1e-30)).abs().max().item<double>();
}

std::vector<GemmBackend> backends() {
  std::vector<GemmBackend> v{GemmBackend::libtorch};
  if (openblas_available()) v.push_back(GemmBackend::openblas);
  return v;
}

struct BackendGuard {
  GemmBackend saved = gemm_backend();
  ~BackendGuard() { set_gemm_backend(saved); }
};

}  // namespace

TEST(Gemm, ProductsEqualFloat64ForEveryLayoutAndShape) {
  BackendGuard guard;
  at::manual_seed(3);
  // (m, k, n): a step's shapes in small (rank 8 both ways, tokens x hidden) and the edges.
  const std::vector<std::array<int64_t, 3>> shapes{{1, 7, 1},   {1, 64, 300}, {300, 64, 1}, {8, 96, 1030},
                                                   {1030, 96, 8}, {1030, 8, 96}, {257, 130, 211}, {64, 576, 1536}};
  for (GemmBackend be : backends()) {
    set_gemm_backend(be);
    for (const auto& s : shapes) {
      for (int ka = 0; ka < 4; ++ka) {
        for (int kb = 0; kb < 4; ++kb) {
          const at::Tensor a = operand(s[0], s[1], ka), b = operand(s[1], s[2], kb);
          const at::Tensor want = at::mm(a.to(at::kDouble), b.to(at::kDouble));
          const at::Tensor scale = at::mm(a.abs().to(at::kDouble), b.abs().to(at::kDouble));
          const double tol = 4.0 * static_cast<double>(s[1]) * 6e-8;
          const std::string what = std::string(be == GemmBackend::openblas ? "openblas" : "libtorch") + " m " +
                                   std::to_string(s[0]) + " k " + std::to_string(s[1]) + " n " +
                                   std::to_string(s[2]) + " layouts " + std::to_string(ka) + std::to_string(kb);
          EXPECT_LT(rel_err(peft::mm(a, b), want, scale), tol) << "mm " << what;

          at::Tensor c = at::randn({s[0], s[2]});
          const at::Tensor c_want = c.to(at::kDouble) * 0.5 + want * -1.5;
          peft::addmm_(c, a, b, 0.5, -1.5);
          EXPECT_LT(rel_err(c, c_want, scale * 1.5 + c_want.abs()), tol) << "addmm_ " << what;

          const at::Tensor bias = at::randn({s[2]}), bias_before = bias.clone();
          const at::Tensor bias_want = want + bias.to(at::kDouble);
          EXPECT_LT(rel_err(peft::addmm(bias, a, b), bias_want, scale + bias_want.abs()), tol) << "addmm " << what;
          EXPECT_TRUE(at::equal(bias, bias_before)) << "addmm wrote into its bias: " << what;
        }
      }
    }
  }
}

TEST(Gemm, AStridedOutputIsWrittenInItsRowsOnly) {
  BackendGuard guard;
  for (GemmBackend be : backends()) {
    set_gemm_backend(be);
    at::Tensor wide = at::full({600, 40}, 7.0f);
    at::Tensor c = wide.narrow(1, 10, 20);  // row stride 40
    const at::Tensor a = at::randn({600, 300}), b = at::randn({300, 20});
    peft::addmm_(c, a, b, 0.0, 1.0);
    EXPECT_TRUE(at::allclose(c, at::mm(a, b), 1e-4, 1e-4));
    EXPECT_TRUE(wide.narrow(1, 0, 10).eq(7.0f).all().item<bool>());
    EXPECT_TRUE(wide.narrow(1, 30, 10).eq(7.0f).all().item<bool>());
  }
}

TEST(Gemm, OpenBlasProductsSplitOverThreadsEqualFloat64) {
  if (!openblas_available()) GTEST_SKIP() << "this build has no OpenBLAS";
  BackendGuard guard;
  set_gemm_backend(GemmBackend::openblas);
  const int threads = at::get_num_threads();
  at::manual_seed(5);
  // Split by rows (tokens x hidden), by columns (rank x tokens), a transposed left operand, and an
  // extent that does not divide into the threads' blocks.
  const std::vector<std::pair<at::Tensor, at::Tensor>> products{
      {at::randn({1000, 576}), at::randn({1536, 576}).t()},
      {at::randn({8, 576}), at::randn({1000, 576}).t()},
      {at::randn({576, 1000}).t(), at::randn({576, 300})},
      {at::randn({1037, 300}), at::randn({300, 19})}};
  for (const auto& [a, b] : products) {
    const at::Tensor want = at::mm(a.to(at::kDouble), b.to(at::kDouble));
    const at::Tensor scale = at::mm(a.abs().to(at::kDouble), b.abs().to(at::kDouble));
    for (int n : {1, 2, 3}) {
      at::set_num_threads(n);
      EXPECT_LT(rel_err(peft::mm(a, b), want, scale), 4.0 * static_cast<double>(a.size(1)) * 6e-8)
          << a.sizes() << " x " << b.sizes() << " on " << n << " threads";
      at::Tensor c = at::zeros({a.size(0), b.size(1)});
      peft::addmm_(c, a, b, 1.0, 2.0);
      EXPECT_LT(rel_err(c, want * 2, scale * 2), 4.0 * static_cast<double>(a.size(1)) * 6e-8)
          << "addmm_ " << a.sizes() << " x " << b.sizes() << " on " << n << " threads";
    }
  }
  at::set_num_threads(threads);
}

TEST(Gemm, OtherDtypesAndTrackedInputsGoToLibtorch) {
  BackendGuard guard;
  for (GemmBackend be : backends()) {
    set_gemm_backend(be);
    const at::Tensor a = at::randn({5, 6}, at::kDouble), b = at::randn({6, 7}, at::kDouble);
    EXPECT_TRUE(at::equal(peft::mm(a, b), at::mm(a, b)));
    const at::Tensor x = at::randn({5, 6}).requires_grad_(true), w = at::randn({6, 7});
    at::Tensor y = peft::mm(x, w);
    y.sum().backward();
    EXPECT_TRUE(at::allclose(x.grad(), w.sum(1).expand({5, 6}), 1e-5, 1e-5));
  }
}

TEST(Gemm, AnUnknownBackendIsRefusedByName) {
  // The choice is read once per process: a child process sees the bad value.
  const std::string cmd = std::string("PEFT_GEMM=mkl ") + PEFT_CLI + " inspect /nonexistent 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int rc = pclose(p);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("PEFT_GEMM=\"mkl\""), std::string::npos) << out;
  EXPECT_NE(out.find("auto, openblas or libtorch"), std::string::npos) << out;
}
