// Tests for llm-bench's percentile summary against hand-computed nearest-rank values.
#include "client/latency_summary.h"

#include "gtest/gtest.h"

namespace llm::client {
namespace {

TEST(LatencySummaryTest, NearestRankPercentilesOfOneToHundred) {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i) samples.push_back(i);  // unsorted on purpose
  const LatencySummary summary = Summarize(samples);
  EXPECT_EQ(summary.count, 100);
  EXPECT_DOUBLE_EQ(summary.mean, 50.5);
  EXPECT_DOUBLE_EQ(summary.p50, 50);
  EXPECT_DOUBLE_EQ(summary.p90, 90);
  EXPECT_DOUBLE_EQ(summary.p99, 99);
  EXPECT_DOUBLE_EQ(summary.max, 100);
}

TEST(LatencySummaryTest, SmallSamplesRoundUpToAnObservedValue) {
  const LatencySummary summary = Summarize({0.3, 0.1, 0.2});
  EXPECT_DOUBLE_EQ(summary.p50, 0.2);  // ceil(0.5 * 3) = 2nd smallest
  EXPECT_DOUBLE_EQ(summary.p90, 0.3);
  EXPECT_DOUBLE_EQ(summary.p99, 0.3);
}

TEST(LatencySummaryTest, NoSamplesGivesZeros) {
  const LatencySummary summary = Summarize({});
  EXPECT_EQ(summary.count, 0);
  EXPECT_EQ(summary.p99, 0.0);
  EXPECT_EQ(summary.max, 0.0);
}

}  // namespace
}  // namespace llm::client
