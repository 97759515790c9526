// Tests for the scheduler's step planning and admission policy.
#include "server/engine/scheduler.h"

#include "gtest/gtest.h"

namespace llm::engine {
namespace {

TEST(SchedulerTest, DecodesGoFirstThenPrefillChunksFillTheBudget) {
  Scheduler scheduler({.max_batch_tokens = 10, .max_running_sequences = 8});
  const std::vector<RunnableSequence> runnable = {
      {.id = 1, .pending_tokens = 20, .is_decode = false},
      {.id = 2, .pending_tokens = 1, .is_decode = true},
      {.id = 3, .pending_tokens = 6, .is_decode = false},
      {.id = 4, .pending_tokens = 1, .is_decode = true},
  };
  const std::vector<ScheduledChunk> plan = scheduler.PlanStep(runnable);
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[0].id, 2u);
  EXPECT_EQ(plan[0].num_tokens, 1);
  EXPECT_EQ(plan[1].id, 4u);
  EXPECT_EQ(plan[1].num_tokens, 1);
  EXPECT_EQ(plan[2].id, 1u);  // the oldest prefill takes the rest of the budget, chunked
  EXPECT_EQ(plan[2].num_tokens, 8);
}

TEST(SchedulerTest, NeverExceedsTokenBudgetOrSequenceCap) {
  Scheduler scheduler({.max_batch_tokens = 5, .max_running_sequences = 3});
  std::vector<RunnableSequence> runnable;
  for (uint64_t id = 1; id <= 10; ++id) {
    runnable.push_back({.id = id, .pending_tokens = id % 2 == 0 ? 1 : 4, .is_decode = id % 2 == 0});
  }
  const std::vector<ScheduledChunk> plan = scheduler.PlanStep(runnable);
  int32_t tokens = 0;
  for (const ScheduledChunk& chunk : plan) {
    EXPECT_GT(chunk.num_tokens, 0);
    tokens += chunk.num_tokens;
  }
  EXPECT_LE(tokens, 5);
  EXPECT_EQ(plan.size(), 3u);
  for (const ScheduledChunk& chunk : plan) EXPECT_EQ(chunk.id % 2, 0u) << "decodes first";
}

TEST(SchedulerTest, EmptyInputPlansNothing) {
  Scheduler scheduler({});
  EXPECT_TRUE(scheduler.PlanStep({}).empty());
  EXPECT_TRUE(scheduler.PlanAdmission({}, 0, 10).empty());
}

TEST(SchedulerTest, AdmissionIsFirstComeFirstServedAmongBlockNeeders) {
  Scheduler scheduler({.max_batch_tokens = 64, .max_running_sequences = 10});
  // 5 free blocks: the first (3) fits, the second (4) does not, so the third (1) must not jump it;
  // the fourth needs no block and is admitted anyway.
  const std::vector<WaitingRequestNeeds> waiting = {{3}, {4}, {1}, {0}};
  const std::vector<bool> admit = scheduler.PlanAdmission(waiting, 0, 5);
  EXPECT_EQ(admit, (std::vector<bool>{true, false, false, true}));
}

TEST(SchedulerTest, AdmissionStopsAtTheRunningCap) {
  Scheduler scheduler({.max_batch_tokens = 64, .max_running_sequences = 3});
  const std::vector<WaitingRequestNeeds> waiting = {{0}, {0}, {0}};
  EXPECT_EQ(scheduler.PlanAdmission(waiting, 1, 100), (std::vector<bool>{true, true, false}));
}

}  // namespace
}  // namespace llm::engine
