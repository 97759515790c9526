// ServingMetrics: every observer event moves the series docs/METRICS.md says it moves, checked on
// the text a scrape would return (no network).
#include "server/metrics/serving_metrics.h"

#include <memory>
#include <regex>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "server/metrics/histogram_buckets.h"
#include "server/metrics/text_exposition.h"
#include "tests/deploy/metrics_text.h"

namespace llm::metrics {
namespace {

using ::llm::metrics::testing::SampleValue;
using ::testing::HasSubstr;
using ::testing::Optional;

class ServingMetricsTest : public ::testing::Test {
 protected:
  std::string Scrape() const { return SerializeToText({registry_}); }

  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  ServingMetrics metrics_{registry_};
};

TEST_F(ServingMetricsTest, FreshRegistryExportsKnownSeriesAtZero) {
  const std::string text = Scrape();
  EXPECT_THAT(SampleValue(text, R"(llm_sequences{state="waiting"})"), Optional(0.0));
  EXPECT_THAT(SampleValue(text, R"(llm_kv_cache_blocks{state="free"})"), Optional(0.0));
  EXPECT_THAT(SampleValue(text, "llm_prompt_tokens_total"), Optional(0.0));
  EXPECT_THAT(SampleValue(text, "llm_generation_tokens_total"), Optional(0.0));
  EXPECT_THAT(SampleValue(text, "llm_time_to_first_token_seconds_count"), Optional(0.0));
  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_duration_seconds_count{phase="decode"})"),
              Optional(0.0));
  EXPECT_THAT(SampleValue(text, R"(llm_backend_memory_bytes{component="kv_cache"})"),
              Optional(0.0));
}

TEST_F(ServingMetricsTest, StepLandsInItsPhaseAndBuckets) {
  metrics_.OnStep(StepPhase::kDecode, 0.004, 12, 12);
  metrics_.OnStep(StepPhase::kDecode, 0.020, 3, 3);
  metrics_.OnStep(StepPhase::kPrefill, 0.300, 900, 2);
  const std::string text = Scrape();

  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_duration_seconds_count{phase="decode"})"),
              Optional(2.0));
  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_duration_seconds_sum{phase="decode"})"),
              Optional(::testing::DoubleNear(0.024, 1e-12)));
  EXPECT_THAT(
      SampleValue(text, R"(llm_engine_step_duration_seconds_bucket{phase="decode",le="0.005"})"),
      Optional(1.0));
  EXPECT_THAT(
      SampleValue(text, R"(llm_engine_step_duration_seconds_bucket{phase="decode",le="0.02"})"),
      Optional(2.0));
  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_duration_seconds_count{phase="prefill"})"),
              Optional(1.0));
  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_duration_seconds_count{phase="mixed"})"),
              Optional(0.0));
  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_batch_tokens_bucket{phase="prefill",le="512"})"),
              Optional(0.0));
  EXPECT_THAT(
      SampleValue(text, R"(llm_engine_step_batch_tokens_bucket{phase="prefill",le="1024"})"),
      Optional(1.0));
  EXPECT_THAT(SampleValue(text, R"(llm_engine_step_batch_sequences_sum{phase="decode"})"),
              Optional(15.0));
}

TEST_F(ServingMetricsTest, LatenciesGoToTheirHistograms) {
  metrics_.OnQueued(0.002);
  metrics_.OnFirstToken(0.150);
  metrics_.OnToken(0.030);
  metrics_.OnToken(0.040);
  const std::string text = Scrape();
  EXPECT_THAT(SampleValue(text, "llm_request_queue_time_seconds_count"), Optional(1.0));
  EXPECT_THAT(SampleValue(text, R"(llm_time_to_first_token_seconds_bucket{le="0.1"})"),
              Optional(0.0));
  EXPECT_THAT(SampleValue(text, R"(llm_time_to_first_token_seconds_bucket{le="0.15"})"),
              Optional(1.0));
  EXPECT_THAT(SampleValue(text, "llm_inter_token_latency_seconds_count"), Optional(2.0));
  EXPECT_THAT(SampleValue(text, R"(llm_inter_token_latency_seconds_bucket{le="0.03"})"),
              Optional(1.0));
  EXPECT_THAT(SampleValue(text, R"(llm_inter_token_latency_seconds_bucket{le="+Inf"})"),
              Optional(2.0));
}

TEST_F(ServingMetricsTest, TokenCountersAddAndIgnoreNonPositiveCounts) {
  metrics_.OnPromptTokens(7);
  metrics_.OnPromptTokens(0);
  metrics_.OnPromptTokens(-3);
  metrics_.OnGeneratedTokens(5);
  metrics_.OnGeneratedTokens(1);
  const std::string text = Scrape();
  EXPECT_THAT(SampleValue(text, "llm_prompt_tokens_total"), Optional(7.0));
  EXPECT_THAT(SampleValue(text, "llm_generation_tokens_total"), Optional(6.0));
}

