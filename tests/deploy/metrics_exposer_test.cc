// MetricsExposer: serves the registry over HTTP on loopback, and reports a busy port as a status.
#include "server/metrics/metrics_exposer.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "server/metrics/process_collector.h"
#include "server/metrics/serving_metrics.h"
#include "server/metrics/text_exposition.h"
#include "tests/deploy/metrics_text.h"

namespace llm::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Optional;

TEST(MetricsExposerTest, ServesTheRegistryOnLoopback) {
  auto registry = std::make_shared<prometheus::Registry>();
  ServingMetrics metrics(registry);
  absl::StatusOr<std::unique_ptr<MetricsExposer>> exposer =
      MetricsExposer::Start("127.0.0.1:0", {registry, std::make_shared<ProcessCollector>()});
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  ASSERT_GT((*exposer)->port(), 0);

  metrics.OnGeneratedTokens(42);
  const std::optional<std::string> scraped = testing::ScrapeLoopback((*exposer)->port());
  ASSERT_TRUE(scraped.has_value());
  const std::string& body = *scraped;
  EXPECT_THAT(testing::SampleValue(body, "llm_generation_tokens_total"), Optional(42.0));
  EXPECT_THAT(body, HasSubstr("llm_process_resident_memory_bytes"));
}

TEST(MetricsExposerTest, BusyPortIsAnUnavailableStatusNotAnException) {
  absl::StatusOr<std::unique_ptr<MetricsExposer>> first = MetricsExposer::Start("127.0.0.1:0", {});
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = "127.0.0.1:" + std::to_string((*first)->port());
  absl::StatusOr<std::unique_ptr<MetricsExposer>> second = MetricsExposer::Start(address, {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(address));
}

// promtool's linter over a scrape with every kind of series populated. Skips where Debian's
// `prometheus` package (which ships promtool) is not installed.
TEST(PromtoolTest, ScrapePassesPromtoolCheckMetrics) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not found: apt-get install prometheus to run this check";
  }
  auto registry = std::make_shared<prometheus::Registry>();
  ServingMetrics metrics(registry);
  metrics.SetModelInfo({.model = "tiny",
                        .architecture = "LlamaForCausalLM",
                        .backend = "cpu",
                        .dtype = "f32",
                        .server_version = "0.1.0"});
  metrics.OnStep(StepPhase::kPrefill, 0.2, 100, 2);
  metrics.OnQueued(0.001);
  metrics.OnFirstToken(0.2);
  metrics.OnToken(0.02);
  metrics.OnPromptTokens(100);
  metrics.OnGeneratedTokens(2);
  metrics.OnRequestDone("Generate", absl::StatusCode::kOk, 0.3);
  metrics.OnRejections(RejectionReason::kKvCacheFull, 1);
  metrics.OnPreemptions(1);
  metrics.OnEngineState({});
  const std::string text = SerializeToText({registry, std::make_shared<ProcessCollector>()});

  const std::string path = ::testing::TempDir() + "/scrape.prom";
  std::ofstream(path) << text;
  const std::string command = "promtool check metrics < " + path + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << "promtool check metrics:\n" << output;
}

}  // namespace
}  // namespace llm::metrics
