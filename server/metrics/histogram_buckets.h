// Bucket boundaries for the serving histograms, chosen for LLM serving on CPU and GPU.
//
// Latencies span sub-millisecond GPU decode steps to multi-minute CPU generations, so the buckets
// are roughly logarithmic (1-2.5-5 per decade) with extra resolution where SLOs usually sit
// (10-100 ms inter-token, 0.1-2 s time to first token).
#pragma once

#include <vector>

namespace llm::metrics {

// Time to first token, end-to-end request latency, queue time: 1 ms .. 10 min.
const std::vector<double>& RequestLatencyBucketsSeconds();
// Inter-token latency: 0.5 ms .. 10 s.
const std::vector<double>& InterTokenLatencyBucketsSeconds();
// Engine step wall time: 100 us .. 60 s.
const std::vector<double>& StepDurationBucketsSeconds();
// Query tokens in one step: 1 .. 16384 (powers of two).
const std::vector<double>& BatchTokenBuckets();
// Sequences in one step: 1 .. 1024 (powers of two).
const std::vector<double>& BatchSequenceBuckets();

}  // namespace llm::metrics
