// Engine tests over a fake model whose sampled token is a function of the KV contents it reads back
// through the block tables (fake_transformer.h): every expected token is computed independently from
// the tokens the test sent.
#include "server/engine/engine.h"

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/engine_test_util.h"
#include "tests/engine/fake_transformer.h"

namespace llm::engine {
namespace {

using ::llm::engine::testing::Await;
using ::llm::engine::testing::AsyncDecode;
using ::llm::engine::testing::AsyncGenerate;
using ::llm::engine::testing::AsyncPrefill;
using ::llm::engine::testing::AsyncRelease;
using ::llm::engine::testing::Eventually;
using ::llm::engine::testing::ExpectedNextToken;
using ::llm::engine::testing::FakeModelShape;
using ::llm::engine::testing::FakeTransformer;
using ::testing::HasSubstr;

constexpr int32_t kVocab = 97;

struct Harness {
  FakeTransformer* model = nullptr;  // owned by the engine
  std::unique_ptr<Engine> engine;
};

Harness StartEngine(FakeModelShape shape = {}, EngineOptions options = {}) {
  auto model = std::make_unique<FakeTransformer>(shape);
  Harness harness;
  harness.model = model.get();
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(std::move(model), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  harness.engine = *std::move(engine);
  harness.engine->Start();
  return harness;
}

std::vector<int32_t> Prompt(int32_t length, int32_t first = 3) {
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < length; ++i) prompt.push_back((first + 5 * i) % kVocab);
  return prompt;
}

// The tokens greedy generation after `prompt` produces with the fake model.
std::vector<int32_t> ExpectedContinuation(std::vector<int32_t> history, int32_t count) {
  std::vector<int32_t> out;
  for (int32_t i = 0; i < count; ++i) {
    out.push_back(ExpectedNextToken(history, kVocab));
    history.push_back(out.back());
  }
  return out;
}

TEST(EngineTest, PrefillDecodeAndExtendFollowTheSequenceHistory) {
  Harness h = StartEngine();
  std::vector<int32_t> history = Prompt(5);
  absl::StatusOr<StepOutput> prefill = Await(AsyncPrefill(*h.engine, history));
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  EXPECT_EQ(prefill->length, 5);
  EXPECT_EQ(prefill->token.token, ExpectedNextToken(history, kVocab));
  const SequenceId id = prefill->sequence_id;

  history.push_back(prefill->token.token);  // Decode appends the sampled token by default
  absl::StatusOr<StepOutput> decoded = Await(AsyncDecode(*h.engine, id));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->length, 6);
  EXPECT_EQ(decoded->token.token, ExpectedNextToken(history, kVocab));

  history.push_back(42);  // an explicit token replaces the sampled one
  decoded = Await(AsyncDecode(*h.engine, id, 42));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->length, 7);
  EXPECT_EQ(decoded->token.token, ExpectedNextToken(history, kVocab));

  const std::vector<int32_t> more = {1, 2, 3, 4, 5, 6};
  history.insert(history.end(), more.begin(), more.end());
  absl::StatusOr<StepOutput> extended = Await(AsyncPrefill(*h.engine, more, id));
  ASSERT_TRUE(extended.ok()) << extended.status();
  EXPECT_EQ(extended->sequence_id, id);
  EXPECT_EQ(extended->length, 13);
  EXPECT_EQ(extended->token.token, ExpectedNextToken(history, kVocab));
}

