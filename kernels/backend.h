// The backend-neutral op interface: everything the transformer forward needs from a compute device.
//
// The model (server/model/transformer.cc) is written once against this interface; the CPU backend
// (kernels/cpu) is the fp32 reference and the CUDA backend (kernels/cuda) the fast path. Pointers
// passed to ops point into backend memory (from Allocate/UploadWeight) unless a comment says
// "host". Tensors are row-major and in compute_dtype() unless a comment says otherwise; logits are
// F32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/dtype.h"
#include "kernels/sampling.h"
#include "kvcache/kv_layout.h"

namespace llm {

// Memory owned by a backend (host memory for CPU, device memory for CUDA). Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(void* data, size_t bytes, std::function<void(void*)> release)
      : data_(data), bytes_(bytes), release_(std::move(release)) {}
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
      release_ = std::move(other.release_);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void Reset() {
    if (data_ != nullptr && release_) release_(data_);
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data_ = nullptr;
  size_t bytes_ = 0;
  std::function<void(void*)> release_;
};

// A tensor in host memory, typically a view into a memory-mapped checkpoint file.
struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;

  int64_t num_elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Where each query token of one forward step belongs. All arrays are in backend memory. The query
// tokens of a sequence are contiguous, in position order.
struct AttentionBatch {
  int32_t num_tokens = 0;
  int32_t num_seqs = 0;
  const int32_t* positions = nullptr;  // [num_tokens] absolute position of each query token
  const int32_t* slot_mapping =
      nullptr;  // [num_tokens] flat KV slot (block * block_size + slot) to write
  const int32_t* query_start =
      nullptr;                       // [num_seqs + 1] index of each sequence's first query token
  const int32_t* kv_lens = nullptr;  // [num_seqs] tokens cached for the sequence after this step
  const int32_t* block_tables = nullptr;  // [num_seqs, block_table_stride] physical block ids
  int32_t block_table_stride = 0;
  int32_t max_query_len = 0;  // host-known maxima, for launch shapes
  int32_t max_kv_len = 0;
  // Host-known minimum query length (0: not known). A backend may skip a kernel meant only for
  // short queries when no sequence has one (the CUDA backend's flash decode in a prefill step).
  int32_t min_query_len = 0;
};

struct AttentionShape {
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  float softmax_scale = 0.0f;  // usually 1/sqrt(head_dim)
};

// Rotary embedding, Hugging Face rotate-half convention over the whole head:
// for i < head_dim/2, angle = position * inv_freq[i], (x[i], x[i + head_dim/2]) rotate by angle,
// and cos/sin are multiplied by attention_scaling (1 for default and llama3 RoPE). RMSNorm without
// its gain: row r of a product is multiplied by
//   scale_r = 1 / sqrt(mean(x[r, :]^2) + eps)   (x in compute_dtype, statistics in fp32).
// A product of x with weights whose columns carry the norm's gain (W' = W diag(gain)) times scale_r
// is the product of RmsNorm(x, gain) with W, so the norm needs no kernel of its own: the op that
// reads the product applies the scale (Transformer's folded norm gains). x == nullptr: no scaling.
struct RowRmsScale {
  const void* x = nullptr;  // [rows, hidden], backend memory
  int32_t hidden = 0;
  float eps = 0.0f;
};

struct RopeParams {
  const float* inv_freq = nullptr;  // [head_dim / 2], F32, backend memory, scaling already applied
  float attention_scaling = 1.0f;
  RowRmsScale row_scale;  // scales each token's whole qkv row (q, k and v) before the rotation
};

// The paged KV pool of all layers, in compute_dtype, laid out as kvcache::KvLayout says.
struct KvCacheView {
  void* pool = nullptr;
  kvcache::KvLayout layout;
};

// A Matmul with the op before it and the op after it folded in (Backend::FusedMatmul). With
// p = x' W^T:
enum class MatmulPrologue {
  kNone,      // x' = x [m, k]
  kRmsNorm,   // x' = RmsNorm(x [m, k], norm_weight, eps)
  kRmsScale,  // x' = x, and p's row r (in compute_dtype) is multiplied by RowRmsScale{x, k, eps}'s
              // scale before the epilogue: the norm of a gain folded into w (norm_weight unused)
};
enum class MatmulEpilogue {
  kStore,    // out = p (F32 with out_f32)
  kAdd,      // out += p (a residual update), as Matmul then Add
  kSiluMul,  // W is [2n, k] = [gate rows | up rows]; out[:, j] = silu(p[:, j]) * p[:, n + j], as
             // Matmul then SiluMul
  kRopeAppendKv,  // out = p is the qkv row; then RopeAppendKv(out, *batch, *shape, *rope, *cache,
                  // layer), with batch->num_tokens == m
};
struct FusedMatmulArgs {
  const void* x = nullptr;
  MatmulPrologue prologue = MatmulPrologue::kNone;
  const void* norm_weight = nullptr;
  float eps = 0.0f;
  const void* w = nullptr;  // [n, k] ([2n, k] for kSiluMul)
  int32_t m = 0;
  int32_t n = 0;  // columns of out
  int32_t k = 0;
  MatmulEpilogue epilogue = MatmulEpilogue::kStore;
  void* out = nullptr;  // [m, n], compute_dtype (F32 with out_f32, kStore only)
  bool out_f32 = false;
  // kRopeAppendKv only (host structs, as RopeAppendKv takes them).
  const AttentionBatch* batch = nullptr;
  const AttentionShape* shape = nullptr;
  const RopeParams* rope = nullptr;
  const KvCacheView* cache = nullptr;
  int32_t layer = 0;
};

struct BackendMemoryStats {
  size_t device_total_bytes = 0;  // 0 where it does not apply (CPU)
  size_t device_used_bytes = 0;
  size_t allocated_bytes = 0;  // everything this backend handed out through Allocate/UploadWeight
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view name() const = 0;
  // dtype of weights, activations and the KV cache on this backend (F32 on CPU, BF16 on CUDA).
  virtual DType compute_dtype() const = 0;

