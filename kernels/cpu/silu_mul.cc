// SwiGLU activation, one row per task.
#include "kernels/cpu/silu_mul.h"

#include <cmath>

namespace llm::cpu {

void SiluMul(ThreadPool& pool, const float* gate_up, int32_t rows, int32_t inter, float* out) {
  pool.ParallelFor(rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* gate = gate_up + r * 2 * inter;
      const float* up = gate + inter;
      float* row_out = out + r * inter;
      for (int32_t i = 0; i < inter; ++i) {
        row_out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
      }
    }
  });
}

}  // namespace llm::cpu
