// Device buffers and event-timed medians shared by the kernel benchmarks (bench_kernels.cu,
// bench_boundary.cu).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "bench/bench_check.h"

namespace llm::bench {

template <typename T>
T* DeviceAlloc(size_t count) {
  T* p = nullptr;
  BENCH_CHECK(cudaMalloc(&p, count * sizeof(T)));
  return p;
}

// Median milliseconds of `iterations` runs of body(i) after `warmup` runs, each timed with events.
template <typename Body>
double MedianMs(cudaStream_t stream, int warmup, int iterations, Body&& body) {
  for (int i = 0; i < warmup; ++i) body(i);
  BENCH_CHECK(cudaStreamSynchronize(stream));
  std::vector<cudaEvent_t> events(2 * iterations);
  for (auto& e : events) BENCH_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < iterations; ++i) {
    BENCH_CHECK(cudaEventRecord(events[2 * i], stream));
    body(warmup + i);
    BENCH_CHECK(cudaEventRecord(events[2 * i + 1], stream));
  }
  BENCH_CHECK(cudaStreamSynchronize(stream));
  std::vector<float> ms(iterations);
  for (int i = 0; i < iterations; ++i)
    BENCH_CHECK(cudaEventElapsedTime(&ms[i], events[2 * i], events[2 * i + 1]));
  for (auto& e : events) BENCH_CHECK(cudaEventDestroy(e));
  std::nth_element(ms.begin(), ms.begin() + iterations / 2, ms.end());
  return ms[iterations / 2];
}

}  // namespace llm::bench
