// Nearest-rank percentile summary.
#include "client/latency_summary.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace llm::client {

LatencySummary Summarize(std::vector<double> samples) {
  LatencySummary summary;
  if (samples.empty()) return summary;
  std::sort(samples.begin(), samples.end());
  const auto rank = [&](double q) {
    const size_t index = static_cast<size_t>(std::ceil(q * samples.size()));
    return samples[std::clamp<size_t>(index, 1, samples.size()) - 1];
  };
  summary.count = static_cast<int>(samples.size());
  summary.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size();
  summary.p50 = rank(0.50);
  summary.p90 = rank(0.90);
  summary.p99 = rank(0.99);
  summary.max = samples.back();
  return summary;
}

}  // namespace llm::client