TEST_F(ServingMetricsTest, RequestsAreCountedByRpcAndStatusCode) {
  metrics_.OnRequestDone("Generate", absl::StatusCode::kOk, 1.2);
  metrics_.OnRequestDone("Generate", absl::StatusCode::kOk, 0.8);
  metrics_.OnRequestDone("Decode", absl::StatusCode::kNotFound, 0.001);
  metrics_.OnRequestDone("Prefill", absl::StatusCode::kResourceExhausted, 0.01);
  const std::string text = Scrape();
  EXPECT_THAT(SampleValue(text, R"(llm_requests_total{code="OK",rpc="Generate"})"), Optional(2.0));
  EXPECT_THAT(SampleValue(text, R"(llm_requests_total{code="NOT_FOUND",rpc="Decode"})"),
              Optional(1.0));
  EXPECT_THAT(SampleValue(text, R"(llm_requests_total{code="RESOURCE_EXHAUSTED",rpc="Prefill"})"),
              Optional(1.0));
  EXPECT_THAT(SampleValue(text, R"(llm_request_duration_seconds_count{rpc="Generate"})"),
              Optional(2.0));
  EXPECT_THAT(SampleValue(text, R"(llm_request_duration_seconds_sum{rpc="Generate"})"),
              Optional(::testing::DoubleNear(2.0, 1e-12)));
}

TEST_F(ServingMetricsTest, RejectionsPreemptionsAndExpirationsAreCounted) {
  metrics_.OnRejections(RejectionReason::kKvCacheFull, 1);
  metrics_.OnRejections(RejectionReason::kKvCacheFull, 1);
  metrics_.OnRejections(RejectionReason::kInvalidArgument, 1);
  metrics_.OnRejections(RejectionReason::kQueueFull, 0);
  metrics_.OnPreemptions(1);
  metrics_.OnSequencesExpired(2);
  metrics_.OnPrefixCacheLookups(16, 12);
  metrics_.OnPrefixCacheLookups(8, 0);
  metrics_.OnKvBlocksEvicted(4);
  const std::string text = Scrape();
  EXPECT_THAT(SampleValue(text, R"(llm_request_rejections_total{reason="kv_cache_full"})"),
              Optional(2.0));
  EXPECT_THAT(SampleValue(text, R"(llm_request_rejections_total{reason="invalid_argument"})"),
              Optional(1.0));
  EXPECT_THAT(SampleValue(text, "llm_sequence_preemptions_total"), Optional(1.0));
  EXPECT_THAT(SampleValue(text, "llm_sequence_expirations_total"), Optional(2.0));
  EXPECT_THAT(SampleValue(text, "llm_prefix_cache_query_tokens_total"), Optional(24.0));
  EXPECT_THAT(SampleValue(text, "llm_prefix_cache_hit_tokens_total"), Optional(12.0));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_evicted_blocks_total"), Optional(4.0));
  // A zero count creates no series: a label value appears only once it has happened.
  EXPECT_EQ(SampleValue(text, R"(llm_request_rejections_total{reason="queue_full"})"),
            std::nullopt);
}

