// Sampling parameters, the result of sampling one token, and the seeded random draw that every backend
// uses, so that the CPU and CUDA backends pick the same token for the same logits and seed.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#if defined(__CUDACC__)
#define SAMPLING_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SAMPLING_HOST_DEVICE inline
#endif

namespace llm {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy (argmax, lowest id wins ties)
  int32_t top_k = 0;         // 0 = no top-k cut
  float top_p = 1.0f;        // nucleus: keep the smallest prefix of the sorted distribution with mass >= top_p
  uint64_t seed = 0;
  uint64_t draw_index = 0;   // which draw of the sequence this is (its position): same seed + index -> same draw
  int32_t num_top_logprobs = 0;  // also return this many most likely alternatives
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;  // log-probability under the model's distribution (log_softmax of raw logits)
  std::vector<std::pair<int32_t, float>> top_logprobs;  // (token, logprob), most likely first
};

// splitmix64: a stateless counter-based generator; good enough for sampling and identical on host and device.
SAMPLING_HOST_DEVICE uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) with 24 random bits, from (seed, draw_index).
SAMPLING_HOST_DEVICE float SampleUniform(uint64_t seed, uint64_t draw_index) {
  const uint64_t bits = SplitMix64(seed ^ SplitMix64(draw_index));
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
}

}  // namespace llm
