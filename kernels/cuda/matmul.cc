#include "kernels/cuda/matmul.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"

namespace llm::cuda {

absl::StatusOr<std::unique_ptr<CublasLtMatmul>> CublasLtMatmul::Create(size_t workspace_bytes) {
  std::unique_ptr<CublasLtMatmul> matmul(new CublasLtMatmul());
  LLM_CUBLAS_CHECK(cublasLtCreate(&matmul->handle_));
  if (workspace_bytes > 0) LLM_CUDA_CHECK(cudaMalloc(&matmul->workspace_, workspace_bytes));
  matmul->workspace_bytes_ = workspace_bytes;
  const char* gemv = std::getenv("LLM_CUDA_GEMV");
  matmul->gemv_enabled_ = gemv == nullptr || std::strcmp(gemv, "0") != 0;
  return matmul;
}

CublasLtMatmul::~CublasLtMatmul() {
  for (auto& [key, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan.a_layout);
    cublasLtMatrixLayoutDestroy(plan.b_layout);
    cublasLtMatrixLayoutDestroy(plan.c_layout);
    cublasLtMatmulDescDestroy(plan.operation);
  }
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

absl::StatusOr<const CublasLtMatmul::Plan*> CublasLtMatmul::PlanFor(int32_t m, int32_t n, int32_t k,
                                                                    bool out_f32) {
  const ShapeKey key{m, n, k, out_f32};
  if (auto it = plans_.find(key); it != plans_.end()) return &it->second;
  Plan plan;
  LLM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.operation, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  const cublasOperation_t no_transpose = CUBLAS_OP_N;
  LLM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.operation, CUBLASLT_MATMUL_DESC_TRANSA,
                                                  &transpose, sizeof(transpose)));
  LLM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.operation, CUBLASLT_MATMUL_DESC_TRANSB,
                                                  &no_transpose, sizeof(no_transpose)));
  LLM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a_layout, CUDA_R_16BF, k, n, k));
  LLM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b_layout, CUDA_R_16BF, k, m, k));
  LLM_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&plan.c_layout, out_f32 ? CUDA_R_32F : CUDA_R_16BF, n, m, n));

  cublasLtMatmulPreference_t preference = nullptr;
  LLM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  const uint64_t workspace_limit = workspace_bytes_;
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &workspace_limit, sizeof(workspace_limit));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t heuristic =
      cublasLtMatmulAlgoGetHeuristic(handle_, plan.operation, plan.a_layout, plan.b_layout,
                                     plan.c_layout, plan.c_layout, preference, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  if (heuristic != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(plan.a_layout);
    cublasLtMatrixLayoutDestroy(plan.b_layout);
    cublasLtMatrixLayoutDestroy(plan.c_layout);
    cublasLtMatmulDescDestroy(plan.operation);
    return absl::InternalError(absl::StrCat("cuBLASLt found no algorithm for m=", m, " n=", n,
                                            " k=", k, out_f32 ? " (F32 out)" : " (bf16 out)"));
  }
  plan.algorithm = result.algo;
  return &plans_.emplace(key, plan).first->second;
}

absl::Status CublasLtMatmul::Run(const void* x, const void* w, int32_t m, int32_t n, int32_t k,
                                 void* out, bool out_f32, cudaStream_t stream, bool accumulate) {
  if (m == 0 || n == 0) return absl::OkStatus();
  if (x == nullptr || w == nullptr || out == nullptr || m < 0 || n < 0 || k <= 0 ||
      (accumulate && out_f32)) {
    return absl::InvalidArgumentError("Matmul: null operand or bad shape");
  }
  if (!accumulate && gemv_enabled_ && GemvSupports(x, w, m, k)) {
    return LaunchGemv(x, w, m, n, k, out, out_f32, stream);
  }
  auto plan = PlanFor(m, n, k, out_f32);
  if (!plan.ok()) return plan.status();
  const float alpha = 1.f;
  const float beta = accumulate ? 1.f : 0.f;
  LLM_CUBLAS_CHECK(cublasLtMatmul(handle_, (*plan)->operation, &alpha, w, (*plan)->a_layout, x,
                                  (*plan)->b_layout, &beta, out, (*plan)->c_layout, out,
                                  (*plan)->c_layout, &(*plan)->algorithm, workspace_,
                                  workspace_bytes_, stream));
  return absl::OkStatus();
}

}  // namespace llm::cuda