TEST_F(ServingMetricsTest, EngineStateSetsQueueKvAndMemoryGauges) {
  EngineStateSample sample;
  sample.sequences = {.running = 3, .waiting = 5, .idle = 2};
  sample.kv_cache = {.total_blocks = 100,
                     .used_blocks = 25,
                     .free_blocks = 75,
                     .cached_blocks = 30,
                     .block_size_tokens = 16,
                     .block_bytes = 4096};
  sample.memory = {.device_total_bytes = 80'000'000'000,
                   .device_used_bytes = 10'000'000'000,
                   .backend_allocated_bytes = 9'000'000'000,
                   .weight_bytes = 6'000'000'000,
                   .kv_cache_bytes = 2'500'000'000,
                   .workspace_bytes = 500'000'000};
  metrics_.OnEngineState(sample);
  std::string text = Scrape();
  EXPECT_THAT(SampleValue(text, R"(llm_sequences{state="running"})"), Optional(3.0));
  EXPECT_THAT(SampleValue(text, R"(llm_sequences{state="waiting"})"), Optional(5.0));
  EXPECT_THAT(SampleValue(text, R"(llm_sequences{state="idle"})"), Optional(2.0));
  EXPECT_THAT(SampleValue(text, R"(llm_kv_cache_blocks{state="used"})"), Optional(25.0));
  EXPECT_THAT(SampleValue(text, R"(llm_kv_cache_blocks{state="free"})"), Optional(75.0));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_capacity_blocks"), Optional(100.0));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_cached_blocks"), Optional(30.0));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_used_bytes"), Optional(25.0 * 4096));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_capacity_bytes"), Optional(100.0 * 4096));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_usage_ratio"), Optional(0.25));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_block_size_tokens"), Optional(16.0));
  EXPECT_THAT(SampleValue(text, "llm_device_memory_capacity_bytes"), Optional(8e10));
  EXPECT_THAT(SampleValue(text, "llm_device_memory_used_bytes"), Optional(1e10));
  EXPECT_THAT(SampleValue(text, "llm_backend_allocated_bytes"), Optional(9e9));
  EXPECT_THAT(SampleValue(text, R"(llm_backend_memory_bytes{component="weights"})"), Optional(6e9));
  EXPECT_THAT(SampleValue(text, R"(llm_backend_memory_bytes{component="workspace"})"),
              Optional(5e8));

  // Gauges follow the latest sample, and an empty pool reports a zero ratio rather than NaN.
  metrics_.OnEngineState(EngineStateSample{});
  text = Scrape();
  EXPECT_THAT(SampleValue(text, R"(llm_sequences{state="waiting"})"), Optional(0.0));
  EXPECT_THAT(SampleValue(text, "llm_kv_cache_usage_ratio"), Optional(0.0));
}

TEST_F(ServingMetricsTest, ModelInfoIsOneSeriesAndASecondCallReplacesIt) {
  metrics_.SetModelInfo({.model = "tiny",
                         .architecture = "LlamaForCausalLM",
                         .backend = "cpu",
                         .dtype = "f32",
                         .server_version = "0.1.0"});
  metrics_.SetModelInfo({.model = "tiny",
                         .architecture = "LlamaForCausalLM",
                         .backend = "cuda",
                         .dtype = "bf16",
                         .server_version = "0.1.0"});
  const std::string text = Scrape();
  EXPECT_THAT(
      SampleValue(
          text,
          R"(llm_model_info{architecture="LlamaForCausalLM",backend="cuda",dtype="bf16",model="tiny",server_version="0.1.0"})"),
      Optional(1.0));
  EXPECT_EQ(
      SampleValue(
          text,
          R"(llm_model_info{architecture="LlamaForCausalLM",backend="cpu",dtype="f32",model="tiny",server_version="0.1.0"})"),
      std::nullopt);
}

TEST_F(ServingMetricsTest, NamesFollowPrometheusConventions) {
  metrics_.OnRequestDone("Generate", absl::StatusCode::kOk, 0.1);
  metrics_.OnRejections(RejectionReason::kQueueFull, 1);
  ModelInfo info;
  info.model = "m";
  metrics_.SetModelInfo(info);
  const std::regex name_pattern("^llm_[a-z0-9_]+$");
  for (const prometheus::MetricFamily& family : registry_->Collect()) {
    SCOPED_TRACE(family.name);
    EXPECT_TRUE(std::regex_match(family.name, name_pattern));
    EXPECT_FALSE(family.help.empty());
    const bool ends_in_total = family.name.ends_with("_total");
    EXPECT_EQ(ends_in_total, family.type == prometheus::MetricType::Counter);
    if (family.type == prometheus::MetricType::Histogram) {
      // Every histogram is either a time in seconds or a count of things in a batch.
      EXPECT_TRUE(family.name.ends_with("_seconds") ||
                  family.name.find("_batch_") != std::string::npos);
    }
  }
}

TEST(HistogramBucketsTest, BucketsAreStrictlyIncreasingAndSpanServingLatencies) {
  for (const auto* buckets :
       {&RequestLatencyBucketsSeconds(), &InterTokenLatencyBucketsSeconds(),
        &StepDurationBucketsSeconds(), &BatchTokenBuckets(), &BatchSequenceBuckets()}) {
    ASSERT_FALSE(buckets->empty());
    for (size_t i = 1; i < buckets->size(); ++i) EXPECT_LT((*buckets)[i - 1], (*buckets)[i]);
  }
  EXPECT_LE(RequestLatencyBucketsSeconds().front(), 0.001);
  EXPECT_GE(RequestLatencyBucketsSeconds().back(), 300);
  EXPECT_LE(StepDurationBucketsSeconds().front(), 0.0001);
  EXPECT_LE(InterTokenLatencyBucketsSeconds().front(), 0.0005);
  EXPECT_GE(BatchTokenBuckets().back(), 8192);
}

}  // namespace
}  // namespace llm::metrics
