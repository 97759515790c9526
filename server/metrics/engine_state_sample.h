// A snapshot of the engine's gauges: sequences by state, KV cache occupancy, memory by owner.
//
// Plain numbers, so that ServingMetrics knows nothing of the engine. engine_stats_sync.h fills the
// sequence and KV parts from engine::EngineStats, memory_sample.h the memory part from the backend
// and the transformer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace llm::metrics {

struct SequenceCounts {
  int64_t running = 0;  // scheduled: prefilling or decoding in the current batch
  int64_t waiting = 0;  // queued for their first (or a resumed) prefill
  int64_t idle = 0;     // prefilled, holding KV blocks, waiting for the client's next Decode
};

struct KvCacheSample {
  int64_t total_blocks = 0;
  int64_t used_blocks = 0;
  int64_t free_blocks = 0;    // free, or cached and held by no sequence: what allocation can take
  int64_t cached_blocks = 0;  // findable by prefix hash, held by sequences or not
  int64_t block_size_tokens = 0;
  size_t block_bytes = 0;  // one block across all layers, K and V
};

struct MemorySample {
  size_t device_total_bytes = 0;       // 0 where it does not apply (CPU backend)
  size_t device_used_bytes = 0;        // all users of the device, as the driver reports it
  size_t backend_allocated_bytes = 0;  // what this process's backend handed out
  size_t weight_bytes = 0;
  size_t kv_cache_bytes = 0;
  size_t workspace_bytes = 0;
};

struct EngineStateSample {
  SequenceCounts sequences;
  KvCacheSample kv_cache;
  MemorySample memory;
};

}  // namespace llm::metrics
