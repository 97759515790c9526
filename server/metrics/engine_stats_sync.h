// Turns the engine's published stats snapshot (engine::EngineStats) into gauge values and counter
// increments on a ServingObserver.
//
// The engine keeps running totals (tokens, expirations, KV rejections, preemptions, prefix-cache
// lookups and hits, evictions); Prometheus counters only go up by increments. Sync() remembers the
// totals it last saw and adds the difference, so the exported counters equal the engine's totals
// after every sync. Meant to run just before each scrape (RefreshingCollectable), so gauges are
// fresh even while the engine is idle.
#pragma once

#include <mutex>

#include "server/engine/engine_stats.h"
#include "server/metrics/engine_state_sample.h"
#include "server/metrics/serving_observer.h"

namespace llm::metrics {

class EngineStatsSync {
 public:
  // `memory` is sampled once (weights, KV pool and workspace do not change after start-up);
  // `block_size_tokens` is the KV block size. `observer` must outlive this object.
  EngineStatsSync(ServingObserver& observer, const MemorySample& memory, int32_t block_size_tokens)
      : observer_(observer), memory_(memory), block_size_tokens_(block_size_tokens) {}

  // Thread-safe; concurrent scrapes are serialized.
  void Sync(const engine::EngineStats& stats);

  // The gauge part of a stats snapshot.
  static EngineStateSample ToSample(const engine::EngineStats& stats, const MemorySample& memory,
                                    int32_t block_size_tokens);

 private:
  ServingObserver& observer_;
  const MemorySample memory_;
  const int32_t block_size_tokens_;

  std::mutex mutex_;
  engine::EngineStats last_;  // totals already exported
};

}  // namespace llm::metrics