  // --- memory ---
  virtual absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) = 0;
  virtual absl::Status CopyToDevice(void* device_destination, const void* host_source,
                                    size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* host_destination, const void* device_source,
                                  size_t bytes) = 0;
  // Converts a checkpoint tensor (any DType) to compute_dtype() and copies it into backend memory.
  virtual absl::StatusOr<DeviceBuffer> UploadWeight(const HostTensor& tensor) = 0;
  // Waits for all queued work; returns the first asynchronous error, if any.
  virtual absl::Status Synchronize() = 0;
  virtual BackendMemoryStats memory_stats() const = 0;

  // --- ops ---
  // out[t, :] = table[token_ids[t], :]; token_ids are int32 in backend memory.
  virtual absl::Status Embed(const int32_t* token_ids, int32_t num_tokens, const void* table,
                             int32_t hidden, void* out) = 0;
  // out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight   (statistics in fp32)
  virtual absl::Status RmsNorm(const void* x, const void* weight, int32_t rows, int32_t hidden,
                               float eps, void* out) = 0;
  // residual += x; out = RmsNorm(residual)
  virtual absl::Status AddRmsNorm(void* residual, const void* x, const void* weight, int32_t rows,
                                  int32_t hidden, float eps, void* out) = 0;
  // residual += x
  virtual absl::Status Add(void* residual, const void* x, int64_t count) = 0;
  // out[m, n] = sum_k x[m, k] * w[n, k]: x times W^T with W stored [out_features, in_features] as
  // in Hugging Face checkpoints. out is compute_dtype, or F32 when out_f32 is true (logits).
  virtual absl::Status Matmul(const void* x, const void* w, int32_t m, int32_t n, int32_t k,
                              void* out, bool out_f32 = false) = 0;
  // out[m, n] += sum_k x[m, k] * w[n, k] (a residual update; out is compute_dtype), the product
  // rounded to compute_dtype before the add, as Matmul then Add.
  virtual absl::Status MatmulAdd(const void* x, const void* w, int32_t m, int32_t n, int32_t k,
                                 void* out) = 0;
  // gate_up [rows, 2 * inter] holds [gate | up] per row; out[rows, inter] = silu(gate) * up, with
  // gate and up first multiplied by their row's scale (RowRmsScale; none when row_scale.x is null).
  virtual absl::Status SiluMul(const void* gate_up, int32_t rows, int32_t inter,
                               const RowRmsScale& row_scale, void* out) = 0;
  // qkv [num_tokens, (Hq + 2 * Hkv) * D] holds [q heads | k heads | v heads] per token. Scales the
  // row by rope.row_scale (if set), rotates q and k in place at each token's absolute position,
  // then writes k and v into the layer's pages at slot_mapping[t] (a negative slot: not written).
  virtual absl::Status RopeAppendKv(void* qkv, const AttentionBatch& batch,
                                    const AttentionShape& shape, const RopeParams& rope,
                                    const KvCacheView& cache, int32_t layer) = 0;
  // out[t, h * D : (h + 1) * D] = softmax_j(q_t,h . k_j * scale) v_j over the sequence's cached
  // tokens j with position(j) <= positions[t]; q is read from qkv (row stride (Hq + 2 * Hkv) * D);
  // query head h uses kv head h / (Hq / Hkv).
  virtual absl::Status PagedAttention(const void* qkv, const AttentionBatch& batch,
                                      const AttentionShape& shape, const KvCacheView& cache,
                                      int32_t layer, void* out) = 0;
  // RopeAppendKv, then PagedAttention: the default. A backend may do both in one launch (CUDA's
  // flash decode for steps of one token per sequence); qkv's rows are scratch afterwards (rotated
  // or not).
  virtual absl::Status RopeAppendAttention(void* qkv, const AttentionBatch& batch,
                                           const AttentionShape& shape, const RopeParams& rope,
                                           const KvCacheView& cache, int32_t layer, void* out) {
    if (absl::Status s = RopeAppendKv(qkv, batch, shape, rope, cache, layer); !s.ok()) return s;
    return PagedAttention(qkv, batch, shape, cache, layer, out);
  }
  // out[i, :] = x[rows[i], :]; rows are int32 in backend memory.
  virtual absl::Status GatherRows(const void* x, const int32_t* rows, int32_t num_rows,
                                  int32_t cols, void* out) = 0;
  // Samples one token per row of F32 logits [rows, vocab]; params and results are host memory.
  virtual absl::Status Sample(const float* logits, int32_t rows, int32_t vocab,
                              std::span<const SamplingParams> params,
                              std::span<SampledToken> out) = 0;

