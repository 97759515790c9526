// llm-bench-kernels: timings of the CUDA backend's attention kernels on the device it runs on.
//   prefill  flash prefill over a paged cache, causal, TFLOP/s = 4 * B * Hq * D * S(S+1)/2 / time;
//            rows "prefill" run what LaunchFlashPrefill picks by default (note: the kernel), rows
//            "prefill_mma_sync" / "prefill_wgmma" force each kernel (the latter on compute
//            capability 9.0 only), on the same inputs
//   decode   split-KV flash decode (+ merge), bandwidth = K+V bytes read / time
//   argmax   greedy argmax + log-prob over F32 logit rows (vocab 32000), one launch
//   copy     cudaMemcpy device-to-device of 1 GiB, bandwidth = bytes read + written / time
//   decode_step  (when the transformer is built) one Forward() decode step of a
//   TinyLlama-1.1B-shaped
//            model with random weights, wall time
// Each timing: warm-up, then the median of many runs timed with CUDA events; inputs are random
// (never zeros) and, where they would fit in L2, rotated among several copies so the runs read
// DRAM. Prints a table; --json PATH writes the rows (bench/compare.py puts them next to torch
// SDPA's). Anchor: bench/sdpa_anchor.py times torch scaled_dot_product_attention on the same
// shapes.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_check.h"
#include "bench/bench_common.h"
#include "bench/device_timing.h"
#include "kernels/cuda/attention_params.h"
#include "kernels/cuda/flash_decode.cuh"
#include "kernels/cuda/flash_prefill.cuh"
#include "kernels/cuda/flash_prefill_wgmma.h"
#include "kernels/cuda/small_ops.h"

