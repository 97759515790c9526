// Builds a MemorySample from the backend's memory stats and the transformer's allocations.
//
// Header-only so that llm_metrics does not link the kernels or model libraries; the server's main,
// which has the transformer, includes it.
#pragma once

#include <cstddef>

#include "kernels/backend.h"
#include "server/metrics/engine_state_sample.h"
#include "server/model/transformer.h"

namespace llm::metrics {

inline MemorySample ToMemorySample(const BackendMemoryStats& stats, size_t weight_bytes,
                                   size_t kv_cache_bytes, size_t workspace_bytes) {
  return MemorySample{.device_total_bytes = stats.device_total_bytes,
                      .device_used_bytes = stats.device_used_bytes,
                      .backend_allocated_bytes = stats.allocated_bytes,
                      .weight_bytes = weight_bytes,
                      .kv_cache_bytes = kv_cache_bytes,
                      .workspace_bytes = workspace_bytes};
}

// Call on the thread that owns the transformer, e.g. in main before the engine takes it.
inline MemorySample ToMemorySample(Transformer& transformer) {
  return ToMemorySample(transformer.backend().memory_stats(), transformer.weight_bytes(),
                        transformer.kv_cache_bytes(), transformer.workspace_bytes());
}

}  // namespace llm::metrics
