// CUPTI kernel activity records, and the step summary built from them (see kernel_timeline.h).
#include "bench/kernel_timeline.h"

#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>

#include "nlohmann/json.hpp"

namespace llm::bench {
namespace {

constexpr size_t kBufferBytes = 8 << 20;
constexpr size_t kBufferAlign = 8;

std::mutex records_mutex;
std::vector<KernelRecord>& Records() {
  static auto* records = new std::vector<KernelRecord>();
  return *records;
}

bool CuptiOk(CUptiResult result, const char* call) {
  if (result == CUPTI_SUCCESS) return true;
  const char* message = nullptr;
  cuptiGetResultString(result, &message);
  std::fprintf(stderr, "kernel timeline: %s failed: %s\n", call, message ? message : "?");
  return false;
}

void CUPTIAPI BufferRequested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(kBufferAlign, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI BufferCompleted(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid_bytes) {
  CUpti_Activity* activity = nullptr;
  std::lock_guard<std::mutex> lock(records_mutex);
  while (cuptiActivityGetNextRecord(buffer, valid_bytes, &activity) == CUPTI_SUCCESS) {
    if (activity->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL &&
        activity->kind != CUPTI_ACTIVITY_KIND_KERNEL) {
      continue;
    }
    const auto* kernel = reinterpret_cast<const CUpti_ActivityKernel10*>(activity);
    KernelRecord record;
    record.name = kernel->name != nullptr ? kernel->name : "?";
    record.start_ns = kernel->start;
    record.end_ns = kernel->end;
    record.grid[0] = kernel->gridX;
    record.grid[1] = kernel->gridY;
    record.grid[2] = kernel->gridZ;
    record.block_threads = kernel->blockX * kernel->blockY * kernel->blockZ;
    record.graph_id = kernel->graphId;
    Records().push_back(std::move(record));
  }
  std::free(buffer);
}

// A kernel's (mangled) name without namespaces, return type and parameters:
// "void llm::cuda::Foo<4, true>(llm::cuda::FooParams)" -> "Foo<4, true>".
std::string ShortName(const std::string& name) {
  std::string s = name;
  int status = 0;
  if (char* demangled = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status)) {
    s = demangled;
    std::free(demangled);
  }
  if (s.rfind("void ", 0) == 0) s = s.substr(5);
  for (const std::string prefix : {"llm::cuda::", "(anonymous namespace)::", "__nv_"}) {
    for (size_t at; (at = s.find(prefix)) != std::string::npos;) s.erase(at, prefix.size());
  }
  int depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {  // drop the parameter list (the first '(' at depth 0)
    if (s[i] == '<') ++depth;
    if (s[i] == '>') --depth;
    if (s[i] == '(' && depth == 0 && i > 0) {
      s.resize(i);
      break;
    }
  }
  return s;
}

}  // namespace

bool KernelTimeline::Enable() {
  if (!CuptiOk(cuptiActivityRegisterCallbacks(BufferRequested, BufferCompleted),
               "cuptiActivityRegisterCallbacks")) {
    return false;
  }
  return CuptiOk(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL),
                 "cuptiActivityEnable(CONCURRENT_KERNEL)");
}

uint64_t KernelTimeline::Now() {
  uint64_t timestamp = 0;
  cuptiGetTimestamp(&timestamp);
  return timestamp;
}

std::vector<KernelRecord> KernelTimeline::TakeRecords() {
  cuptiActivityFlushAll(1);
  std::vector<KernelRecord> records;
  {
    std::lock_guard<std::mutex> lock(records_mutex);
    records.swap(Records());
  }
  std::sort(records.begin(), records.end(),
            [](const KernelRecord& a, const KernelRecord& b) { return a.start_ns < b.start_ns; });
  return records;
}

