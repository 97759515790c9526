// Prefix caching in the engine: a new prompt that starts with cached full blocks maps them and
// prefills only the rest, and what it samples is what it samples without the cache. Checked over
// the fake model (exact, and the recorded chunks show what was recomputed) and over the real CPU
// transformer with a fixture checkpoint (top log-probs equal to an engine without the cache).
#include <filesystem>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/engine.h"
#include "server/model/checkpoint.h"
#include "server/model/transformer.h"
#include "tests/engine/engine_test_util.h"
#include "tests/engine/fake_transformer.h"

namespace llm::engine {
namespace {

using ::llm::engine::testing::AsyncGenerate;
using ::llm::engine::testing::AsyncPrefill;
using ::llm::engine::testing::AsyncRelease;
using ::llm::engine::testing::Await;
using ::llm::engine::testing::Eventually;
using ::llm::engine::testing::ExpectedNextToken;
using ::llm::engine::testing::FakeModelShape;
using ::llm::engine::testing::FakeTransformer;

constexpr int32_t kVocab = 97;

std::vector<int32_t> Concat(std::vector<int32_t> head, const std::vector<int32_t>& tail) {
  head.insert(head.end(), tail.begin(), tail.end());
  return head;
}

std::vector<int32_t> Tokens(int32_t length, int32_t first, int32_t vocab) {
  std::vector<int32_t> tokens;
  for (int32_t i = 0; i < length; ++i) tokens.push_back((first + 7 * i) % vocab);
  return tokens;
}

TEST(PrefixCacheTest, SecondPromptWithTheSameSystemPromptPrefillsOnlyItsOwnTokens) {
  auto owned = std::make_unique<FakeTransformer>(FakeModelShape{.num_blocks = 32, .block_size = 4});
  FakeTransformer* model = owned.get();
  std::unique_ptr<Engine> engine = *Engine::Create(std::move(owned), {});
  engine->Start();
  const std::vector<int32_t> system = Tokens(10, 1, kVocab);  // 2 full blocks + 2 tokens
  const std::vector<int32_t> first = Concat(system, {50, 51, 52});
  const std::vector<int32_t> second = Concat(system, {60, 61});

  absl::StatusOr<StepOutput> a = Await(AsyncPrefill(*engine, first));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(Await(AsyncRelease(*engine, a->sequence_id)).ok());  // blocks stay cached
  absl::StatusOr<StepOutput> b = Await(AsyncPrefill(*engine, second));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->length, 12);
  EXPECT_EQ(b->token.token, ExpectedNextToken(second, kVocab));
  const testing::RecordedChunk last = model->steps().back().at(0);
  EXPECT_EQ(last.start_position, 8) << "the two cached blocks are not prefilled again";
  EXPECT_EQ(last.num_tokens, 4);

  // The whole prompt cached: the last full block is recomputed so the prompt has logits to sample.
  absl::StatusOr<StepOutput> again = Await(AsyncPrefill(*engine, Tokens(8, 1, kVocab)));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->token.token, ExpectedNextToken(Tokens(8, 1, kVocab), kVocab));
  EXPECT_EQ(model->steps().back().at(0).start_position, 4);

  EXPECT_TRUE(Eventually([&] { return engine->stats().prefix_cache_query_tokens_total == 33; }));
  const EngineStats stats = engine->stats();
  EXPECT_EQ(stats.prefix_cache_hit_tokens_total, 8 + 4);
  EXPECT_DOUBLE_EQ(stats.prefix_cache_hit_rate(), 12.0 / 33.0);
  EXPECT_EQ(stats.prompt_tokens_total, 13 + 4 + 4) << "only computed prompt tokens count";
  EXPECT_GE(stats.kv_blocks_cached, 3);
}

TEST(PrefixCacheTest, ConcurrentGenerationsSharingAPrefixEachFollowTheirOwnHistory) {
  auto owned = std::make_unique<FakeTransformer>(FakeModelShape{.num_blocks = 64, .block_size = 4});
  std::unique_ptr<Engine> engine = *Engine::Create(std::move(owned), {});
  engine->Start();
  const std::vector<int32_t> system = Tokens(13, 2, kVocab);
  ASSERT_TRUE(Await(AsyncGenerate(*engine, system, 1)).summary.ok());  // warms the cache
  std::vector<std::future<testing::GenerateOutcome>> outcomes;
  std::vector<std::vector<int32_t>> prompts;
  for (int32_t i = 0; i < 6; ++i) {
    prompts.push_back(Concat(system, Tokens(1 + i, 30 + i, kVocab)));
    outcomes.push_back(AsyncGenerate(*engine, prompts.back(), 9));
  }
  for (int32_t i = 0; i < 6; ++i) {
    testing::GenerateOutcome outcome = Await(std::move(outcomes[i]));
    ASSERT_TRUE(outcome.summary.ok()) << outcome.summary.status();
    std::vector<int32_t> history = prompts[i];
    for (int32_t token : outcome.tokens) {
      EXPECT_EQ(token, ExpectedNextToken(history, kVocab)) << "request " << i;
      history.push_back(token);
    }
  }
  EXPECT_TRUE(Eventually([&] { return engine->stats().kv_blocks_used == 0; }));
  EXPECT_EQ(engine->stats().prefix_cache_hit_tokens_total, 6 * 12);
}

// --- real CPU transformer ---

