// A kernel timeline without Nsight Systems: CUPTI's activity records (CUPTI_ACTIVITY_KIND_
// CONCURRENT_KERNEL) give every kernel's start and end on the GPU's clock, graph replays included,
// so a decode step's time splits into what each kernel took and the idle gaps between them, as the
// step runs (graphs, warm caches, boost clocks), not as a profiler replays one kernel at a time.
//
// Usage: KernelTimeline::Enable() before the CUDA graphs to be traced are instantiated (CUPTI
// traces only launches made while it is on); TakeRecords() after a synchronise returns the kernels
// since the last call, in start order. Steps are told apart by GPU-clock marks (Now()) taken on the
// host before each step: a kernel belongs to the last mark at or before its start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llm::bench {

struct KernelRecord {
  std::string name;  // demangled where CUPTI gives it so
  uint64_t start_ns = 0;
  uint64_t end_ns = 0;
  int grid[3] = {0, 0, 0};
  int block_threads = 0;
  uint32_t graph_id = 0;  // 0: an eager launch
};

class KernelTimeline {
 public:
  // Turns kernel activity records on for the process; false (with the reason on stderr) where
  // CUPTI is unavailable. Records are kept until TakeRecords().
  static bool Enable();
  // The GPU clock CUPTI stamps records with, in ns.
  static uint64_t Now();
  // Flushes CUPTI's buffers and returns (and forgets) every kernel recorded so far, by start time.
  static std::vector<KernelRecord> TakeRecords();
};

// Where the steps' time went: per step the span from the first kernel's start to the last one's
// end, the time some kernel was running, and the idle rest; per kernel group (name and grid) the
// launches per step and their mean duration. `step_marks[i]` is Now() just before step i began;
// records before the first mark are ignored.
struct TimelineGroup {
  std::string name;
  int grid[3] = {0, 0, 0};
  double launches_per_step = 0;
  double mean_us = 0;
  double total_us_per_step = 0;  // launches_per_step * mean_us
};
struct TimelineSummary {
  int steps = 0;
  double kernels_per_step = 0;
  double span_us = 0;  // mean over steps: first kernel start to last kernel end
  double busy_us = 0;  // mean over steps: the union of kernel intervals
  double idle_us = 0;  // span - busy
  double lead_us = 0;  // mean over steps: the step's mark to its first kernel (host work first)
  std::vector<TimelineGroup> groups;  // by total time per step, largest first
};
TimelineSummary SummarizeTimeline(const std::vector<KernelRecord>& records,
                                  const std::vector<uint64_t>& step_marks);

// Prints the summary as a table (groups under `min_share` of the busy time folded into "other").
void PrintTimeline(const std::string& title, const TimelineSummary& summary);
// The summary and the last step's kernels (start offset and duration, us) as one JSON object.
std::string TimelineJson(const std::string& shape, const TimelineSummary& summary,
                         const std::vector<KernelRecord>& records,
                         const std::vector<uint64_t>& step_marks);

}  // namespace llm::bench
