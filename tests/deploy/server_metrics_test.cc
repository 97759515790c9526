// ServerMetrics with a real engine (over the engine tests' FakeTransformer): /metrics is served
// before an engine exists, and after AttachEngine a scrape shows the engine's stats, its steps and
// its token totals.
#include "server/metrics/server_metrics.h"

#include <memory>
#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/engine.h"
#include "tests/deploy/metrics_text.h"
#include "tests/engine/engine_test_util.h"
#include "tests/engine/fake_transformer.h"

namespace llm::metrics {
namespace {

using ::llm::metrics::testing::SampleValue;
using ::llm::metrics::testing::ScrapeLoopback;
using ::testing::Optional;

TEST(ServerMetricsTest, ScrapeFollowsTheAttachedEngine) {
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics =
      ServerMetrics::Start({.bind_address = "127.0.0.1:0", .replica_id = "replica-1"});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ((*metrics)->replica_id(), "replica-1");

  // Before the model is loaded: process gauges and zeroed serving series, no model info yet.
  std::optional<std::string> text = ScrapeLoopback((*metrics)->port());
  ASSERT_TRUE(text.has_value());
  EXPECT_GT(SampleValue(*text, "llm_process_resident_memory_bytes").value_or(0), 0);
  EXPECT_THAT(SampleValue(*text, "llm_kv_cache_capacity_blocks"), Optional(0.0));
  EXPECT_EQ(text->find("llm_model_info{"), std::string::npos);

  engine::testing::FakeModelShape shape;  // 64 blocks of 4 tokens
  absl::StatusOr<std::unique_ptr<engine::Engine>> engine = engine::Engine::Create(
      std::make_unique<engine::testing::FakeTransformer>(shape), engine::EngineOptions{});
  ASSERT_TRUE(engine.ok()) << engine.status();
  (*metrics)->AttachEngine(**engine,
                           {.model = "fake",
                            .architecture = "FakeForTests",
                            .backend = "cpu",
                            .dtype = "F32",
                            .server_version = "test"},
                           {.weight_bytes = 123, .kv_cache_bytes = 456});
  (*engine)->Start((*metrics)->engine_observer());

  const engine::testing::GenerateOutcome outcome =
      engine::testing::Await(engine::testing::AsyncGenerate(**engine, {5, 6, 7}, 4));
  ASSERT_TRUE(outcome.summary.ok()) << outcome.summary.status();
  ASSERT_EQ(outcome.tokens.size(), 4u);
  // The engine publishes its stats after the step that finished the request.
  ASSERT_TRUE(
      engine::testing::Eventually([&] { return (*engine)->stats().generated_tokens_total == 4; }));

  text = ScrapeLoopback((*metrics)->port());
  ASSERT_TRUE(text.has_value());
  EXPECT_THAT(SampleValue(*text, "llm_generation_tokens_total"), Optional(4.0));
  EXPECT_THAT(SampleValue(*text, "llm_prompt_tokens_total"), Optional(3.0));
  EXPECT_THAT(SampleValue(*text, "llm_kv_cache_capacity_blocks"), Optional(64.0));
  EXPECT_THAT(SampleValue(*text, "llm_kv_cache_block_size_tokens"), Optional(4.0));
  EXPECT_THAT(SampleValue(*text, R"(llm_sequences{state="running"})"), Optional(0.0));
  EXPECT_THAT(SampleValue(*text, R"(llm_backend_memory_bytes{component="weights"})"),
              Optional(123.0));
  EXPECT_THAT(SampleValue(*text, "llm_request_queue_time_seconds_count"), Optional(1.0));
  // One prefill step for the prompt (which samples the first token), then decode steps.
  EXPECT_GE(
      SampleValue(*text, R"(llm_engine_step_duration_seconds_count{phase="prefill"})").value_or(0),
      1);
  EXPECT_GE(
      SampleValue(*text, R"(llm_engine_step_duration_seconds_count{phase="decode"})").value_or(0),
      3);
  EXPECT_THAT(
      SampleValue(
          *text,
          R"(llm_model_info{architecture="FakeForTests",backend="cpu",dtype="F32",model="fake",server_version="test"})"),
      Optional(1.0));

  (*engine)->Shutdown(absl::ZeroDuration());
  metrics->reset();  // stops /metrics before the engine it reads goes away
}

}  // namespace
}  // namespace llm::metrics
