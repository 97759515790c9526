// Tests for the KV block pool: all-or-nothing allocation, reference counting, double release.
#include "kvcache/block_pool.h"

#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llm::kvcache {
namespace {

TEST(BlockPoolTest, AllocatesDistinctBlocksUntilEmpty) {
  BlockPool pool(8);
  std::set<int32_t> seen;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<std::vector<int32_t>> blocks = pool.Allocate(2);
    ASSERT_TRUE(blocks.ok()) << blocks.status();
    for (int32_t b : *blocks) {
      EXPECT_GE(b, 0);
      EXPECT_LT(b, 8);
      EXPECT_TRUE(seen.insert(b).second) << "block " << b << " handed out twice";
      EXPECT_EQ(pool.reference_count(b), 1);
    }
  }
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_EQ(pool.num_used(), 8);
}

TEST(BlockPoolTest, AllocationBeyondFreeTakesNothing) {
  BlockPool pool(5);
  ASSERT_TRUE(pool.Allocate(3).ok());
  absl::StatusOr<std::vector<int32_t>> too_many = pool.Allocate(3);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(too_many.status().message()), testing::HasSubstr("2 of 5 free"));
  EXPECT_EQ(pool.num_free(), 2);
}

TEST(BlockPoolTest, SharedBlockFreesOnlyAfterLastRelease) {
  BlockPool pool(2);
  absl::StatusOr<std::vector<int32_t>> blocks = pool.Allocate(1);
  ASSERT_TRUE(blocks.ok());
  const int32_t b = (*blocks)[0];
  ASSERT_TRUE(pool.AddReference(b).ok());
  EXPECT_EQ(pool.reference_count(b), 2);
  ASSERT_TRUE(pool.Release(b).ok());
  EXPECT_EQ(pool.num_free(), 1);
  ASSERT_TRUE(pool.Release(b).ok());
  EXPECT_EQ(pool.num_free(), 2);
  EXPECT_EQ(pool.reference_count(b), 0);
}

TEST(BlockPoolTest, DoubleReleaseAndSharingAFreeBlockFail) {
  BlockPool pool(2);
  EXPECT_EQ(pool.Release(0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(pool.AddReference(1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(pool.Release(7).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(pool.reference_count(-1), -1);
  EXPECT_EQ(pool.num_free(), 2);
}

TEST(BlockPoolTest, NegativeCountIsInvalid) {
  BlockPool pool(2);
  EXPECT_EQ(pool.Allocate(-1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llm::kvcache
