// Engine stats snapshot -> gauges and counter increments.
#include "server/metrics/engine_stats_sync.h"

namespace llm::metrics {

EngineStateSample EngineStatsSync::ToSample(const engine::EngineStats& stats,
                                            const MemorySample& memory, int32_t block_size_tokens) {
  EngineStateSample sample;
  sample.sequences = {.running = stats.running_requests,
                      .waiting = stats.waiting_requests,
                      .idle = stats.idle_sequences};
  sample.kv_cache = {.total_blocks = stats.kv_blocks_total,
                     .used_blocks = stats.kv_blocks_used,
                     .free_blocks = stats.kv_blocks_free,
                     .cached_blocks = stats.kv_blocks_cached,
                     .block_size_tokens = block_size_tokens,
                     .block_bytes = stats.kv_block_bytes};
  sample.memory = memory;
  return sample;
}

void EngineStatsSync::Sync(const engine::EngineStats& stats) {
  std::lock_guard<std::mutex> lock(mutex_);
  observer_.OnEngineState(ToSample(stats, memory_, block_size_tokens_));
  // Totals only grow; a smaller value (an engine restarted behind the same observer) restarts the
  // baseline rather than producing a negative increment.
  auto delta = [](int64_t now, int64_t before) { return now >= before ? now - before : now; };
  observer_.OnPromptTokens(delta(stats.prompt_tokens_total, last_.prompt_tokens_total));
  observer_.OnGeneratedTokens(delta(stats.generated_tokens_total, last_.generated_tokens_total));
  observer_.OnSequencesExpired(delta(stats.sequences_expired_total, last_.sequences_expired_total));
  observer_.OnPreemptions(delta(stats.preemptions_total, last_.preemptions_total));
  observer_.OnRejections(RejectionReason::kKvCacheFull,
                         delta(stats.requests_rejected_kv_total, last_.requests_rejected_kv_total));
  observer_.OnPrefixCacheLookups(
      delta(stats.prefix_cache_query_tokens_total, last_.prefix_cache_query_tokens_total),
      delta(stats.prefix_cache_hit_tokens_total, last_.prefix_cache_hit_tokens_total));
  observer_.OnKvBlocksEvicted(delta(stats.kv_blocks_evicted_total, last_.kv_blocks_evicted_total));
  last_ = stats;
}

}  // namespace llm::metrics
