// The CUDA backend: kernels/backend.h on one GPU, bf16 storage, fp32 accumulation.
//
// Built as the shared library plugin libllm_cuda_backend.so. Programs that must not link CUDA at
// start-up (the server: see docs on the cuBLAS/civetweb TLS trap) load it through
// kernels/cuda_plugin_loader.h, which calls the extern "C" factory below; tests and benchmarks may
// link the library and call CreateCudaBackend directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace llm {

struct CudaBackendOptions {
  int device = 0;
  size_t cublas_workspace_bytes = 32u << 20;
  // Which attention kernel PagedAttention uses: automatic (decode for a few query rows per group,
  // else prefill; the generic kernel for head dims without a flash instantiation), or one forced
  // kernel (tests and benchmarks; a forced flash kernel that cannot take the batch is an error).
  enum class Attention : int32_t { kAuto = 0, kFlashDecode, kFlashPrefill, kGeneric };
  Attention attention = Attention::kAuto;
  // RopeAppendAttention of a decode step (one token per sequence) as one flash-decode launch with
  // RoPE + KV append folded in, where the attention runs unsplit (one block per sequence and KV
  // head: about 32 sequences and more at the model's shape); false (or $LLM_CUDA_FOLD_ROPE=0):
  // RopeAppendKv, then attention. With split KV the folded launch measured slower than the pair
  // (H100, TinyLlama shape, B8 / B16: +58 / +72 us a step; docs/PERFORMANCE.md, tenth session),
  // so it folds there only with fold_rope_into_split_decode (or $LLM_CUDA_FOLD_ROPE=all), which
  // tests use to keep that kernel path covered.
  bool fold_rope_into_decode = true;
  bool fold_rope_into_split_decode = false;
};

// Fails with FailedPrecondition when no CUDA device is present or `device` is out of range.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options = {});

}  // namespace llm

// The plugin's C entry point. Returns a new backend (ownership passes to the caller, who deletes it
// through Backend's virtual destructor) or null with a message written to `error` (NUL-terminated,
// at most error_bytes). ABI version: both sides must be built from the same kernels/backend.h.
extern "C" {
inline constexpr int kLlmCudaPluginAbiVersion = 5;  // 2: graph capture ops, 3: FusedMatmul,
                                                    // 4: MatmulAdd, RowRmsScale, FoldsNormGains,
                                                    // 5: RopeAppendAttention
int LlmCudaPluginAbiVersion();
llm::Backend* LlmCreateCudaBackend(int device, char* error, size_t error_bytes);
}
