// Dense projection in fp32 through OpenBLAS: out[m, n] = sum_k x[m, k] * w[n, k], i.e. x W^T with W
// stored [out_features, in_features] as Hugging Face checkpoints store linear weights.
#pragma once

#include <cstdint>

namespace llm::cpu {

// OpenBLAS threads the GEMM itself, so this takes no ThreadPool.
void Matmul(const float* x, const float* w, int32_t m, int32_t n, int32_t k, float* out);

}  // namespace llm::cpu
