// RMSNorm over rows, one row per task.
#include "kernels/cpu/rms_norm.h"

#include <cmath>

namespace llm::cpu {
namespace {

void NormalizeRow(const float* x, const float* weight, int32_t hidden, float eps, float* out) {
  // Same order as transformers: x * rsqrt(mean + eps), then * weight.
  const float inverse_rms = InverseRms(x, hidden, eps);
  for (int32_t i = 0; i < hidden; ++i) out[i] = weight[i] * (x[i] * inverse_rms);
}

}  // namespace

float InverseRms(const float* x, int32_t hidden, float eps) {
  // The sum runs in double: a sequential fp32 sum over thousands of elements drifts by ~1e-6
  // relative, more than the reference should add on top of the model's own rounding.
  double sum_squares = 0.0;
  for (int32_t i = 0; i < hidden; ++i) sum_squares += static_cast<double>(x[i]) * x[i];
  const float mean_square = static_cast<float>(sum_squares / hidden);
  return 1.0f / std::sqrt(mean_square + eps);
}

float RowScale(const RowRmsScale& scale, int64_t row) {
  if (scale.x == nullptr) return 1.0f;
  return InverseRms(static_cast<const float*>(scale.x) + row * scale.hidden, scale.hidden,
                    scale.eps);
}

void RmsNorm(ThreadPool& pool, const float* x, const float* weight, int32_t rows, int32_t hidden,
             float eps, float* out) {
  pool.ParallelFor(rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      NormalizeRow(x + r * hidden, weight, hidden, eps, out + r * hidden);
    }
  });
}

void AddRmsNorm(ThreadPool& pool, float* residual, const float* x, const float* weight,
                int32_t rows, int32_t hidden, float eps, float* out) {
  pool.ParallelFor(rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* row = residual + r * hidden;
      const float* add = x + r * hidden;
      for (int32_t i = 0; i < hidden; ++i) row[i] += add[i];
      NormalizeRow(row, weight, hidden, eps, out + r * hidden);
    }
  });
}

}  // namespace llm::cpu
