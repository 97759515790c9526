// A small fixed-size thread pool whose one job is ParallelFor: split [0, count) into contiguous
// ranges and run them on the pool's workers plus the calling thread, returning when all are done.
//
// The CPU ops are data-parallel loops over rows, tokens or heads; a persistent pool avoids paying
// thread creation on every op of every layer. Calls are serialised (one ParallelFor at a time),
// which matches how the backend is used: one engine thread issues ops in order.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace llm::cpu {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 runs everything inline, 0 means hardware concurrency.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls body(begin, end) on disjoint, near-equal ranges covering [0, count), at most one per
  // thread and at most ceil(count / min_grain) of them, so tiny loops do not pay for waking
  // workers. body must not call ParallelFor on the same pool (calls are serialised, so that would
  // deadlock).
  void ParallelFor(int64_t count, int64_t min_grain,
                   const std::function<void(int64_t begin, int64_t end)>& body);

 private:
  void WorkerLoop(int worker_index);
  void RunPart(int part);

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one ParallelFor at a time

  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  uint64_t generation_ = 0;  // bumped per ParallelFor so workers know there is new work
  bool stopping_ = false;
  int pending_parts_ = 0;
  int num_parts_ = 0;
  int64_t count_ = 0;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
};

}  // namespace llm::cpu
