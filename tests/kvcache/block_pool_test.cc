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

TEST(BlockPoolTest, ReleasedHashedBlocksStayCachedAndAreEvictedLeastRecentlyReleasedFirst) {
  BlockPool pool(4);
  std::vector<int32_t> blocks = *pool.Allocate(4);
  for (int32_t i = 0; i < 3; ++i) ASSERT_TRUE(pool.RegisterHash(blocks[i], 100 + i));
  // Release order 1, 0, 2 (hashed), then 3 (plain): 3 is free, the rest cached in that order.
  for (int32_t i : {1, 0, 2, 3}) ASSERT_TRUE(pool.Release(blocks[i]).ok());
  EXPECT_EQ(pool.num_free(), 4) << "cached blocks count as available";
  EXPECT_EQ(pool.num_used(), 0);
  EXPECT_EQ(pool.num_evictable(), 3);
  EXPECT_EQ(pool.EvictionOrder(), (std::vector<int32_t>{blocks[1], blocks[0], blocks[2]}));
  EXPECT_EQ(pool.FindCached(100), blocks[0]);

  // A hit revives a cached block; it leaves the eviction list.
  ASSERT_TRUE(pool.AddReference(blocks[0]).ok());
  EXPECT_EQ(pool.reference_count(blocks[0]), 1);
  EXPECT_EQ(pool.EvictionOrder(), (std::vector<int32_t>{blocks[1], blocks[2]}));

  // Allocation takes the plain free block first, then evicts the least recently released.
  std::vector<int32_t> first = *pool.Allocate(2);
  EXPECT_EQ(first, (std::vector<int32_t>{blocks[3], blocks[1]}));
  EXPECT_FALSE(pool.has_hash(blocks[1]));
  EXPECT_EQ(pool.FindCached(101), std::nullopt) << "an evicted block is no longer findable";
  EXPECT_EQ(pool.evictions_total(), 1);
  EXPECT_EQ(*pool.Allocate(1), std::vector<int32_t>{blocks[2]});
  EXPECT_EQ(pool.evictions_total(), 2);
  EXPECT_EQ(pool.Allocate(1).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.FindCached(100), blocks[0]) << "the referenced cached block was never a victim";
}

TEST(BlockPoolTest, AHashNamesOneBlockAndDroppingItFreesAnUnreferencedBlock) {
  BlockPool pool(3);
  std::vector<int32_t> blocks = *pool.Allocate(2);
  ASSERT_TRUE(pool.RegisterHash(blocks[0], 7));
  EXPECT_FALSE(pool.RegisterHash(blocks[1], 7)) << "the first block cached under a hash keeps it";
  EXPECT_EQ(pool.FindCached(7), blocks[0]);
  EXPECT_FALSE(pool.RegisterHash(2, 8)) << "a free block cannot be cached";
  ASSERT_TRUE(pool.Release(blocks[0]).ok());
  EXPECT_EQ(pool.num_evictable(), 1);
  pool.DropHash(blocks[0]);
  EXPECT_EQ(pool.num_evictable(), 0);
  EXPECT_EQ(pool.num_free(), 2);
  EXPECT_EQ(pool.AddReference(blocks[0]).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace llm::kvcache
