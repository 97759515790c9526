// x W^T through cblas_sgemm: row-major x [m, k], W [n, k] read transposed, out [m, n].
#include "kernels/cpu/matmul.h"

#include <cblas.h>

namespace llm::cpu {

void Matmul(const float* x, const float* w, int32_t m, int32_t n, int32_t k, float* out) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, 0.0f, out, n);
}

}  // namespace llm::cpu