  // --- fused products (optional; the CUDA backend's few-row GEMV) ---
  // out = epilogue(prologue(x) W^T) (FusedMatmulArgs). Each result equals the unfused ops'
  // (RmsNorm, Matmul, Add / SiluMul) up to fp32 summation order. Transformer takes these where
  // SupportsFusedMatmul(m, k) says so, the plain ops otherwise.
  virtual bool SupportsFusedMatmul(int32_t m, int32_t k) const {
    (void)m;
    (void)k;
    return false;
  }
  virtual absl::Status FusedMatmul(const FusedMatmulArgs& args) {
    (void)args;
    return absl::UnimplementedError("this backend has no fused matmul");
  }

  // Whether the transformer should fold the RMSNorm gains into the qkv and gate_up weights here
  // (RowRmsScale): true where a norm is a kernel launch of its own that the products cannot take
  // in (CUDA's cuBLASLt path); false where the plain ops cost nothing extra (CPU, the reference).
  virtual bool FoldsNormGains() const { return false; }

  // --- graph capture (optional; CUDA graphs on the CUDA backend) ---
  // Between BeginGraphCapture and EndGraphCapture the ops above are recorded, not run: only ops
  // whose launch shapes are host values and whose pointers stay valid may be recorded (no
  // CopyToDevice/CopyToHost/Sample/Synchronize). A recorded graph replays the same ops on the same
  // addresses; the caller uploads the data they read (at fixed addresses) before each replay.
  // Defaults: no graphs, and the CPU backend keeps them.
  virtual bool SupportsGraphs() const { return false; }
  virtual absl::Status BeginGraphCapture() {
    return absl::UnimplementedError("this backend does not record graphs");
  }
  // Stops recording. With keep, instantiates the recording and returns its id (> 0); without it
  // (after a failed op) discards it and returns 0.
  virtual absl::StatusOr<int64_t> EndGraphCapture(bool keep) {
    (void)keep;
    return absl::UnimplementedError("this backend does not record graphs");
  }
  // Queues graph `id`. Returns false, queuing nothing, when the backend has dropped the graph
  // (e.g. its scratch memory had to grow and move): record it again.
  virtual absl::StatusOr<bool> ReplayGraph(int64_t id) {
    (void)id;
    return absl::UnimplementedError("this backend does not record graphs");
  }
  virtual void DestroyGraph(int64_t id) { (void)id; }
};

}  // namespace llm
