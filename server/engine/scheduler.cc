// Step planning and admission policy; see scheduler.h for the rules.
#include "server/engine/scheduler.h"

#include <algorithm>

namespace llm::engine {

std::vector<ScheduledChunk> Scheduler::PlanStep(std::span<const RunnableSequence> runnable) const {
  std::vector<ScheduledChunk> chunks;
  int32_t budget = limits_.max_batch_tokens;
  const auto has_room = [&] {
    return budget > 0 && static_cast<int32_t>(chunks.size()) < limits_.max_running_sequences;
  };
  for (const RunnableSequence& sequence : runnable) {
    if (!has_room()) break;
    if (sequence.is_decode && sequence.pending_tokens > 0) {
      chunks.push_back({sequence.id, 1});
      budget -= 1;
    }
  }
  for (const RunnableSequence& sequence : runnable) {
    if (!has_room()) break;
    if (sequence.is_decode || sequence.pending_tokens <= 0) continue;
    const int32_t take = std::min(sequence.pending_tokens, budget);
    chunks.push_back({sequence.id, take});
    budget -= take;
  }
  return chunks;
}

std::vector<bool> Scheduler::PlanAdmission(std::span<const WaitingRequestNeeds> waiting,
                                           int32_t running, int32_t free_blocks) const {
  std::vector<bool> admit(waiting.size(), false);
  bool block_queue_stalled = false;
  for (size_t i = 0; i < waiting.size(); ++i) {
    if (running >= limits_.max_running_sequences) break;
    const int32_t needed = waiting[i].new_blocks;
    if (needed > 0) {
      if (block_queue_stalled) continue;
      if (needed > free_blocks) {
        block_queue_stalled = true;  // keep FCFS among block-needing requests
        continue;
      }
      free_blocks -= needed;
    }
    admit[i] = true;
    ++running;
  }
  return admit;
}

}  // namespace llm::engine
