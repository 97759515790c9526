// Tests for the per-sequence KV block manager.
#include "kvcache/kv_cache_manager.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvcache/kv_layout.h"

namespace llm::kvcache {
namespace {

std::unique_ptr<KvCacheManager> MakeManager(int32_t num_blocks, int32_t block_size,
                                            size_t block_bytes = 0) {
  absl::StatusOr<std::unique_ptr<KvCacheManager>> manager = KvCacheManager::Create(
      {.num_blocks = num_blocks, .block_size = block_size, .block_bytes = block_bytes});
  EXPECT_TRUE(manager.ok()) << manager.status();
  return *std::move(manager);
}

TEST(KvCacheManagerTest, RejectsNonPositiveSizes) {
  EXPECT_EQ(KvCacheManager::Create({.num_blocks = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCacheManager::Create({.num_blocks = 4, .block_size = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KvCacheManagerTest, ReserveAllocatesCeilTokensOverBlockSize) {
  auto manager = MakeManager(10, 4);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->Reserve(1, 9).ok());
  EXPECT_EQ(manager->block_table(1)->size(), 3u);  // 9 tokens / 4 per block -> 3 blocks
  EXPECT_EQ(*manager->length(1), 0);               // reserving writes nothing
  ASSERT_TRUE(manager->Reserve(1, 12).ok());       // still 3 blocks
  EXPECT_EQ(manager->block_table(1)->size(), 3u);
  ASSERT_TRUE(manager->Reserve(1, 5).ok());  // never shrinks
  EXPECT_EQ(manager->block_table(1)->size(), 3u);
  EXPECT_EQ(manager->usage().used_blocks, 3);
}

TEST(KvCacheManagerTest, FailedReserveAllocatesNothing) {
  auto manager = MakeManager(4, 16);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->CreateSequence(2).ok());
  ASSERT_TRUE(manager->Reserve(1, 33).ok());  // 3 blocks
  EXPECT_FALSE(manager->CanReserve(2, 17));
  absl::Status status = manager->Reserve(2, 17);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), testing::HasSubstr("sequence 2"));
  EXPECT_TRUE(manager->block_table(2)->empty());
  EXPECT_EQ(manager->num_free_blocks(), 1);
  EXPECT_TRUE(manager->CanReserve(2, 16));
}

TEST(KvCacheManagerTest, AppendGrowsLengthAndMapsPositionsThroughTable) {
  auto manager = MakeManager(8, 4);
  ASSERT_TRUE(manager->CreateSequence(7).ok());
  ASSERT_TRUE(manager->CreateSequence(8).ok());
  ASSERT_TRUE(manager->Append(7, 3).ok());
  ASSERT_TRUE(manager->Append(8, 5).ok());
  ASSERT_TRUE(manager->Append(7, 3).ok());
  EXPECT_EQ(*manager->length(7), 6);
  std::span<const int32_t> table = *manager->block_table(7);
  ASSERT_EQ(table.size(), 2u);
  const PagedPosition p = LocatePosition(table.data(), 4, 5);
  EXPECT_EQ(p.block, table[1]);
  EXPECT_EQ(p.slot, 1);
  EXPECT_EQ(FlatSlot(table.data(), 4, 5), table[1] * 4 + 1);
}

TEST(KvCacheManagerTest, FreeReturnsEveryBlock) {
  auto manager = MakeManager(6, 2);
  for (SequenceId id = 1; id <= 3; ++id) {
    ASSERT_TRUE(manager->CreateSequence(id).ok());
    ASSERT_TRUE(manager->Append(id, 4).ok());
  }
  EXPECT_EQ(manager->num_free_blocks(), 0);
  EXPECT_EQ(manager->Append(1, 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*manager->length(1), 4) << "a failed append must not change the length";
  for (SequenceId id = 1; id <= 3; ++id) ASSERT_TRUE(manager->Free(id).ok());
  EXPECT_EQ(manager->num_free_blocks(), 6);
  EXPECT_EQ(manager->usage().num_sequences, 0);
  EXPECT_EQ(manager->Free(1).code(), absl::StatusCode::kNotFound);
}

TEST(KvCacheManagerTest, TruncateReleasesBlocksPastTheNewLength) {
  auto manager = MakeManager(6, 4);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->Append(1, 10).ok());   // 3 blocks
  ASSERT_TRUE(manager->Reserve(1, 20).ok());  // 5 blocks
  ASSERT_TRUE(manager->Truncate(1, 5).ok());
  EXPECT_EQ(*manager->length(1), 5);
  EXPECT_EQ(manager->block_table(1)->size(), 2u);
  EXPECT_EQ(manager->num_free_blocks(), 4);
  EXPECT_EQ(manager->Truncate(1, 6).code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvCacheManagerTest, ForkSharesOnlyFullBlocks) {
  auto manager = MakeManager(8, 4);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->Append(1, 10).ok());  // blocks: full, full, partial
  ASSERT_TRUE(manager->Fork(1, 2).ok());
  std::span<const int32_t> parent = *manager->block_table(1);
  std::span<const int32_t> child = *manager->block_table(2);
  ASSERT_EQ(child.size(), 2u);
  EXPECT_EQ(child[0], parent[0]);
  EXPECT_EQ(child[1], parent[1]);
  EXPECT_EQ(*manager->length(2), 8);
  EXPECT_EQ(manager->pool().reference_count(parent[0]), 2);
  EXPECT_EQ(manager->pool().reference_count(parent[2]), 1);
  EXPECT_EQ(manager->usage().used_blocks, 3);
  EXPECT_EQ(manager->Truncate(2, 6).code(), absl::StatusCode::kFailedPrecondition)
      << "cutting into a shared block would make it writable";
  ASSERT_TRUE(manager->Truncate(2, 4).ok());  // a block boundary is fine
  EXPECT_EQ(manager->pool().reference_count(parent[1]), 1);
  ASSERT_TRUE(manager->Append(2, 5).ok());  // goes to fresh blocks, never a shared one
  EXPECT_EQ(manager->usage().used_blocks, 5);
  ASSERT_TRUE(manager->Free(1).ok());
  EXPECT_EQ(manager->usage().used_blocks, 3);  // block 0 is still the child's
  ASSERT_TRUE(manager->Free(2).ok());
  EXPECT_EQ(manager->usage().used_blocks, 0);
}

TEST(KvCacheManagerTest, DuplicateAndUnknownIdsAreErrors) {
  auto manager = MakeManager(2, 4);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  EXPECT_EQ(manager->CreateSequence(1).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(manager->Reserve(9, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager->Append(9, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager->length(9).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager->Fork(9, 10).code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(manager->CanReserve(9, 1));
  EXPECT_EQ(manager->Append(1, -1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvCacheManagerTest, UsageReportsBytesFromBlockBytes) {
  auto manager = MakeManager(10, 16, /*block_bytes=*/1024);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->Append(1, 40).ok());  // 3 blocks
  KvCacheUsage usage = manager->usage();
  EXPECT_EQ(usage.used_bytes(), 3u * 1024);
  EXPECT_EQ(usage.free_bytes(), 7u * 1024);
  EXPECT_EQ(usage.total_bytes(), 10u * 1024);
}

std::vector<int32_t> Iota(int32_t count, int32_t first = 0) {
  std::vector<int32_t> tokens(count);
  for (int32_t i = 0; i < count; ++i) tokens[i] = first + i;
  return tokens;
}

TEST(KvCacheManagerTest, NewPromptMapsTheCachedFullBlocksOfAnEqualPrefix) {
  auto manager = MakeManager(16, 4);
  const std::vector<int32_t> system = Iota(10);  // blocks: full, full, partial
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->AppendTokens(1, system).ok());
  const std::vector<int32_t> table1(manager->block_table(1)->begin(),
                                    manager->block_table(1)->end());

  std::vector<int32_t> prompt = system;
  prompt.insert(prompt.end(), {50, 51, 52});
  const PrefixMatch match = manager->MatchPrefix(prompt);
  EXPECT_EQ(match.num_blocks, 2) << "the partial third block is never shared";
  EXPECT_EQ(match.unreferenced_blocks, 0);
  absl::StatusOr<int32_t> cached = manager->CreateSequenceWithPrefix(2, prompt);
  ASSERT_TRUE(cached.ok()) << cached.status();
  EXPECT_EQ(*cached, 8);
  EXPECT_EQ(*manager->length(2), 8);
  EXPECT_THAT(*manager->block_table(2), ::testing::ElementsAre(table1[0], table1[1]));
  EXPECT_EQ(manager->pool().reference_count(table1[0]), 2);
  EXPECT_THAT(*manager->tokens(2), ::testing::ElementsAreArray(Iota(8)));

  // A different token inside the second block stops the match after the first block.
  std::vector<int32_t> forked = system;
  forked[5] = 99;
  EXPECT_EQ(manager->MatchPrefix(forked).num_blocks, 1);
}

TEST(KvCacheManagerTest, AFullyCachedPromptStillLeavesItsLastTokenToCompute) {
  auto manager = MakeManager(16, 4);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->AppendTokens(1, Iota(8)).ok());
  EXPECT_EQ(manager->MatchPrefix(Iota(8)).num_tokens, 4);
  EXPECT_EQ(manager->MatchPrefix(Iota(9)).num_tokens, 8);
  EXPECT_EQ(manager->MatchPrefix(Iota(1)).num_tokens, 0);
}

TEST(KvCacheManagerTest, FreedPromptBlocksStayCachedUntilAllocationNeedsThem) {
  auto manager = MakeManager(4, 4);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->AppendTokens(1, Iota(12)).ok());  // 3 full blocks
  ASSERT_TRUE(manager->Free(1).ok());
  KvCacheUsage usage = manager->usage();
  EXPECT_EQ(usage.used_blocks, 0);
  EXPECT_EQ(usage.free_blocks, 4);
  EXPECT_EQ(usage.cached_blocks, 3);
  EXPECT_EQ(manager->MatchPrefix(Iota(13)).unreferenced_blocks, 3);
  // Taking two blocks evicts one cached block: the last of the prompt, released first.
  ASSERT_TRUE(manager->CreateSequence(2).ok());
  ASSERT_TRUE(manager->Reserve(2, 8).ok());
  EXPECT_EQ(manager->usage().evictions_total, 1);
  EXPECT_EQ(manager->MatchPrefix(Iota(13)).num_blocks, 2) << "the prompt's head is still cached";
}

TEST(KvCacheManagerTest, TruncatingIntoACachedBlockUncachesIt) {
  auto manager = MakeManager(8, 4);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->AppendTokens(1, Iota(8)).ok());
  ASSERT_EQ(manager->MatchPrefix(Iota(9)).num_blocks, 2);
  ASSERT_TRUE(manager->Truncate(1, 6).ok());
  EXPECT_EQ(manager->MatchPrefix(Iota(9)).num_blocks, 1)
      << "the second block will be rewritten, so it must not be found any more";
  ASSERT_TRUE(manager->AppendTokens(1, std::vector<int32_t>{70, 71}).ok());
  std::vector<int32_t> rewritten = Iota(6);
  rewritten.insert(rewritten.end(), {70, 71, 0});
  EXPECT_EQ(manager->MatchPrefix(rewritten).num_blocks, 2);
}

// A prompt sent in parts: sequence 1 wrote 0..13; sequence 2 holds 0..5 (a partial second block)
// and is extended by 6..12. Its partial block's positions plus 6, 7 form sequence 1's second block,
// and 8..11 its third; 12 is left to compute.
TEST(KvCacheManagerTest, AnExtensionMapsTheCachedBlocksThatContinueTheSequence) {
  auto manager = MakeManager(16, 4);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->AppendTokens(1, Iota(14)).ok());
  const std::vector<int32_t> table1(manager->block_table(1)->begin(),
                                    manager->block_table(1)->end());
  ASSERT_TRUE(manager->CreateSequence(2).ok());
  ASSERT_TRUE(manager->AppendTokens(2, Iota(6)).ok());
  const int32_t own = (*manager->block_table(2))[0];  // its own copy of 0..3 (not shared)
  const int32_t partial = (*manager->block_table(2))[1];
  const std::vector<int32_t> more = {6, 7, 8, 9, 10, 11, 12};

  const PrefixMatch match = *manager->MatchExtension(2, more);
  EXPECT_EQ(match.num_blocks, 2);
  EXPECT_EQ(match.num_tokens, 6);
  EXPECT_EQ(match.set_aside_blocks, 1);
  EXPECT_EQ(match.extra_free_blocks_taken(), -1);
  const int32_t free_before = manager->num_free_blocks();
  absl::StatusOr<int32_t> covered = manager->ExtendWithPrefix(2, more);
  ASSERT_TRUE(covered.ok()) << covered.status();
  EXPECT_EQ(*covered, 6);
  EXPECT_EQ(*manager->length(2), 12);
  EXPECT_THAT(*manager->tokens(2), ::testing::ElementsAreArray(Iota(12)));
  EXPECT_THAT(*manager->block_table(2), ::testing::ElementsAre(own, table1[1], table1[2]));
  EXPECT_EQ(manager->FindTable(2)->set_aside_block(), partial);
  EXPECT_EQ(manager->pool().reference_count(partial), 1) << "set aside, still owned";
  EXPECT_EQ(manager->num_free_blocks(), free_before);
  // The rest of the extension goes through Reserve / AppendTokens as usual.
  ASSERT_TRUE(manager->AppendTokens(2, std::vector<int32_t>{12}).ok());

  // Undoing the extension brings the partial block back; the mapped blocks stay cached.
  ASSERT_TRUE(manager->Truncate(2, 6).ok());
  EXPECT_THAT(*manager->block_table(2), ::testing::ElementsAre(own, partial));
  EXPECT_EQ(manager->FindTable(2)->set_aside_block(), -1);
  EXPECT_EQ(manager->pool().reference_count(table1[1]), 1);
  EXPECT_EQ(manager->MatchPrefix(Iota(13)).num_blocks, 3);

  // Committed, the partial block is released.
  ASSERT_EQ(*manager->ExtendWithPrefix(2, more), 6);
  const int32_t free_extended = manager->num_free_blocks();
  ASSERT_TRUE(manager->CommitExtension(2).ok());
  EXPECT_EQ(manager->FindTable(2)->set_aside_block(), -1);
  EXPECT_EQ(manager->pool().reference_count(partial), 0);
  EXPECT_EQ(manager->num_free_blocks(), free_extended + 1);
  ASSERT_TRUE(manager->Truncate(2, 6).code() == absl::StatusCode::kFailedPrecondition)
      << "committed: the cut falls inside a block sequence 1 shares";
}

TEST(KvCacheManagerTest, AnExtensionAtABlockBoundaryAndItsLimits) {
  auto manager = MakeManager(16, 4);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->AppendTokens(1, Iota(12)).ok());
  ASSERT_TRUE(manager->CreateSequence(2).ok());
  ASSERT_TRUE(manager->AppendTokens(2, Iota(4)).ok());
  const std::vector<int32_t> rest = {4, 5, 6, 7, 8, 9, 10, 11};
  // All of `rest` is cached, but its last token is left to compute.
  PrefixMatch match = *manager->MatchExtension(2, rest);
  EXPECT_EQ(match.num_blocks, 1);
  EXPECT_EQ(match.num_tokens, 4);
  EXPECT_EQ(match.set_aside_blocks, 0);
  EXPECT_EQ(manager->MatchExtension(2, std::vector<int32_t>{4}).value().num_blocks, 0);
  std::vector<int32_t> longer = rest;
  longer.push_back(12);
  EXPECT_EQ(manager->MatchExtension(2, longer).value().num_tokens, 8);
  longer[2] = 99;  // differs inside the first block: nothing
  EXPECT_EQ(manager->MatchExtension(2, longer).value().num_blocks, 0);
  // Blocks reserved past the length, or token ids appended by count: no match.
  ASSERT_TRUE(manager->Reserve(2, 5).ok());
  EXPECT_EQ(manager->MatchExtension(2, rest).value().num_blocks, 0);
  ASSERT_TRUE(manager->Truncate(2, 4).ok());
  EXPECT_EQ(manager->MatchExtension(2, rest).value().num_blocks, 1);
  ASSERT_TRUE(manager->CreateSequence(3).ok());
  ASSERT_TRUE(manager->Append(3, 4).ok());
  EXPECT_EQ(manager->MatchExtension(3, rest).value().num_blocks, 0);
  EXPECT_EQ(manager->MatchExtension(9, rest).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*manager->ExtendWithPrefix(2, rest), 4);
  EXPECT_EQ(manager->FindTable(2)->set_aside_block(), -1);
  ASSERT_TRUE(manager->Free(2).ok());
  ASSERT_TRUE(manager->Free(3).ok());
  ASSERT_TRUE(manager->Free(1).ok());
  EXPECT_EQ(manager->num_free_blocks(), 16);
}

TEST(KvCacheManagerTest, FreeingAnExtendedSequenceReleasesItsSetAsideBlock) {
  auto manager = MakeManager(8, 4);
  ASSERT_TRUE(manager->CreateSequence(1).ok());
  ASSERT_TRUE(manager->AppendTokens(1, Iota(8)).ok());
  ASSERT_TRUE(manager->CreateSequence(2).ok());
  ASSERT_TRUE(manager->AppendTokens(2, Iota(2)).ok());
  ASSERT_EQ(*manager->ExtendWithPrefix(2, std::vector<int32_t>{2, 3, 4}), 2);
  ASSERT_GE(manager->FindTable(2)->set_aside_block(), 0);
  ASSERT_TRUE(manager->Free(2).ok());
  ASSERT_TRUE(manager->Free(1).ok());
  EXPECT_EQ(manager->num_free_blocks(), 8);
  EXPECT_EQ(manager->usage().used_blocks, 0);
}

TEST(KvCacheManagerTest, PrefixCacheCanBeTurnedOff) {
  absl::StatusOr<std::unique_ptr<KvCacheManager>> manager =
      KvCacheManager::Create({.num_blocks = 8, .block_size = 4, .enable_prefix_cache = false});
  ASSERT_TRUE(manager.ok());
  ASSERT_TRUE((*manager)->CreateSequence(1).ok());
  ASSERT_TRUE((*manager)->AppendTokens(1, Iota(8)).ok());
  EXPECT_EQ((*manager)->MatchPrefix(Iota(9)).num_blocks, 0);
  EXPECT_EQ(*(*manager)->CreateSequenceWithPrefix(2, Iota(9)), 0);
  ASSERT_TRUE((*manager)->Truncate(2, 0).ok());
  EXPECT_EQ((*manager)->MatchExtension(2, Iota(9)).value().num_blocks, 0);
  EXPECT_EQ((*manager)->usage().cached_blocks, 0);
}

}  // namespace
}  // namespace llm::kvcache
