// Element-wise and data-movement kernels: residual Add, SiluMul (SwiGLU's gate), row gather (Embed
// and GatherRows) and the weight conversion to bf16. Grid-stride loops; math in fp32, one rounding
// to bf16 per output. Gathers copy 16 bytes per thread when the row size allows. Reference: the CPU
// backend's ops of the same names; test: tests/kernels/gpu/small_ops_test.cc.
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/small_ops.h"

namespace llm::cuda {
namespace {

constexpr int kThreads = 256;

unsigned GridFor(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 * 8 ? blocks : 65536 * 8);
}

__global__ void AddKernel(__nv_bfloat16* residual, const __nv_bfloat16* x, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    residual[i] = __float2bfloat16_rn(__bfloat162float(residual[i]) + __bfloat162float(x[i]));
  }
}

// 8 values per thread (inter % 8 == 0, aligned): a 2048-token prefill of the TinyLlama-1.1B shape
// 11.9 -> 11.1 ms against the scalar kernel below (H100).
__global__ void SiluMulVectorKernel(const uint4* gate_up, int32_t rows, int32_t inter_chunks,
                                    uint4* out) {
  const int64_t count = static_cast<int64_t>(rows) * inter_chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / inter_chunks;
    const int64_t chunk = i % inter_chunks;
    const uint4 gate = gate_up[row * 2 * inter_chunks + chunk];
    const uint4 up = gate_up[row * 2 * inter_chunks + inter_chunks + chunk];
    const auto* g2 = reinterpret_cast<const __nv_bfloat162*>(&gate);
    const auto* u2 = reinterpret_cast<const __nv_bfloat162*>(&up);
    uint4 result;
    auto* r2 = reinterpret_cast<__nv_bfloat162*>(&result);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 g = __bfloat1622float2(g2[j]);
      const float2 u = __bfloat1622float2(u2[j]);
      r2[j] = __floats2bfloat162_rn(g.x / (1.f + expf(-g.x)) * u.x, g.y / (1.f + expf(-g.y)) * u.y);
    }
    out[i] = result;
  }
}

__global__ void SiluMulKernel(const __nv_bfloat16* gate_up, int32_t rows, int32_t inter,
                              __nv_bfloat16* out) {
  const int64_t count = static_cast<int64_t>(rows) * inter;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / inter;
    const int64_t column = i % inter;
    const float gate = __bfloat162float(gate_up[row * 2 * inter + column]);
    const float up = __bfloat162float(gate_up[row * 2 * inter + inter + column]);
    out[i] = __float2bfloat16_rn(gate / (1.f + expf(-gate)) * up);
  }
}

template <typename Word>
__global__ void GatherRowsKernel(const Word* x, const int32_t* rows, int64_t words_per_row,
                                 Word* out) {
  const int64_t source_row = rows[blockIdx.x];
  for (int64_t i = threadIdx.x; i < words_per_row; i += blockDim.x) {
    out[blockIdx.x * words_per_row + i] = x[source_row * words_per_row + i];
  }
}

__global__ void ConvertKernel(const void* source, int32_t source_dtype, int64_t count,
                              __nv_bfloat16* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float value = source_dtype == 0 ? static_cast<const float*>(source)[i]
                                          : __half2float(static_cast<const __half*>(source)[i]);
    out[i] = __float2bfloat16_rn(value);
  }
}

}  // namespace

absl::Status LaunchAdd(__nv_bfloat16* residual, const __nv_bfloat16* x, int64_t count,
                       cudaStream_t stream) {
  if (count == 0) return absl::OkStatus();
  if (residual == nullptr || x == nullptr || count < 0)
    return absl::InvalidArgumentError("Add: bad arguments");
  AddKernel<<<GridFor(count), kThreads, 0, stream>>>(residual, x, count);
  LLM_CUDA_CHECK_LAUNCH(AddKernel);
  return absl::OkStatus();
}

absl::Status LaunchSiluMul(const __nv_bfloat16* gate_up, int32_t rows, int32_t inter,
                           __nv_bfloat16* out, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  if (gate_up == nullptr || out == nullptr || rows < 0 || inter <= 0) {
    return absl::InvalidArgumentError("SiluMul: bad arguments");
  }
  if (inter % 8 == 0 && reinterpret_cast<uintptr_t>(gate_up) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(out) % 16 == 0) {
    SiluMulVectorKernel<<<GridFor(static_cast<int64_t>(rows) * inter / 8), kThreads, 0, stream>>>(
        reinterpret_cast<const uint4*>(gate_up), rows, inter / 8, reinterpret_cast<uint4*>(out));
    LLM_CUDA_CHECK_LAUNCH(SiluMulVectorKernel);
    return absl::OkStatus();
  }
  SiluMulKernel<<<GridFor(static_cast<int64_t>(rows) * inter), kThreads, 0, stream>>>(gate_up, rows,
                                                                                      inter, out);
  LLM_CUDA_CHECK_LAUNCH(SiluMulKernel);
  return absl::OkStatus();
}

absl::Status LaunchGatherRows(const void* x, const int32_t* rows, int32_t num_rows,
                              int64_t row_bytes, void* out, cudaStream_t stream) {
  if (num_rows == 0) return absl::OkStatus();
  if (x == nullptr || rows == nullptr || out == nullptr || num_rows < 0 || row_bytes <= 0) {
    return absl::InvalidArgumentError("GatherRows: bad arguments");
  }
  const bool wide = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (wide) {
    GatherRowsKernel<<<num_rows, 128, 0, stream>>>(static_cast<const uint4*>(x), rows,
                                                   row_bytes / 16, static_cast<uint4*>(out));
  } else {
    GatherRowsKernel<<<num_rows, 128, 0, stream>>>(static_cast<const uint8_t*>(x), rows, row_bytes,
                                                   static_cast<uint8_t*>(out));
  }
  LLM_CUDA_CHECK_LAUNCH(GatherRowsKernel);
  return absl::OkStatus();
}

absl::Status LaunchConvertToBf16(const void* source, int32_t source_dtype, int64_t count,
                                 __nv_bfloat16* out, cudaStream_t stream) {
  if (count == 0) return absl::OkStatus();
  if (source_dtype != 0 && source_dtype != 1) {
    return absl::InvalidArgumentError("ConvertToBf16: source must be F32 or F16");
  }
  ConvertKernel<<<GridFor(count), kThreads, 0, stream>>>(source, source_dtype, count, out);
  LLM_CUDA_CHECK_LAUNCH(ConvertKernel);
  return absl::OkStatus();
}

}  // namespace llm::cuda
