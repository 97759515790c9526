// Process gauges sampled when Prometheus scrapes: resident memory (from /proc/self/statm), virtual
// memory, and the process start time.
//
// A prometheus::Collectable rather than gauges set by the engine, so the values are fresh even when
// the engine is idle and no step runs.
#pragma once

#include <cstddef>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace llm::metrics {

struct ProcessMemory {
  size_t resident_bytes = 0;
  size_t virtual_bytes = 0;
};

// Parses the contents of /proc/<pid>/statm ("size resident shared text lib data dt", in pages).
absl::StatusOr<ProcessMemory> ParseStatm(const std::string& statm_text, size_t page_bytes);

// Reads /proc/self/statm. Unavailable off Linux.
absl::StatusOr<ProcessMemory> ReadProcessMemory();

class ProcessCollector final : public prometheus::Collectable {
 public:
  ProcessCollector();
  // llm_process_resident_memory_bytes, llm_process_virtual_memory_bytes,
  // llm_process_start_time_seconds. The memory families are left out when /proc cannot be read.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  double start_time_seconds_;
};

}  // namespace llm::metrics
