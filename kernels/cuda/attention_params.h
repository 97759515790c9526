// Parameters of the paged attention kernels (flash prefill, flash decode, the generic fallback) and
// their launchers. One struct for the whole family: the kernels differ in how they tile the same
// problem, not in what the problem is (see kernels/backend.h, PagedAttention, for the math).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kvcache/kv_layout.h"

namespace llm::cuda {

struct PagedAttentionParams {
  // Queries: token t, query head h starts at q + t * q_row_stride + h * head_dim.
  const __nv_bfloat16* q = nullptr;
  int64_t q_row_stride = 0;
  // Output: token t, query head h starts at out + t * out_row_stride + h * head_dim.
  __nv_bfloat16* out = nullptr;
  int64_t out_row_stride = 0;
  // The layer's K and V arrays inside the paged pool (pool + layout.layer_offset(layer, kind)).
  const __nv_bfloat16* k_cache = nullptr;
  const __nv_bfloat16* v_cache = nullptr;
  kvcache::KvLayout layout;
  // The ragged batch (device memory), as in AttentionBatch.
  const int32_t* positions = nullptr;
  const int32_t* query_start = nullptr;
  const int32_t* kv_lens = nullptr;
  const int32_t* block_tables = nullptr;
  int32_t block_table_stride = 0;
  int32_t num_seqs = 0;
  int32_t num_tokens = 0;
  int32_t max_query_len = 0;  // host-known maxima: launch shapes only
  int32_t min_query_len = 0;  // host-known minimum (0: not known): ChooseAttentionKernel
  int32_t max_kv_len = 0;
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  float softmax_scale = 0.0f;
  // Split-KV (decode only): the KV range of a sequence is cut into chunks of kv_chunk_size
  // positions, one thread block each. With num_splits > 1 the splits are merged either inside a
  // thread-block cluster (merge_in_cluster: no buffers needed; at most kFlashDecodeMaxClusterSplits
  // splits, compute capability 9.0) or through partial_out [num_tokens, num_q_heads, num_splits,
  // head_dim] and partial_lse [num_tokens, num_q_heads, num_splits] (log2 units), combined by
  // MergeSplits. ChooseDecodeSplits sets all three.
  int32_t num_splits = 1;
  int32_t kv_chunk_size = 0;
  bool merge_in_cluster = false;
  float* partial_out = nullptr;
  float* partial_lse = nullptr;
  // A mixed batch (continuous batching: decode tokens next to prefill chunks) runs both flash
  // kernels on the same params: flash decode takes the sequences of at most kFlashDecodeMaxRows
  // query rows (it always skips larger ones), flash prefill skips those when this is set.
  bool mixed_batch = false;
  // RoPE + KV append folded into flash decode (RopeAppendAttention; one query token per sequence):
  // q and the token's k and v are read unrotated from its qkv row (k heads at column Hq * D, v
  // heads at (Hq + Hkv) * D of q's row), multiplied by the token's RMS scale when
  // rope_scale_rows_by is set (RowRmsScale), q and k rotated at the token's position; the block
  // whose chunk holds that position writes k and v to slot_mapping[t] (skipped when negative) and
  // uses them in place of the bytes it copied from there. Set: rope_inv_freq != nullptr.
  const float* rope_inv_freq = nullptr;  // [head_dim / 2]
  float rope_attention_scaling = 1.0f;
  const __nv_bfloat16* rope_scale_rows_by = nullptr;  // [num_tokens, rope_scale_hidden]
  int32_t rope_scale_hidden = 0;
  float rope_scale_eps = 0.0f;
  const int32_t* slot_mapping = nullptr;

  int32_t group_size() const { return num_q_heads / num_kv_heads; }
};

// Checks what every attention launcher needs (non-null arrays, head counts, layout agreement).
absl::Status ValidateAttentionParams(const PagedAttentionParams& params);

// Tensor-core flash prefill for head_dim 64 and 128 (flash_prefill.cuh). Any ragged batch.
absl::Status LaunchFlashPrefill(const PagedAttentionParams& params, cudaStream_t stream);
bool FlashPrefillSupports(int32_t head_dim);

// Split-KV flash decode (flash_decode.cuh) for head_dim 64 and 128, for the sequences with
// query_len * group_size <= kFlashDecodeMaxRows (all of them unless mixed_batch). num_splits,
// kv_chunk_size and merge_in_cluster come from ChooseDecodeSplits; it needs partial buffers of
// FlashDecodeWorkspaceFloats() floats (none when the splits merge in a cluster).
inline constexpr int32_t kFlashDecodeMaxRows = 16;
bool FlashDecodeSupports(const PagedAttentionParams& params);
// Whether the device (the current one at the first call) has thread-block clusters with
// distributed shared memory (compute capability >= 9.0): merge_in_cluster may be set.
inline constexpr int32_t kFlashDecodeMaxClusterSplits = 16;  // non-portable beyond 8
bool FlashDecodeClusterMergeAvailable();
// The most splits ChooseDecodeSplits merges in a cluster: 8 (the portable cluster size) where
// available, else 0; $LLM_CUDA_DECODE_CLUSTER=0 gives 0, =16 allows 16 (read once per process).
int32_t FlashDecodeClusterSplits();
// Picks num_splits, kv_chunk_size and merge_in_cluster for this batch on a GPU with `num_sms`
// multiprocessors.
void ChooseDecodeSplits(PagedAttentionParams& params, int32_t num_sms);
size_t FlashDecodeWorkspaceFloats(const PagedAttentionParams& params);
absl::Status LaunchFlashDecode(const PagedAttentionParams& params, cudaStream_t stream);

// The generic kernel (attention_generic.cu): any even head_dim up to 256, no tensor cores, one
// thread block per (token, query head). The fallback for head dims the flash kernels lack.
inline constexpr int32_t kGenericAttentionMaxHeadDim = 256;
absl::Status LaunchGenericAttention(const PagedAttentionParams& params, cudaStream_t stream);

// Chooses the kernels for the batch (attention_dispatch.cc): flash decode when every sequence has
// few query rows, both flash kernels (mixed_batch) when some have more, the generic kernel for
// head dims without a flash instantiation.
enum class AttentionKernel { kFlashDecode, kFlashPrefill, kMixed, kGeneric };
AttentionKernel ChooseAttentionKernel(const PagedAttentionParams& params);

}  // namespace llm::cuda
