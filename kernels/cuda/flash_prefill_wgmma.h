// Host-side entry points of the Hopper wgmma flash prefill (flash_prefill_wgmma.cuh) and the choice
// between it and the mma.sync kernel (flash_prefill.cuh) that LaunchFlashPrefill makes.
//
// By default LaunchFlashPrefill takes the wgmma kernel on a compute capability 9.0 device unless
// the environment variable LLM_FLASH_PREFILL_WGMMA is "0" (both read once per process), and the
// mma.sync kernel otherwise. Tests and benchmarks can force either kernel for the whole process.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "kernels/cuda/attention_params.h"

namespace llm::cuda {

enum class FlashPrefillImplementation { kDefault, kMmaSync, kWgmma };

// True when the current device can run the wgmma kernel (compute capability 9.0).
bool FlashPrefillWgmmaAvailable();
// Process-wide override for tests and benchmarks (kDefault restores the default choice). Forcing
// kWgmma on a device without it makes LaunchFlashPrefill fail with FailedPrecondition.
void SetFlashPrefillImplementation(FlashPrefillImplementation implementation);
// The kernel LaunchFlashPrefill runs now: kMmaSync or kWgmma.
FlashPrefillImplementation ActiveFlashPrefillImplementation();
const char* FlashPrefillImplementationName(FlashPrefillImplementation implementation);

// Per-head_dim launchers (flash_prefill_wgmma_hd{64,128}.cu, compiled for sm_90a only).
absl::Status LaunchFlashPrefillWgmmaHeadDim64(const PagedAttentionParams& params,
                                              cudaStream_t stream);
absl::Status LaunchFlashPrefillWgmmaHeadDim128(const PagedAttentionParams& params,
                                               cudaStream_t stream);

}  // namespace llm::cuda
