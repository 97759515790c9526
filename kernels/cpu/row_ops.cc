// Row copies and element-wise adds: memory-bound loops, split over rows (or elements) across
// threads.
#include "kernels/cpu/row_ops.h"

#include <cstring>

namespace llm::cpu {

void EmbedRows(ThreadPool& pool, const int32_t* token_ids, int32_t num_tokens, const float* table,
               int32_t hidden, float* out) {
  GatherRows(pool, table, token_ids, num_tokens, hidden, out);
}

void GatherRows(ThreadPool& pool, const float* x, const int32_t* rows, int32_t num_rows,
                int32_t cols, float* out) {
  pool.ParallelFor(num_rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      std::memcpy(out + i * cols, x + static_cast<int64_t>(rows[i]) * cols, cols * sizeof(float));
    }
  });
}

void AddInPlace(ThreadPool& pool, float* residual, const float* x, int64_t count) {
  pool.ParallelFor(count, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) residual[i] += x[i];
  });
}

}  // namespace llm::cpu
