// out[m, n] = sum_k x[m, k] * w[n, k] through cuBLASLt: bf16 inputs, fp32 accumulation, bf16 or F32
// output. Row-major x [m, k] and w [n, k] are, read column-major, x^T [k, m] and w^T [k, n], so the
// call computes the column-major product out^T [n, m] = (w^T)^T x^T = op_T(w^T) * x^T.
// The matmul descriptor, the three layouts and the heuristic's algorithm are built once per
// (m, n, k, output type) and cached; one workspace serves all calls on the backend's stream.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/small_ops.h"

namespace llm::cuda {

// A warp-per-column kernel for m <= kGemvMaxRows (gemv.cu): Run uses it when GemvSupports says so
// (k a multiple of 8, 16-byte aligned x and w, m * k * 2 bytes of x within its shared memory)
// unless $LLM_CUDA_GEMV=0. LaunchFusedGemv also folds in the RMSNorm of x before the product and,
// after it, the residual add (add_to_out), SwiGLU (silu_pairs) or RoPE + KV append (rope_append).
inline constexpr int32_t kGemvMaxRows = 4;
// kRmsNorm: x' = RmsNorm(x, norm_weight) before the product. kRmsScale (a norm whose gain is folded
// into w): x' = x, and row m's product, rounded to bf16, is multiplied by 1 / sqrt(mean(x[m]^2) +
// eps) before the epilogue, as RopeAppendKv / SiluMul apply a RowRmsScale (the same sum order, so
// the same scale to the bit).
enum class GemvPrologue { kNone, kRmsNorm, kRmsScale };
struct FusedGemvParams {
  const __nv_bfloat16* x = nullptr;  // [m, k]
  GemvPrologue prologue = GemvPrologue::kNone;
  const __nv_bfloat16* norm_weight = nullptr;  // kRmsNorm: [k]
  float eps = 0.f;
  const __nv_bfloat16* w = nullptr;  // [n, k]; silu_pairs: [2n, k] (gate rows | up rows)
  int32_t m = 0;
  int32_t n = 0;
  int32_t k = 0;
  void* out = nullptr;  // [m, n]: bf16, or F32 with out_f32
  bool out_f32 = false;
  bool add_to_out = false;  // bf16 out += product (rounded to bf16 first, as cuBLASLt's beta = 1)
  bool silu_pairs = false;  // bf16 out[:, j] = silu(gate_j) * up_j (each rounded to bf16 first)
  // out is the qkv row [m, (Hq + 2 Hkv) D]: RoPE on q and k, k and v appended to the cache, as
  // LaunchRopeAppendKv does with `rope` (rope.qkv unused; rope.num_tokens == m).
  bool rope_append = false;
  RopeAppendParams rope;
};
bool GemvSupports(const void* x, const void* w, int32_t m, int32_t k);
absl::Status LaunchGemv(const void* x, const void* w, int32_t m, int32_t n, int32_t k, void* out,
                        bool out_f32, cudaStream_t stream);
absl::Status LaunchFusedGemv(const FusedGemvParams& params, cudaStream_t stream);

class CublasLtMatmul {
 public:
  static absl::StatusOr<std::unique_ptr<CublasLtMatmul>> Create(size_t workspace_bytes);
  ~CublasLtMatmul();
  CublasLtMatmul(const CublasLtMatmul&) = delete;
  CublasLtMatmul& operator=(const CublasLtMatmul&) = delete;

  // out = x w^T, or out += x w^T with accumulate (bf16 out; cuBLASLt's beta = 1, which on the H100
  // rounds the product to bf16 before the add: tests/kernels/gpu/small_ops_test.cc).
  absl::Status Run(const void* x, const void* w, int32_t m, int32_t n, int32_t k, void* out,
                   bool out_f32, cudaStream_t stream, bool accumulate = false);
  size_t workspace_bytes() const { return workspace_bytes_; }
  bool gemv_enabled() const { return gemv_enabled_; }

 private:
  struct Plan {
    cublasLtMatmulDesc_t operation = nullptr;
    cublasLtMatrixLayout_t a_layout = nullptr;  // w^T, k x n
    cublasLtMatrixLayout_t b_layout = nullptr;  // x^T, k x m
    cublasLtMatrixLayout_t c_layout = nullptr;  // out^T, n x m
    cublasLtMatmulAlgo_t algorithm{};
  };
  using ShapeKey = std::tuple<int32_t, int32_t, int32_t, bool>;

  CublasLtMatmul() = default;
  absl::StatusOr<const Plan*> PlanFor(int32_t m, int32_t n, int32_t k, bool out_f32);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<ShapeKey, Plan> plans_;
  bool gemv_enabled_ = true;
};

}  // namespace llm::cuda
