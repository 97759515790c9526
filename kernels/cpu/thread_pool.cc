// ThreadPool: workers sleep on a condition variable and wake once per ParallelFor generation.
#include "kernels/cpu/thread_pool.h"

#include <algorithm>

namespace llm::cpu {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0)
    num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < num_threads; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

// Part p of num_parts_ covers an equal share of [0, count_), the remainder spread over the first
// parts.
void ThreadPool::RunPart(int part) {
  const int64_t base = count_ / num_parts_;
  const int64_t extra = count_ % num_parts_;
  const int64_t begin = part * base + std::min<int64_t>(part, extra);
  const int64_t end = begin + base + (part < extra ? 1 : 0);
  if (begin < end) (*body_)(begin, end);
}

void ThreadPool::WorkerLoop(int worker_index) {
  uint64_t seen_generation = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
      if (stopping_) return;
      seen_generation = generation_;
    }
    // Worker i runs part i; the caller runs part 0. Workers beyond num_parts_ have nothing to do.
    if (worker_index < num_parts_) RunPart(worker_index);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_parts_ == 0) work_done_.notify_one();
    }
  }
}

void ThreadPool::ParallelFor(int64_t count, int64_t min_grain,
                             const std::function<void(int64_t, int64_t)>& body) {
  if (count <= 0) return;
  const int64_t grain = std::max<int64_t>(1, min_grain);
  const int64_t useful_parts = (count + grain - 1) / grain;
  const int parts = static_cast<int>(std::min<int64_t>(num_threads(), useful_parts));
  if (parts <= 1) {
    body(0, count);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    count_ = count;
    num_parts_ = parts;
    // Every worker acknowledges every generation, so the pool's state is never reused while a
    // worker could still be reading it.
    pending_parts_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  work_ready_.notify_all();
  RunPart(0);
  std::unique_lock<std::mutex> lock(mutex_);
  work_done_.wait(lock, [&] { return pending_parts_ == 0; });
  body_ = nullptr;
}

}  // namespace llm::cpu