TEST(EngineTest, LongPromptsArePrefilledInChunksOfTheTokenBudget) {
  Harness h = StartEngine({}, {.max_batch_tokens = 8});
  const std::vector<int32_t> prompt = Prompt(30);
  absl::StatusOr<StepOutput> prefill = Await(AsyncPrefill(*h.engine, prompt));
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  EXPECT_EQ(prefill->token.token, ExpectedNextToken(prompt, kVocab));
  const auto steps = h.model->steps();
  ASSERT_EQ(steps.size(), 4u);
  const int32_t expected_sizes[] = {8, 8, 8, 6};
  for (size_t i = 0; i < steps.size(); ++i) {
    ASSERT_EQ(steps[i].size(), 1u);
    EXPECT_EQ(steps[i][0].num_tokens, expected_sizes[i]);
    EXPECT_EQ(steps[i][0].start_position, 8 * static_cast<int32_t>(i));
    EXPECT_EQ(steps[i][0].sample, i == 3) << "only the last chunk samples";
  }
}

TEST(EngineTest, ConcurrentDecodesOfDifferentSequencesShareOneForwardStep) {
  Harness h = StartEngine();
  constexpr int kSequences = 6;
  std::vector<SequenceId> ids;
  std::vector<std::vector<int32_t>> histories;
  for (int i = 0; i < kSequences; ++i) {
    histories.push_back(Prompt(3 + i, i));
    absl::StatusOr<StepOutput> prefill = Await(AsyncPrefill(*h.engine, histories.back()));
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    ids.push_back(prefill->sequence_id);
    histories.back().push_back(prefill->token.token);
  }
  // Hold the engine inside one step so that the other decodes all arrive while it is busy.
  h.model->Pause();
  const int entered = h.model->entered();
  auto first = AsyncDecode(*h.engine, ids[0]);
  h.model->WaitUntilEntered(entered + 1);
  std::vector<std::future<absl::StatusOr<StepOutput>>> rest;
  for (int i = 1; i < kSequences; ++i) rest.push_back(AsyncDecode(*h.engine, ids[i]));
  h.model->Resume();
  ASSERT_TRUE(Await(std::move(first)).ok());
  for (int i = 1; i < kSequences; ++i) {
    absl::StatusOr<StepOutput> decoded = Await(std::move(rest[i - 1]));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->token.token, ExpectedNextToken(histories[i], kVocab));
  }
  const auto steps = h.model->steps();
  EXPECT_EQ(steps.back().size(), static_cast<size_t>(kSequences - 1))
      << "the five queued decodes should run in a single step";
}

TEST(EngineTest, DecodeWhileAnotherCallUsesTheSequenceIsFailedPrecondition) {
  Harness h = StartEngine({}, {.max_batch_tokens = 4});
  absl::StatusOr<StepOutput> prefill = Await(AsyncPrefill(*h.engine, Prompt(3)));
  ASSERT_TRUE(prefill.ok());
  h.model->Pause();
  const int entered = h.model->entered();
  // A 20-token extension takes 5 steps at 4 tokens each; the decode arrives during the first.
  auto extend = AsyncPrefill(*h.engine, Prompt(20), prefill->sequence_id);
  h.model->WaitUntilEntered(entered + 1);
  auto decode = AsyncDecode(*h.engine, prefill->sequence_id);
  h.model->Resume();
  absl::StatusOr<StepOutput> rejected = Await(std::move(decode));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(rejected.status().message()), HasSubstr("busy"));
  EXPECT_TRUE(Await(std::move(extend)).ok());
}

