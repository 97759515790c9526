// x W^T through OpenBLAS against a naive triple loop in double, including degenerate shapes.
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/matmul.h"
#include "tests/kernels/random_tensors.h"

namespace llm::cpu {
namespace {

TEST(MatmulTest, MatchesNaiveXTimesWeightTransposed) {
  for (int32_t m : {1, 7, 33}) {
    for (int32_t n : {1, 50, 129}) {
      for (int32_t k : {3, 64, 257}) {
        const std::vector<float> x = testing::RandomFloats(static_cast<size_t>(m) * k, m * 7 + k);
        const std::vector<float> w = testing::RandomFloats(static_cast<size_t>(n) * k, n * 11 + k);
        std::vector<float> out(static_cast<size_t>(m) * n, -1.0f);
        Matmul(x.data(), w.data(), m, n, k, out.data());
        std::vector<double> expected(out.size(), 0.0);
        for (int32_t i = 0; i < m; ++i)
          for (int32_t j = 0; j < n; ++j)
            for (int32_t l = 0; l < k; ++l)
              expected[i * n + j] += static_cast<double>(x[i * k + l]) * w[j * k + l];
        EXPECT_LT(testing::RelativeError(out, expected), 1e-6)
            << "m=" << m << " n=" << n << " k=" << k;
      }
    }
  }
}

TEST(MatmulTest, ReadsWeightAsOutputFeaturesByInputFeatures) {
  // W = [[1, 2], [3, 4], [5, 6]] (3 outputs, 2 inputs); x = [1, 10] -> [21, 43, 65].
  const std::vector<float> w = {1, 2, 3, 4, 5, 6}, x = {1, 10};
  std::vector<float> out(3);
  Matmul(x.data(), w.data(), 1, 3, 2, out.data());
  EXPECT_EQ(out, (std::vector<float>{21, 43, 65}));
}

}  // namespace
}  // namespace llm::cpu
