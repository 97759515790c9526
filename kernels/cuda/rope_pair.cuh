// One rotate-half RoPE pair (Hugging Face convention): (x0, x1) = columns (i, i + D/2) of a head,
// already in fp32 (and scaled, where a folded norm applies), rotated at `position` with
// angle = float(position) * inv_freq[i] (rounded to fp32 before a full-range sincosf, as the CPU
// reference) and rounded to bf16. RopeAppendKv, the GEMV's RoPE epilogue and flash decode's folded
// RoPE all call this, so they rotate to the same bits.
#pragma once

#include <cuda_bf16.h>

namespace llm::cuda {

// The pair's cosine and sine, scaled: a kernel rotating many heads at one position takes them once
// per column and rotates with RotatePairBy (the same bits as RotatePair).
__device__ __forceinline__ void RopeCosSin(int position, float inv_freq, float attention_scaling,
                                           float& cosine, float& sine) {
  const float angle = static_cast<float>(position) * inv_freq;
  sincosf(angle, &sine, &cosine);
  cosine *= attention_scaling;
  sine *= attention_scaling;
}

__device__ __forceinline__ void RotatePairBy(float x0, float x1, float cosine, float sine,
                                             __nv_bfloat16& y0, __nv_bfloat16& y1) {
  y0 = __float2bfloat16_rn(x0 * cosine - x1 * sine);
  y1 = __float2bfloat16_rn(x1 * cosine + x0 * sine);
}

__device__ __forceinline__ void RotatePair(float x0, float x1, int position, float inv_freq,
                                           float attention_scaling, __nv_bfloat16& y0,
                                           __nv_bfloat16& y1) {
  float cosine, sine;
  RopeCosSin(position, inv_freq, attention_scaling, cosine, sine);
  RotatePairBy(x0, x1, cosine, sine, y0, y1);
}

}  // namespace llm::cuda
