// RMSNorm, residual add + RMSNorm, SwiGLU, embedding lookup, row gather and add, against naive
// loops in double.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/row_ops.h"
#include "kernels/cpu/silu_mul.h"
#include "tests/kernels/random_tensors.h"

namespace llm::cpu {
namespace {

std::vector<double> NaiveRmsNorm(const float* x, const float* weight, int32_t hidden, double eps) {
  double mean_square = 0.0;
  for (int32_t i = 0; i < hidden; ++i) mean_square += static_cast<double>(x[i]) * x[i];
  mean_square /= hidden;
  std::vector<double> out(hidden);
  for (int32_t i = 0; i < hidden; ++i) out[i] = x[i] / std::sqrt(mean_square + eps) * weight[i];
  return out;
}

TEST(RmsNormTest, MatchesNaiveDoubleRmsNorm) {
  ThreadPool pool(2);
  for (int32_t hidden : {1, 7, 64, 4096}) {
    const int32_t rows = 13;
    const std::vector<float> x =
        testing::RandomFloats(static_cast<size_t>(rows) * hidden, hidden, -3.0f, 3.0f);
    const std::vector<float> weight = testing::RandomFloats(hidden, hidden + 1, 0.5f, 1.5f);
    std::vector<float> out(x.size());
    RmsNorm(pool, x.data(), weight.data(), rows, hidden, 1e-5f, out.data());
    for (int32_t r = 0; r < rows; ++r) {
      const std::vector<double> expected =
          NaiveRmsNorm(&x[r * hidden], weight.data(), hidden, 1e-5);
      EXPECT_LT(testing::RelativeError(&out[r * hidden], expected), 1e-6)
          << "hidden " << hidden << " row " << r;
    }
  }
}

TEST(RmsNormTest, EpsilonMattersForTinyRows) {
  ThreadPool pool(1);
  const std::vector<float> x = {1e-4f, -1e-4f}, weight = {1.0f, 1.0f};
  std::vector<float> out(2);
  RmsNorm(pool, x.data(), weight.data(), 1, 2, 1e-6f, out.data());
  const std::vector<double> expected = NaiveRmsNorm(x.data(), weight.data(), 2, 1e-6);
  EXPECT_NEAR(out[0], expected[0], 1e-6);
  EXPECT_LT(out[0], 0.1f) << "eps dominates mean square 1e-8, so the output stays small";
}

TEST(AddRmsNormTest, UpdatesResidualAndNormalisesTheSum) {
  ThreadPool pool(2);
  const int32_t rows = 9, hidden = 96;
  std::vector<float> residual = testing::RandomFloats(rows * hidden, 1);
  const std::vector<float> original = residual;
  const std::vector<float> x = testing::RandomFloats(rows * hidden, 2);
  const std::vector<float> weight = testing::RandomFloats(hidden, 3, 0.5f, 1.5f);
  std::vector<float> out(rows * hidden);
  AddRmsNorm(pool, residual.data(), x.data(), weight.data(), rows, hidden, 1e-6f, out.data());
  std::vector<float> sum(rows * hidden);
  for (size_t i = 0; i < sum.size(); ++i) {
    sum[i] = original[i] + x[i];
    ASSERT_EQ(residual[i], sum[i]);
  }
  for (int32_t r = 0; r < rows; ++r) {
    EXPECT_LT(testing::RelativeError(&out[r * hidden],
                                     NaiveRmsNorm(&sum[r * hidden], weight.data(), hidden, 1e-6)),
              1e-6);
  }
}

TEST(SiluMulTest, MatchesSiluOfGateTimesUp) {
  ThreadPool pool(2);
  const int32_t rows = 11, inter = 37;
  const std::vector<float> gate_up = testing::RandomFloats(rows * 2 * inter, 4, -8.0f, 8.0f);
  std::vector<float> out(rows * inter);
  SiluMul(pool, gate_up.data(), rows, inter, RowRmsScale{}, out.data());
  for (int32_t r = 0; r < rows; ++r) {
    for (int32_t i = 0; i < inter; ++i) {
      const double gate = gate_up[r * 2 * inter + i], up = gate_up[r * 2 * inter + inter + i];
      const double expected = gate / (1.0 + std::exp(-gate)) * up;
      ASSERT_NEAR(out[r * inter + i], expected, 1e-6 * (1.0 + std::abs(expected))) << r << "," << i;
    }
  }
}

// With a row scale (a folded norm): gate and up of row r are multiplied by r's inverse RMS first.
TEST(SiluMulTest, ScalesGateAndUpByTheRowsInverseRms) {
  ThreadPool pool(2);
  const int32_t rows = 7, inter = 29, hidden = 40;
  const std::vector<float> gate_up = testing::RandomFloats(rows * 2 * inter, 6, -40.0f, 40.0f);
  const std::vector<float> x = testing::RandomFloats(rows * hidden, 7, -9.0f, 9.0f);
  const float eps = 1e-5f;
  std::vector<float> out(rows * inter);
  SiluMul(pool, gate_up.data(), rows, inter, RowRmsScale{x.data(), hidden, eps}, out.data());
  for (int32_t r = 0; r < rows; ++r) {
    double squares = 0.0;
    for (int32_t i = 0; i < hidden; ++i) squares += double{x[r * hidden + i]} * x[r * hidden + i];
    const double scale = 1.0 / std::sqrt(squares / hidden + eps);
    for (int32_t i = 0; i < inter; ++i) {
      const double gate = gate_up[r * 2 * inter + i] * scale;
      const double up = gate_up[r * 2 * inter + inter + i] * scale;
      const double expected = gate / (1.0 + std::exp(-gate)) * up;
      ASSERT_NEAR(out[r * inter + i], expected, 1e-5 * (1.0 + std::abs(expected))) << r << "," << i;
    }
  }
}

TEST(RowOpsTest, EmbedCopiesTheTokensRows) {
  ThreadPool pool(2);
  const int32_t vocab = 50, hidden = 24;
  const std::vector<float> table = testing::RandomFloats(vocab * hidden, 5);
  const std::vector<int32_t> tokens = {3, 49, 0, 3, 17};
  std::vector<float> out(tokens.size() * hidden);
  EmbedRows(pool, tokens.data(), static_cast<int32_t>(tokens.size()), table.data(), hidden,
            out.data());
  for (size_t t = 0; t < tokens.size(); ++t) {
    for (int32_t d = 0; d < hidden; ++d)
      ASSERT_EQ(out[t * hidden + d], table[tokens[t] * hidden + d]);
  }
}

TEST(RowOpsTest, GatherRowsPicksRequestedRowsInOrder) {
  ThreadPool pool(2);
  const int32_t cols = 5;
  const std::vector<float> x = testing::RandomFloats(40 * cols, 6);
  const std::vector<int32_t> rows = {39, 0, 7, 7};
  std::vector<float> out(rows.size() * cols);
  GatherRows(pool, x.data(), rows.data(), 4, cols, out.data());
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int32_t c = 0; c < cols; ++c) ASSERT_EQ(out[i * cols + c], x[rows[i] * cols + c]);
  }
}

TEST(RowOpsTest, AddInPlaceAddsEveryElement) {
  ThreadPool pool(2);
  const int64_t count = 100003;  // several parts plus a remainder
  std::vector<float> residual = testing::RandomFloats(count, 7);
  const std::vector<float> original = residual, x = testing::RandomFloats(count, 8);
  AddInPlace(pool, residual.data(), x.data(), count);
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(residual[i], original[i] + x[i]) << i;
}

}  // namespace
}  // namespace llm::cpu