TimelineSummary SummarizeTimeline(const std::vector<KernelRecord>& records,
                                  const std::vector<uint64_t>& step_marks) {
  TimelineSummary summary;
  summary.steps = static_cast<int>(step_marks.size());
  if (step_marks.empty()) return summary;
  struct StepTotals {
    uint64_t first_start = UINT64_MAX, last_end = 0, busy = 0, busy_until = 0;
    int kernels = 0;
  };
  std::vector<StepTotals> steps(step_marks.size());
  using GroupKey = std::tuple<std::string, int, int, int>;
  std::map<GroupKey, std::pair<int, double>> groups;  // launches, total us
  for (const KernelRecord& r : records) {             // records are in start order
    const auto after = std::upper_bound(step_marks.begin(), step_marks.end(), r.start_ns);
    if (after == step_marks.begin()) continue;
    StepTotals& step = steps[after - step_marks.begin() - 1];
    step.first_start = std::min(step.first_start, r.start_ns);
    step.last_end = std::max(step.last_end, r.end_ns);
    // The union of intervals: kernels may overlap (PDL, several streams).
    const uint64_t from = std::max(r.start_ns, step.busy_until);
    if (r.end_ns > from) step.busy += r.end_ns - from;
    step.busy_until = std::max(step.busy_until, r.end_ns);
    ++step.kernels;
    auto& group = groups[{ShortName(r.name), r.grid[0], r.grid[1], r.grid[2]}];
    ++group.first;
    group.second += (r.end_ns - r.start_ns) * 1e-3;
  }
  int counted = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].kernels == 0) continue;
    ++counted;
    summary.kernels_per_step += steps[i].kernels;
    summary.span_us += (steps[i].last_end - steps[i].first_start) * 1e-3;
    summary.busy_us += steps[i].busy * 1e-3;
    summary.lead_us += (static_cast<double>(steps[i].first_start) - step_marks[i]) * 1e-3;
  }
  if (counted == 0) return summary;
  summary.kernels_per_step /= counted;
  summary.span_us /= counted;
  summary.busy_us /= counted;
  summary.lead_us /= counted;
  summary.idle_us = summary.span_us - summary.busy_us;
  for (const auto& [key, value] : groups) {
    TimelineGroup group;
    group.name = std::get<0>(key);
    group.grid[0] = std::get<1>(key);
    group.grid[1] = std::get<2>(key);
    group.grid[2] = std::get<3>(key);
    group.launches_per_step = static_cast<double>(value.first) / counted;
    group.mean_us = value.second / value.first;
    group.total_us_per_step = value.second / counted;
    summary.groups.push_back(group);
  }
  std::sort(summary.groups.begin(), summary.groups.end(),
            [](const TimelineGroup& a, const TimelineGroup& b) {
              return a.total_us_per_step > b.total_us_per_step;
            });
  return summary;
}

void PrintTimeline(const std::string& title, const TimelineSummary& summary) {
  std::printf("\nkernel timeline: %s (%d steps, CUPTI)\n", title.c_str(), summary.steps);
  std::printf(
      "  per step: %.1f kernels, span %.1f us = busy %.1f + idle %.1f (%.2f us per kernel); "
      "host lead %.1f us\n",
      summary.kernels_per_step, summary.span_us, summary.busy_us, summary.idle_us,
      summary.kernels_per_step > 0 ? summary.idle_us / summary.kernels_per_step : 0.0,
      summary.lead_us);
  std::printf("  %-64s %16s %8s %9s %9s %6s\n", "kernel", "grid", "n/step", "mean us", "us/step",
              "busy%");
  for (const TimelineGroup& g : summary.groups) {
    std::string name = g.name.size() > 64 ? g.name.substr(0, 61) + "..." : g.name;
    char grid[48];
    std::snprintf(grid, sizeof(grid), "%dx%dx%d", g.grid[0], g.grid[1], g.grid[2]);
    std::printf("  %-64s %16s %8.1f %9.2f %9.1f %6.1f\n", name.c_str(), grid, g.launches_per_step,
                g.mean_us, g.total_us_per_step,
                summary.busy_us > 0 ? 100.0 * g.total_us_per_step / summary.busy_us : 0.0);
  }
}

std::string TimelineJson(const std::string& shape, const TimelineSummary& summary,
                         const std::vector<KernelRecord>& records,
                         const std::vector<uint64_t>& step_marks) {
  nlohmann::json out;
  out["shape"] = shape;
  out["steps"] = summary.steps;
  out["kernels_per_step"] = summary.kernels_per_step;
  out["span_us"] = summary.span_us;
  out["busy_us"] = summary.busy_us;
  out["idle_us"] = summary.idle_us;
  out["host_lead_us"] = summary.lead_us;
  out["groups"] = nlohmann::json::array();
  for (const TimelineGroup& g : summary.groups) {
    out["groups"].push_back({{"kernel", g.name},
                             {"grid", {g.grid[0], g.grid[1], g.grid[2]}},
                             {"launches_per_step", g.launches_per_step},
                             {"mean_us", g.mean_us},
                             {"us_per_step", g.total_us_per_step}});
  }
  // The last step's kernels, for a Gantt plot: offsets from its first kernel.
  out["last_step"] = nlohmann::json::array();
  if (!step_marks.empty()) {
    uint64_t origin = 0;
    for (const KernelRecord& r : records) {
      if (r.start_ns < step_marks.back()) continue;
      if (origin == 0) origin = r.start_ns;
      out["last_step"].push_back({{"kernel", ShortName(r.name)},
                                  {"grid", {r.grid[0], r.grid[1], r.grid[2]}},
                                  {"start_us", (r.start_ns - origin) * 1e-3},
                                  {"duration_us", (r.end_ns - r.start_ns) * 1e-3}});
    }
  }
  return out.dump(1);
}

}  // namespace llm::bench
