// RMSNorm, and the fused residual-add + RMSNorm that sits between the attention and MLP halves of a
// Llama layer, in fp32.
//
//   out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight
//
// As in Hugging Face's LlamaRMSNorm, the statistic is taken in (at least) fp32 and the normalised
// row is multiplied by the weight afterwards.
#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/thread_pool.h"

namespace llm::cpu {

void RmsNorm(ThreadPool& pool, const float* x, const float* weight, int32_t rows, int32_t hidden,
             float eps, float* out);

// residual += x; out = RmsNorm(residual). out may not alias residual.
void AddRmsNorm(ThreadPool& pool, float* residual, const float* x, const float* weight,
                int32_t rows, int32_t hidden, float eps, float* out);

// 1 / sqrt(mean(x[0, hidden)^2) + eps), the sum of squares in double.
float InverseRms(const float* x, int32_t hidden, float eps);
// InverseRms of row `row` of scale.x (host F32), or 1 when scale.x is null.
float RowScale(const RowRmsScale& scale, int64_t row);

}  // namespace llm::cpu
