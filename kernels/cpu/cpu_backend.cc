// CpuBackend: memory is 64-byte aligned host memory; each op checks its arguments and forwards to
// the free function of its family (kernels/cpu/<op>.h), which is where the math lives.
#include "kernels/cpu/cpu_backend.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/row_ops.h"
#include "kernels/cpu/sampling.h"
#include "kernels/cpu/silu_mul.h"
#include "kernels/cpu/thread_pool.h"

namespace llm {
namespace {

constexpr size_t kAlignment = 64;

absl::Status CheckAttentionShape(const AttentionShape& shape, const char* op) {
  if (shape.num_q_heads <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0 ||
      shape.head_dim % 2 != 0 || shape.num_q_heads % shape.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        op,
        ": attention shape needs positive heads, an even head_dim and num_q_heads divisible by "
        "num_kv_heads; got num_q_heads=",
        shape.num_q_heads, " num_kv_heads=", shape.num_kv_heads, " head_dim=", shape.head_dim));
  }
  return absl::OkStatus();
}

absl::Status CheckCacheMatches(const AttentionShape& shape, const KvCacheView& cache, int32_t layer,
                               const char* op) {
  if (cache.pool == nullptr || cache.layout.num_kv_heads != shape.num_kv_heads ||
      cache.layout.head_dim != shape.head_dim || layer < 0 || layer >= cache.layout.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": KV cache (num_kv_heads=", cache.layout.num_kv_heads,
        " head_dim=", cache.layout.head_dim, " num_layers=", cache.layout.num_layers,
        ") does not match the attention shape (num_kv_heads=", shape.num_kv_heads, " head_dim=",
        shape.head_dim, ") or layer ", layer, "; allocate the pool with the model's layout"));
  }
  return absl::OkStatus();
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads)
      : pool_(num_threads), allocated_bytes_(std::make_shared<std::atomic<size_t>>(0)) {}

  std::string_view name() const override { return "cpu"; }
  DType compute_dtype() const override { return DType::kF32; }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override {
    // aligned_alloc wants a size that is a multiple of the alignment, and never zero.
    const size_t rounded = ((bytes + kAlignment - 1) / kAlignment) * kAlignment;
    const size_t allocation = rounded == 0 ? kAlignment : rounded;
    void* data = std::aligned_alloc(kAlignment, allocation);
    if (data == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("cpu backend: cannot allocate ", bytes,
                                                       " bytes of host memory; lower the "
                                                       "KV cache size or max_batch_tokens"));
    }
    // Zeroed so that a bug reading unwritten KV slots shows up deterministically.
    std::memset(data, 0, allocation);
    *allocated_bytes_ += allocation;
    std::shared_ptr<std::atomic<size_t>> counter = allocated_bytes_;
    return DeviceBuffer(data, bytes, [counter, allocation](void* p) {
      *counter -= allocation;
      std::free(p);
    });
  }

  absl::Status CopyToDevice(void* device_destination, const void* host_source,
                            size_t bytes) override {
    if (bytes > 0) std::memcpy(device_destination, host_source, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyToHost(void* host_destination, const void* device_source,
                          size_t bytes) override {
    if (bytes > 0) std::memcpy(host_destination, device_source, bytes);
    return absl::OkStatus();
  }

  absl::StatusOr<DeviceBuffer> UploadWeight(const HostTensor& tensor) override {
    const int64_t count = tensor.num_elements();
    if (count < 0 || (count > 0 && tensor.data == nullptr)) {
      return absl::InvalidArgumentError(
          "cpu backend: UploadWeight got a tensor without data; check "
          "the checkpoint view it came from");
    }
    absl::StatusOr<DeviceBuffer> buffer = Allocate(static_cast<size_t>(count) * sizeof(float));
    if (!buffer.ok()) return buffer.status();
    ConvertToFloat(tensor.dtype, tensor.data, static_cast<size_t>(count), buffer->as<float>());
    return buffer;
  }

  absl::Status Synchronize() override { return absl::OkStatus(); }

  BackendMemoryStats memory_stats() const override {
    BackendMemoryStats stats;
    stats.allocated_bytes = allocated_bytes_->load();
    return stats;
  }

  absl::Status Embed(const int32_t* token_ids, int32_t num_tokens, const void* table,
                     int32_t hidden, void* out) override {
    cpu::EmbedRows(pool_, token_ids, num_tokens, static_cast<const float*>(table), hidden,
                   static_cast<float*>(out));
    return absl::OkStatus();
  }

  absl::Status RmsNorm(const void* x, const void* weight, int32_t rows, int32_t hidden, float eps,
                       void* out) override {
    cpu::RmsNorm(pool_, static_cast<const float*>(x), static_cast<const float*>(weight), rows,
                 hidden, eps, static_cast<float*>(out));
    return absl::OkStatus();
  }

  absl::Status AddRmsNorm(void* residual, const void* x, const void* weight, int32_t rows,
                          int32_t hidden, float eps, void* out) override {
    cpu::AddRmsNorm(pool_, static_cast<float*>(residual), static_cast<const float*>(x),
                    static_cast<const float*>(weight), rows, hidden, eps, static_cast<float*>(out));
    return absl::OkStatus();
  }

  absl::Status Add(void* residual, const void* x, int64_t count) override {
    cpu::AddInPlace(pool_, static_cast<float*>(residual), static_cast<const float*>(x), count);
    return absl::OkStatus();
  }

  // Logits are F32 like everything else here, so out_f32 changes nothing.
  absl::Status Matmul(const void* x, const void* w, int32_t m, int32_t n, int32_t k, void* out,
                      bool /*out_f32*/) override {
    cpu::Matmul(static_cast<const float*>(x), static_cast<const float*>(w), m, n, k,
                static_cast<float*>(out));
    return absl::OkStatus();
  }

  absl::Status MatmulAdd(const void* x, const void* w, int32_t m, int32_t n, int32_t k,
                         void* out) override {
    std::vector<float> product(static_cast<size_t>(m) * n);
    cpu::Matmul(static_cast<const float*>(x), static_cast<const float*>(w), m, n, k,
                product.data());
    float* residual = static_cast<float*>(out);
    for (size_t i = 0; i < product.size(); ++i) residual[i] += product[i];
    return absl::OkStatus();
  }

  absl::Status SiluMul(const void* gate_up, int32_t rows, int32_t inter,
                       const RowRmsScale& row_scale, void* out) override {
    if (row_scale.x != nullptr && row_scale.hidden <= 0) {
      return absl::InvalidArgumentError("SiluMul: row_scale.hidden must be positive");
    }
    cpu::SiluMul(pool_, static_cast<const float*>(gate_up), rows, inter, row_scale,
                 static_cast<float*>(out));
    return absl::OkStatus();
  }

  absl::Status RopeAppendKv(void* qkv, const AttentionBatch& batch, const AttentionShape& shape,
                            const RopeParams& rope, const KvCacheView& cache,
                            int32_t layer) override {
    if (absl::Status s = CheckAttentionShape(shape, "RopeAppendKv"); !s.ok()) return s;
    if (absl::Status s = CheckCacheMatches(shape, cache, layer, "RopeAppendKv"); !s.ok()) return s;
    if (rope.inv_freq == nullptr) {
      return absl::InvalidArgumentError(
          "RopeAppendKv: rope.inv_freq is null; upload the model's "
          "inverse frequencies first");
    }
    if (rope.row_scale.x != nullptr && rope.row_scale.hidden <= 0) {
      return absl::InvalidArgumentError("RopeAppendKv: rope.row_scale.hidden must be positive");
    }
    cpu::RopeAppendKv(pool_, static_cast<float*>(qkv), batch, shape, rope, cache, layer);
    return absl::OkStatus();
  }

  absl::Status PagedAttention(const void* qkv, const AttentionBatch& batch,
                              const AttentionShape& shape, const KvCacheView& cache, int32_t layer,
                              void* out) override {
    if (absl::Status s = CheckAttentionShape(shape, "PagedAttention"); !s.ok()) return s;
    if (absl::Status s = CheckCacheMatches(shape, cache, layer, "PagedAttention"); !s.ok())
      return s;
    cpu::PagedAttention(pool_, static_cast<const float*>(qkv), batch, shape, cache, layer,
                        static_cast<float*>(out));
    return absl::OkStatus();
  }

  absl::Status GatherRows(const void* x, const int32_t* rows, int32_t num_rows, int32_t cols,
                          void* out) override {
    cpu::GatherRows(pool_, static_cast<const float*>(x), rows, num_rows, cols,
                    static_cast<float*>(out));
    return absl::OkStatus();
  }

  absl::Status Sample(const float* logits, int32_t rows, int32_t vocab,
                      std::span<const SamplingParams> params,
                      std::span<SampledToken> out) override {
    if (params.size() != static_cast<size_t>(rows) || out.size() != static_cast<size_t>(rows) ||
        vocab <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Sample: need one SamplingParams and one SampledToken per row and a positive vocab; got ",
          rows, " rows, ", params.size(), " params, ", out.size(), " outputs, vocab ", vocab));
    }
    pool_.ParallelFor(rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        out[r] = cpu::SampleFromLogits(logits + r * static_cast<int64_t>(vocab), vocab, params[r]);
      }
    });
    return absl::OkStatus();
  }

 private:
  cpu::ThreadPool pool_;
  // Shared with the release callbacks so a buffer outliving the backend does not touch freed
  // memory.
  std::shared_ptr<std::atomic<size_t>> allocated_bytes_;
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(int num_threads) {
  return std::make_unique<CpuBackend>(num_threads);
}

}  // namespace llm
