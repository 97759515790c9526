// CudaBackend: the Backend ops mapped onto the kernels of this folder on one stream.
// Memory ops are synchronous with respect to the host where the interface hands host memory back;
// every op only queues work, and Synchronize() reports asynchronous faults.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/sampling.h"
#include "kernels/cuda/attention_params.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/small_ops.h"

namespace llm {
namespace {

using cuda::PagedAttentionParams;

const __nv_bfloat16* Bf16(const void* p) { return static_cast<const __nv_bfloat16*>(p); }
__nv_bfloat16* Bf16(void* p) { return static_cast<__nv_bfloat16*>(p); }

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(const CudaBackendOptions& options) {
    int count = 0;
    const cudaError_t error = cudaGetDeviceCount(&count);
    if (error != cudaSuccess || count == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cuda backend: no CUDA device available (cudaGetDeviceCount: ",
                       error == cudaSuccess ? "0 devices" : cudaGetErrorString(error), ")"));
    }
    if (options.device < 0 || options.device >= count) {
      return absl::FailedPreconditionError(absl::StrCat("cuda backend: device ", options.device,
                                                        " out of range (", count, " devices)"));
    }
    std::unique_ptr<CudaBackend> backend(new CudaBackend(options));
    LLM_CUDA_CHECK(cudaSetDevice(options.device));
    LLM_CUDA_CHECK(cudaStreamCreateWithFlags(&backend->stream_, cudaStreamNonBlocking));
    LLM_CUDA_CHECK(
        cudaDeviceGetAttribute(&backend->num_sms_, cudaDevAttrMultiProcessorCount, options.device));
    auto matmul = cuda::CublasLtMatmul::Create(options.cublas_workspace_bytes);
    if (!matmul.ok()) return matmul.status();
    backend->matmul_ = std::move(*matmul);
    return std::unique_ptr<Backend>(std::move(backend));
  }

