// Randomized create/reserve/append/truncate/fork/free sequences against the KV block manager, with
// the invariants checked after every operation: block ownership matches reference counts, used plus
// free equals total, tables cover lengths, shared blocks are never written, and a simulated KV pool
// written through the tables reads back every sequence's own tokens (no cross-sequence corruption).
#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kvcache/kv_cache_manager.h"
#include "kvcache/kv_layout.h"

namespace llm::kvcache {
namespace {

constexpr int32_t kNumBlocks = 48;
constexpr int32_t kBlockSize = 4;

class Simulation {
 public:
  Simulation() : pool_slots_(kNumBlocks * kBlockSize, -1) {
    manager_ = *KvCacheManager::Create({.num_blocks = kNumBlocks, .block_size = kBlockSize});
  }

  void Step(std::mt19937& rng) {
    const int op = std::uniform_int_distribution<int>(0, 9)(rng);
    if (op <= 1 || tokens_.empty()) {
      const SequenceId id = next_id_++;
      ASSERT_TRUE(manager_->CreateSequence(id).ok());
      tokens_[id] = {};
      return;
    }
    const SequenceId id = RandomLiveId(rng);
    const int32_t length = static_cast<int32_t>(tokens_[id].size());
    switch (op) {
      case 2: case 3: case 4: {  // append
        const int32_t count = std::uniform_int_distribution<int32_t>(0, 9)(rng);
        const bool expect_ok = FreeBlocksFromTables() >= Missing(id, length + count);
        absl::Status status = manager_->Append(id, count);
        ASSERT_EQ(status.ok(), expect_ok) << status;
        if (!status.ok()) {
          ASSERT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
          return;
        }
        std::span<const int32_t> table = *manager_->block_table(id);
        for (int32_t p = length; p < length + count; ++p) {
          const int32_t token = std::uniform_int_distribution<int32_t>(0, 1 << 20)(rng);
          const int32_t block = LocatePosition(table.data(), kBlockSize, p).block;
          ASSERT_EQ(manager_->pool().reference_count(block), 1) << "write into a shared block";
          pool_slots_[FlatSlot(table.data(), kBlockSize, p)] = token;
          tokens_[id].push_back(token);
        }
        return;
      }
      case 5: {  // reserve ahead
        const int32_t total = length + std::uniform_int_distribution<int32_t>(0, 12)(rng);
        const bool expect_ok = FreeBlocksFromTables() >= Missing(id, total);
        ASSERT_EQ(manager_->CanReserve(id, total), expect_ok);
        ASSERT_EQ(manager_->Reserve(id, total).ok(), expect_ok);
        return;
      }
      case 6: {  // truncate
        const int32_t new_length = std::uniform_int_distribution<int32_t>(0, length)(rng);
        std::span<const int32_t> table = *manager_->block_table(id);
        const bool cuts_shared_block =
            new_length % kBlockSize != 0 &&
            manager_->pool().reference_count(table[new_length / kBlockSize]) > 1;
        absl::Status status = manager_->Truncate(id, new_length);
        if (cuts_shared_block) {
          ASSERT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
          return;
        }
        ASSERT_TRUE(status.ok()) << status;
        tokens_[id].resize(new_length);
        return;
      }
      case 7: {  // fork
        const SequenceId child = next_id_++;
        ASSERT_TRUE(manager_->Fork(id, child).ok());
        tokens_[child] = tokens_[id];
        tokens_[child].resize(length / kBlockSize * kBlockSize);
        return;
      }
      default: {  // free
        ASSERT_TRUE(manager_->Free(id).ok());
        tokens_.erase(id);
        return;
      }
    }
  }

  void CheckInvariants() const {
    std::map<int32_t, int32_t> owners;
    for (const auto& [id, tokens] : tokens_) {
      ASSERT_TRUE(manager_->Contains(id));
      ASSERT_EQ(*manager_->length(id), static_cast<int32_t>(tokens.size()));
      std::span<const int32_t> table = *manager_->block_table(id);
      ASSERT_GE(static_cast<int64_t>(table.size()) * kBlockSize, static_cast<int64_t>(tokens.size()))
          << "table of sequence " << id << " does not cover its length";
      std::vector<int32_t> sorted(table.begin(), table.end());
      std::sort(sorted.begin(), sorted.end());
      ASSERT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end())
          << "a block appears twice in one table";
      for (int32_t block : table) ++owners[block];
      for (size_t p = 0; p < tokens.size(); ++p) {
        ASSERT_EQ(pool_slots_[FlatSlot(table.data(), kBlockSize, static_cast<int32_t>(p))],
                  tokens[p])
            << "sequence " << id << " position " << p << " reads another sequence's K/V";
      }
    }
    ASSERT_EQ(manager_->sequence_ids().size(), tokens_.size());
    int32_t free_blocks = 0;
    for (int32_t block = 0; block < kNumBlocks; ++block) {
      const int32_t expected = owners.contains(block) ? owners.at(block) : 0;
      ASSERT_EQ(manager_->pool().reference_count(block), expected) << "block " << block;
      if (expected == 0) ++free_blocks;
    }
    ASSERT_EQ(manager_->num_free_blocks(), free_blocks);
    const KvCacheUsage usage = manager_->usage();
    ASSERT_EQ(usage.used_blocks + usage.free_blocks, kNumBlocks);
  }

  void FreeAll() {
    for (const auto& [id, tokens] : tokens_) ASSERT_TRUE(manager_->Free(id).ok());
    tokens_.clear();
    ASSERT_EQ(manager_->num_free_blocks(), kNumBlocks);
    ASSERT_EQ(manager_->usage().num_sequences, 0);
  }

 private:
  SequenceId RandomLiveId(std::mt19937& rng) const {
    auto it = tokens_.begin();
    std::advance(it, std::uniform_int_distribution<size_t>(0, tokens_.size() - 1)(rng));
    return it->first;
  }
  int32_t Missing(SequenceId id, int64_t total) const {
    const int32_t have = static_cast<int32_t>(manager_->block_table(id)->size());
    return std::max(0, BlocksForTokens(total, kBlockSize) - have);
  }
  int32_t FreeBlocksFromTables() const {
    std::vector<bool> used(kNumBlocks, false);
    for (const auto& [id, tokens] : tokens_) {
      std::span<const int32_t> table = *manager_->block_table(id);
      for (int32_t block : table) used[block] = true;
    }
    return static_cast<int32_t>(std::count(used.begin(), used.end(), false));
  }

  std::unique_ptr<KvCacheManager> manager_;
  std::map<SequenceId, std::vector<int32_t>> tokens_;
  std::vector<int32_t> pool_slots_;  // stands in for the KV pool: one token value per slot
  SequenceId next_id_ = 1;
};

TEST(KvCacheRandomTest, InvariantsHoldAfterEveryOperation) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    std::mt19937 rng(seed);
    Simulation simulation;
    for (int step = 0; step < 4000; ++step) {
      SCOPED_TRACE(testing::Message() << "step " << step);
      ASSERT_NO_FATAL_FAILURE(simulation.Step(rng));
      ASSERT_NO_FATAL_FAILURE(simulation.CheckInvariants());
    }
    ASSERT_NO_FATAL_FAILURE(simulation.FreeAll());
  }
}

}  // namespace
}  // namespace llm::kvcache
