// ThreadPool::ParallelFor must cover every index exactly once, whatever the count, grain and pool
// size.
#include <atomic>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/thread_pool.h"

namespace llm::cpu {
namespace {

TEST(ThreadPoolTest, ParallelForVisitsEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t count : {0, 1, 2, 7, 64, 1001}) {
      for (int64_t grain : {1, 4, 100}) {
        std::vector<std::atomic<int>> visits(count);
        pool.ParallelFor(count, grain, [&](int64_t begin, int64_t end) {
          ASSERT_LE(0, begin);
          ASSERT_LE(end, count);
          for (int64_t i = begin; i < end; ++i) visits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < count; ++i) {
          ASSERT_EQ(visits[i].load(), 1) << "threads=" << threads << " count=" << count
                                         << " grain=" << grain << " index=" << i;
        }
      }
    }
  }
}

TEST(ThreadPoolTest, ManyConsecutiveCallsAllComplete) {
  ThreadPool pool(4);
  std::atomic<int64_t> total{0};
  for (int call = 0; call < 2000; ++call) {
    pool.ParallelFor(16, 1, [&](int64_t begin, int64_t end) { total.fetch_add(end - begin); });
  }
  EXPECT_EQ(total.load(), 2000 * 16);
}

TEST(ThreadPoolTest, ZeroThreadsMeansAtLeastOne) {
  ThreadPool pool(0);
  EXPECT_GE(pool.num_threads(), 1);
}

}  // namespace
}  // namespace llm::cpu