  ~CudaBackend() override {
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    DropGraphs();
    matmul_.reset();
    if (workspace_ != nullptr) cudaFree(workspace_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::string_view name() const override { return "cuda"; }
  DType compute_dtype() const override { return DType::kBF16; }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override {
    void* data = nullptr;
    if (bytes > 0) {
      const cudaError_t error = cudaMalloc(&data, bytes);
      if (error != cudaSuccess) {
        cudaGetLastError();
        return absl::ResourceExhaustedError(absl::StrCat(
            "cuda backend: cudaMalloc of ", bytes, " bytes failed: ", cudaGetErrorString(error)));
      }
    }
    *allocated_bytes_ += bytes;
    std::shared_ptr<std::atomic<size_t>> counter = allocated_bytes_;
    return DeviceBuffer(data, bytes, [counter, bytes](void* p) {
      cudaFree(p);
      *counter -= bytes;
    });
  }

  absl::Status CopyToDevice(void* device_destination, const void* host_source,
                            size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    LLM_CUDA_CHECK(
        cudaMemcpyAsync(device_destination, host_source, bytes, cudaMemcpyHostToDevice, stream_));
    // The host buffer may be reused as soon as we return.
    LLM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

  absl::Status CopyToHost(void* host_destination, const void* device_source,
                          size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    LLM_CUDA_CHECK(
        cudaMemcpyAsync(host_destination, device_source, bytes, cudaMemcpyDeviceToHost, stream_));
    LLM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

  absl::StatusOr<DeviceBuffer> UploadWeight(const HostTensor& tensor) override {
    const int64_t count = tensor.num_elements();
    if (count < 0 || (count > 0 && tensor.data == nullptr)) {
      return absl::InvalidArgumentError("cuda backend: UploadWeight got a tensor without data");
    }
    auto buffer = Allocate(static_cast<size_t>(count) * 2);
    if (!buffer.ok() || count == 0) return buffer;
    if (tensor.dtype == DType::kBF16) {
      if (auto status = CopyToDevice(buffer->data(), tensor.data, count * 2); !status.ok())
        return status;
      return buffer;
    }
    // F32 / F16: copy as stored, convert on the device.
    auto staging = Allocate(static_cast<size_t>(count) * DTypeSize(tensor.dtype));
    if (!staging.ok()) return staging.status();
    if (auto status = CopyToDevice(staging->data(), tensor.data, staging->bytes()); !status.ok()) {
      return status;
    }
    const int32_t source_dtype = tensor.dtype == DType::kF32 ? 0 : 1;
    if (auto status = cuda::LaunchConvertToBf16(staging->data(), source_dtype, count,
                                                Bf16(buffer->data()), stream_);
        !status.ok()) {
      return status;
    }
    LLM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return buffer;
  }

  // CUDA graphs: the stream is captured (relaxed mode, so a first-use attribute call inside a
  // launcher is allowed); the recording is instantiated once and replayed with cudaGraphLaunch.
  bool SupportsGraphs() const override { return true; }

  absl::Status BeginGraphCapture() override {
    if (capturing_) return absl::FailedPreconditionError("BeginGraphCapture: already capturing");
    LLM_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
    capturing_ = true;
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> EndGraphCapture(bool keep) override {
    if (!capturing_) return absl::FailedPreconditionError("EndGraphCapture: not capturing");
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (end != cudaSuccess || !keep || graph == nullptr) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      cudaGetLastError();  // a broken capture leaves a sticky-free launch error behind
      if (end != cudaSuccess) {
        return absl::InternalError(absl::StrCat("cudaStreamEndCapture: ", cudaGetErrorString(end)));
      }
      return int64_t{0};
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiate = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (instantiate != cudaSuccess) {
      cudaGetLastError();
      return absl::InternalError(
          absl::StrCat("cudaGraphInstantiate: ", cudaGetErrorString(instantiate)));
    }
    const int64_t id = ++last_graph_id_;
    graphs_.emplace(id, exec);
    return id;
  }

  absl::StatusOr<bool> ReplayGraph(int64_t id) override {
    const auto it = graphs_.find(id);
    if (it == graphs_.end()) return false;
    LLM_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
    return true;
  }

  void DestroyGraph(int64_t id) override {
    const auto it = graphs_.find(id);
    if (it == graphs_.end()) return;
    cudaGraphExecDestroy(it->second);
    graphs_.erase(it);
  }

  absl::Status Synchronize() override {
    LLM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    LLM_CUDA_CHECK(cudaGetLastError());
    return absl::OkStatus();
  }

  BackendMemoryStats memory_stats() const override {
    BackendMemoryStats stats;
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      stats.device_total_bytes = total_bytes;
      stats.device_used_bytes = total_bytes - free_bytes;
    }
    stats.allocated_bytes =
        allocated_bytes_->load() + workspace_bytes_ + matmul_->workspace_bytes();
    return stats;
  }

  absl::Status Embed(const int32_t* token_ids, int32_t num_tokens, const void* table,
                     int32_t hidden, void* out) override {
    return cuda::LaunchGatherRows(table, token_ids, num_tokens, static_cast<int64_t>(hidden) * 2,
                                  out, stream_);
  }

  absl::Status RmsNorm(const void* x, const void* weight, int32_t rows, int32_t hidden, float eps,
                       void* out) override {
    cuda::RmsNormParams p;
    p.x = Bf16(x);
    p.weight = Bf16(weight);
    p.out = Bf16(out);
    p.rows = rows;
    p.hidden = hidden;
    p.eps = eps;
    return cuda::LaunchRmsNorm(p, stream_);
  }

  absl::Status AddRmsNorm(void* residual, const void* x, const void* weight, int32_t rows,
                          int32_t hidden, float eps, void* out) override {
    if (residual == nullptr) return absl::InvalidArgumentError("AddRmsNorm: null residual");
    cuda::RmsNormParams p;
    p.x = Bf16(x);
    p.residual = Bf16(residual);
    p.weight = Bf16(weight);
    p.out = Bf16(out);
    p.rows = rows;
    p.hidden = hidden;
    p.eps = eps;
    return cuda::LaunchRmsNorm(p, stream_);
  }

  absl::Status Add(void* residual, const void* x, int64_t count) override {
    return cuda::LaunchAdd(Bf16(residual), Bf16(x), count, stream_);
  }

  absl::Status Matmul(const void* x, const void* w, int32_t m, int32_t n, int32_t k, void* out,
                      bool out_f32) override {
    return matmul_->Run(x, w, m, n, k, out, out_f32, stream_);
  }

  absl::Status MatmulAdd(const void* x, const void* w, int32_t m, int32_t n, int32_t k,
                         void* out) override {
    if (m == 0 || n == 0) return absl::OkStatus();
    if (SupportsFusedMatmul(m, k) && cuda::GemvSupports(x, w, m, k)) {
      cuda::FusedGemvParams p;
      p.x = Bf16(x);
      p.w = Bf16(w);
      p.m = m;
      p.n = n;
      p.k = k;
      p.out = out;
      p.add_to_out = true;
      return cuda::LaunchFusedGemv(p, stream_);
    }
    return matmul_->Run(x, w, m, n, k, out, /*out_f32=*/false, stream_, /*accumulate=*/true);
  }

  // cuBLASLt takes no norm prologue above the GEMV's rows: folding the gains into the weights
  // saves the two RMSNorm launches a layer there (and in prefill).
  bool FoldsNormGains() const override { return true; }

  bool SupportsFusedMatmul(int32_t m, int32_t k) const override {
    // Alignment is checked per call; the decode step's buffers and weights are 256-byte aligned.
    return matmul_->gemv_enabled() && m >= 1 && m <= cuda::kGemvMaxRows && k > 0 && k % 8 == 0 &&
           static_cast<int64_t>(m) * k * 2 <= 96 * 1024;
  }

  absl::Status FusedMatmul(const FusedMatmulArgs& args) override {
    cuda::FusedGemvParams p;
    p.x = Bf16(args.x);
    switch (args.prologue) {
      case MatmulPrologue::kRmsNorm:
        p.prologue = cuda::GemvPrologue::kRmsNorm;
        break;
      case MatmulPrologue::kRmsScale:
        p.prologue = cuda::GemvPrologue::kRmsScale;
        break;
      default:
        p.prologue = cuda::GemvPrologue::kNone;
    }
    p.norm_weight = Bf16(args.norm_weight);
    p.eps = args.eps;
    p.w = Bf16(args.w);
    p.m = args.m;
    p.n = args.n;
    p.k = args.k;
    p.out = args.out;
    p.out_f32 = args.out_f32;
    p.add_to_out = args.epilogue == MatmulEpilogue::kAdd;
    p.silu_pairs = args.epilogue == MatmulEpilogue::kSiluMul;
    if (args.epilogue == MatmulEpilogue::kRopeAppendKv) {
      if (args.batch == nullptr || args.shape == nullptr || args.rope == nullptr ||
          args.cache == nullptr || args.batch->num_tokens != args.m) {
        return absl::InvalidArgumentError(
            "FusedMatmul: the RoPE epilogue needs batch (of m tokens), shape, rope and cache");
      }
      if (args.rope->row_scale.x != nullptr) {
        return absl::InvalidArgumentError(
            "FusedMatmul: the RoPE epilogue takes no row_scale; use the kRmsNorm prologue");
      }
      auto rope = RopeAppendParamsFor(args.out, *args.batch, *args.shape, *args.rope, *args.cache,
                                      args.layer);
      if (!rope.ok()) return rope.status();
      p.rope_append = true;
      p.rope = *rope;
    }
    if (args.m == 0 || args.n == 0) return absl::OkStatus();
    return cuda::LaunchFusedGemv(p, stream_);
  }

  absl::Status SiluMul(const void* gate_up, int32_t rows, int32_t inter,
                       const RowRmsScale& row_scale, void* out) override {
    cuda::SiluMulParams p;
    p.gate_up = Bf16(gate_up);
    p.rows = rows;
    p.inter = inter;
    p.out = Bf16(out);
    p.scale_rows_by = Bf16(row_scale.x);
    p.scale_hidden = row_scale.hidden;
    p.scale_eps = row_scale.eps;
    return cuda::LaunchSiluMul(p, stream_);
  }

  absl::Status RopeAppendKv(void* qkv, const AttentionBatch& batch, const AttentionShape& shape,
                            const RopeParams& rope, const KvCacheView& cache,
                            int32_t layer) override {
    auto p = RopeAppendParamsFor(qkv, batch, shape, rope, cache, layer);
    if (!p.ok()) return p.status();
    return cuda::LaunchRopeAppendKv(*p, stream_);
  }

  static absl::StatusOr<cuda::RopeAppendParams> RopeAppendParamsFor(
      void* qkv, const AttentionBatch& batch, const AttentionShape& shape, const RopeParams& rope,
      const KvCacheView& cache, int32_t layer) {
    if (cache.pool == nullptr || layer < 0 || layer >= cache.layout.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("RopeAppendKv: layer ", layer, " outside the KV pool or pool missing"));
    }
    cuda::RopeAppendParams p;
    p.qkv = Bf16(qkv);
    p.num_tokens = batch.num_tokens;
    p.num_q_heads = shape.num_q_heads;
    p.num_kv_heads = shape.num_kv_heads;
    p.head_dim = shape.head_dim;
    p.positions = batch.positions;
    p.slot_mapping = batch.slot_mapping;
    p.inv_freq = rope.inv_freq;
    p.attention_scaling = rope.attention_scaling;
    auto* pool = Bf16(cache.pool);
    p.k_cache = pool + cache.layout.layer_offset(layer, kvcache::KvKind::kKey);
    p.v_cache = pool + cache.layout.layer_offset(layer, kvcache::KvKind::kValue);
    p.layout = cache.layout;
    p.scale_rows_by = Bf16(rope.row_scale.x);
    p.scale_hidden = rope.row_scale.hidden;
    p.scale_eps = rope.row_scale.eps;
    return p;
  }

  absl::Status PagedAttention(const void* qkv, const AttentionBatch& batch,
                              const AttentionShape& shape, const KvCacheView& cache, int32_t layer,
                              void* out) override {
    if (batch.num_tokens == 0) return absl::OkStatus();
    auto p = AttentionParamsFor(qkv, batch, shape, cache, layer, out);
    if (!p.ok()) return p.status();
    return LaunchAttention(*p, AttentionKernelFor(*p));
  }

  absl::Status RopeAppendAttention(void* qkv, const AttentionBatch& batch,
                                   const AttentionShape& shape, const RopeParams& rope,
                                   const KvCacheView& cache, int32_t layer, void* out) override {
    if (batch.num_tokens == 0) return absl::OkStatus();
    auto p = AttentionParamsFor(qkv, batch, shape, cache, layer, out);
    if (!p.ok()) return p.status();
    const cuda::AttentionKernel kernel = AttentionKernelFor(*p);
    bool fold = fold_rope_into_decode_ && kernel == cuda::AttentionKernel::kFlashDecode &&
                p->max_query_len == 1 && p->head_dim % 64 == 0 && batch.slot_mapping != nullptr &&
                rope.inv_freq != nullptr &&
                (rope.row_scale.x == nullptr || rope.row_scale.hidden > 0);
    const bool splits_chosen = fold;  // the launch below keeps this choice
    if (fold) {
      cuda::ChooseDecodeSplits(*p, num_sms_);
      fold = fold_rope_into_split_decode_ || p->num_splits == 1;
    }
    if (!fold) {  // the two launches, on the params already built
      if (absl::Status s = RopeAppendKv(qkv, batch, shape, rope, cache, layer); !s.ok()) return s;
      return LaunchAttention(*p, kernel, splits_chosen);
    }
    p->rope_inv_freq = rope.inv_freq;
    p->rope_attention_scaling = rope.attention_scaling;
    p->rope_scale_rows_by = Bf16(rope.row_scale.x);
    p->rope_scale_hidden = rope.row_scale.hidden;
    p->rope_scale_eps = rope.row_scale.eps;
    p->slot_mapping = batch.slot_mapping;
    return LaunchAttention(*p, cuda::AttentionKernel::kFlashDecode, splits_chosen);
  }

  static absl::StatusOr<PagedAttentionParams> AttentionParamsFor(const void* qkv,
                                                                 const AttentionBatch& batch,
                                                                 const AttentionShape& shape,
                                                                 const KvCacheView& cache,
                                                                 int32_t layer, void* out) {
    if (cache.pool == nullptr || layer < 0 || layer >= cache.layout.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("PagedAttention: layer ", layer, " outside the KV pool or pool missing"));
    }
    PagedAttentionParams p;
    p.q = Bf16(qkv);
    p.q_row_stride =
        static_cast<int64_t>(shape.num_q_heads + 2 * shape.num_kv_heads) * shape.head_dim;
    p.out = Bf16(out);
    p.out_row_stride = static_cast<int64_t>(shape.num_q_heads) * shape.head_dim;
    const auto* pool = Bf16(cache.pool);
    p.k_cache = pool + cache.layout.layer_offset(layer, kvcache::KvKind::kKey);
    p.v_cache = pool + cache.layout.layer_offset(layer, kvcache::KvKind::kValue);
    p.layout = cache.layout;
    p.positions = batch.positions;
    p.query_start = batch.query_start;
    p.kv_lens = batch.kv_lens;
    p.block_tables = batch.block_tables;
    p.block_table_stride = batch.block_table_stride;
    p.num_seqs = batch.num_seqs;
    p.num_tokens = batch.num_tokens;
    p.max_query_len = batch.max_query_len;
    p.min_query_len = batch.min_query_len;
    p.max_kv_len = batch.max_kv_len;
    p.num_q_heads = shape.num_q_heads;
    p.num_kv_heads = shape.num_kv_heads;
    p.head_dim = shape.head_dim;
    p.softmax_scale = shape.softmax_scale;
    if (auto status = cuda::ValidateAttentionParams(p); !status.ok()) return status;
    return p;
  }

  // The kernel for these params: ChooseAttentionKernel's, or the one the options force.
  cuda::AttentionKernel AttentionKernelFor(const PagedAttentionParams& p) const {
    cuda::AttentionKernel kernel = cuda::ChooseAttentionKernel(p);
    switch (options_.attention) {
      case CudaBackendOptions::Attention::kAuto:
        break;
      case CudaBackendOptions::Attention::kFlashDecode:
        kernel = cuda::AttentionKernel::kFlashDecode;
        break;
      case CudaBackendOptions::Attention::kFlashPrefill:
        kernel = cuda::AttentionKernel::kFlashPrefill;
        break;
      case CudaBackendOptions::Attention::kGeneric:
        kernel = cuda::AttentionKernel::kGeneric;
        break;
    }
    return kernel;
  }

  // splits_chosen: ChooseDecodeSplits already ran on `p` (RopeAppendAttention's fold decision).
  absl::Status LaunchAttention(PagedAttentionParams p, cuda::AttentionKernel kernel,
                               bool splits_chosen = false) {
    switch (kernel) {
      case cuda::AttentionKernel::kFlashDecode:
      case cuda::AttentionKernel::kMixed: {
        p.mixed_batch = kernel == cuda::AttentionKernel::kMixed;
        if (!splits_chosen) cuda::ChooseDecodeSplits(p, num_sms_);
        const size_t floats = cuda::FlashDecodeWorkspaceFloats(p);
        if (floats > 0) {
          auto workspace = Workspace(floats * sizeof(float));
          if (!workspace.ok()) return workspace.status();
          p.partial_out = static_cast<float*>(*workspace);
          p.partial_lse = p.partial_out + static_cast<size_t>(p.num_tokens) * p.num_q_heads *
                                              p.num_splits * p.head_dim;
        }
        if (auto status = cuda::LaunchFlashDecode(p, stream_); !status.ok()) return status;
        if (kernel == cuda::AttentionKernel::kFlashDecode) return absl::OkStatus();
        return cuda::LaunchFlashPrefill(p, stream_);
      }
      case cuda::AttentionKernel::kFlashPrefill:
        return cuda::LaunchFlashPrefill(p, stream_);
      case cuda::AttentionKernel::kGeneric:
        if (!cuda::FlashPrefillSupports(p.head_dim) && !logged_generic_fallback_) {
          std::fprintf(stderr,
                       "cuda backend: no flash-attention instantiation for head_dim %d; using the "
                       "generic (slower, same-numerics fp32) attention kernel\n",
                       p.head_dim);
          logged_generic_fallback_ = true;
        }
        return cuda::LaunchGenericAttention(p, stream_);
    }
    return absl::InternalError("PagedAttention: unknown kernel");
  }

  absl::Status GatherRows(const void* x, const int32_t* rows, int32_t num_rows, int32_t cols,
                          void* out) override {
    return cuda::LaunchGatherRows(x, rows, num_rows, static_cast<int64_t>(cols) * 2, out, stream_);
  }

  // Greedy rows (temperature <= 0, no top log-probs) are reduced on the device and only their
  // (token, logprob) pairs come back. Other rows' logits are copied to the host and sampled by the
  // CPU backend's SampleFromLogits, the one implementation of the sampling contract, so seeded
  // draws match the CPU backend exactly.
  absl::Status Sample(const float* logits, int32_t rows, int32_t vocab,
                      std::span<const SamplingParams> params,
                      std::span<SampledToken> out) override {
    if (params.size() != static_cast<size_t>(rows) || out.size() != static_cast<size_t>(rows) ||
        vocab <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Sample: need one SamplingParams and one SampledToken per row and a positive vocab; got ",
          rows, " rows, ", params.size(), " params, ", out.size(), " outputs, vocab ", vocab));
    }
    if (rows == 0) return absl::OkStatus();
    auto scratch = Workspace(static_cast<size_t>(rows) * 8);
    if (!scratch.ok()) return scratch.status();
    auto* tokens = static_cast<int32_t*>(*scratch);
    auto* logprobs = reinterpret_cast<float*>(tokens + rows);
    if (auto status = cuda::LaunchArgmaxLogprob(logits, rows, vocab, tokens, logprobs, stream_);
        !status.ok()) {
      return status;
    }
    std::vector<int32_t> host_tokens(rows);
    std::vector<float> host_logprobs(rows);
    LLM_CUDA_CHECK(cudaMemcpyAsync(host_tokens.data(), tokens, rows * sizeof(int32_t),
                                   cudaMemcpyDeviceToHost, stream_));
    LLM_CUDA_CHECK(cudaMemcpyAsync(host_logprobs.data(), logprobs, rows * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_));
    LLM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<float> row_logits;
    for (int32_t r = 0; r < rows; ++r) {
      const SamplingParams& sampling = params[r];
      if (sampling.temperature <= 0.f && sampling.num_top_logprobs <= 0) {
        out[r] = SampledToken{host_tokens[r], host_logprobs[r], {}};
        continue;
      }
      row_logits.resize(vocab);
      LLM_CUDA_CHECK(cudaMemcpyAsync(row_logits.data(), logits + static_cast<int64_t>(r) * vocab,
                                     static_cast<size_t>(vocab) * sizeof(float),
                                     cudaMemcpyDeviceToHost, stream_));
      LLM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      out[r] = cpu::SampleFromLogits(row_logits.data(), vocab, sampling);
    }
    return absl::OkStatus();
  }

