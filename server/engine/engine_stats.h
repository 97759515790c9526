// What the engine reports about itself: a snapshot for pollers and a per-step observer for metrics.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/time/time.h"

namespace llm::engine {

struct EngineStats {
  int32_t running_requests = 0;  // admitted, taking part in steps
  int32_t waiting_requests = 0;  // queued for KV space or a batch slot
  int32_t idle_sequences = 0;    // sequences from Prefill holding KV with no request
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_used = 0;
  int32_t kv_blocks_free = 0;    // free or cached-unreferenced: what an allocation can take
  int32_t kv_blocks_cached = 0;  // findable by prefix hash, held by sequences or not
  size_t kv_block_bytes = 0;
  int64_t prompt_tokens_total = 0;     // prefill tokens run through the model
  int64_t generated_tokens_total = 0;  // tokens sampled and returned
  int64_t steps_total = 0;
  double step_seconds_total = 0.0;
  double last_step_seconds = 0.0;
  int64_t sequences_expired_total = 0;     // freed by the idle TTL
  int64_t requests_rejected_kv_total = 0;  // RESOURCE_EXHAUSTED because of KV space or queue bound
  // Prefix cache: prompt tokens looked up (new sequences' prompts and Prefill extensions of live
  // sequences), and those whose K/V came from cached blocks (not run through the model).
  // Recomputations after a preemption are not counted.
  int64_t prefix_cache_query_tokens_total = 0;
  int64_t prefix_cache_hit_tokens_total = 0;
  int64_t kv_blocks_evicted_total = 0;  // cached blocks reused for other contents
  // Running requests that lost their KV blocks so that older ones could grow; requeued and
  // recomputed.
  int64_t preemptions_total = 0;

  // Hit tokens / looked-up prompt tokens; 0 before any lookup.
  double prefix_cache_hit_rate() const {
    return prefix_cache_query_tokens_total > 0
               ? static_cast<double>(prefix_cache_hit_tokens_total) /
                     static_cast<double>(prefix_cache_query_tokens_total)
               : 0.0;
  }
};

// One forward step, as the metrics module wants it.
struct StepStats {
  int32_t num_sequences = 0;
  int32_t prefill_tokens = 0;
  int32_t decode_tokens = 0;
  absl::Duration duration;
  bool ok = true;
};

// Called on the engine thread; implementations must be quick and thread-safe with their readers.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void OnStep(const StepStats& step) = 0;
  // Time from submission to admission, per admitted request.
  virtual void OnAdmitted(absl::Duration queue_time) { (void)queue_time; }
};

}  // namespace llm::engine
