// Prefix caching in the engine: a new prompt that starts with cached full blocks maps them and
// prefills only the rest, and so does a Prefill that extends a live sequence with tokens whose
// blocks are cached; what either samples is what it samples without the cache. Checked over
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

using ::llm::engine::testing::AsyncDecode;
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

// A prompt sent whole, then in two parts: the second part's Prefill extends the first part's
// sequence, whose partial last block (positions 4, 5) gives way to the whole prompt's cached block
// 4..7; blocks 8..11 and 12..15 follow, and 16..18 are computed.
TEST(PrefixCacheTest, AnExtensionReusesTheCachedBlocksThatContinueItsSequence) {
  auto owned = std::make_unique<FakeTransformer>(FakeModelShape{.num_blocks = 32, .block_size = 4});
  FakeTransformer* model = owned.get();
  std::unique_ptr<Engine> engine = *Engine::Create(std::move(owned), {});
  engine->Start();
  const std::vector<int32_t> whole = Tokens(19, 1, kVocab);
  const std::vector<int32_t> head(whole.begin(), whole.begin() + 6);
  const std::vector<int32_t> rest(whole.begin() + 6, whole.end());
  absl::StatusOr<StepOutput> sent_whole = Await(AsyncPrefill(*engine, whole));
  ASSERT_TRUE(sent_whole.ok()) << sent_whole.status();
  absl::StatusOr<StepOutput> a = Await(AsyncPrefill(*engine, head));
  ASSERT_TRUE(a.ok()) << a.status();
  const int32_t used_before = engine->stats().kv_blocks_used;

  // The extension fails in its step: the sequence is back at 6 tokens with its own partial block,
  // so a decode writes position 6 there and not into the whole prompt's cached block.
  model->FailNextForward();
  absl::StatusOr<StepOutput> failed = Await(AsyncPrefill(*engine, rest, a->sequence_id));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal) << failed.status();
  absl::StatusOr<StepOutput> decoded = Await(AsyncDecode(*engine, a->sequence_id, 90));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->length, 7);
  EXPECT_EQ(decoded->token.token, ExpectedNextToken(Concat(head, {90}), kVocab));
  absl::StatusOr<StepOutput> again = Await(AsyncPrefill(*engine, Concat(head, rest)));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->token.token, ExpectedNextToken(whole, kVocab)) << "a cached block was written";
  ASSERT_TRUE(Await(AsyncRelease(*engine, again->sequence_id)).ok());

  // The extension itself, on a fresh copy of the head.
  absl::StatusOr<StepOutput> b = Await(AsyncPrefill(*engine, head));
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<StepOutput> extended = Await(AsyncPrefill(*engine, rest, b->sequence_id));
  ASSERT_TRUE(extended.ok()) << extended.status();
  EXPECT_EQ(extended->length, 19);
  EXPECT_EQ(extended->token.token, ExpectedNextToken(whole, kVocab));
  const testing::RecordedChunk last = model->steps().back().at(0);
  EXPECT_EQ(last.start_position, 16) << "positions 4..15 came from the cache";
  EXPECT_EQ(last.num_tokens, 3);
  // Decoding on: the new positions go to the sequence's own blocks.
  absl::StatusOr<StepOutput> next = Await(AsyncDecode(*engine, b->sequence_id));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->token.token, ExpectedNextToken(Concat(whole, {extended->token.token}), kVocab));
  // The partial block it gave up was released: b holds the whole prompt's 4 full blocks (shared)
  // and its own 5th, so with a released as many blocks are used as before b (a's own one then).
  ASSERT_TRUE(Await(AsyncRelease(*engine, a->sequence_id)).ok());
  EXPECT_TRUE(Eventually([&] { return engine->stats().kv_blocks_used == used_before; }))
      << engine->stats().kv_blocks_used << " blocks used, " << used_before << " expected";

  const EngineStats stats = engine->stats();
  // Looked up: whole 19, head 6 (x2), head + rest 19, rest 13 (the failed try and the one that
  // ran). Hits: 4 for each head, 16 for head + rest, 10 for each extension.
  EXPECT_EQ(stats.prefix_cache_query_tokens_total, 19 + 6 + 6 + 19 + 13 + 13);
  EXPECT_EQ(stats.prefix_cache_hit_tokens_total, 4 + 4 + 16 + 10 + 10);
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

TEST(PrefixCacheCpuModelTest, AnExtensionOverCachedBlocksGivesTheLogProbsOfOneComputedWhole) {
  const int32_t vocab = 256;
  const std::vector<int32_t> whole = Concat({1}, Tokens(60, 7, vocab));
  const std::vector<int32_t> head(whole.begin(), whole.begin() + 21);  // 1 block + 5 tokens
  const std::vector<int32_t> rest(whole.begin() + 21, whole.end());
  SamplingParams top20{.num_top_logprobs = 20};
  std::unique_ptr<Engine> cached = StartCpuEngine(/*prefix_cache=*/true);
  std::unique_ptr<Engine> uncached = StartCpuEngine(/*prefix_cache=*/false);
  ASSERT_TRUE(Await(AsyncPrefill(*cached, whole, std::nullopt, {}, top20)).ok());
  absl::StatusOr<StepOutput> head_hit = Await(AsyncPrefill(*cached, head, std::nullopt, {}, top20));
  absl::StatusOr<StepOutput> head_miss =
      Await(AsyncPrefill(*uncached, head, std::nullopt, {}, top20));
  ASSERT_TRUE(head_hit.ok() && head_miss.ok());
  absl::StatusOr<StepOutput> hit =
      Await(AsyncPrefill(*cached, rest, head_hit->sequence_id, {}, top20));
  absl::StatusOr<StepOutput> miss =
      Await(AsyncPrefill(*uncached, rest, head_miss->sequence_id, {}, top20));
  ASSERT_TRUE(hit.ok() && miss.ok()) << hit.status() << " " << miss.status();
  // head: its first block; rest: blocks 16..31, 32..47 (11 + 16 of its tokens); 48..60 computed.
  EXPECT_EQ(cached->stats().prefix_cache_hit_tokens_total, 16 + 27);
  ExpectSameDistribution(*hit, *miss);
  for (int i = 0; i < 3; ++i) {  // greedy decoding on from there
    absl::StatusOr<StepOutput> step_hit = Await(AsyncDecode(*cached, hit->sequence_id));
    absl::StatusOr<StepOutput> step_miss = Await(AsyncDecode(*uncached, miss->sequence_id));
    ASSERT_TRUE(step_hit.ok() && step_miss.ok());
    EXPECT_EQ(step_hit->token.token, step_miss->token.token) << i;
    EXPECT_NEAR(step_hit->token.logprob, step_miss->token.logprob, 1e-5) << i;
  }
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
