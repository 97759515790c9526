// One sequence's view of the KV cache: its physical blocks in logical order and how many token
// positions hold valid K/V.
//
// Logical position p lives in blocks()[p / block_size], slot p % block_size (LocatePosition in
// kv_layout.h). The table may hold more blocks than the length needs: blocks reserved for tokens
// that a coming forward step will write. It also remembers the token ids of its positions (when the
// manager was told them) and the prefix hashes of its leading full blocks (block_hash.h), which is
// what the prefix cache registers and looks up. An extension that mapped a cached block over the
// sequence's partial last block keeps that partial block aside (set_aside_block) until it is
// committed or undone (KvCacheManager::ExtendWithPrefix).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace llm::kvcache {

// Blocks needed to hold `num_tokens` positions.
constexpr int32_t BlocksForTokens(int64_t num_tokens, int32_t block_size) {
  return static_cast<int32_t>((num_tokens + block_size - 1) / block_size);
}

class BlockTable {
 public:
  explicit BlockTable(int32_t block_size) : block_size_(block_size) {}

  int32_t block_size() const { return block_size_; }
  // Token positions whose K/V are written.
  int32_t length() const { return length_; }
  // Positions the table's blocks can hold.
  int64_t capacity_tokens() const { return static_cast<int64_t>(blocks_.size()) * block_size_; }
  std::span<const int32_t> blocks() const { return blocks_; }
  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }

  void AppendBlocks(std::span<const int32_t> blocks) {
    blocks_.insert(blocks_.end(), blocks.begin(), blocks.end());
  }
  // Removes and returns the blocks past the first `keep` ones.
  std::vector<int32_t> TakeBlocksAfter(int32_t keep) {
    std::vector<int32_t> tail(blocks_.begin() + keep, blocks_.end());
    blocks_.resize(keep);
    return tail;
  }
  // Only the manager calls this, after checking the new length fits the capacity.
  void set_length(int32_t length) { length_ = length; }

  // Token ids of positions [0, length) while tokens_known(); a length change without tokens
  // (KvCacheManager::Append with a count) makes them unknown for good.
  std::span<const int32_t> tokens() const { return tokens_; }
  bool tokens_known() const { return tokens_known_; }
  void AppendTokens(std::span<const int32_t> tokens) {
    tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  }
  void ForgetTokens() {
    tokens_known_ = false;
    tokens_.clear();
  }
  void TruncateTokens(int32_t length) {
    if (static_cast<int32_t>(tokens_.size()) > length) tokens_.resize(length);
  }
  // Chain hashes of the leading full blocks, computed so far.
  std::span<const uint64_t> block_hashes() const { return block_hashes_; }
  void AppendBlockHash(uint64_t hash) { block_hashes_.push_back(hash); }
  void TruncateBlockHashes(int32_t count) {
    if (static_cast<int32_t>(block_hashes_.size()) > count) block_hashes_.resize(count);
  }
  // Replaces block `index` (returning the old one).
  int32_t ReplaceBlock(int32_t index, int32_t block) {
    const int32_t old = blocks_[index];
    blocks_[index] = block;
    return old;
  }
  // The partial block an extension replaced, holding K/V for positions [its block's start,
  // set_aside_length()); -1 when none. The table owns it (one reference) though it is not in
  // blocks().
  int32_t set_aside_block() const { return set_aside_block_; }
  int32_t set_aside_length() const { return set_aside_length_; }
  void SetAside(int32_t block, int32_t length) {
    set_aside_block_ = block;
    set_aside_length_ = length;
  }
  // Forgets the set-aside block, returning it (-1 when none).
  int32_t TakeSetAside() {
    const int32_t block = set_aside_block_;
    set_aside_block_ = -1;
    set_aside_length_ = 0;
    return block;
  }

 private:
  int32_t block_size_;
  int32_t length_ = 0;
  std::vector<int32_t> blocks_;
  std::vector<int32_t> tokens_;
  bool tokens_known_ = true;
  std::vector<uint64_t> block_hashes_;
  int32_t set_aside_block_ = -1;
  int32_t set_aside_length_ = 0;
};

}  // namespace llm::kvcache
