// Knobs of the engine: batch budget, admission limits, timeouts.
#pragma once

#include <cstdint>

#include "absl/time/time.h"

namespace llm::engine {

struct EngineOptions {
  // Most query tokens (decode tokens + prefill chunk tokens) in one forward step.
  int32_t max_batch_tokens = 512;
  // Most sequences that take part in one forward step.
  int32_t max_running_sequences = 64;
  // Most requests waiting for admission (KV space or a batch slot); beyond it, RESOURCE_EXHAUSTED.
  int32_t max_waiting_requests = 1024;
  // Longest a request waits for KV space before RESOURCE_EXHAUSTED (its own deadline may end it
  // sooner).
  absl::Duration max_queue_wait = absl::Seconds(30);
  // A sequence from Prefill with no request for this long is freed.
  absl::Duration sequence_ttl = absl::Minutes(10);
  // Generate's max_tokens when the request leaves it 0.
  int32_t default_max_tokens = 16;
  // Most top log-probs a request may ask for.
  int32_t max_top_logprobs = 20;
  // Reuse the KV blocks of cached full-block prompt prefixes for new sequences and for Prefill
  // extensions of live ones (kvcache/README.md).
  bool enable_prefix_cache = true;
};

}  // namespace llm::engine
