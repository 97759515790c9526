// The SwiGLU activation of the Llama MLP: out = silu(gate) * up, with silu(x) = x / (1 + exp(-x)).
#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/thread_pool.h"

namespace llm::cpu {

// gate_up [rows, 2 * inter] holds [gate | up] per row (the fused gate/up projection); out [rows,
// inter]. With row_scale.x set, gate and up are first multiplied by their row's RowScale.
void SiluMul(ThreadPool& pool, const float* gate_up, int32_t rows, int32_t inter,
             const RowRmsScale& row_scale, float* out);

}  // namespace llm::cpu
