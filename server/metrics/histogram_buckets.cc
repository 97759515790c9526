// Bucket boundaries for the serving histograms.
#include "server/metrics/histogram_buckets.h"

namespace llm::metrics {
namespace {

std::vector<double> PowersOfTwo(double last) {
  std::vector<double> buckets;
  for (double b = 1; b <= last; b *= 2) buckets.push_back(b);
  return buckets;
}

}  // namespace

const std::vector<double>& RequestLatencyBucketsSeconds() {
  static const std::vector<double> kBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1,
      1.5,   2,      3,     5,    7.5,   10,   15,    20,  30,   60,  120, 300, 600};
  return kBuckets;
}

const std::vector<double>& InterTokenLatencyBucketsSeconds() {
  static const std::vector<double> kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
      0.075,  0.1,   0.15,   0.2,   0.3,    0.5,  0.75,  1,    2.5,   5,    10};
  return kBuckets;
}

const std::vector<double>& StepDurationBucketsSeconds() {
  static const std::vector<double> kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
      0.05,   0.075,   0.1,    0.25,  0.5,    1,     2.5,    5,    10,    30,   60};
  return kBuckets;
}

const std::vector<double>& BatchTokenBuckets() {
  static const std::vector<double> kBuckets = PowersOfTwo(16384);
  return kBuckets;
}

const std::vector<double>& BatchSequenceBuckets() {
  static const std::vector<double> kBuckets = PowersOfTwo(1024);
  return kBuckets;
}

}  // namespace llm::metrics
