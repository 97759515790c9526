// The scheduler decides who runs in the next forward step and which waiting requests are admitted.
//
// It is pure policy over plain numbers: the engine gives it the runnable sequences and the waiting
// requests, it answers with chunks and admission decisions. The block manager (kvcache/) says what is
// free; the model runner (Transformer::Forward) runs what the scheduler chose.
//
// Policy:
// - Every step serves all running decode tokens first (one token each, oldest first), so that
//   inter-token latency does not grow with the prompts of newcomers; prefill chunks (oldest first)
//   then fill the rest of the token budget (chunked prefill).
// - Admission is first-come-first-served among requests that need new KV blocks (a big prompt is not
//   starved by a stream of small ones); a request that needs no new block (a decode inside its last
//   block) is admitted whenever a batch slot is free.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace llm::engine {

struct SchedulerLimits {
  int32_t max_batch_tokens = 512;
  int32_t max_running_sequences = 64;
};

struct RunnableSequence {
  uint64_t id = 0;
  int32_t pending_tokens = 0;  // tokens still to feed for the current request (>= 1)
  bool is_decode = false;      // a single token after the prompt was processed
};

struct ScheduledChunk {
  uint64_t id = 0;
  int32_t num_tokens = 0;
};

struct WaitingRequestNeeds {
  int32_t new_blocks = 0;  // KV blocks admission must reserve
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerLimits& limits) : limits_(limits) {}

  // The chunks of the next step. `runnable` is in admission order (oldest first).
  std::vector<ScheduledChunk> PlanStep(std::span<const RunnableSequence> runnable) const;

  // One decision per waiting request (in arrival order): true = admit now. `running` counts the
  // requests already admitted; `free_blocks` the KV blocks free now.
  std::vector<bool> PlanAdmission(std::span<const WaitingRequestNeeds> waiting, int32_t running,
                                  int32_t free_blocks) const;

  const SchedulerLimits& limits() const { return limits_; }

 private:
  SchedulerLimits limits_;
};

}  // namespace llm::engine
