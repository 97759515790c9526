// Host side of the attention kernels: parameter checks, the per-head_dim dispatch switches, the
// split-KV heuristic of flash decode, and the choice between decode, prefill and generic kernels.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention_params.h"
#include "kernels/cuda/device_info.h"
#include "kernels/cuda/flash_prefill_wgmma.h"

namespace llm::cuda {

absl::Status LaunchFlashPrefillHeadDim64(const PagedAttentionParams& params, cudaStream_t stream);
absl::Status LaunchFlashPrefillHeadDim128(const PagedAttentionParams& params, cudaStream_t stream);
absl::Status LaunchFlashDecodeHeadDim64(const PagedAttentionParams& params, cudaStream_t stream);
absl::Status LaunchFlashDecodeHeadDim128(const PagedAttentionParams& params, cudaStream_t stream);
absl::Status LaunchMergeSplits(const PagedAttentionParams& params, cudaStream_t stream);

namespace {

// Split-KV cost model (decode), in units of one block streaming one K/V position. The blocks of a
// launch are equal-sized and spread evenly over the SMs; blocks that share an SM stream one after
// the other in effect (B8 C4k head_dim 128: 2 splits of 2048, one block per SM, ran as fast as 4
// of 1024, two per SM), so the busiest SM costs ceil(blocks / SMs) * chunk. Each wave of resident
// blocks pays a fixed cost (Q load, pipeline fill, warp merge) worth ~kDecodeBlockOverhead
// positions, and a split launch the merge of its partials, ~kDecodeMergeOverhead. Against forced
// split counts on an H100 (docs/perf/2026-11-24-h100-session3/, the sweeps of calls 1 and 2): the
// best or within 1.5% of it at B1 C32k / C4k and B8 C4k (head_dim 128) and at B1 / B32 / B64 C512
// (head_dim 64); at B16 C16k it now runs unsplit, 2-3.5% behind 2 or 8 splits. The previous model
// (two blocks per SM for free, the merge folded into the block cost) chose 2 splits at B32 C512
// head_dim 64 (13-15% slower than 1, the decode step's shape) and 32 at B1 C4k (5-6% slower than
// 16).
constexpr int64_t kDecodeBlockOverhead = 256;      // positions
constexpr int64_t kDecodeMergeOverhead = 128;      // positions
constexpr int64_t kDecodeResidentBlocksPerSm = 2;  // ~100 KB of shared memory per block
constexpr int64_t kDecodeMaxSplits = 256;
constexpr int64_t kDecodeChunkAlign = 64;  // 4 warps x 16-position tiles

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

absl::Status ValidateAttentionParams(const PagedAttentionParams& p) {
  if (p.num_seqs < 0 || p.num_tokens < 0)
    return absl::InvalidArgumentError("attention: negative batch size");
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.q == nullptr || p.out == nullptr || p.k_cache == nullptr || p.v_cache == nullptr ||
      p.positions == nullptr || p.query_start == nullptr || p.kv_lens == nullptr ||
      p.block_tables == nullptr) {
    return absl::InvalidArgumentError("attention: a required device array is null");
  }
  if (p.num_q_heads <= 0 || p.num_kv_heads <= 0 || p.num_q_heads % p.num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: num_q_heads (", p.num_q_heads,
                     ") must be a positive multiple of num_kv_heads (", p.num_kv_heads, ")"));
  }
  if (p.head_dim <= 0 || p.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: head_dim ", p.head_dim, " must be even"));
  }
  if (p.layout.head_dim != p.head_dim || p.layout.num_kv_heads != p.num_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention: KV layout (", p.layout.num_kv_heads, " kv heads x ", p.layout.head_dim,
        ") does not match the attention shape (", p.num_kv_heads, " x ", p.head_dim, ")"));
  }
  if (p.layout.block_size <= 0 || p.block_table_stride <= 0) {
    return absl::InvalidArgumentError(
        "attention: block_size and block_table_stride must be positive");
  }
  if (p.max_query_len <= 0 || p.max_kv_len <= 0) {
    return absl::InvalidArgumentError("attention: max_query_len and max_kv_len must be positive");
  }
  if (p.min_query_len < 0 || p.min_query_len > p.max_query_len) {
    return absl::InvalidArgumentError(
        "attention: min_query_len must be 0 (unknown) or between 1 and max_query_len");
  }
  if (p.q_row_stride < static_cast<int64_t>(p.num_q_heads) * p.head_dim ||
      p.out_row_stride < static_cast<int64_t>(p.num_q_heads) * p.head_dim) {
    return absl::InvalidArgumentError("attention: row strides smaller than num_q_heads * head_dim");
  }
  return absl::OkStatus();
}

bool FlashPrefillSupports(int32_t head_dim) { return head_dim == 64 || head_dim == 128; }