const std::filesystem::path kModelDir =
    std::filesystem::path(LLM_TEST_FIXTURES_DIR) / "hf/llama_gqa";

std::unique_ptr<Engine> StartCpuEngine(bool prefix_cache, int32_t kv_blocks = 64,
                                       bool start = true) {
  static Checkpoint* checkpoint = Checkpoint::Open(kModelDir)->release();
  static Backend* backend = CreateCpuBackend(2).release();
  std::unique_ptr<Transformer> model = *Transformer::Create(*checkpoint, *backend,
                                                            {.kv_num_blocks = kv_blocks,
                                                             .kv_block_size = 16,
                                                             .max_batch_tokens = 512,
                                                             .max_batch_sequences = 64});
  std::unique_ptr<Engine> engine =
      *Engine::Create(std::move(model), {.enable_prefix_cache = prefix_cache});
  if (start) engine->Start();
  return engine;
}

void ExpectSameDistribution(const StepOutput& cached, const StepOutput& uncached) {
  EXPECT_EQ(cached.length, uncached.length);
  EXPECT_EQ(cached.token.token, uncached.token.token);
  EXPECT_NEAR(cached.token.logprob, uncached.token.logprob, 1e-5);
  ASSERT_EQ(cached.token.top_logprobs.size(), uncached.token.top_logprobs.size());
  for (size_t k = 0; k < cached.token.top_logprobs.size(); ++k) {
    EXPECT_EQ(cached.token.top_logprobs[k].first, uncached.token.top_logprobs[k].first) << k;
    EXPECT_NEAR(cached.token.top_logprobs[k].second, uncached.token.top_logprobs[k].second, 1e-5)
        << k;
  }
}

TEST(PrefixCacheCpuModelTest, SharedPrefixGivesTheSameLogProbsAndGreedyTokensAsNoSharing) {
  const int32_t vocab = 256;
  const std::vector<int32_t> system = Concat({1}, Tokens(44, 3, vocab));  // 2 blocks of 16 + 13
  const std::vector<int32_t> first = Concat(system, Tokens(9, 100, vocab));
  const std::vector<int32_t> second = Concat(system, Tokens(21, 150, vocab));
  SamplingParams top20{.num_top_logprobs = 20};

  std::unique_ptr<Engine> cached = StartCpuEngine(/*prefix_cache=*/true);
  std::unique_ptr<Engine> uncached = StartCpuEngine(/*prefix_cache=*/false);
  ASSERT_TRUE(Await(AsyncPrefill(*cached, first, std::nullopt, {}, top20)).ok());
  absl::StatusOr<StepOutput> hit = Await(AsyncPrefill(*cached, second, std::nullopt, {}, top20));
  absl::StatusOr<StepOutput> miss = Await(AsyncPrefill(*uncached, second, std::nullopt, {}, top20));
  ASSERT_TRUE(hit.ok() && miss.ok());
  EXPECT_EQ(cached->stats().prefix_cache_hit_tokens_total, 32);
  EXPECT_EQ(uncached->stats().prefix_cache_hit_tokens_total, 0);
  ExpectSameDistribution(*hit, *miss);

  // Greedy generation over the shared prefix, while the first sequence still holds it.
  testing::GenerateOutcome generated_hit = Await(AsyncGenerate(*cached, second, 12));
  testing::GenerateOutcome generated_miss = Await(AsyncGenerate(*uncached, second, 12));
  ASSERT_TRUE(generated_hit.summary.ok() && generated_miss.summary.ok());
  EXPECT_EQ(generated_hit.tokens, generated_miss.tokens);
  EXPECT_EQ(cached->stats().prefix_cache_hit_tokens_total, 32 + 64);
}

TEST(PrefixCacheCpuModelTest, PreemptedAndRecomputedGenerationsMatchUnpreemptedOnes) {
  const int32_t vocab = 256;
  std::vector<std::vector<int32_t>> prompts;
  for (int32_t i = 0; i < 3; ++i) prompts.push_back(Concat({1}, Tokens(20, 11 * i + 5, vocab)));
  // 6 blocks of 16 = 96 tokens; three requests of 21 + 24 - 1 = 44 tokens (3 blocks) each.
  // Queued before the engine starts, so that all three are admitted together (2 blocks each).
  std::unique_ptr<Engine> tight =
      StartCpuEngine(/*prefix_cache=*/true, /*kv_blocks=*/6, /*start=*/false);
  std::unique_ptr<Engine> roomy = StartCpuEngine(/*prefix_cache=*/false);
  std::vector<std::future<testing::GenerateOutcome>> futures;
  for (const auto& prompt : prompts) {
    futures.push_back(AsyncGenerate(*tight, prompt, 24, {}, {}, /*ignore_eos=*/true));
  }
  tight->Start();
  for (size_t i = 0; i < prompts.size(); ++i) {
    testing::GenerateOutcome preempted = Await(std::move(futures[i]));
    testing::GenerateOutcome alone =
        Await(AsyncGenerate(*roomy, prompts[i], 24, {}, {}, /*ignore_eos=*/true));
    ASSERT_TRUE(preempted.summary.ok()) << preempted.summary.status();
    ASSERT_TRUE(alone.summary.ok());
    EXPECT_EQ(preempted.tokens, alone.tokens) << "request " << i;
  }
  EXPECT_GE(tight->stats().preemptions_total, 1);
  EXPECT_EQ(roomy->stats().preemptions_total, 0);
}

}  // namespace
}  // namespace llm::engine
