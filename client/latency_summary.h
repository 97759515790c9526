// Percentiles of latency samples, for llm-bench's table and JSON.
#pragma once

#include <vector>

namespace llm::client {

struct LatencySummary {
  int count = 0;
  double mean = 0.0;
  double p50 = 0.0;
  double p90 = 0.0;
  double p99 = 0.0;
  double max = 0.0;
};

// Nearest-rank percentiles (the smallest sample with at least q of the samples at or below it).
// All zero when there are no samples.
LatencySummary Summarize(std::vector<double> samples);

}  // namespace llm::client
