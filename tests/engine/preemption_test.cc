// Lazy KV growth and preemption in the engine, over the fake model whose sampled token is a
// function of the KV contents it reads back through the block tables (fake_transformer.h): a
// preempted and recomputed request must produce exactly the tokens an unpreempted run produces.
#include <thread>

#include "gtest/gtest.h"
#include "server/engine/engine.h"
#include "tests/engine/engine_test_util.h"
#include "tests/engine/fake_transformer.h"

namespace llm::engine {
namespace {

using ::llm::engine::testing::AsyncGenerate;
using ::llm::engine::testing::AsyncPrefill;
using ::llm::engine::testing::Await;
using ::llm::engine::testing::Eventually;
using ::llm::engine::testing::ExpectedNextToken;
using ::llm::engine::testing::FakeModelShape;
using ::llm::engine::testing::FakeTransformer;

constexpr int32_t kVocab = 97;

struct Harness {
  FakeTransformer* model = nullptr;  // owned by the engine
  std::unique_ptr<Engine> engine;
};

Harness StartEngine(FakeModelShape shape, EngineOptions options = {}) {
  auto model = std::make_unique<FakeTransformer>(shape);
  Harness harness;
  harness.model = model.get();
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(std::move(model), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  harness.engine = *std::move(engine);
  harness.engine->Start();
  return harness;
}

std::vector<int32_t> Prompt(int32_t length, int32_t first) {
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < length; ++i) prompt.push_back((first + 5 * i) % kVocab);
  return prompt;
}

std::vector<int32_t> ExpectedContinuation(std::vector<int32_t> history, int32_t count) {
  std::vector<int32_t> out;
  for (int32_t i = 0; i < count; ++i) {
    out.push_back(ExpectedNextToken(history, kVocab));
    history.push_back(out.back());
  }
  return out;
}

TEST(PreemptionTest, GenerationsThatOutgrowTheCacheTogetherPreemptAndStillMatchUnpreemptedRuns) {
  // 8 blocks of 4 tokens; each request grows to 6 + 14 - 1 = 19 tokens (5 blocks): both fit alone,
  // not together. Admission takes only the prompt and the first token's slot (2 blocks each).
  Harness h = StartEngine({.num_blocks = 8, .block_size = 4});
  const std::vector<int32_t> prompt_a = Prompt(6, 1);
  const std::vector<int32_t> prompt_b = Prompt(6, 2);
  h.model->Pause();
  auto a = AsyncGenerate(*h.engine, prompt_a, 14);
  h.model->WaitUntilEntered(1);
  auto b = AsyncGenerate(*h.engine, prompt_b, 14);
  h.model->Resume();
  testing::GenerateOutcome outcome_a = Await(std::move(a));
  testing::GenerateOutcome outcome_b = Await(std::move(b));
  ASSERT_TRUE(outcome_a.summary.ok()) << outcome_a.summary.status();
  ASSERT_TRUE(outcome_b.summary.ok()) << outcome_b.summary.status();
  EXPECT_EQ(outcome_a.tokens, ExpectedContinuation(prompt_a, 14));
  EXPECT_EQ(outcome_b.tokens, ExpectedContinuation(prompt_b, 14))
      << "the preempted request must continue exactly where it left off";
  EXPECT_EQ(outcome_b.summary->completion_tokens, 14);
  EXPECT_TRUE(Eventually([&] {
    const EngineStats stats = h.engine->stats();
    return stats.kv_blocks_used == 0 && stats.running_requests == 0 && stats.waiting_requests == 0;
  }));
  const EngineStats stats = h.engine->stats();
  EXPECT_GE(stats.preemptions_total, 1);
  EXPECT_EQ(stats.requests_rejected_kv_total, 0) << "nothing fails for want of KV space";
  EXPECT_EQ(stats.generated_tokens_total, 28) << "a recomputation samples no extra token";
}

TEST(PreemptionTest, APreemptedGenerationOutwaitsTheQueueLimitWhileOthersRun) {
  // As above, with a 30 ms queue limit, and the surviving request holding the engine for 100 ms
  // late in its run (its token callback sleeps on the engine thread) while the preempted one waits.
  Harness h =
      StartEngine({.num_blocks = 8, .block_size = 4}, {.max_queue_wait = absl::Milliseconds(30)});
  const std::vector<int32_t> prompt_a = Prompt(6, 1);
  const std::vector<int32_t> prompt_b = Prompt(6, 2);
  h.model->Pause();
  auto a = AsyncGenerate(*h.engine, prompt_a, 14, {}, {}, false, [](int32_t index) {
    if (index == 12) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  });
  h.model->WaitUntilEntered(1);
  auto b = AsyncGenerate(*h.engine, prompt_b, 14);
  h.model->Resume();
  testing::GenerateOutcome outcome_a = Await(std::move(a));
  testing::GenerateOutcome outcome_b = Await(std::move(b));
  ASSERT_TRUE(outcome_a.summary.ok()) << outcome_a.summary.status();
  ASSERT_TRUE(outcome_b.summary.ok()) << outcome_b.summary.status();
  EXPECT_EQ(outcome_b.tokens, ExpectedContinuation(prompt_b, 14));
  EXPECT_GE(h.engine->stats().preemptions_total, 1);
  EXPECT_EQ(h.engine->stats().requests_rejected_kv_total, 0);
}

TEST(PreemptionTest, PreemptedExtensionOfAnIdleSequenceRollsBackAndRunsAgain) {
  // A persistent sequence (1 block), then a long Generate and, admitted after it, a 16-token
  // extension of the sequence. The Generate's growth needs the extension's blocks: the extension is
  // preempted (rolled back to the sequence's 4 tokens), waits, and reruns once the Generate is
  // done.
  Harness h = StartEngine({.num_blocks = 8, .block_size = 4}, {.max_batch_tokens = 2});
  const std::vector<int32_t> base = Prompt(4, 3);
  absl::StatusOr<StepOutput> prefill = Await(AsyncPrefill(*h.engine, base));
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  const std::vector<int32_t> prompt_a = Prompt(6, 1);
  const std::vector<int32_t> extension = Prompt(16, 4);
  const int entered = h.model->entered();
  h.model->Pause();
  auto a = AsyncGenerate(*h.engine, prompt_a, 20);  // grows to 25 tokens: 7 blocks
  h.model->WaitUntilEntered(entered + 1);
  auto extended = AsyncPrefill(*h.engine, extension, prefill->sequence_id);
  h.model->Resume();
  testing::GenerateOutcome outcome_a = Await(std::move(a));
  absl::StatusOr<StepOutput> extended_output = Await(std::move(extended));
  ASSERT_TRUE(outcome_a.summary.ok()) << outcome_a.summary.status();
  EXPECT_EQ(outcome_a.tokens, ExpectedContinuation(prompt_a, 20));
  ASSERT_TRUE(extended_output.ok()) << extended_output.status();
  std::vector<int32_t> history = base;
  history.insert(history.end(), extension.begin(), extension.end());
  EXPECT_EQ(extended_output->length, 20);
  EXPECT_EQ(extended_output->token.token, ExpectedNextToken(history, kVocab));
  EXPECT_GE(h.engine->stats().preemptions_total, 1);
  EXPECT_TRUE(Eventually([&] { return h.engine->stats().kv_blocks_used == 5; }))
      << "the sequence holds its 20 tokens; the Generate's blocks are back";
}

TEST(PreemptionTest, AGenerationThatCannotGrowPastIdleSequencesWaitsThenFailsWithoutLooping) {
  // Idle sequences hold 6 of 8 blocks; a Generate that would need 3 blocks is admitted with 2
  // (prompt + first slot), samples two tokens, cannot get a third block for position 8, preempts
  // itself, and waits for space it never gets.
  Harness h =
      StartEngine({.num_blocks = 8, .block_size = 4}, {.max_queue_wait = absl::Milliseconds(200)});
  ASSERT_TRUE(Await(AsyncPrefill(*h.engine, Prompt(12, 5))).ok());
  ASSERT_TRUE(Await(AsyncPrefill(*h.engine, Prompt(12, 6))).ok());
  const int steps_before = h.model->entered();
  testing::GenerateOutcome outcome = Await(AsyncGenerate(*h.engine, Prompt(7, 1), 5));
  EXPECT_EQ(outcome.summary.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(outcome.tokens, ExpectedContinuation(Prompt(7, 1), 2))
      << "tokens streamed before the preemption stay valid";
  EXPECT_LE(h.model->entered() - steps_before, 3) << "a waiting preempted request does not spin";
  EXPECT_EQ(h.engine->stats().preemptions_total, 1);
  EXPECT_TRUE(Eventually([&] { return h.engine->stats().kv_blocks_used == 6; }));
}

}  // namespace
}  // namespace llm::engine