namespace {

std::atomic<FlashPrefillImplementation> forced_prefill_implementation{
    FlashPrefillImplementation::kDefault};

// The default: wgmma on compute capability 9.0 unless $LLM_FLASH_PREFILL_WGMMA is "0"; the device
// (the current one at the first call) and the variable are read once per process.
FlashPrefillImplementation DefaultFlashPrefillImplementation() {
  static const FlashPrefillImplementation implementation = [] {
    const char* variable = std::getenv("LLM_FLASH_PREFILL_WGMMA");
    if (variable != nullptr && std::strcmp(variable, "0") == 0)
      return FlashPrefillImplementation::kMmaSync;
    return FlashPrefillWgmmaAvailable() ? FlashPrefillImplementation::kWgmma
                                        : FlashPrefillImplementation::kMmaSync;
  }();
  return implementation;
}

}  // namespace

bool FlashPrefillWgmmaAvailable() {
  const DeviceInfo& device = CurrentDeviceInfo();
  return device.major == 9 && device.minor == 0;
}

void SetFlashPrefillImplementation(FlashPrefillImplementation implementation) {
  forced_prefill_implementation.store(implementation);
}

FlashPrefillImplementation ActiveFlashPrefillImplementation() {
  const FlashPrefillImplementation forced = forced_prefill_implementation.load();
  return forced == FlashPrefillImplementation::kDefault ? DefaultFlashPrefillImplementation()
                                                        : forced;
}

const char* FlashPrefillImplementationName(FlashPrefillImplementation implementation) {
  switch (implementation) {
    case FlashPrefillImplementation::kDefault:
      return "default";
    case FlashPrefillImplementation::kMmaSync:
      return "mma.sync";
    case FlashPrefillImplementation::kWgmma:
      return "wgmma";
  }
  return "?";
}

absl::Status LaunchFlashPrefill(const PagedAttentionParams& params, cudaStream_t stream) {
  if (auto status = ValidateAttentionParams(params); !status.ok()) return status;
  if (params.q_row_stride % 8 != 0 || params.out_row_stride % 2 != 0) {
    return absl::InvalidArgumentError("flash prefill: q rows must be 16-byte aligned");
  }
  if (ActiveFlashPrefillImplementation() == FlashPrefillImplementation::kWgmma) {
    if (!FlashPrefillWgmmaAvailable()) {
      return absl::FailedPreconditionError(
          "flash prefill: the wgmma kernel was forced on a device that is not compute capability "
          "9.0");
    }
    switch (params.head_dim) {
      case 64:
        return LaunchFlashPrefillWgmmaHeadDim64(params, stream);
      case 128:
        return LaunchFlashPrefillWgmmaHeadDim128(params, stream);
      default:
        break;  // the mma.sync switch below answers for other head dims
    }
  }
  switch (params.head_dim) {
    case 64:
      return LaunchFlashPrefillHeadDim64(params, stream);
    case 128:
      return LaunchFlashPrefillHeadDim128(params, stream);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("flash prefill: no instantiation for head_dim ", params.head_dim));
  }
}

bool FlashDecodeSupports(const PagedAttentionParams& params) {
  return FlashPrefillSupports(params.head_dim) && params.num_kv_heads > 0 &&
         static_cast<int64_t>(params.max_query_len) * (params.num_q_heads / params.num_kv_heads) <=
             kFlashDecodeMaxRows;
}

bool FlashDecodeClusterMergeAvailable() { return CurrentDeviceInfo().major >= 9; }

int32_t FlashDecodeClusterSplits() {
  static const int32_t splits = [] {
    if (!FlashDecodeClusterMergeAvailable()) return 0;
    const char* variable = std::getenv("LLM_CUDA_DECODE_CLUSTER");
    if (variable != nullptr && std::strcmp(variable, "0") == 0) return 0;
    if (variable != nullptr && std::strcmp(variable, "16") == 0) return 16;
    return 8;
  }();
  return splits;
}

