// Process gauges sampled at scrape time.
#include "server/metrics/process_collector.h"

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace llm::metrics {
namespace {

prometheus::MetricFamily GaugeFamily(std::string name, std::string help, double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = prometheus::MetricType::Gauge;
  prometheus::ClientMetric metric;
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

absl::StatusOr<ProcessMemory> ParseStatm(const std::string& statm_text, size_t page_bytes) {
  std::istringstream in(statm_text);
  size_t size_pages = 0;
  size_t resident_pages = 0;
  if (!(in >> size_pages >> resident_pages)) {
    return absl::InvalidArgumentError(
        absl::StrCat("statm: expected at least two page counts, got \"", statm_text, "\""));
  }
  return ProcessMemory{.resident_bytes = resident_pages * page_bytes,
                       .virtual_bytes = size_pages * page_bytes};
}

absl::StatusOr<ProcessMemory> ReadProcessMemory() {
  std::ifstream file("/proc/self/statm");
  if (!file) return absl::UnavailableError("cannot open /proc/self/statm");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const long page_bytes = sysconf(_SC_PAGESIZE);
  if (page_bytes <= 0) return absl::UnavailableError("sysconf(_SC_PAGESIZE) failed");
  return ParseStatm(text, static_cast<size_t>(page_bytes));
}

ProcessCollector::ProcessCollector()
    : start_time_seconds_(
          std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
              .count()) {}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  std::vector<prometheus::MetricFamily> families;
  if (absl::StatusOr<ProcessMemory> memory = ReadProcessMemory(); memory.ok()) {
    families.push_back(GaugeFamily("llm_process_resident_memory_bytes",
                                   "Resident host memory of the server process.",
                                   static_cast<double>(memory->resident_bytes)));
    families.push_back(GaugeFamily("llm_process_virtual_memory_bytes",
                                   "Virtual memory size of the server process.",
                                   static_cast<double>(memory->virtual_bytes)));
  }
  families.push_back(GaugeFamily("llm_process_start_time_seconds",
                                 "Start time of the metrics module, seconds since the Unix epoch.",
                                 start_time_seconds_));
  return families;
}

}  // namespace llm::metrics
