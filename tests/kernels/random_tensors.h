// Seeded random inputs for the kernel tests, so a failure reproduces.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace llm::testing {

inline std::vector<float> RandomFloats(size_t count, uint32_t seed, float low = -1.0f,
                                       float high = 1.0f) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(low, high);
  std::vector<float> values(count);
  for (float& v : values) v = distribution(generator);
  return values;
}

// ||actual - expected|| / ||expected|| over two equally long sequences.
template <typename A, typename B>
double RelativeError(const A& actual, const B& expected) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double d = static_cast<double>(actual[i]) - static_cast<double>(expected[i]);
    diff += d * d;
    norm += static_cast<double>(expected[i]) * static_cast<double>(expected[i]);
  }
  return norm == 0.0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

}  // namespace llm::testing
