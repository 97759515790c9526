// Free-list, reference-count and prefix-cache bookkeeping for the paged KV pool.
#include "kvcache/block_pool.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace llm::kvcache {

BlockPool::BlockPool(int32_t num_blocks)
    : reference_counts_(num_blocks > 0 ? num_blocks : 0, 0),
      hashes_(reference_counts_.size(), 0),
      has_hash_(reference_counts_.size(), false),
      lru_position_(reference_counts_.size()) {
  free_blocks_.reserve(reference_counts_.size());
  // Reverse order so that the first allocation hands out block 0, 1, 2, ...: easier to read in
  // logs.
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
  const int32_t from_free = std::min<int32_t>(count, static_cast<int32_t>(free_blocks_.size()));
  std::vector<int32_t> blocks(free_blocks_.end() - from_free, free_blocks_.end());
  free_blocks_.resize(free_blocks_.size() - from_free);
  while (static_cast<int32_t>(blocks.size()) < count) {
    const int32_t evicted = lru_cached_.front();
    lru_cached_.pop_front();
    ForgetHash(evicted);
    ++evictions_total_;
    blocks.push_back(evicted);
  }
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
    if (!has_hash_[block]) {
      return absl::FailedPreconditionError(
          absl::StrFormat("KV block %d is free; only a used or cached block can be shared", block));
    }
    lru_cached_.erase(lru_position_[block]);  // a cache hit revives it
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
  if (--reference_counts_[block] > 0) return absl::OkStatus();
  if (has_hash_[block]) {
    lru_position_[block] = lru_cached_.insert(lru_cached_.end(), block);
  } else {
    free_blocks_.push_back(block);
  }
  return absl::OkStatus();
}

bool BlockPool::RegisterHash(int32_t block, uint64_t hash) {
  if (!CheckBlockId(block).ok() || reference_counts_[block] == 0) return false;
  if (has_hash_[block]) return hashes_[block] == hash;
  if (!block_by_hash_.try_emplace(hash, block).second) return false;
  hashes_[block] = hash;
  has_hash_[block] = true;
  return true;
}

void BlockPool::ForgetHash(int32_t block) {
  block_by_hash_.erase(hashes_[block]);
  has_hash_[block] = false;
}

void BlockPool::DropHash(int32_t block) {
  if (!CheckBlockId(block).ok() || !has_hash_[block]) return;
  ForgetHash(block);
  if (reference_counts_[block] == 0) {  // unreferenced and no longer cached: plain free
    lru_cached_.erase(lru_position_[block]);
    free_blocks_.push_back(block);
  }
}

std::optional<int32_t> BlockPool::FindCached(uint64_t hash) const {
  auto it = block_by_hash_.find(hash);
  if (it == block_by_hash_.end()) return std::nullopt;
  return it->second;
}

bool BlockPool::has_hash(int32_t block) const {
  return CheckBlockId(block).ok() && has_hash_[block];
}

int32_t BlockPool::reference_count(int32_t block) const {
  if (!CheckBlockId(block).ok()) return -1;
  return reference_counts_[block];
}

}  // namespace llm::kvcache
