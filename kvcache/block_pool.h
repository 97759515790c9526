// The pool of physical KV blocks: which blocks are free, and how many owners each used block has.
//
// A block is identified by its index in the KV pool (kv_layout.h). The pool only does bookkeeping;
// it never touches KV memory. Reference counts let several sequences share one full block (prefix
// sharing): a block returns to the free list only when its last owner releases it.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace llm::kvcache {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // Takes `count` free blocks, each with reference count 1. All or nothing: when fewer than `count`
  // blocks are free, returns ResourceExhausted and takes none.
  absl::StatusOr<std::vector<int32_t>> Allocate(int32_t count);
  // Adds an owner to a used block (sharing). FailedPrecondition when the block is free.
  absl::Status AddReference(int32_t block);
  // Drops one owner; the block becomes free when none is left. FailedPrecondition when it is free.
  absl::Status Release(int32_t block);

  int32_t num_blocks() const { return static_cast<int32_t>(reference_counts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_blocks_.size()); }
  int32_t num_used() const { return num_blocks() - num_free(); }
  // 0 for a free block; -1 for an id outside the pool.
  int32_t reference_count(int32_t block) const;

 private:
  absl::Status CheckBlockId(int32_t block) const;

  std::vector<int32_t> reference_counts_;
  // Used as a stack: recently released blocks are handed out first, which keeps the working set of
  // the pool small when it is mostly idle.
  std::vector<int32_t> free_blocks_;
};

}  // namespace llm::kvcache
