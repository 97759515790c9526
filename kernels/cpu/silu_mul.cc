// SwiGLU activation, one row per task.
#include "kernels/cpu/silu_mul.h"

#include <cmath>

#include "kernels/cpu/rms_norm.h"

namespace llm::cpu {

void SiluMul(ThreadPool& pool, const float* gate_up, int32_t rows, int32_t inter,
             const RowRmsScale& row_scale, float* out) {
  pool.ParallelFor(rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* gate = gate_up + r * 2 * inter;
      const float* up = gate + inter;
      float* row_out = out + r * inter;
      const float scale = RowScale(row_scale, r);
      for (int32_t i = 0; i < inter; ++i) {
        const float g = gate[i] * scale;
        row_out[i] = g / (1.0f + std::exp(-g)) * (up[i] * scale);
      }
    }
  });
}

}  // namespace llm::cpu
