// EngineStepObserver and EngineStatsSync: engine callbacks and stats snapshots reach the right
// series, and counters follow the engine's running totals without double counting.
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "server/metrics/engine_stats_sync.h"
#include "server/metrics/engine_step_observer.h"
#include "server/metrics/refreshing_collectable.h"
#include "server/metrics/serving_metrics.h"
#include "server/metrics/text_exposition.h"
#include "tests/deploy/metrics_text.h"

namespace llm::metrics {
namespace {

using ::llm::metrics::testing::SampleValue;
using ::testing::Optional;

engine::StepStats Step(int32_t sequences, int32_t prefill_tokens, int32_t decode_tokens,
                       absl::Duration duration = absl::ZeroDuration()) {
  engine::StepStats step;
  step.num_sequences = sequences;
  step.prefill_tokens = prefill_tokens;
  step.decode_tokens = decode_tokens;
  step.duration = duration;
  return step;
}

TEST(ClassifyStepTest, PhaseFollowsTheTokensInTheBatch) {
  EXPECT_EQ(ClassifyStep(Step(1, 30, 0)), StepPhase::kPrefill);
  EXPECT_EQ(ClassifyStep(Step(4, 0, 4)), StepPhase::kDecode);
  EXPECT_EQ(ClassifyStep(Step(5, 30, 4)), StepPhase::kMixed);
}

class EngineMetricsTest : public ::testing::Test {
 protected:
  std::string Scrape() const { return SerializeToText({registry_}); }

  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  ServingMetrics metrics_{registry_};
};

TEST_F(EngineMetricsTest, StepObserverRecordsStepsAndQueueTime) {
  EngineStepObserver observer(metrics_);
  engine::EngineObserver& engine_side = observer;
  engine_side.OnStep(Step(2, 40, 0, absl::Milliseconds(30)));
  engine_side.OnStep(Step(3, 0, 3, absl::Milliseconds(4)));
  engine_side.OnStep(Step(3, 8, 2, absl::Milliseconds(9)));
  engine_side.OnAdmitted(absl::Milliseconds(250));
  const std::string text = Scrape();
  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_duration_seconds_sum{phase="prefill"})"),
              Optional(::testing::DoubleNear(0.030, 1e-9)));
  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_batch_tokens_sum{phase="prefill"})"),
              Optional(40.0));
  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_batch_sequences_sum{phase="decode"})"),
              Optional(3.0));
  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_batch_tokens_sum{phase="mixed"})"),
              Optional(10.0));
  EXPECT_THAT(SampleValue(text, "llm_request_queue_time_seconds_sum"),
              Optional(::testing::DoubleNear(0.25, 1e-9)));
}

TEST_F(EngineMetricsTest, StatsSyncSetsGaugesAndAddsOnlyTheNewPartOfTotals) {
  const MemorySample memory{.backend_allocated_bytes = 1000,
                            .weight_bytes = 600,
                            .kv_cache_bytes = 300,
                            .workspace_bytes = 100};
  EngineStatsSync sync(metrics_, memory, /*block_size_tokens=*/16);
  engine::EngineStats stats;
  stats.running_requests = 2;
  stats.waiting_requests = 7;
  stats.idle_sequences = 1;
  stats.kv_blocks_total = 64;
  stats.kv_blocks_used = 16;
  stats.kv_blocks_free = 48;
  stats.kv_block_bytes = 1024;
  stats.prompt_tokens_total = 100;
  stats.generated_tokens_total = 10;
  stats.sequences_expired_total = 1;
  stats.requests_rejected_kv_total = 2;
  stats.kv_blocks_cached = 20;
  stats.preemptions_total = 3;
  stats.prefix_cache_query_tokens_total = 40;
  stats.prefix_cache_hit_tokens_total = 32;
  stats.kv_blocks_evicted_total = 5;

  // Scraping through a RefreshingCollectable syncs first, as llm-server does.
  auto scraped = std::make_shared<RefreshingCollectable>([&] { sync.Sync(stats); }, registry_);
  std::string text = SerializeToText({scraped});
  EXPECT_THAT(SampleValue(text, R"(llm_sequences{state="waiting"})"), Optional(7.0));
  EXPECT_THAT(SampleValue(text, R"(llm_sequences{state="idle"})"), Optional(1.0));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_usage_ratio"), Optional(0.25));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_used_bytes"), Optional(16.0 * 1024));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_block_size_tokens"), Optional(16.0));
  EXPECT_THAT(SampleValue(text, R"(llm_backend_memory_bytes{component="weights"})"),
              Optional(600.0));
  EXPECT_THAT(SampleValue(text, "llm_prompt_tokens_total"), Optional(100.0));
  EXPECT_THAT(SampleValue(text, "llm_generation_tokens_total"), Optional(10.0));
  EXPECT_THAT(SampleValue(text, "llm_sequence_expirations_total"), Optional(1.0));
  EXPECT_THAT(SampleValue(text, R"(llm_request_rejections_total{reason="kv_cache_full"})"),
              Optional(2.0));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_cached_blocks"), Optional(20.0));
  EXPECT_THAT(SampleValue(text, "llm_sequence_preemptions_total"), Optional(3.0));
  EXPECT_THAT(SampleValue(text, "llm_prefix_cache_query_tokens_total"), Optional(40.0));
  EXPECT_THAT(SampleValue(text, "llm_prefix_cache_hit_tokens_total"), Optional(32.0));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_evicted_blocks_total"), Optional(5.0));

  // A second scrape with the same totals adds nothing; grown totals are followed exactly.
  text = SerializeToText({scraped});
  EXPECT_THAT(SampleValue(text, "llm_prompt_tokens_total"), Optional(100.0));
  EXPECT_THAT(SampleValue(text, "llm_sequence_preemptions_total"), Optional(3.0));
  EXPECT_THAT(SampleValue(text, "llm_prefix_cache_hit_tokens_total"), Optional(32.0));
  stats.prompt_tokens_total = 130;
  stats.generated_tokens_total = 25;
  stats.waiting_requests = 0;
  text = SerializeToText({scraped});
  EXPECT_THAT(SampleValue(text, "llm_prompt_tokens_total"), Optional(130.0));
  EXPECT_THAT(SampleValue(text, "llm_generation_tokens_total"), Optional(25.0));
  EXPECT_THAT(SampleValue(text, R"(llm_sequences{state="waiting"})"), Optional(0.0));

  // Totals that go backwards (a new engine) restart the baseline instead of decrementing.
  stats.prompt_tokens_total = 5;
  text = SerializeToText({scraped});
  EXPECT_THAT(SampleValue(text, "llm_prompt_tokens_total"), Optional(135.0));
}

}  // namespace
}  // namespace llm::metrics