 private:
  explicit CudaBackend(const CudaBackendOptions& options) : options_(options) {
    const char* fold = std::getenv("LLM_CUDA_FOLD_ROPE");
    fold_rope_into_decode_ =
        options.fold_rope_into_decode && (fold == nullptr || std::strcmp(fold, "0") != 0);
    fold_rope_into_split_decode_ =
        fold_rope_into_decode_ &&
        (options.fold_rope_into_split_decode || (fold != nullptr && std::strcmp(fold, "all") == 0));
  }

  // Scratch device memory for one op at a time (split-KV partials, sampling results); grows only.
  absl::StatusOr<void*> Workspace(size_t bytes) {
    if (bytes <= workspace_bytes_) return workspace_;
    if (capturing_) {
      // A recorded graph must not see its scratch memory move; the caller runs the same step
      // eagerly before recording it, which sizes the workspace.
      return absl::FailedPreconditionError(
          "cuda backend: the workspace must grow while recording a graph; run the step eagerly "
          "first");
    }
    LLM_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the old workspace may still be in use
    DropGraphs();  // they point into the old workspace; their owners record them again
    if (workspace_ != nullptr) LLM_CUDA_CHECK(cudaFree(workspace_));
    workspace_ = nullptr;
    workspace_bytes_ = 0;
    const size_t rounded = std::max<size_t>(bytes + bytes / 2, 1u << 20);
    LLM_CUDA_CHECK(cudaMalloc(&workspace_, rounded));
    workspace_bytes_ = rounded;
    return workspace_;
  }

