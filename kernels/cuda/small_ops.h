// Launchers of the small fused kernels of the CUDA backend (one file per family: rope_append_kv.cu,
// rms_norm.cu, elementwise.cu, sampling.cu). All tensors are bf16 in device memory unless noted;
// each launcher checks its arguments and the launch and returns a status.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kvcache/kv_layout.h"

namespace llm::cuda {

// RoPE (Hugging Face rotate-half) on q and k in place at each token's absolute position, then k and
// v written to the paged pool at slot_mapping[t] (negative slots are skipped). With scale_rows_by
// set, each token's whole row is first multiplied by 1 / sqrt(mean(scale_rows_by[t]^2) + eps)
// (RowRmsScale, kernels/backend.h).
struct RopeAppendParams {
  __nv_bfloat16* qkv = nullptr;  // [num_tokens, (Hq + 2 Hkv) * D]
  int32_t num_tokens = 0;
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  const int32_t* positions = nullptr;
  const int32_t* slot_mapping = nullptr;
  const float* inv_freq = nullptr;  // [head_dim / 2]
  float attention_scaling = 1.f;
  __nv_bfloat16* k_cache = nullptr;  // the layer's K base in the pool
  __nv_bfloat16* v_cache = nullptr;
  kvcache::KvLayout layout;
  const __nv_bfloat16* scale_rows_by = nullptr;  // [num_tokens, scale_hidden]
  int32_t scale_hidden = 0;
  float scale_eps = 0.f;
};
absl::Status LaunchRopeAppendKv(const RopeAppendParams& params, cudaStream_t stream);

// out = x / sqrt(mean(x^2) + eps) * weight per row; with `residual`, first residual += x (stored
// bf16) and the norm is taken of the updated residual.
struct RmsNormParams {
  const __nv_bfloat16* x = nullptr;
  __nv_bfloat16* residual = nullptr;  // null: plain RmsNorm
  const __nv_bfloat16* weight = nullptr;
  __nv_bfloat16* out = nullptr;
  int32_t rows = 0;
  int32_t hidden = 0;
  float eps = 1e-6f;
};
absl::Status LaunchRmsNorm(const RmsNormParams& params, cudaStream_t stream);

// residual[i] += x[i]
absl::Status LaunchAdd(__nv_bfloat16* residual, const __nv_bfloat16* x, int64_t count,
                       cudaStream_t stream);
// out[r, i] = silu(s_r * gate_up[r, i]) * s_r * gate_up[r, inter + i], with s_r = 1 when
// scale_rows_by is null, else 1 / sqrt(mean(scale_rows_by[r]^2) + eps) (RowRmsScale).
struct SiluMulParams {
  const __nv_bfloat16* gate_up = nullptr;  // [rows, 2 * inter]
  int32_t rows = 0;
  int32_t inter = 0;
  __nv_bfloat16* out = nullptr;                  // [rows, inter]
  const __nv_bfloat16* scale_rows_by = nullptr;  // [rows, scale_hidden]
  int32_t scale_hidden = 0;
  float scale_eps = 0.f;
};
absl::Status LaunchSiluMul(const SiluMulParams& params, cudaStream_t stream);
// out[i, :] = x[rows[i], :] (row gather of `row_bytes`-byte rows; Embed is a gather of the table).
absl::Status LaunchGatherRows(const void* x, const int32_t* rows, int32_t num_rows,
                              int64_t row_bytes, void* out, cudaStream_t stream);
// Element type conversion for weight upload: F32 or F16 (source_dtype 0 / 1, kernels/dtype.h) ->
// bf16.
absl::Status LaunchConvertToBf16(const void* source, int32_t source_dtype, int64_t count,
                                 __nv_bfloat16* out, cudaStream_t stream);

// Greedy sampling: per row of F32 logits, the argmax (lowest id on ties) and its log-probability
// logit - logsumexp(row). tokens/logprobs are device arrays of `rows` entries.
absl::Status LaunchArgmaxLogprob(const float* logits, int32_t rows, int32_t vocab, int32_t* tokens,
                                 float* logprobs, cudaStream_t stream);

}  // namespace llm::cuda
