// Rotary position embedding at absolute positions, fused with appending the new K and V to the
// paged KV cache, in fp32.
//
// Hugging Face rotate-half convention over the whole head (LlamaRotaryEmbedding +
// apply_rotary_pos_emb):
//   for i < D/2:  angle = float(position) * inv_freq[i]          (fp32, as transformers computes
//   it)
//                 c = cos(angle) * attention_scaling, s = sin(angle) * attention_scaling
//                 x'[i]       = x[i] * c - x[i + D/2] * s
//                 x'[i + D/2] = x[i + D/2] * c + x[i] * s
// Query heads and key heads are rotated in place inside the fused qkv row; value heads are not.
// With rope.row_scale set, the whole row (q, k and v) is first multiplied by the token's RowScale.
// The rotated K and the V of token t are then written to flat slot slot_mapping[t] of `layer`, at
// the addresses kvcache/kv_layout.h gives.
#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/thread_pool.h"

namespace llm::cpu {

// Rotates one head vector of `head_dim` floats in place.
void RotateHalf(float* head, int32_t head_dim, int32_t position, const float* inv_freq,
                float attention_scaling);

// qkv [num_tokens, (Hq + 2 * Hkv) * D]; all pointers in `batch`, `rope` and `cache` are host
// memory.
void RopeAppendKv(ThreadPool& pool, float* qkv, const AttentionBatch& batch,
                  const AttentionShape& shape, const RopeParams& rope, const KvCacheView& cache,
                  int32_t layer);

}  // namespace llm::cpu