namespace llm::bench {
namespace {

#define BENCH_STATUS(expression)                                                        \
  do {                                                                                  \
    const absl::Status status_ = (expression);                                          \
    if (!status_.ok()) {                                                                \
      std::fprintf(stderr, "%s failed: %s\n", #expression, status_.ToString().c_str()); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

__global__ void FillRandomBf16(__nv_bfloat16* data, size_t count, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    data[i] = __float2bfloat16((static_cast<float>(x & 0xffffff) / 16777216.f * 2.f - 1.f) * scale);
  }
}

void FillRandom(__nv_bfloat16* data, size_t count, uint32_t seed, float scale = 1.f) {
  FillRandomBf16<<<1024, 256>>>(data, count, seed, scale);
  BENCH_CHECK(cudaGetLastError());
}

template <typename T>
T* Upload(const std::vector<T>& host) {
  T* p = DeviceAlloc<T>(host.size());
  BENCH_CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

// A paged batch: `copies` independent KV sets (disjoint shuffled blocks), B sequences of kv_len
// tokens each, the last `query_len` of them queried.
struct PagedBatch {
  cuda::PagedAttentionParams params;
  std::vector<int32_t*> block_tables;  // one per copy
  __nv_bfloat16* pool = nullptr;
  __nv_bfloat16* qkv = nullptr;
  __nv_bfloat16* out = nullptr;
  float* partial = nullptr;
  void Free() {
    for (int32_t* t : block_tables) cudaFree(t);
    cudaFree(pool);
    cudaFree(qkv);
    cudaFree(out);
    cudaFree(const_cast<int32_t*>(params.positions));
    cudaFree(const_cast<int32_t*>(params.query_start));
    cudaFree(const_cast<int32_t*>(params.kv_lens));
    if (partial != nullptr) cudaFree(partial);
  }
};

PagedBatch MakeBatch(int batch, int kv_len, int query_len, int hq, int hkv, int head_dim,
                     int block_size, int copies, uint32_t seed) {
  PagedBatch b;
  const int blocks_per_seq = (kv_len + block_size - 1) / block_size;
  const int total_blocks = blocks_per_seq * batch * copies;
  kvcache::KvLayout layout{1, total_blocks, block_size, hkv, head_dim};
  b.pool = DeviceAlloc<__nv_bfloat16>(layout.total_elements());
  FillRandom(b.pool, layout.total_elements(), seed);
  std::mt19937 generator(seed);
  std::vector<int32_t> blocks(total_blocks);
  std::iota(blocks.begin(), blocks.end(), 0);
  std::shuffle(blocks.begin(), blocks.end(), generator);
  for (int c = 0; c < copies; ++c) {
    std::vector<int32_t> table(
        blocks.begin() + static_cast<size_t>(c) * batch * blocks_per_seq,
        blocks.begin() + static_cast<size_t>(c + 1) * batch * blocks_per_seq);
    b.block_tables.push_back(Upload(table));
  }
  std::vector<int32_t> positions, query_start{0}, kv_lens;
  for (int s = 0; s < batch; ++s) {
    for (int i = 0; i < query_len; ++i) positions.push_back(kv_len - query_len + i);
    query_start.push_back(static_cast<int32_t>(positions.size()));
    kv_lens.push_back(kv_len);
  }
  const int tokens = static_cast<int>(positions.size());
  const int64_t row = static_cast<int64_t>(hq + 2 * hkv) * head_dim;
  b.qkv = DeviceAlloc<__nv_bfloat16>(tokens * row);
  FillRandom(b.qkv, tokens * row, seed + 1, 2.f);
  b.out = DeviceAlloc<__nv_bfloat16>(static_cast<size_t>(tokens) * hq * head_dim);
  cuda::PagedAttentionParams& p = b.params;
  p.q = b.qkv;
  p.q_row_stride = row;
  p.out = b.out;
  p.out_row_stride = static_cast<int64_t>(hq) * head_dim;
  p.k_cache = b.pool + layout.layer_offset(0, kvcache::KvKind::kKey);
  p.v_cache = b.pool + layout.layer_offset(0, kvcache::KvKind::kValue);
  p.layout = layout;
  p.positions = Upload(positions);
  p.query_start = Upload(query_start);
  p.kv_lens = Upload(kv_lens);
  p.block_tables = b.block_tables[0];
  p.block_table_stride = blocks_per_seq;
  p.num_seqs = batch;
  p.num_tokens = tokens;
  p.max_query_len = query_len;
  p.max_kv_len = kv_len;
  p.num_q_heads = hq;
  p.num_kv_heads = hkv;
  p.head_dim = head_dim;
  p.softmax_scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  BENCH_CHECK(cudaDeviceSynchronize());
  return b;
}

std::string Shape(const char* fmt, int a, int b, int c, int d, int e) {
  char buffer[128];
  std::snprintf(buffer, sizeof(buffer), fmt, a, b, c, d, e);
  return buffer;
}

void BenchPrefill(cudaStream_t stream, std::vector<Result>& results, bool quick) {
  struct Case {
    int hq, hkv, d, s, b;
  };
  std::vector<Case> cases;
  for (auto [hq, hkv, d] : {std::tuple{32, 8, 128}, std::tuple{32, 4, 64}}) {
    for (int s : {512, 1024, 2048, 4096, 8192, 16384}) {
      cases.push_back({hq, hkv, d, s, std::max(1, 16384 / s)});
      if (!quick && s >= 2048 && s <= 8192) cases.push_back({hq, hkv, d, s, 1});
    }
  }
  using cuda::FlashPrefillImplementation;
  std::vector<std::pair<std::string, FlashPrefillImplementation>> kernels = {
      {"prefill", FlashPrefillImplementation::kDefault},
      {"prefill_mma_sync", FlashPrefillImplementation::kMmaSync}};
  if (cuda::FlashPrefillWgmmaAvailable())
    kernels.push_back({"prefill_wgmma", FlashPrefillImplementation::kWgmma});
  std::printf("\n%-18s %-30s %10s %10s  %s\n", "prefill (causal,", "paged bs=16)", "ms", "TFLOP/s",
              "kernel");
  for (const Case& c : cases) {
    PagedBatch batch = MakeBatch(c.b, c.s, c.s, c.hq, c.hkv, c.d, 16, 1, 100 + c.s);
    const double flops = 4.0 * c.b * c.hq * c.d * (static_cast<double>(c.s) * (c.s + 1) / 2);
    for (const auto& [section, implementation] : kernels) {
      cuda::SetFlashPrefillImplementation(implementation);
      const double ms = MedianMs(stream, 3, quick ? 10 : 30, [&](int) {
        BENCH_STATUS(cuda::LaunchFlashPrefill(batch.params, stream));
      });
      const char* kernel =
          cuda::FlashPrefillImplementationName(cuda::ActiveFlashPrefillImplementation());
      Result r{section, Shape("B%d S%d Hq%d Hkv%d D%d", c.b, c.s, c.hq, c.hkv, c.d),
               ms,      flops / (ms * 1e-3) / 1e12,
               0,       std::string("kernel=") + kernel};
      std::printf("%-18s %-30s %10.3f %10.1f  %s\n", section.c_str(), r.shape.c_str(), ms, r.tflops,
                  kernel);
      results.push_back(r);
    }
    cuda::SetFlashPrefillImplementation(FlashPrefillImplementation::kDefault);
    batch.Free();
  }
}

void BenchDecode(cudaStream_t stream, int num_sms, std::vector<Result>& results, bool quick) {
  struct DecodeShape {
    int b, c, hq, hkv, d;
  };
  std::vector<DecodeShape> shapes = {{1, 4096, 32, 8, 128},  {1, 32768, 32, 8, 128},
                                     {8, 4096, 32, 8, 128},  {32, 4096, 32, 8, 128},
                                     {64, 2048, 32, 8, 128}, {16, 16384, 32, 8, 128}};
  // $LLM_BENCH_DECODE_MODEL_SHAPES="B:C,B:C,...": also TinyLlama's attention (Hq32 Hkv4 D64) at
  // these batches and contexts (the decode step's fixed cost per launch against its bytes);
  // "=B:C,..." only these.
  if (const char* env = std::getenv("LLM_BENCH_DECODE_MODEL_SHAPES"); env != nullptr) {
    // A leading '=' runs these shapes alone (for a profiler).
    if (*env == '=') {
      shapes.clear();
      ++env;
    }
    for (const char* p = env; *p != '\0';) {
      const int b = std::atoi(p);
      while (*p != '\0' && *p != ':') ++p;
      if (*p == ':') ++p;
      const int c = std::atoi(p);
      while (*p != '\0' && *p != ',') ++p;
      if (*p == ',') ++p;
      if (b > 0 && c > 0) shapes.push_back({b, c, 32, 4, 64});
    }
  }
  std::printf("\n%-34s %10s %10s %8s  %s\n", "decode (bs=16)", "ms", "GB/s", "splits", "merge");
  for (const DecodeShape& shape : shapes) {
    const int b = shape.b, c = shape.c, hq = shape.hq, hkv = shape.hkv, d = shape.d;
    const double kv_bytes = 2.0 * b * c * hkv * d * 2;
    // Enough copies that one pass over all of them (>= 256 MB) cannot stay in L2.
    const int copies = std::clamp(static_cast<int>(256e6 / kv_bytes) + 1, 1, 64);
    PagedBatch batch = MakeBatch(b, c, 1, hq, hkv, d, 16, copies, 200 + b);
    cuda::ChooseDecodeSplits(batch.params, num_sms);
    const size_t floats = cuda::FlashDecodeWorkspaceFloats(batch.params);
    if (floats > 0) {
      batch.partial = DeviceAlloc<float>(floats);
      batch.params.partial_out = batch.partial;
      batch.params.partial_lse = batch.partial + static_cast<size_t>(batch.params.num_tokens) * hq *
                                                     batch.params.num_splits * d;
    }
    const double ms = MedianMs(stream, 5, quick ? 20 : 100, [&](int i) {
      cuda::PagedAttentionParams p = batch.params;
      p.block_tables = batch.block_tables[i % copies];
      BENCH_STATUS(cuda::LaunchFlashDecode(p, stream));
    });
    const char* merge = batch.params.num_splits == 1    ? "none"
                        : batch.params.merge_in_cluster ? "cluster"
                                                        : "kernel";
    Result r{"decode",
             Shape("B%d C%d Hq%d Hkv%d D%d", b, c, hq, hkv, d),
             ms,
             0,
             kv_bytes / (ms * 1e-3) / 1e9,
             "splits=" + std::to_string(batch.params.num_splits) + " merge=" + merge};
    std::printf("%-34s %10.4f %10.1f %8d  %s\n", r.shape.c_str(), ms, r.gbytes_per_s,
                batch.params.num_splits, merge);
    results.push_back(r);
    batch.Free();
  }
  // $LLM_BENCH_DECODE_SWEEP=1: forced split counts, each merged by MergeSplitsKernel ("kernel")
  // and, up to 16 splits, inside a cluster ("cluster"), on the few-sequence head_dim 128 shapes and
  // the TinyLlama decode-step shapes (Hq32 Hkv4 D64, context 512), to check ChooseDecodeSplits.
  const char* sweep = std::getenv("LLM_BENCH_DECODE_SWEEP");
  if (sweep == nullptr || std::strcmp(sweep, "1") != 0) return;
  const DecodeShape sweep_shapes[] = {
      {1, 32768, 32, 8, 128}, {8, 4096, 32, 8, 128}, {1, 4096, 32, 8, 128}, {16, 16384, 32, 8, 128},
      {1, 512, 32, 4, 64},    {32, 512, 32, 4, 64},  {64, 512, 32, 4, 64}};
  std::printf("\n%-34s %10s %10s %8s  %s\n", "decode split sweep", "ms", "GB/s", "splits",
              "merge (chosen: *)");
  for (const DecodeShape& shape : sweep_shapes) {
    const int b = shape.b, c = shape.c;
    const double kv_bytes = 2.0 * b * c * shape.hkv * shape.d * 2;
    const int copies = std::clamp(static_cast<int>(256e6 / kv_bytes) + 1, 1, 64);
    PagedBatch batch =
        MakeBatch(b, c, 1, shape.hq, shape.hkv, shape.d, 16, copies, 300 + b + shape.d);
    cuda::PagedAttentionParams chosen = batch.params;
    cuda::ChooseDecodeSplits(chosen, num_sms);
    std::vector<int> chunks;
    for (int forced : {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64}) {
      const int chunk = ((c + forced - 1) / forced + 63) / 64 * 64;
      if (std::find(chunks.begin(), chunks.end(), chunk) == chunks.end()) chunks.push_back(chunk);
    }
    const size_t max_splits = 64;
    batch.partial =
        DeviceAlloc<float>(static_cast<size_t>(b) * shape.hq * max_splits * (shape.d + 1));
    for (int chunk : chunks) {
      cuda::PagedAttentionParams base = batch.params;
      base.kv_chunk_size = chunk;
      base.num_splits = (c + chunk - 1) / chunk;
      if (base.num_splits * b * shape.hkv > 8 * num_sms) continue;
      base.partial_out = batch.partial;
      base.partial_lse =
          batch.partial + static_cast<size_t>(b) * shape.hq * base.num_splits * shape.d;
      for (const bool in_cluster : {false, true}) {
        if (in_cluster &&
            (base.num_splits == 1 || base.num_splits > cuda::kFlashDecodeMaxClusterSplits ||
             !cuda::FlashDecodeClusterMergeAvailable()))
          continue;
        base.merge_in_cluster = in_cluster;
        const double ms = MedianMs(stream, 5, quick ? 20 : 100, [&](int i) {
          cuda::PagedAttentionParams p = base;
          p.block_tables = batch.block_tables[i % copies];
          BENCH_STATUS(cuda::LaunchFlashDecode(p, stream));
        });
        const char* merge = base.num_splits == 1 ? "none" : in_cluster ? "cluster" : "kernel";
        const bool is_chosen =
            chunk == chosen.kv_chunk_size && in_cluster == chosen.merge_in_cluster;
        const std::string name = Shape("B%d C%d D%d chunk%d", b, c, shape.d, chunk, 0);
        std::printf("%-34s %10.4f %10.1f %8d  %s%s\n", name.c_str(), ms,
                    kv_bytes / (ms * 1e-3) / 1e9, base.num_splits, merge, is_chosen ? " *" : "");
      }
    }
    batch.Free();
  }
}

// Greedy argmax + log-prob (LaunchArgmaxLogprob) over `rows` F32 rows of 32000 logits, the rows
// rotated among copies so each launch reads DRAM.
void BenchArgmax(cudaStream_t stream, std::vector<Result>& results, bool quick) {
  const int vocab = 32000;
  std::printf("\n%-34s %10s %10s\n", "argmax (vocab 32000, f32)", "us", "GB/s");
  for (int rows : {1, 8, 64, 256}) {
    const size_t floats = static_cast<size_t>(rows) * vocab;
    const int copies = std::clamp(static_cast<int>(256e6 / (floats * 4.0)) + 1, 1, 64);
    std::vector<float> host(floats * copies);
    std::mt19937 generator(17 + rows);
    std::normal_distribution<float> normal(0.f, 3.f);
    for (float& v : host) v = normal(generator);
    float* logits = Upload(host);
    int32_t* tokens = DeviceAlloc<int32_t>(rows);
    float* logprobs = DeviceAlloc<float>(rows);
    const double ms = MedianMs(stream, 5, quick ? 50 : 200, [&](int i) {
      BENCH_STATUS(cuda::LaunchArgmaxLogprob(logits + (i % copies) * floats, rows, vocab, tokens,
                                             logprobs, stream));
    });
    Result r{"argmax",
             Shape("rows %d vocab %d", rows, vocab, 0, 0, 0),
             ms,
             0,
             floats * 4.0 / (ms * 1e-3) / 1e9,
             "one launch, event-timed"};
    std::printf("%-34s %10.2f %10.1f\n", r.shape.c_str(), ms * 1e3, r.gbytes_per_s);
    results.push_back(r);
    cudaFree(logits);
    cudaFree(tokens);
    cudaFree(logprobs);
  }
}

#ifdef LLM_BENCH_VARIANTS
// Tile-shape variants of the two flash kernels on a few shapes, to choose the traits that the
// per-head_dim .cu files instantiate (--sections variants).
using LaunchFn = absl::Status (*)(const cuda::PagedAttentionParams&, cudaStream_t);
struct Variant {
  const char* name;
  int head_dim;
  LaunchFn launch;
};

struct DecodeVariant {
  const char* name;
  LaunchFn launch;
  int forced_splits;  // 0: ChooseDecodeSplits; else this many equal chunks (merged by the kernel)
};
struct HeadShape {
  int hq, hkv, d;
};

// Times each decode variant on each (batch, context) shape of `head`: one query token per sequence,
// block size 16, KV copies rotated so that L2 does not serve repeated runs.
template <size_t kCount>
void BenchDecodeVariants(cudaStream_t stream, int num_sms, const DecodeVariant (&variants)[kCount],
                         const std::vector<std::pair<int, int>>& shapes, HeadShape head,
                         uint32_t seed, std::vector<Result>& results) {
  for (const DecodeVariant& v : variants) {
    for (auto [b, c] : shapes) {
      const double kv_bytes = 2.0 * b * c * head.hkv * head.d * 2;
      const int copies = std::clamp(static_cast<int>(256e6 / kv_bytes) + 1, 1, 64);
      PagedBatch batch = MakeBatch(b, c, 1, head.hq, head.hkv, head.d, 16, copies, seed + b);
      cuda::ChooseDecodeSplits(batch.params, num_sms);
      if (v.forced_splits > 0) {
        batch.params.kv_chunk_size = (c + v.forced_splits - 1) / v.forced_splits;
        batch.params.kv_chunk_size = (batch.params.kv_chunk_size + 63) / 64 * 64;
        batch.params.num_splits = (c + batch.params.kv_chunk_size - 1) / batch.params.kv_chunk_size;
        batch.params.merge_in_cluster = false;
      }
      if (batch.params.num_splits > 1 && !batch.params.merge_in_cluster) {
        batch.partial = DeviceAlloc<float>(cuda::FlashDecodeWorkspaceFloats(batch.params));
        batch.params.partial_out = batch.partial;
        batch.params.partial_lse =
            batch.partial + static_cast<size_t>(b) * head.hq * batch.params.num_splits * head.d;
      }
      const double ms = MedianMs(stream, 5, 50, [&](int i) {
        cuda::PagedAttentionParams p = batch.params;
        p.block_tables = batch.block_tables[i % copies];
        BENCH_STATUS(v.launch(p, stream));
        if (p.num_splits > 1 && !p.merge_in_cluster)
          BENCH_STATUS(cuda::LaunchMergeSplits(p, stream));
      });
      Result r{"variant",
               std::string(v.name) + " " +
                   Shape("B%d C%d Hq%d Hkv%d D%d", b, c, head.hq, head.hkv, head.d),
               ms,
               0,
               kv_bytes / (ms * 1e-3) / 1e9,
               "splits=" + std::to_string(batch.params.num_splits)};
      std::printf("%-22s %-30s %10.4f %10.1f  splits %d%s\n", v.name,
                  r.shape.c_str() + std::strlen(v.name) + 1, ms, r.gbytes_per_s,
                  batch.params.num_splits, batch.params.merge_in_cluster ? " (cluster)" : "");
      results.push_back(r);
      batch.Free();
    }
  }
}

// The model-shape decode kernel with its phase trace (kPhaseTrace, flash_decode.cuh): one launch
// after warm-up; per phase the mean and latest time over blocks from the first block's entry.
struct TracedDecodeTraits : cuda::FlashDecodeTraits<64, 4, 16, 3> {
  static constexpr bool kPhaseTrace = true;
};

// splits 0: ChooseDecodeSplits' choice; else that many chunks, merged in a cluster (1: none).
struct TraceShape {
  int batch, context, splits;
};

void TraceDecodePhases(cudaStream_t stream, int num_sms, const std::vector<TraceShape>& shapes) {
  constexpr int kPhases = cuda::kFlashDecodePhases;
  std::printf(
      "\ndecode phase trace (hd64 w4 n16 s3; us from the first block's entry: mean / last "
      "over blocks; - where the phase does not occur)\n%-16s %7s %15s %15s %15s %15s %15s %15s "
      "%15s "
      "%15s %9s\n",
      "shape", "blocks", "entry", "metadata", "first tile", "loop done", "warps in smem",
      "rows merged", "cluster barrier", "end", "event us");
  for (auto [b, c, forced_splits] : shapes) {
    const double kv_bytes = 2.0 * b * c * 4 * 64 * 2;
    const int copies = std::clamp(static_cast<int>(256e6 / kv_bytes) + 1, 1, 64);
    PagedBatch batch = MakeBatch(b, c, 1, 32, 4, 64, 16, copies, 600 + b);
    cuda::ChooseDecodeSplits(batch.params, num_sms);
    if (forced_splits > 0) {
      batch.params.kv_chunk_size = (c + forced_splits - 1) / forced_splits;
      batch.params.kv_chunk_size = (batch.params.kv_chunk_size + 63) / 64 * 64;
      batch.params.num_splits = (c + batch.params.kv_chunk_size - 1) / batch.params.kv_chunk_size;
      batch.params.merge_in_cluster = batch.params.num_splits > 1;
    }
    if (batch.params.num_splits > 1 && !batch.params.merge_in_cluster) {  // no partial buffers here
      batch.Free();
      continue;
    }
    const int blocks = batch.params.num_splits * 4 * b;
    auto* trace = DeviceAlloc<unsigned long long>(static_cast<size_t>(blocks) * kPhases);
    BENCH_CHECK(cudaMemset(trace, 0, static_cast<size_t>(blocks) * kPhases * 8));
    for (int i = 0; i < 12; ++i) {
      unsigned long long* target = i == 11 ? trace : nullptr;
      BENCH_CHECK(cudaMemcpyToSymbolAsync(cuda::flash_decode_phase_trace, &target, sizeof(target),
                                          0, cudaMemcpyHostToDevice, stream));
      cuda::PagedAttentionParams p = batch.params;
      p.block_tables = batch.block_tables[i % copies];
      BENCH_STATUS(cuda::LaunchFlashDecodeWithTraits<TracedDecodeTraits>(p, stream));
    }
    BENCH_CHECK(cudaStreamSynchronize(stream));  // a non-blocking stream: cudaMemcpy would not wait
    std::vector<unsigned long long> host(static_cast<size_t>(blocks) * kPhases);
    BENCH_CHECK(cudaMemcpy(host.data(), trace, host.size() * 8, cudaMemcpyDeviceToHost));
    unsigned long long origin = ~0ull;
    for (int k = 0; k < blocks; ++k) origin = std::min(origin, host[k * kPhases]);
    char shape[32];
    std::snprintf(shape, sizeof(shape), "B%d C%d s%d", b, c, batch.params.num_splits);
    std::printf("%-16s %7d", shape, blocks);
    for (int phase = 0; phase < kPhases - 1; ++phase) {
      if (host[phase] == 0) {  // never stamped (the trace buffer starts zeroed)
        std::printf(" %7s/%7s", "-", "-");
        continue;
      }
      double sum = 0, last = 0;
      for (int k = 0; k < blocks; ++k) {
        const double t = (host[k * kPhases + phase] - origin) * 1e-3;
        sum += t;
        last = std::max(last, t);
      }
      std::printf(" %7.2f/%7.2f", sum / blocks, last);
    }
    std::vector<int> per_sm(1024, 0);
    int most = 0;
    for (int k = 0; k < blocks; ++k)
      most = std::max(most, ++per_sm[host[k * kPhases + kPhases - 1] % per_sm.size()]);
    // The production kernel (no stamps), event-timed: launch overhead included, for comparing
    // split counts with one another.
    const double ms = MedianMs(stream, 5, 50, [&](int i) {
      cuda::PagedAttentionParams p = batch.params;
      p.block_tables = batch.block_tables[i % copies];
      using ProductionTraits = cuda::FlashDecodeTraits<64, 4, 16, 3>;
      BENCH_STATUS(cuda::LaunchFlashDecodeWithTraits<ProductionTraits>(p, stream));
    });
    std::printf(" %9.2f  (at most %d blocks on one SM)\n", ms * 1e3, most);
    BENCH_CHECK(cudaFree(trace));
    batch.Free();
  }
}

void BenchVariants(cudaStream_t stream, int num_sms, std::vector<Result>& results) {
  using cuda::FlashDecodeTraits;
  // $LLM_BENCH_VARIANT_SETS: which lists to run ("prefill,decode,model"; default all).
  const char* sets_env = std::getenv("LLM_BENCH_VARIANT_SETS");
  const std::string sets =
      sets_env != nullptr && *sets_env != '\0' ? sets_env : "prefill,decode,model";
  auto runs = [&](const char* set) {
    return ("," + sets + ",").find(std::string(",") + set + ",") != std::string::npos;
  };
  using cuda::FlashPrefillTraits;
  // Names: warps, m-tiles per warp, K/V tile positions, L = lazy rescale, bN = at least N blocks
  // per SM (__launch_bounds__).
#define PREFILL_VARIANT(name, ...)                                          \
  {                                                                         \
    name, FlashPrefillTraits<__VA_ARGS__>::kHeadDim,                        \
        cuda::LaunchFlashPrefillWithTraits<FlashPrefillTraits<__VA_ARGS__>> \
  }
  const Variant prefill_variants[] = {
      PREFILL_VARIANT("w8 m1 n64 - b2", 128, 8, 1, 64, false, 2),
      PREFILL_VARIANT("w8 m1 n64 L b2", 128, 8, 1, 64, true, 2),
      PREFILL_VARIANT("w4 m2 n64 - b1", 128, 4, 2, 64, false, 1),
      PREFILL_VARIANT("w4 m2 n64 L b1", 128, 4, 2, 64, true, 1),
      PREFILL_VARIANT("w4 m2 n32 L b1", 128, 4, 2, 32, true, 1),
      PREFILL_VARIANT("w8 m1 n64 - b2", 64, 8, 1, 64, false, 2),
      PREFILL_VARIANT("w8 m1 n64 L b2", 64, 8, 1, 64, true, 2),
      PREFILL_VARIANT("w4 m2 n64 - b1", 64, 4, 2, 64, false, 1),
      PREFILL_VARIANT("w4 m2 n64 L b1", 64, 4, 2, 64, true, 1),
  };
#undef PREFILL_VARIANT
  std::printf("\n%-22s %-30s %10s %10s\n", "variant", "shape", "ms", "TFLOP/s");
  for (const Variant& v : prefill_variants) {
    if (!runs("prefill")) break;
    const int hkv = v.head_dim == 128 ? 8 : 4;
    for (auto [b, s] : {std::pair{8, 2048}, std::pair{1, 4096}, std::pair{2, 8192}}) {
      PagedBatch batch = MakeBatch(b, s, s, 32, hkv, v.head_dim, 16, 1, 300 + s);
      const double ms =
          MedianMs(stream, 3, 20, [&](int) { BENCH_STATUS(v.launch(batch.params, stream)); });
      const double flops = 4.0 * b * 32 * v.head_dim * (static_cast<double>(s) * (s + 1) / 2);
      Result r{
          "variant",
          std::string(v.name) + " " + Shape("B%d S%d Hq%d Hkv%d D%d", b, s, 32, hkv, v.head_dim),
          ms,
          flops / (ms * 1e-3) / 1e12,
          0,
          ""};
      std::printf("%-22s %-30s %10.3f %10.1f\n", v.name, r.shape.c_str() + std::strlen(v.name) + 1,
                  ms, r.tflops);
      results.push_back(r);
      batch.Free();
    }
  }
  using DecodeW4 = FlashDecodeTraits<128, 4, 16, 3>;
  const DecodeVariant decode_variants[] = {
      {"decode w4 n16 s3 auto", cuda::LaunchFlashDecodeWithTraits<DecodeW4>, 0},
      {"decode w4 n16 s3 1sp", cuda::LaunchFlashDecodeWithTraits<DecodeW4>, 1},
      {"decode w4 n16 s3 2sp", cuda::LaunchFlashDecodeWithTraits<DecodeW4>, 2},
      {"decode w4 n16 s3 4sp", cuda::LaunchFlashDecodeWithTraits<DecodeW4>, 4},
      {"decode w4 n16 s3 8sp", cuda::LaunchFlashDecodeWithTraits<DecodeW4>, 8},
      {"decode w4 n16 s3 16sp", cuda::LaunchFlashDecodeWithTraits<DecodeW4>, 16},
      {"decode w4 n16 s3 32sp", cuda::LaunchFlashDecodeWithTraits<DecodeW4>, 32},
      {"decode w4 n16 s3 64sp", cuda::LaunchFlashDecodeWithTraits<DecodeW4>, 64},
      {"decode w8 n16 s2 auto", cuda::LaunchFlashDecodeWithTraits<FlashDecodeTraits<128, 8, 16, 2>>,
       0},
  };
  std::printf("\n%-22s %-30s %10s %10s\n", "variant", "shape", "ms", "GB/s");
  if (runs("decode")) {
    BenchDecodeVariants(stream, num_sms, decode_variants,
                        {{1, 4096}, {1, 32768}, {8, 4096}, {32, 4096}, {64, 2048}, {16, 16384}},
                        {32, 8, 128}, 400, results);
  }

  // head_dim 64 at the 1.1B model's shape (Hq 32, Hkv 4), contexts of the decode-step benchmark;
  // ChooseDecodeSplits as in the engine.
  const DecodeVariant model_variants[] = {
      {"hd64 w4 n16 s3", cuda::LaunchFlashDecodeWithTraits<FlashDecodeTraits<64, 4, 16, 3>>, 0},
      {"hd64 w4 n16 s3 -tw",
       cuda::LaunchFlashDecodeWithTraits<FlashDecodeTraits<64, 4, 16, 3, false>>, 0},
      {"hd64 w4 n16 s4", cuda::LaunchFlashDecodeWithTraits<FlashDecodeTraits<64, 4, 16, 4>>, 0},
      {"hd64 w4 n16 s6", cuda::LaunchFlashDecodeWithTraits<FlashDecodeTraits<64, 4, 16, 6>>, 0},
      {"hd64 w8 n16 s3", cuda::LaunchFlashDecodeWithTraits<FlashDecodeTraits<64, 8, 16, 3>>, 0},
      {"hd64 w8 n16 s4", cuda::LaunchFlashDecodeWithTraits<FlashDecodeTraits<64, 8, 16, 4>>, 0},
      {"hd64 w4 n32 s3", cuda::LaunchFlashDecodeWithTraits<FlashDecodeTraits<64, 4, 32, 3>>, 0},
      {"hd64 w4 n16 s3 2sp", cuda::LaunchFlashDecodeWithTraits<FlashDecodeTraits<64, 4, 16, 3>>, 2},
      {"hd64 w8 n16 s3 2sp", cuda::LaunchFlashDecodeWithTraits<FlashDecodeTraits<64, 8, 16, 3>>, 2},
  };
  if (runs("model")) {
    BenchDecodeVariants(stream, num_sms, model_variants,
                        {{1, 512}, {16, 512}, {32, 512}, {64, 512}, {64, 1024}, {8, 4096}},
                        {32, 4, 64}, 500, results);
  }
  if (runs("trace")) {
    TraceDecodePhases(stream, num_sms,
                      {{64, 16, 0},
                       {64, 512, 0},
                       {32, 512, 0},
                       {1, 512, 0},
                       {1, 512, 1},
                       {1, 512, 2},
                       {1, 512, 4},
                       {1, 512, 16},
                       {8, 512, 0},
                       {8, 512, 2},
                       {8, 512, 4},
                       {16, 512, 0},
                       {16, 512, 2}});
  }
}
#else

void BenchVariants(cudaStream_t, int, std::vector<Result>&) {
  std::printf("\nvariants: not built (configure with -DLLM_BENCH_VARIANTS=ON)\n");
}

#endif  // LLM_BENCH_VARIANTS

void BenchCopy(cudaStream_t stream, std::vector<Result>& results) {
  const size_t bytes = size_t{1} << 30;
  __nv_bfloat16* a = DeviceAlloc<__nv_bfloat16>(bytes / 2);
  __nv_bfloat16* b = DeviceAlloc<__nv_bfloat16>(bytes / 2);
  FillRandom(a, bytes / 2, 7);
  const double ms = MedianMs(stream, 3, 20, [&](int) {
    BENCH_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream));
  });
  Result r{"copy", "D2D 1GiB", ms, 0, 2.0 * bytes / (ms * 1e-3) / 1e9, "bytes read + written"};
  std::printf("\n%-34s %10.3f %10.1f GB/s (read + write)\n", r.shape.c_str(), ms, r.gbytes_per_s);
  results.push_back(r);
  cudaFree(a);
  cudaFree(b);
}

}  // namespace
}  // namespace llm::bench

int main(int argc, char** argv) {
  using namespace llm::bench;
  std::string json_path;
  std::string sections = "copy,prefill,decode,argmax,decode_step";
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc)
      json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--sections") && i + 1 < argc)
      sections = argv[++i];
    else if (!std::strcmp(argv[i], "--quick"))
      quick = true;
    else {
      std::fprintf(stderr,
                   "usage: %s [--json PATH] "
                   "[--sections copy,prefill,decode,argmax,decode_step,variants,boundary,intake] "
                   "[--quick]\n",
                   argv[0]);
      return 2;
    }
  }
  cudaDeviceProp properties{};
  BENCH_CHECK(cudaGetDeviceProperties(&properties, 0));
  std::printf("device: %s (%d SMs, L2 %d MB)\n", properties.name, properties.multiProcessorCount,
              properties.l2CacheSize >> 20);
  cudaStream_t stream;
  BENCH_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<Result> results;
  std::vector<std::string> wanted;
  for (size_t begin = 0; begin <= sections.size();) {
    const size_t end = std::min(sections.find(',', begin), sections.size());
    wanted.push_back(sections.substr(begin, end - begin));
    begin = end + 1;
  }
  auto wants = [&](const char* name) {
    return std::find(wanted.begin(), wanted.end(), name) != wanted.end();
  };
  if (wants("copy")) BenchCopy(stream, results);
  if (wants("prefill")) BenchPrefill(stream, results, quick);
  if (wants("decode")) BenchDecode(stream, properties.multiProcessorCount, results, quick);
  if (wants("argmax")) BenchArgmax(stream, results, quick);
  if (wants("boundary")) BenchKernelBoundary(stream, properties.multiProcessorCount, results);
  if (wants("intake")) BenchSmIntake(stream, properties.multiProcessorCount, results);
  if (wants("variants")) BenchVariants(stream, properties.multiProcessorCount, results);
  if (wants("decode_step")) {
    // $LLM_BENCH_DECODE_CONTEXT: the sequences' context (default 512; at most the model's 2048
    // tokens a step, as each context is prefilled in one chunk).
    const char* context = std::getenv("LLM_BENCH_DECODE_CONTEXT");
    const int context_tokens = context != nullptr && *context != '\0' ? std::atoi(context) : 512;
    std::vector<Result> step = RunDecodeStepBench(context_tokens, {1, 32, 64}, quick ? 5 : 20);
    results.insert(results.end(), step.begin(), step.end());
  }
  if (!json_path.empty()) WriteJson(json_path, properties.name, results);
  return 0;
}
