// Row copies and element-wise adds on fp32 tensors: embedding lookup, row gather, residual add.
#pragma once

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace llm::cpu {

// out[t, :] = table[token_ids[t], :]. Token ids must already be validated against the table size.
void EmbedRows(ThreadPool& pool, const int32_t* token_ids, int32_t num_tokens, const float* table,
               int32_t hidden, float* out);

// out[i, :] = x[rows[i], :].
void GatherRows(ThreadPool& pool, const float* x, const int32_t* rows, int32_t num_rows,
                int32_t cols, float* out);

// residual[i] += x[i] for i < count.
void AddInPlace(ThreadPool& pool, float* residual, const float* x, int64_t count);

}  // namespace llm::cpu
