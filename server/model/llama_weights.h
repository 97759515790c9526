// The weights of a Llama-family model in backend memory, in the fused layout the forward uses:
// q/k/v stacked into one [(Hq + 2 * Hkv) * D, hidden] projection and gate/up into one
// [2 * intermediate, hidden] projection, so each needs one GEMM per layer.
#pragma once

#include <cstddef>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "server/model/checkpoint.h"

namespace llm {

struct LlamaLayerWeights {
  DeviceBuffer input_norm;           // [hidden]
  DeviceBuffer qkv_proj;             // [(Hq + 2 * Hkv) * D, hidden]; times input_norm if folded
  DeviceBuffer o_proj;               // [hidden, Hq * D]
  DeviceBuffer post_attention_norm;  // [hidden]
  DeviceBuffer gate_up_proj;  // [2 * intermediate, hidden]; times post_attention_norm if folded
  DeviceBuffer down_proj;     // [hidden, intermediate]
};

struct LlamaWeights {
  DeviceBuffer embed_tokens;  // [vocab, hidden]
  std::vector<LlamaLayerWeights> layers;
  DeviceBuffer final_norm;  // [hidden]
  DeviceBuffer lm_head;     // [vocab, hidden]; empty when tied to embed_tokens
  size_t bytes = 0;         // backend bytes of all of the above
  // qkv_proj and gate_up_proj carry their norm's gain in their columns (W diag(gain)), so
  // RmsNorm(x, gain) W^T = RowRmsScale(x) * (x W^T) (kernels/backend.h).
  bool norm_gains_folded = false;

  const void* lm_head_data() const {
    return lm_head.data() != nullptr ? lm_head.data() : embed_tokens.data();
  }
};

// Reads, shape-checks, fuses and uploads every weight. Fails naming the tensor when one is missing
// or has an unexpected shape, and rejects bias tensors this forward does not apply. With
// fold_norm_gains, qkv_proj and gate_up_proj are uploaded with their norm's gain folded in.
absl::StatusOr<LlamaWeights> UploadLlamaWeights(const Checkpoint& checkpoint, Backend& backend,
                                                bool fold_norm_gains = false);

}  // namespace llm
