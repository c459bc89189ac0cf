// The bf16 x float32 rank-r products (core/bf16_lowrank) against float64 products: every rank from 1 to
// 13 and lengths with and without a vector tail, strided rows, 1 to 3 threads; rows_add rounds once.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

#include "peft/core/bf16_lowrank.h"

using namespace peft;

namespace {

// (n, L) bf16 rows; `padded` gives them a row stride of L + 7 (a column slice of a wider matrix).
at::Tensor bf16_rows(int64_t n, int64_t L, bool padded) {
  if (!padded) return at::randn({n, L}).to(at::kBFloat16);
  return at::randn({n, L + 7}).to(at::kBFloat16).narrow(1, 3, L);
}

// Max |got - want| / sum |terms|: float32 sums of length L err by about L * 2^-24 of it.
double rel_err(const at::Tensor& got, const at::Tensor& want, const at::Tensor& terms) {
  return ((got.to(at::kDouble) - want) / (terms + 1e-30)).abs().max().item<double>();
}

const std::vector<int64_t> kLengths{1, 15, 16, 37, 576};
const std::vector<int64_t> kRanks{1, 3, 7, 8, 9, 12, 13};

}  // namespace

TEST(Bf16LowRank, RowsDotEqualsFloat64) {
  at::manual_seed(5);
  for (int64_t L : kLengths) {
    for (int64_t r : kRanks) {
      for (bool padded : {false, true}) {
        at::Tensor M = bf16_rows(70, L, padded), P = at::randn({r, L});
        at::Tensor got = bf16_rows_dot(M, P, 0.75);
        ASSERT_EQ(got.sizes(), (at::IntArrayRef{70, r}));
        ASSERT_EQ(got.scalar_type(), at::kFloat);
        at::Tensor Md = M.to(at::kDouble), Pd = P.to(at::kDouble);
        EXPECT_LT(rel_err(got, 0.75 * Md.mm(Pd.t()), 0.75 * Md.abs().mm(Pd.abs().t())), 1e-6 * L)
            << "L " << L << " r " << r << " padded " << padded;
      }
    }
  }
}

TEST(Bf16LowRank, RowsAddRoundsTheFloat32SumOnce) {
  at::manual_seed(6);
  for (int64_t L : kLengths) {
    for (int64_t r : kRanks) {
      at::Tensor wide = at::randn({50, L + 7}).to(at::kBFloat16);
      at::Tensor M = wide.narrow(1, 3, L);
      const at::Tensor before = wide.clone();
      at::Tensor C = at::randn({50, r}), P = at::randn({r, L});
      const at::Tensor exact = M.to(at::kDouble) + 1.5 * C.to(at::kDouble).mm(P.to(at::kDouble));
      bf16_rows_add_(M, C, P, 1.5);
      // One rounding of a float32 sum: within half a bf16 unit (2^(e-8) for |exact| in [2^e, 2^(e+1))), plus
      // the float32 sum's own error ((r + 2) float32 roundings of the terms); rounding the product to
      // bf16 before adding it would be up to a whole unit off.
      const at::Tensor terms = M.to(at::kDouble).abs() + 1.5 * C.to(at::kDouble).abs().mm(P.to(at::kDouble).abs());
      const at::Tensor half_unit = at::exp2(at::floor(at::log2(exact.abs().clamp_min(1e-30))) - 8);
      const at::Tensor allowed = half_unit + terms * (r + 2) * std::ldexp(1.0, -23);
      const double worst = ((M.to(at::kDouble) - exact).abs() / (allowed + 1e-30)).max().item<double>();
      EXPECT_LE(worst, 1.0) << "L " << L << " r " << r;
      // The columns outside the view are untouched.
      EXPECT_TRUE(wide.narrow(1, 0, 3).equal(before.narrow(1, 0, 3)));
      EXPECT_TRUE(wide.narrow(1, L + 3, 4).equal(before.narrow(1, L + 3, 4)));
    }
  }
}

TEST(Bf16LowRank, RowsAddKeepsNanAndInfinity) {
  at::Tensor M = at::zeros({2, 20}).to(at::kBFloat16);
  M[0][3] = std::numeric_limits<float>::quiet_NaN();
  M[1][17] = std::numeric_limits<float>::infinity();
  M[1][4] = 3.0e38f;  // plus 1e38 overflows bf16: infinity, as c10::BFloat16 rounds it
  at::Tensor C = at::ones({2, 1}), P = at::full({1, 20}, 1.0e38f);
  bf16_rows_add_(M, C, P, 1.0);
  const at::Tensor f = M.to(at::kFloat);
  EXPECT_TRUE(std::isnan(f[0][3].item<float>()));
  EXPECT_TRUE(std::isinf(f[1][17].item<float>()));
  EXPECT_TRUE(std::isinf(f[1][4].item<float>()));
  EXPECT_EQ(f[0][0].item<float>(), c10::BFloat16(1.0e38f));
}

TEST(Bf16LowRank, OuterEqualsFloat64OverThreadCounts) {
  const int saved = at::get_num_threads();
  at::manual_seed(7);
  for (int threads : {1, 2, 3}) {
    at::set_num_threads(threads);
    for (int64_t n : {1, 5, 130, 515}) {
      for (int64_t L : kLengths) {
        for (int64_t r : {1, 8, 13}) {
          at::Tensor C = at::randn({n, r}), M = bf16_rows(n, L, n % 2 == 1);
          at::Tensor got = bf16_outer(C, M, -2.0);
          ASSERT_EQ(got.sizes(), (at::IntArrayRef{r, L}));
          at::Tensor Cd = C.to(at::kDouble), Md = M.to(at::kDouble);
          EXPECT_LT(rel_err(got, -2.0 * Cd.t().mm(Md), 2.0 * Cd.abs().t().mm(Md.abs())), 1e-6 * n)
              << "threads " << threads << " n " << n << " L " << L << " r " << r;
          EXPECT_TRUE(got.equal(bf16_outer(C, M, -2.0))) << "the same threads give the same bits";
        }
      }
    }
  }
  at::set_num_threads(saved);
}

TEST(Bf16LowRank, WrongOperandsAreRefusedByName) {
  at::Tensor M = at::randn({4, 8}).to(at::kBFloat16), P = at::randn({2, 8});
  EXPECT_THROW(bf16_rows_dot(M.to(at::kFloat), P, 1.0), c10::Error);
  EXPECT_THROW(bf16_rows_dot(M.t(), P, 1.0), c10::Error);  // columns not of unit stride
  EXPECT_THROW(bf16_rows_dot(M, at::randn({2, 9}), 1.0), c10::Error);
  EXPECT_THROW(bf16_rows_add_(M, at::randn({3, 2}), P, 1.0), c10::Error);
  EXPECT_THROW(bf16_outer(at::randn({4, 2}).to(at::kDouble), M, 1.0), c10::Error);
  try {
    bf16_rows_dot(M, at::randn({2, 9}), 1.0);
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf16_rows_dot"), std::string::npos) << e.what();
  }
}
