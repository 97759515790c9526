// ProcessCollector: statm parsing and the scrape-time process gauges.
#include "server/metrics/process_collector.h"

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/text_exposition.h"
#include "tests/deploy/metrics_text.h"

namespace llm::metrics {
namespace {

TEST(ParseStatmTest, ConvertsPagesToBytes) {
  absl::StatusOr<ProcessMemory> memory = ParseStatm("2500 300 100 10 0 400 0\n", 4096);
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_EQ(memory->virtual_bytes, 2500u * 4096);
  EXPECT_EQ(memory->resident_bytes, 300u * 4096);
}

TEST(ParseStatmTest, RejectsTruncatedText) {
  EXPECT_EQ(ParseStatm("2500", 4096).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseStatm("", 4096).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ProcessCollectorTest, ResidentMemoryGrowsWhenTheProcessTouchesMemory) {
  auto collector = std::make_shared<ProcessCollector>();
  const std::string before = SerializeToText({collector});
  const std::optional<double> rss_before =
      testing::SampleValue(before, "llm_process_resident_memory_bytes");
  ASSERT_TRUE(rss_before.has_value()) << before;
  EXPECT_GT(*rss_before, 0);

  // Touch 64 MiB so the resident set must grow by most of it.
  std::vector<char> block(64 << 20);
  for (size_t i = 0; i < block.size(); i += 4096) block[i] = static_cast<char>(i);
  const std::optional<double> rss_after =
      testing::SampleValue(SerializeToText({collector}), "llm_process_resident_memory_bytes");
  ASSERT_TRUE(rss_after.has_value());
  EXPECT_GT(*rss_after - *rss_before, 48.0 * (1 << 20)) << "block[1] = " << int{block[1]};
  EXPECT_GT(testing::SampleValue(before, "llm_process_start_time_seconds").value_or(0), 1.7e9);
}

}  // namespace
}  // namespace llm::metrics
