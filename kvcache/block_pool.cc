// Free-list and reference-count bookkeeping for the paged KV pool.
#include "kvcache/block_pool.h"

#include "absl/strings/str_format.h"

namespace llm::kvcache {

BlockPool::BlockPool(int32_t num_blocks)
    : reference_counts_(num_blocks > 0 ? num_blocks : 0, 0) {
  free_blocks_.reserve(reference_counts_.size());
  // Reverse order so that the first allocation hands out block 0, 1, 2, ...: easier to read in logs.
  for (int32_t block = num_blocks - 1; block >= 0; --block) free_blocks_.push_back(block);
}

absl::StatusOr<std::vector<int32_t>> BlockPool::Allocate(int32_t count) {
  if (count < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("KV block allocation of %d blocks: count must be >= 0", count));
  }
  if (count > num_free()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "KV cache full: %d blocks needed, %d of %d free; release sequences or give the server a "
        "larger KV budget",
        count, num_free(), num_blocks()));
  }
  std::vector<int32_t> blocks(free_blocks_.end() - count, free_blocks_.end());
  free_blocks_.resize(free_blocks_.size() - count);
  for (int32_t block : blocks) reference_counts_[block] = 1;
  return blocks;
}

absl::Status BlockPool::CheckBlockId(int32_t block) const {
  if (block < 0 || block >= num_blocks()) {
    return absl::OutOfRangeError(
        absl::StrFormat("KV block %d is outside the pool of %d blocks", block, num_blocks()));
  }
  return absl::OkStatus();
}

absl::Status BlockPool::AddReference(int32_t block) {
  if (absl::Status status = CheckBlockId(block); !status.ok()) return status;
  if (reference_counts_[block] == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("KV block %d is free; only a used block can be shared", block));
  }
  ++reference_counts_[block];
  return absl::OkStatus();
}

absl::Status BlockPool::Release(int32_t block) {
  if (absl::Status status = CheckBlockId(block); !status.ok()) return status;
  if (reference_counts_[block] == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("KV block %d released while already free (double release)", block));
  }
  if (--reference_counts_[block] == 0) free_blocks_.push_back(block);
  return absl::OkStatus();
}

int32_t BlockPool::reference_count(int32_t block) const {
  if (!CheckBlockId(block).ok()) return -1;
  return reference_counts_[block];
}

}  // namespace llm::kvcache
