// Builds the parts of an EngineStateSample from the types that own the numbers: the KV cache
// manager's usage, the backend's memory stats and the transformer's allocations.
//
// Header-only so that the metrics library does not link the kvcache, kernels or model libraries;
// the engine, which already links them, includes this.
#pragma once

#include "kernels/backend.h"
#include "kvcache/kv_cache_manager.h"
#include "server/metrics/engine_state_sample.h"
#include "server/model/transformer.h"

namespace llm::metrics {

inline KvCacheSample ToKvCacheSample(const kvcache::KvCacheUsage& usage, int32_t block_size) {
  return KvCacheSample{.total_blocks = usage.total_blocks,
                       .used_blocks = usage.used_blocks,
                       .free_blocks = usage.free_blocks,
                       .block_size_tokens = block_size,
                       .block_bytes = usage.block_bytes};
}

inline MemorySample ToMemorySample(const BackendMemoryStats& stats, size_t weight_bytes,
                                   size_t kv_cache_bytes, size_t workspace_bytes) {
  return MemorySample{.device_total_bytes = stats.device_total_bytes,
                      .device_used_bytes = stats.device_used_bytes,
                      .backend_allocated_bytes = stats.allocated_bytes,
                      .weight_bytes = weight_bytes,
                      .kv_cache_bytes = kv_cache_bytes,
                      .workspace_bytes = workspace_bytes};
}

// Must run on the thread that owns the transformer (the engine thread).
inline MemorySample ToMemorySample(Transformer& transformer) {
  return ToMemorySample(transformer.backend().memory_stats(), transformer.weight_bytes(),
                        transformer.kv_cache_bytes(), transformer.workspace_bytes());
}

}  // namespace llm::metrics
