// The pool of physical KV blocks: which blocks are free, how many owners each used block has, and
// which full blocks are kept as prefix cache.
//
// A block is identified by its index in the KV pool (kv_layout.h). The pool only does bookkeeping;
// it never touches KV memory. Reference counts let several sequences share one full block (prefix
// sharing). A block can also carry a prefix hash (block_hash.h): while it does, it is findable by
// that hash, and when its last owner releases it, it is not freed but kept, unreferenced, on an LRU
// list of cached blocks. Allocation takes truly free blocks first and then evicts cached blocks,
// least recently released first (the eviction drops the hash). Cached blocks therefore count as
// available: num_free() is what Allocate can hand out.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace llm::kvcache {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // Takes `count` available blocks, each with reference count 1 and no hash: free ones first, then
  // cached ones, least recently released first. All or nothing: when fewer than `count` blocks are
  // available, returns ResourceExhausted and takes (and evicts) none.
  absl::StatusOr<std::vector<int32_t>> Allocate(int32_t count);
  // Adds an owner to a used block (sharing) or to a cached unreferenced one (a prefix-cache hit,
  // which takes it off the LRU list). FailedPrecondition when the block is free.
  absl::Status AddReference(int32_t block);
  // Drops one owner. With none left, the block becomes free, or cached (most recently released)
  // when it has a hash. FailedPrecondition when it has no owner.
  absl::Status Release(int32_t block);

  // Makes a used block findable under `hash`. A block keeps its first hash; when another block is
  // already cached under `hash` (two sequences computed the same prefix), nothing changes. Returns
  // whether the block is now cached under `hash`.
  bool RegisterHash(int32_t block, uint64_t hash);
  // Forgets the block's hash (its contents are about to change). No-op without one.
  void DropHash(int32_t block);
  // The block cached under `hash`, used or unreferenced.
  std::optional<int32_t> FindCached(uint64_t hash) const;
  bool has_hash(int32_t block) const;

  int32_t num_blocks() const { return static_cast<int32_t>(reference_counts_.size()); }
  // Blocks Allocate can hand out: free plus cached-unreferenced.
  int32_t num_free() const {
    return static_cast<int32_t>(free_blocks_.size() + lru_cached_.size());
  }
  // Blocks with at least one owner.
  int32_t num_used() const { return num_blocks() - num_free(); }
  // Unreferenced blocks kept for their contents (part of num_free()).
  int32_t num_evictable() const { return static_cast<int32_t>(lru_cached_.size()); }
  // Blocks findable by hash, used or unreferenced.
  int32_t num_cached() const { return static_cast<int32_t>(block_by_hash_.size()); }
  // Cached blocks whose hash was dropped to reuse them, since the pool was made.
  int64_t evictions_total() const { return evictions_total_; }
  // 0 for a free or cached-unreferenced block; -1 for an id outside the pool.
  int32_t reference_count(int32_t block) const;
  // Unreferenced cached blocks, least recently released first (for tests and debugging).
  std::vector<int32_t> EvictionOrder() const { return {lru_cached_.begin(), lru_cached_.end()}; }

 private:
  absl::Status CheckBlockId(int32_t block) const;
  // Removes the block from the hash index; the caller moves it between lists.
  void ForgetHash(int32_t block);

  std::vector<int32_t> reference_counts_;
  // Used as a stack: recently released blocks are handed out first, which keeps the working set of
  // the pool small when it is mostly idle.
  std::vector<int32_t> free_blocks_;
  // Prefix cache: hash per block (when has_hash_), the reverse index, and the unreferenced cached
  // blocks in release order with each one's place in that list.
  std::vector<uint64_t> hashes_;
  std::vector<bool> has_hash_;
  std::unordered_map<uint64_t, int32_t> block_by_hash_;
  std::list<int32_t> lru_cached_;
  std::vector<std::list<int32_t>::iterator> lru_position_;
  int64_t evictions_total_ = 0;
};

}  // namespace llm::kvcache
