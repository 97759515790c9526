// The narrow interface through which the engine and the gRPC service report what happens.
//
// The engine and service call these methods; they know nothing of Prometheus. ServingMetrics
// (serving_metrics.h) implements them on a prometheus-cpp registry; NullServingObserver ignores
// everything, for tests and for servers started without --metrics_port. Implementations must be
// safe to call from any thread (the engine thread and gRPC handler threads).
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "server/metrics/engine_state_sample.h"

namespace llm::metrics {

// Which kind of work an engine step ran. A step that mixes prefill chunks and decode tokens is
// reported as kMixed: its time cannot be split between the two.
enum class StepPhase { kPrefill, kDecode, kMixed };

// Why a request was turned away before or during scheduling.
enum class RejectionReason {
  kKvCacheFull,      // no KV blocks for the request, and it could not wait
  kQueueFull,        // the waiting queue is at its limit
  kInvalidArgument,  // validation failed (ids outside the vocabulary, lengths over limits, ...)
  kUnknownSequence,  // Decode/Release named a sequence that does not exist or has expired
};

std::string_view StepPhaseLabel(StepPhase phase);
std::string_view RejectionReasonLabel(RejectionReason reason);

class ServingObserver {
 public:
  virtual ~ServingObserver() = default;

  // One engine step finished: its wall time, the query tokens and sequences in its batch.
  virtual void OnStep(StepPhase phase, double seconds, int64_t batch_tokens,
                      int64_t batch_sequences) = 0;
  // A request waited `seconds` between arriving at the engine and its first scheduled step.
  virtual void OnQueued(double seconds) = 0;
  // The first token of a request (Prefill reply, first Generate token) was produced `seconds` after
  // the request arrived.
  virtual void OnFirstToken(double seconds) = 0;
  // A further token of a sequence was produced `seconds` after the previous one (Generate streams
  // and Decode calls of one sequence).
  virtual void OnToken(double seconds_since_previous) = 0;
  // Prompt tokens run through the model (Prefill and Generate prompts) and tokens sampled for
  // clients. llm-server reports both from the engine's running totals (engine_stats_sync.h).
  virtual void OnPromptTokens(int64_t count) = 0;
  virtual void OnGeneratedTokens(int64_t count) = 0;
  // An RPC finished with `code` after `seconds` (end-to-end, as the handler saw it). `rpc` is the
  // proto method name, e.g. "Generate".
  virtual void OnRequestDone(std::string_view rpc, absl::StatusCode code, double seconds) = 0;
  // `count` requests were turned away for `reason`.
  virtual void OnRejections(RejectionReason reason, int64_t count) = 0;
  // `count` running sequences lost their KV blocks to make room and will be recomputed later.
  virtual void OnPreemptions(int64_t count) = 0;
  // `count` sequences idle for longer than their TTL were released by the engine.
  virtual void OnSequencesExpired(int64_t count) = 0;
  // The prefix cache looked up `query_tokens` prompt tokens (of new sequences and of extensions)
  // and found K/V for `hit_tokens` of them.
  virtual void OnPrefixCacheLookups(int64_t query_tokens, int64_t hit_tokens) = 0;
  // `count` cached KV blocks were reused for other contents.
  virtual void OnKvBlocksEvicted(int64_t count) = 0;
  // The engine's state after a step (or at start-up): queue depths, KV cache and memory use.
  virtual void OnEngineState(const EngineStateSample& sample) = 0;
};

// Ignores every event.
class NullServingObserver final : public ServingObserver {
 public:
  void OnStep(StepPhase, double, int64_t, int64_t) override {}
  void OnQueued(double) override {}
  void OnFirstToken(double) override {}
  void OnToken(double) override {}
  void OnPromptTokens(int64_t) override {}
  void OnGeneratedTokens(int64_t) override {}
  void OnRequestDone(std::string_view, absl::StatusCode, double) override {}
  void OnRejections(RejectionReason, int64_t) override {}
  void OnPreemptions(int64_t) override {}
  void OnSequencesExpired(int64_t) override {}
  void OnPrefixCacheLookups(int64_t, int64_t) override {}
  void OnKvBlocksEvicted(int64_t) override {}
  void OnEngineState(const EngineStateSample&) override {}
};

}  // namespace llm::metrics
