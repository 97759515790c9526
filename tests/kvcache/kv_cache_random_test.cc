// Randomized create/create-from-cached-prefix/extend-from-cached-blocks/reserve/append/truncate/
// fork/free sequences against
// the KV block manager, with the invariants checked after every operation: block ownership matches
// reference counts, used plus free equals total, tables cover lengths, shared and cached blocks are
// never written, a simulated KV pool written through the tables reads back every sequence's own
// tokens (no cross-sequence corruption, and every prefix-cache hit maps blocks that really hold the
// prompt's tokens), and every cached block still holds the tokens it was cached for.
#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kvcache/block_hash.h"
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

  // Tokens from a tiny alphabet after one of three shared stems, so that prompts often repeat.
  std::vector<int32_t> RandomPrompt(std::mt19937& rng) const {
    const int32_t stem = std::uniform_int_distribution<int32_t>(0, 2)(rng);
    std::vector<int32_t> prompt;
    const int32_t stem_length = std::uniform_int_distribution<int32_t>(0, 10)(rng);
    for (int32_t i = 0; i < stem_length; ++i) prompt.push_back(100 * stem + i);
    const int32_t tail = std::uniform_int_distribution<int32_t>(1, 6)(rng);
    for (int32_t i = 0; i < tail; ++i)
      prompt.push_back(std::uniform_int_distribution<int32_t>(0, 2)(rng));
    return prompt;
  }

  void Step(std::mt19937& rng) {
    const int op = std::uniform_int_distribution<int>(0, 12)(rng);
    if (op == 0 || tokens_.empty()) {
      const SequenceId id = next_id_++;
      ASSERT_TRUE(manager_->CreateSequence(id).ok());
      tokens_[id] = {};
      return;
    }
    if (op <= 2) {  // a new prompt: map its cached prefix, then write the rest
      const std::vector<int32_t> prompt = RandomPrompt(rng);
      const PrefixMatch match = manager_->MatchPrefix(prompt);
      ASSERT_LT(match.num_tokens, static_cast<int32_t>(prompt.size())) << "nothing left to compute";
      const SequenceId id = next_id_++;
      absl::StatusOr<int32_t> cached = manager_->CreateSequenceWithPrefix(id, prompt);
      ASSERT_TRUE(cached.ok()) << cached.status();
      ASSERT_EQ(*cached, match.num_tokens);
      hit_tokens_ += *cached;
      tokens_[id].assign(prompt.begin(), prompt.begin() + *cached);
      ASSERT_NO_FATAL_FAILURE(CheckInvariants());  // the mapped blocks hold the prompt's tokens
      ASSERT_NO_FATAL_FAILURE(
          WriteTokens(id, std::vector<int32_t>(prompt.begin() + *cached, prompt.end())));
      return;
    }
    const SequenceId id = RandomLiveId(rng);
    const int32_t length = static_cast<int32_t>(tokens_[id].size());
    switch (op) {
      case 3:
      case 4: {  // append
        const int32_t count = std::uniform_int_distribution<int32_t>(0, 9)(rng);
        std::vector<int32_t> tokens;
        for (int32_t i = 0; i < count; ++i) {
          tokens.push_back(std::uniform_int_distribution<int32_t>(0, 2)(rng));
        }
        ASSERT_NO_FATAL_FAILURE(WriteTokens(id, tokens));
        return;
      }
      case 5: {  // reserve ahead
        const int32_t total = length + std::uniform_int_distribution<int32_t>(0, 12)(rng);
        const bool expect_ok = AvailableBlocks() >= Missing(id, total);
        ASSERT_EQ(manager_->CanReserve(id, total), expect_ok);
        ASSERT_EQ(manager_->Reserve(id, total).ok(), expect_ok);
        return;
      }
      case 6: {  // truncate
        const int32_t new_length = std::uniform_int_distribution<int32_t>(0, length)(rng);
        std::span<const int32_t> table = *manager_->block_table(id);
        const BlockTable& entry = *manager_->FindTable(id);
        const bool restores = entry.set_aside_block() >= 0 &&
                              new_length > entry.set_aside_length() / kBlockSize * kBlockSize &&
                              new_length <= entry.set_aside_length();
        const bool cuts_shared_block =
            !restores && new_length % kBlockSize != 0 &&
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
      case 11:
      case 12:  // extend: map the cached blocks that continue it, write the rest
        ASSERT_NO_FATAL_FAILURE(Extend(id, rng));
        return;
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

  // Appends `tokens` to the sequence the way the engine does: reserve, write the simulated pool
  // through the table, then record them (which caches the blocks they complete).
  void WriteTokens(SequenceId id, const std::vector<int32_t>& tokens) {
    const int32_t length = static_cast<int32_t>(tokens_[id].size());
    const int32_t count = static_cast<int32_t>(tokens.size());
    const bool expect_ok = AvailableBlocks() >= Missing(id, length + count);
    absl::Status status = manager_->Reserve(id, length + count);
    ASSERT_EQ(status.ok(), expect_ok) << status;
    if (!status.ok()) {
      ASSERT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
      return;
    }
    ForgetEvictedBlocks();
    std::span<const int32_t> table = *manager_->block_table(id);
    for (int32_t i = 0; i < count; ++i) {
      const int32_t p = length + i;
      const int32_t block = LocatePosition(table.data(), kBlockSize, p).block;
      ASSERT_EQ(manager_->pool().reference_count(block), 1) << "write into a shared block";
      ASSERT_FALSE(manager_->pool().has_hash(block)) << "write into a cached block";
      pool_slots_[FlatSlot(table.data(), kBlockSize, p)] = tokens[i];
      tokens_[id].push_back(tokens[i]);
    }
    ASSERT_TRUE(manager_->AppendTokens(id, tokens).ok());
    // Remember what each newly cached block of this sequence must hold from now on.
    for (int32_t b = 0; b < static_cast<int32_t>(tokens_[id].size()) / kBlockSize; ++b) {
      if (manager_->pool().has_hash(table[b]) && !cached_prefix_.contains(table[b])) {
        cached_prefix_[table[b]].assign(tokens_[id].begin(),
                                        tokens_[id].begin() + (b + 1) * kBlockSize);
      }
    }
  }

  // An extension as the engine makes one: often the continuation of a live sequence that starts
  // with this one's tokens (so cached blocks continue it), else random tokens. Then it is undone
  // (Truncate back: a set-aside partial block returns), committed, or left pending.
  void Extend(SequenceId id, std::mt19937& rng) {
    const std::vector<int32_t> before = tokens_[id];
    const int32_t length = static_cast<int32_t>(before.size());
    std::vector<int32_t> more;
    for (const auto& [other, tokens] : tokens_) {
      if (other != id && tokens.size() > before.size() &&
          std::equal(before.begin(), before.end(), tokens.begin()) && rng() % 2 == 0) {
        const size_t count = std::uniform_int_distribution<size_t>(1, tokens.size() - length)(rng);
        more.assign(tokens.begin() + length, tokens.begin() + length + count);
        break;
      }
    }
    const int32_t tail = std::uniform_int_distribution<int32_t>(more.empty() ? 1 : 0, 3)(rng);
    for (int32_t i = 0; i < tail; ++i)
      more.push_back(std::uniform_int_distribution<int32_t>(0, 2)(rng));
    const BlockTable& table = *manager_->FindTable(id);
    const bool pending = table.set_aside_block() >= 0;  // released first
    absl::StatusOr<PrefixMatch> match = manager_->MatchExtension(id, more);
    ASSERT_TRUE(match.ok()) << match.status();
    ASSERT_LT(match->num_tokens, static_cast<int32_t>(more.size())) << "nothing left to compute";
    const int32_t free_before = manager_->num_free_blocks();
    absl::StatusOr<int32_t> covered = manager_->ExtendWithPrefix(id, more);
    ASSERT_TRUE(covered.ok()) << covered.status();
    // A pending block from before can change what matches (it is released first), so compare
    // with the match only without one.
    if (!pending) {
      ASSERT_EQ(*covered, match->num_tokens);
      ASSERT_EQ(manager_->num_free_blocks(), free_before - match->unreferenced_blocks);
    }
    extension_hit_tokens_ += *covered;
    tokens_[id].insert(tokens_[id].end(), more.begin(), more.begin() + *covered);
    ASSERT_NO_FATAL_FAILURE(CheckInvariants());  // the mapped blocks hold the continuation
    ASSERT_NO_FATAL_FAILURE(
        WriteTokens(id, std::vector<int32_t>(more.begin() + *covered, more.end())));
    switch (std::uniform_int_distribution<int>(0, 2)(rng)) {
      case 0: {  // undone (a failed or preempted request)
        absl::Status status = manager_->Truncate(id, length);
        ASSERT_TRUE(status.ok()) << status;
        tokens_[id] = before;
        ASSERT_EQ(manager_->FindTable(id)->set_aside_block(), -1);
        return;
      }
      case 1:
        ASSERT_TRUE(manager_->CommitExtension(id).ok());
        ASSERT_EQ(manager_->FindTable(id)->set_aside_block(), -1);
        return;
      default:
        return;
    }
  }

  void CheckInvariants() {
    ForgetEvictedBlocks();
    for (const auto& [block, prefix] : cached_prefix_) {
      uint64_t hash = kRootBlockHash;
      for (size_t b = 0; b < prefix.size() / kBlockSize; ++b) {
        hash = HashBlockTokens(hash, std::span(prefix).subspan(b * kBlockSize, kBlockSize));
      }
      ASSERT_EQ(manager_->pool().FindCached(hash), block) << "cached block " << block;
      for (int32_t slot = 0; slot < kBlockSize; ++slot) {
        ASSERT_EQ(pool_slots_[block * kBlockSize + slot], prefix[prefix.size() - kBlockSize + slot])
            << "cached block " << block << " was overwritten";
      }
    }
    std::map<int32_t, int32_t> owners;
    for (const auto& [id, tokens] : tokens_) {
      ASSERT_TRUE(manager_->Contains(id));
      ASSERT_EQ(*manager_->length(id), static_cast<int32_t>(tokens.size()));
      std::span<const int32_t> table = *manager_->block_table(id);
      ASSERT_GE(static_cast<int64_t>(table.size()) * kBlockSize,
                static_cast<int64_t>(tokens.size()))
          << "table of sequence " << id << " does not cover its length";
      std::vector<int32_t> sorted(table.begin(), table.end());
      std::sort(sorted.begin(), sorted.end());
      ASSERT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end())
          << "a block appears twice in one table";
      for (int32_t block : table) ++owners[block];
      if (const int32_t set_aside = manager_->FindTable(id)->set_aside_block(); set_aside >= 0) {
        ASSERT_EQ(std::count(table.begin(), table.end(), set_aside), 0);
        ++owners[set_aside];
      }
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
    ASSERT_EQ(usage.cached_blocks, static_cast<int32_t>(cached_prefix_.size()));
    for (int32_t block : manager_->pool().EvictionOrder()) {
      ASSERT_EQ(manager_->pool().reference_count(block), 0);
      ASSERT_TRUE(manager_->pool().has_hash(block));
    }
  }

  int64_t hit_tokens() const { return hit_tokens_; }
  int64_t extension_hit_tokens() const { return extension_hit_tokens_; }

  void FreeAll() {
    for (const auto& [id, tokens] : tokens_) ASSERT_TRUE(manager_->Free(id).ok());
    tokens_.clear();
    ASSERT_EQ(manager_->num_free_blocks(), kNumBlocks);
    ASSERT_EQ(manager_->usage().num_sequences, 0);
    ASSERT_EQ(manager_->pool().num_evictable(), manager_->pool().num_cached())
        << "with no sequence left, every cached block is unreferenced";
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
  // Blocks no table holds: free or cached-unreferenced, both of which an allocation may take.
  int32_t AvailableBlocks() const {
    std::vector<bool> used(kNumBlocks, false);
    for (const auto& [id, tokens] : tokens_) {
      std::span<const int32_t> table = *manager_->block_table(id);
      for (int32_t block : table) used[block] = true;
      if (const int32_t set_aside = manager_->FindTable(id)->set_aside_block(); set_aside >= 0) {
        used[set_aside] = true;
      }
    }
    return static_cast<int32_t>(std::count(used.begin(), used.end(), false));
  }
  void ForgetEvictedBlocks() {
    std::erase_if(cached_prefix_,
                  [&](const auto& entry) { return !manager_->pool().has_hash(entry.first); });
  }

  std::unique_ptr<KvCacheManager> manager_;
  std::map<SequenceId, std::vector<int32_t>> tokens_;
  std::vector<int32_t> pool_slots_;  // stands in for the KV pool: one token value per slot
  // Cached block -> the token prefix that ends with it, as it was when the block was cached.
  std::map<int32_t, std::vector<int32_t>> cached_prefix_;
  int64_t hit_tokens_ = 0;
  int64_t extension_hit_tokens_ = 0;
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
    EXPECT_GT(simulation.hit_tokens(), 1000) << "the run should exercise prefix-cache hits";
    EXPECT_GT(simulation.extension_hit_tokens(), 500) << "and hits that extend a sequence";
    ASSERT_NO_FATAL_FAILURE(simulation.FreeAll());
  }
}

}  // namespace
}  // namespace llm::kvcache
