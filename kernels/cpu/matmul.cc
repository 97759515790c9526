// x W^T through OpenBLAS: row-major x [m, k], W [n, k] read transposed, out [m, n]. Up to
// kGemvMaxRows rows (decode steps) one cblas_sgemv per row: sgemm packs W into panels on every
// call, which for a few rows costs more than the product (perf: 35% of a batch-1 decode step in
// sgemm_incopy). Default model on the 2-core CI machine, llm-bench-engine, decode step forward:
// batch 1 1.23 -> 0.34 ms, batch 2 1.56 -> 0.58, batch 4 2.32 -> 1.39, batch 8 3.23 -> 3.04.
#include "kernels/cpu/matmul.h"

#include <cblas.h>

namespace llm::cpu {

constexpr int32_t kGemvMaxRows = 8;

void Matmul(const float* x, const float* w, int32_t m, int32_t n, int32_t k, float* out) {
  if (m == 0 || n == 0) return;
  if (m <= kGemvMaxRows) {
    for (int32_t r = 0; r < m; ++r) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, x + static_cast<int64_t>(r) * k, 1,
                  0.0f, out + static_cast<int64_t>(r) * n, 1);
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, 0.0f, out, n);
}

}  // namespace llm::cpu
