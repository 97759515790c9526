// Helpers of the GPU kernel tests: the skip-without-GPU guard, bf16 host conversions, device
// buffers filled from host vectors, and output poisoning (every byte 0xFF: a bf16/f32 NaN), so an
// element a kernel forgot to write fails the NaN check instead of passing as a stale value.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"

namespace llm::gpu_testing {

inline bool HasCudaDevice() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) cudaGetLastError();
  return error == cudaSuccess && count > 0;
}

#define SKIP_WITHOUT_GPU()                                                                       \
  do {                                                                                           \
    if (!::llm::gpu_testing::HasCudaDevice())                                                    \
      GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or found 0): GPU test skipped"; \
  } while (0)

// Random floats already rounded to bf16, so CPU (fp32) and GPU (bf16) see identical inputs.
// RoPE inverse frequencies of the default type, theta 10000: inv_freq[i] = 10000^(-2i / D).
inline std::vector<float> RopeInverseFrequencies(int32_t head_dim) {
  std::vector<float> inv_freq(head_dim / 2);
  for (int32_t i = 0; i < head_dim / 2; ++i) inv_freq[i] = std::pow(10000.f, -2.f * i / head_dim);
  return inv_freq;
}

inline std::vector<float> RandomBf16Values(size_t count, std::mt19937& generator, float low = -1.f,
                                           float high = 1.f) {
  std::uniform_real_distribution<float> distribution(low, high);
  std::vector<float> values(count);
  for (float& v : values) v = BF16ToFloat(FloatToBF16(distribution(generator)));
  return values;
}

inline std::vector<uint16_t> ToBf16(const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = FloatToBF16(values[i]);
  return bits;
}

inline std::vector<float> FromBf16(const std::vector<uint16_t>& bits) {
  std::vector<float> values(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) values[i] = BF16ToFloat(bits[i]);
  return values;
}

// A backend buffer holding a copy of `host` (any trivially copyable element type).
template <typename T>
DeviceBuffer Upload(Backend& backend, const std::vector<T>& host) {
  auto buffer = backend.Allocate(host.size() * sizeof(T));
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  if (!host.empty()) {
    EXPECT_TRUE(backend.CopyToDevice(buffer->data(), host.data(), host.size() * sizeof(T)).ok());
  }
  return std::move(*buffer);
}

// A backend buffer of `bytes` with every byte 0xFF.
inline DeviceBuffer Poisoned(Backend& backend, size_t bytes) {
  auto buffer = backend.Allocate(bytes);
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  EXPECT_EQ(cudaMemset(buffer->data(), 0xFF, bytes), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return std::move(*buffer);
}

template <typename T>
std::vector<T> Download(Backend& backend, const DeviceBuffer& buffer, size_t count) {
  std::vector<T> host(count);
  EXPECT_TRUE(backend.CopyToHost(host.data(), buffer.data(), count * sizeof(T)).ok());
  return host;
}

inline size_t CountNonFinite(const std::vector<float>& values) {
  size_t count = 0;
  for (float v : values) count += std::isfinite(v) ? 0 : 1;
  return count;
}

// ||actual - expected|| / ||expected||, in double.
inline double RelativeError(const std::vector<float>& actual, const std::vector<float>& expected) {
  double difference = 0.0;
  double norm = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double d = static_cast<double>(actual[i]) - expected[i];
    difference += d * d;
    norm += static_cast<double>(expected[i]) * expected[i];
  }
  return norm == 0.0 ? std::sqrt(difference) : std::sqrt(difference / norm);
}

}  // namespace llm::gpu_testing