void ChooseDecodeSplits(PagedAttentionParams& params, int32_t num_sms) {
  const int64_t blocks_per_split =
      std::max<int64_t>(1, static_cast<int64_t>(params.num_seqs) * params.num_kv_heads);
  const int64_t sms = std::max<int64_t>(1, num_sms);
  const int64_t kv_len = std::max<int64_t>(1, params.max_kv_len);
  int64_t best_chunk = CeilDiv(kv_len, kDecodeChunkAlign) * kDecodeChunkAlign;
  int64_t best_cost = INT64_MAX;
  const int64_t max_splits = std::min(kDecodeMaxSplits, CeilDiv(kv_len, kDecodeChunkAlign));
  for (int64_t wanted = 1; wanted <= max_splits; ++wanted) {
    const int64_t chunk = CeilDiv(CeilDiv(kv_len, wanted), kDecodeChunkAlign) * kDecodeChunkAlign;
    const int64_t splits = CeilDiv(kv_len, chunk);
    const int64_t blocks = splits * blocks_per_split;
    const int64_t cost = CeilDiv(blocks, sms) * chunk +
                         CeilDiv(blocks, sms * kDecodeResidentBlocksPerSm) * kDecodeBlockOverhead +
                         (splits > 1 ? kDecodeMergeOverhead : 0);
    if (cost < best_cost) {  // ties keep fewer splits: less merging
      best_cost = cost;
      best_chunk = chunk;
    }
  }
  params.kv_chunk_size = static_cast<int32_t>(best_chunk);
  params.num_splits = static_cast<int32_t>(CeilDiv(kv_len, best_chunk));
  // The cluster merge only while every block has an SM to itself: clusters must be placed whole
  // inside one GPC, and in fuller grids they waited for room (B16 C16k, 3 splits of 5.5k: 42.3 us
  // in clusters against 37.2 with the merge kernel; B8 C4k, 6 splits: 69.2 against 58.2).
  params.merge_in_cluster = params.num_splits > 1 &&
                            params.num_splits <= FlashDecodeClusterSplits() &&
                            params.num_splits * blocks_per_split <= sms;
}

size_t FlashDecodeWorkspaceFloats(const PagedAttentionParams& params) {
  if (params.num_splits <= 1 || params.merge_in_cluster) return 0;
  return static_cast<size_t>(params.num_tokens) * params.num_q_heads * params.num_splits *
         (params.head_dim + 1);
}

absl::Status LaunchFlashDecode(const PagedAttentionParams& params, cudaStream_t stream) {
  if (auto status = ValidateAttentionParams(params); !status.ok()) return status;
  if (!FlashPrefillSupports(params.head_dim) ||
      (!params.mixed_batch && !FlashDecodeSupports(params))) {
    return absl::InvalidArgumentError(
        "flash decode: batch has too many query rows per group (and is "
        "not marked mixed_batch) or an unsupported head_dim");
  }
  if (params.num_splits <= 0 || params.kv_chunk_size <= 0 ||
      static_cast<int64_t>(params.num_splits) * params.kv_chunk_size < params.max_kv_len) {
    return absl::InvalidArgumentError(
        "flash decode: num_splits * kv_chunk_size must cover max_kv_len");
  }
  if (params.merge_in_cluster && (!FlashDecodeClusterMergeAvailable() || params.num_splits < 2 ||
                                  params.num_splits > kFlashDecodeMaxClusterSplits)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flash decode: merge_in_cluster needs 2 to ", kFlashDecodeMaxClusterSplits,
        " splits and a compute capability 9.0 device; got ", params.num_splits, " splits"));
  }
  if (params.rope_inv_freq != nullptr &&
      (params.mixed_batch || params.max_query_len != 1 || params.slot_mapping == nullptr ||
       params.head_dim % 64 != 0 ||
       (params.rope_scale_rows_by != nullptr && params.rope_scale_hidden <= 0))) {
    return absl::InvalidArgumentError(
        "flash decode: folded RoPE needs one query token per sequence, slot_mapping, head_dim 64 "
        "or 128 and a positive rope_scale_hidden");
  }
  const bool merge_kernel = params.num_splits > 1 && !params.merge_in_cluster;
  if (merge_kernel && (params.partial_out == nullptr || params.partial_lse == nullptr)) {
    return absl::InvalidArgumentError(
        "flash decode: split-KV beyond the cluster merge needs partial_out and partial_lse");
  }
  absl::Status status;
  switch (params.head_dim) {
    case 64:
      status = LaunchFlashDecodeHeadDim64(params, stream);
      break;
    case 128:
      status = LaunchFlashDecodeHeadDim128(params, stream);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("flash decode: no instantiation for head_dim ", params.head_dim));
  }
  if (!status.ok() || !merge_kernel) return status;
  return LaunchMergeSplits(params, stream);
}

AttentionKernel ChooseAttentionKernel(const PagedAttentionParams& params) {
  if (!FlashPrefillSupports(params.head_dim)) return AttentionKernel::kGeneric;
  if (FlashDecodeSupports(params)) return AttentionKernel::kFlashDecode;
  // Some sequence has more rows than flash decode takes. When every sequence does (a prefill
  // step: min_query_len known), flash prefill alone: a mixed launch would still run flash
  // decode's grid and its merge kernel over every token, only to skip them (0.9 ms of a
  // 2048-token prefill at TinyLlama's shape on an H100, eleventh session). Otherwise the short
  // ones may be long-context decodes that need split-KV, which only flash decode gives.
  const int64_t group = params.num_q_heads / std::max(1, params.num_kv_heads);
  if (params.min_query_len > 0 && params.min_query_len * group > kFlashDecodeMaxRows) {
    return AttentionKernel::kFlashPrefill;
  }
  return AttentionKernel::kMixed;
}

}  // namespace llm::cuda
