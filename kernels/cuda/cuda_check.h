// The one CUDA error check of the backend: turns a failed runtime or cuBLASLt call into an
// absl::Status that names the call and the file:line, so a caller sees which op failed and where.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace llm::cuda {

inline absl::Status CudaStatus(cudaError_t error, const char* call, const char* file, int line) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA error ", cudaGetErrorName(error), " (",
                                          cudaGetErrorString(error), ") in ", call, " at ", file,
                                          ":", line));
}

inline absl::Status CublasStatus(cublasStatus_t status, const char* call, const char* file,
                                 int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuBLAS error ", cublasLtGetStatusName(status), " (",
                                          cublasLtGetStatusString(status), ") in ", call, " at ",
                                          file, ":", line));
}

}  // namespace llm::cuda

// Evaluates a cudaError_t expression; on failure returns its status from the enclosing function.
#define LLM_CUDA_CHECK(call)                                                      \
  do {                                                                            \
    const cudaError_t llm_cuda_error_ = (call);                                   \
    if (llm_cuda_error_ != cudaSuccess)                                           \
      return ::llm::cuda::CudaStatus(llm_cuda_error_, #call, __FILE__, __LINE__); \
  } while (0)

// Checks the launch just queued (bad configuration, missing kernel image); asynchronous faults
// surface at the next synchronizing call, which is checked the same way.
#define LLM_CUDA_CHECK_LAUNCH(kernel_name)                                                 \
  do {                                                                                     \
    const cudaError_t llm_cuda_error_ = cudaGetLastError();                                \
    if (llm_cuda_error_ != cudaSuccess)                                                    \
      return ::llm::cuda::CudaStatus(llm_cuda_error_, "launch of " #kernel_name, __FILE__, \
                                     __LINE__);                                            \
  } while (0)

#define LLM_CUBLAS_CHECK(call)                                                         \
  do {                                                                                 \
    const cublasStatus_t llm_cublas_status_ = (call);                                  \
    if (llm_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                   \
      return ::llm::cuda::CublasStatus(llm_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)