  void DropGraphs() {
    for (auto& [id, exec] : graphs_) cudaGraphExecDestroy(exec);
    graphs_.clear();
  }

  CudaBackendOptions options_;
  cudaStream_t stream_ = nullptr;
  bool capturing_ = false;
  int64_t last_graph_id_ = 0;
  std::unordered_map<int64_t, cudaGraphExec_t> graphs_;
  int num_sms_ = 1;
  std::unique_ptr<cuda::CublasLtMatmul> matmul_;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  bool logged_generic_fallback_ = false;
  bool fold_rope_into_decode_ = true;
  bool fold_rope_into_split_decode_ = false;
  std::shared_ptr<std::atomic<size_t>> allocated_bytes_ = std::make_shared<std::atomic<size_t>>(0);
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  return CudaBackend::Create(options);
}

}  // namespace llm

extern "C" {

__attribute__((visibility("default"))) int LlmCudaPluginAbiVersion() {
  return kLlmCudaPluginAbiVersion;
}

__attribute__((visibility("default"))) llm::Backend* LlmCreateCudaBackend(int device, char* error,
                                                                          size_t error_bytes) {
  llm::CudaBackendOptions options;
  options.device = device;
  auto backend = llm::CreateCudaBackend(options);
  if (!backend.ok()) {
    if (error != nullptr && error_bytes > 0) {
      std::snprintf(error, error_bytes, "%s", backend.status().ToString().c_str());
    }
    return nullptr;
  }
  return backend->release();
}

}  // extern "C"