TEST(EngineTest, UnknownAndReleasedSequencesAreNotFound) {
  Harness h = StartEngine();
  EXPECT_EQ(Await(AsyncDecode(*h.engine, 12345)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Await(AsyncPrefill(*h.engine, {1}, 12345)).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<StepOutput> prefill = Await(AsyncPrefill(*h.engine, Prompt(9)));
  ASSERT_TRUE(prefill.ok());
  absl::StatusOr<int32_t> released = Await(AsyncRelease(*h.engine, prefill->sequence_id));
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(*released, 9);
  EXPECT_EQ(Await(AsyncDecode(*h.engine, prefill->sequence_id)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Await(AsyncRelease(*h.engine, prefill->sequence_id)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(Eventually([&] { return h.engine->stats().kv_blocks_used == 0; }));
}

TEST(EngineTest, InvalidRequestsAreRejectedWithMessagesThatSayWhatToFix) {
  Harness h = StartEngine({.max_position_embeddings = 64});
  auto code_and_message = [](absl::Status status) {
    return std::make_pair(status.code(), std::string(status.message()));
  };
  auto [code, message] = code_and_message(Await(AsyncPrefill(*h.engine, {})).status());
  EXPECT_EQ(code, absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(message, HasSubstr("empty"));
  std::tie(code, message) = code_and_message(Await(AsyncPrefill(*h.engine, {1, kVocab})).status());
  EXPECT_EQ(code, absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(message, HasSubstr("tokens[1] = 97 is outside the vocabulary"));
  EXPECT_EQ(Await(AsyncPrefill(*h.engine, {-1})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Await(AsyncDecode(*h.engine, 1, kVocab)).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (SamplingParams bad : {SamplingParams{.temperature = -1.0f}, SamplingParams{.top_k = -2},
                             SamplingParams{.top_p = 0.0f}, SamplingParams{.top_p = 1.5f},
                             SamplingParams{.num_top_logprobs = 21}}) {
    EXPECT_EQ(Await(AsyncPrefill(*h.engine, {1}, std::nullopt, {}, bad)).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  std::tie(code, message) =
      code_and_message(Await(AsyncPrefill(*h.engine, Prompt(65))).status());
  EXPECT_EQ(code, absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(message, HasSubstr("max_position_embeddings"));
  testing::GenerateOutcome too_long = Await(AsyncGenerate(*h.engine, Prompt(60), 5));
  EXPECT_EQ(too_long.summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_long.summary.status().message()), HasSubstr("lower max_tokens"));
  EXPECT_EQ(Await(AsyncGenerate(*h.engine, Prompt(3), 0)).summary.status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<StepOutput> prefill = Await(AsyncPrefill(*h.engine, Prompt(60)));
  ASSERT_TRUE(prefill.ok());
  EXPECT_EQ(Await(AsyncPrefill(*h.engine, Prompt(5), prefill->sequence_id)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.model->steps().size(), 1u) << "invalid requests must never reach the model";
}

TEST(EngineTest, RequestsWaitForKvBlocksAndRunOnceTheyAreFreed) {
  Harness h = StartEngine({.num_blocks = 8, .block_size = 4});
  absl::StatusOr<StepOutput> a = Await(AsyncPrefill(*h.engine, Prompt(16)));
  absl::StatusOr<StepOutput> b = Await(AsyncPrefill(*h.engine, Prompt(16, 1)));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(Eventually([&] { return h.engine->stats().kv_blocks_free == 0; }));
  const std::vector<int32_t> prompt_c = Prompt(4, 2);
  auto c = AsyncPrefill(*h.engine, prompt_c);
  ASSERT_TRUE(Eventually([&] { return h.engine->stats().waiting_requests == 1; }));
  ASSERT_TRUE(Await(AsyncRelease(*h.engine, a->sequence_id)).ok());
  absl::StatusOr<StepOutput> admitted = Await(std::move(c));
  ASSERT_TRUE(admitted.ok()) << admitted.status();
  EXPECT_EQ(admitted->token.token, ExpectedNextToken(prompt_c, kVocab));
  // b's tokens are intact after its neighbour's blocks were recycled.
  std::vector<int32_t> history_b = Prompt(16, 1);
  history_b.push_back(b->token.token);
  absl::StatusOr<StepOutput> b_next = Await(AsyncDecode(*h.engine, b->sequence_id));
  // b sits at a block boundary (16 tokens): its decode needs a fifth block; a freed 4, c took 1.
  ASSERT_TRUE(b_next.ok()) << b_next.status();
  EXPECT_EQ(b_next->token.token, ExpectedNextToken(history_b, kVocab));
}

TEST(EngineTest, RequestsThatCannotGetKvBlocksInTimeAreResourceExhaustedWithoutLeaks) {
  Harness h = StartEngine({.num_blocks = 8, .block_size = 4},
                          {.max_queue_wait = absl::Milliseconds(100)});
  absl::StatusOr<StepOutput> a = Await(AsyncPrefill(*h.engine, Prompt(32)));
  ASSERT_TRUE(a.ok());
  absl::StatusOr<StepOutput> waited = Await(AsyncPrefill(*h.engine, Prompt(4)));
  EXPECT_EQ(waited.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(waited.status().message()), HasSubstr("KV cache full"));
  // a fills the whole cache: its next decode needs a ninth block of eight, refused at once.
  EXPECT_EQ(Await(AsyncDecode(*h.engine, a->sequence_id)).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Eventually([&] { return h.engine->stats().kv_blocks_used == 8; }));
  EXPECT_EQ(*Await(AsyncRelease(*h.engine, a->sequence_id)), 32);
  EXPECT_TRUE(Eventually([&] {
    EngineStats stats = h.engine->stats();
    return stats.kv_blocks_used == 0 && stats.waiting_requests == 0;
  }));
  EXPECT_GE(h.engine->stats().requests_rejected_kv_total, 2);
}

TEST(EngineTest, RequestLargerThanTheWholeCacheIsResourceExhaustedAtOnce) {
  Harness h = StartEngine({.num_blocks = 8, .block_size = 4});
  testing::GenerateOutcome outcome = Await(AsyncGenerate(*h.engine, Prompt(10), 30));
  EXPECT_EQ(outcome.summary.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(outcome.summary.status().message()), HasSubstr("whole KV cache"));
  EXPECT_TRUE(h.model->steps().empty());
}

TEST(EngineTest, IdleSequencesExpireAfterTheirTtl) {
  Harness h = StartEngine({}, {.sequence_ttl = absl::Milliseconds(50)});
  absl::StatusOr<StepOutput> prefill = Await(AsyncPrefill(*h.engine, Prompt(6)));
  ASSERT_TRUE(prefill.ok());
  ASSERT_TRUE(Eventually([&] {
    EngineStats stats = h.engine->stats();
    return stats.sequences_expired_total == 1 && stats.kv_blocks_used == 0;
  }));
  EXPECT_EQ(Await(AsyncDecode(*h.engine, prefill->sequence_id)).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(EngineTest, CancelledGenerateStopsAndReturnsItsBlocks) {
  Harness h = StartEngine();
  RequestControl control;
  auto flag = control.cancellation;
  testing::GenerateOutcome outcome = Await(AsyncGenerate(
      *h.engine, Prompt(5), 100, control, {}, false, [flag](int32_t index) {
        if (index == 2) flag->cancelled.store(true);
      }));
  EXPECT_EQ(outcome.summary.status().code(), absl::StatusCode::kCancelled);
  // Callbacks run on the completion thread: the engine may have run a few more steps (those
  // already handed over, plus the one in flight) before it sees the flag, never more.
  EXPECT_GE(outcome.tokens.size(), 3u);
  EXPECT_LE(outcome.tokens.size(), 3u + Engine::kMaxPendingCompletionBatches + 1);
  EXPECT_TRUE(Eventually([&] { return h.engine->stats().kv_blocks_used == 0; }));
}

// Callbacks run on the completion thread: while one is busy (a slow gRPC write, say), the engine
// thread goes on stepping, up to kMaxPendingCompletionBatches iterations ahead, and every token
// still arrives, in order.
TEST(EngineTest, StepsContinueWhileACallbackIsBusy) {
  Harness h = StartEngine();
  const int before = h.model->entered();
  bool engine_advanced = false;
  testing::GenerateOutcome outcome = Await(AsyncGenerate(
      *h.engine, Prompt(5), 12, {}, {}, /*ignore_eos=*/true, [&](int32_t index) {
        if (index != 0) return;
        // Token 0 came from the prefill step; had the engine thread been running this callback,
        // no later step could start until it returned.
        engine_advanced = Eventually([&] { return h.model->entered() >= before + 3; },
                                     std::chrono::seconds(5));
      }));
  EXPECT_TRUE(engine_advanced) << "the engine waited for a callback instead of stepping";
  ASSERT_TRUE(outcome.summary.ok()) << outcome.summary.status();
  EXPECT_EQ(outcome.tokens.size(), 12u);
  EXPECT_EQ(outcome.summary->completion_tokens, 12);
}

TEST(EngineTest, ExpiredDeadlineEndsARunningRequestAndFreesItsBlocks) {
  Harness h = StartEngine();
  h.model->Pause();
  RequestControl control;
  control.deadline = absl::Now() + absl::Milliseconds(50);
  auto outcome = AsyncGenerate(*h.engine, Prompt(5), 100, control);
  h.model->WaitUntilEntered(1);
  // Let the deadline pass while the engine is inside the step.
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  h.model->Resume();
  EXPECT_EQ(Await(std::move(outcome)).summary.status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(Eventually([&] { return h.engine->stats().kv_blocks_used == 0; }));
}

TEST(EngineTest, FailedForwardStepFailsItsRequestsAndRollsSequencesBack) {
  Harness h = StartEngine();
  std::vector<int32_t> history = Prompt(5);
  absl::StatusOr<StepOutput> prefill = Await(AsyncPrefill(*h.engine, history));
  ASSERT_TRUE(prefill.ok());
  h.model->FailNextForward();
  absl::StatusOr<StepOutput> failed = Await(AsyncDecode(*h.engine, prefill->sequence_id));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("injected forward failure"));
  // The failed decode left no trace: the same decode now sees the original history.
  history.push_back(prefill->token.token);
  absl::StatusOr<StepOutput> retried = Await(AsyncDecode(*h.engine, prefill->sequence_id));
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(retried->length, 6);
  EXPECT_EQ(retried->token.token, ExpectedNextToken(history, kVocab));
  // A failed new sequence is freed entirely.
  h.model->FailNextForward();
  EXPECT_EQ(Await(AsyncPrefill(*h.engine, Prompt(9))).status().code(),
            absl::StatusCode::kInternal);
  ASSERT_TRUE(Await(AsyncRelease(*h.engine, prefill->sequence_id)).ok());
  EXPECT_TRUE(Eventually([&] { return h.engine->stats().kv_blocks_used == 0; }));
}

TEST(EngineTest, GenerateStopsAtLengthStopTokenOrEos) {
  const std::vector<int32_t> prompt = Prompt(7);
  const std::vector<int32_t> expected = ExpectedContinuation(prompt, 8);
  {
    Harness h = StartEngine();
    testing::GenerateOutcome length = Await(AsyncGenerate(*h.engine, prompt, 8));
    ASSERT_TRUE(length.summary.ok()) << length.summary.status();
    EXPECT_EQ(length.tokens, expected);
    EXPECT_EQ(length.summary->reason, FinishReason::kLength);
    EXPECT_EQ(length.summary->prompt_tokens, 7);
    EXPECT_EQ(length.summary->completion_tokens, 8);

    testing::GenerateOutcome stop = Await(AsyncGenerate(*h.engine, prompt, 8, {}, {expected[2]}));
    ASSERT_TRUE(stop.summary.ok());
    EXPECT_EQ(stop.tokens, std::vector<int32_t>(expected.begin(), expected.begin() + 3));
    EXPECT_EQ(stop.summary->reason, FinishReason::kStopToken);
    EXPECT_TRUE(Eventually([&] { return h.engine->stats().kv_blocks_used == 0; }));
  }
  {
    Harness h = StartEngine({.eos_token_ids = {expected[1]}});
    testing::GenerateOutcome eos = Await(AsyncGenerate(*h.engine, prompt, 8));
    ASSERT_TRUE(eos.summary.ok());
    EXPECT_EQ(eos.tokens, std::vector<int32_t>(expected.begin(), expected.begin() + 2));
    EXPECT_EQ(eos.summary->reason, FinishReason::kEos);
    testing::GenerateOutcome ignored = Await(AsyncGenerate(*h.engine, prompt, 8, {}, {}, true));
    ASSERT_TRUE(ignored.summary.ok());
    EXPECT_EQ(ignored.tokens, expected);
  }
}

TEST(EngineTest, ShutdownLetsInFlightWorkFinishThenRefusesNewWork) {
  Harness h = StartEngine();
  const std::vector<int32_t> prompt = Prompt(4);
  h.model->Pause();
  auto outcome = AsyncGenerate(*h.engine, prompt, 20);
  h.model->WaitUntilEntered(1);
  std::thread stopper([&] { h.engine->Shutdown(absl::Seconds(30)); });
  ASSERT_TRUE(Eventually([&] { return !h.engine->accepting(); }));
  EXPECT_EQ(Await(AsyncPrefill(*h.engine, {1})).status().code(), absl::StatusCode::kUnavailable);
  h.model->Resume();
  testing::GenerateOutcome finished = Await(std::move(outcome));
  stopper.join();
  ASSERT_TRUE(finished.summary.ok()) << finished.summary.status();
  EXPECT_EQ(finished.tokens, ExpectedContinuation(prompt, 20));
}

TEST(EngineTest, ShutdownAfterTheGracePeriodFailsWhatIsLeftWithUnavailable) {
  Harness h = StartEngine();
  absl::StatusOr<StepOutput> idle = Await(AsyncPrefill(*h.engine, Prompt(4)));
  ASSERT_TRUE(idle.ok());
  h.model->Pause();
  auto outcome = AsyncGenerate(*h.engine, Prompt(4), 200);
  h.model->WaitUntilEntered(2);
  std::thread stopper([&] { h.engine->Shutdown(absl::ZeroDuration()); });
  ASSERT_TRUE(Eventually([&] { return !h.engine->accepting(); }));
  h.model->Resume();
  stopper.join();
  EXPECT_EQ(Await(std::move(outcome)).summary.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(h.engine->stats().kv_blocks_used, 0) << "idle sequences are freed at shutdown too";
}

TEST(EngineTest, StatsCountTokensAndSteps) {
  Harness h = StartEngine();
  ASSERT_TRUE(Await(AsyncGenerate(*h.engine, Prompt(6), 5)).summary.ok());
  ASSERT_TRUE(Eventually([&] { return h.engine->stats().steps_total == 5; }));
  const EngineStats stats = h.engine->stats();
  EXPECT_EQ(stats.prompt_tokens_total, 6);
  EXPECT_EQ(stats.generated_tokens_total, 5);
  EXPECT_EQ(stats.kv_blocks_total, 64);
  EXPECT_EQ(stats.running_requests, 0);
}

TEST(EngineTest, StatsAlreadyIncludeARequestWhenItsCallbackRuns) {
  Harness h = StartEngine();  // block size 4
  absl::StatusOr<StepOutput> prefill = Await(AsyncPrefill(*h.engine, Prompt(6)));
  ASSERT_TRUE(prefill.ok());
  EngineStats stats = h.engine->stats();
  EXPECT_EQ(stats.kv_blocks_used, 2);
  EXPECT_EQ(stats.idle_sequences, 1);
  EXPECT_EQ(stats.prompt_tokens_total, 6);
  EXPECT_EQ(stats.generated_tokens_total, 1);
  ASSERT_TRUE(Await(AsyncRelease(*h.engine, prefill->sequence_id)).ok());
  stats = h.engine->stats();
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.idle_sequences, 0);
}

}  // namespace
}  // namespace llm::engine
