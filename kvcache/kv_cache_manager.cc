// Sequence-level KV block bookkeeping on top of the block pool.
#include "kvcache/kv_cache_manager.h"

#include <utility>

#include "absl/strings/str_format.h"

namespace llm::kvcache {
namespace {

absl::Status UnknownSequence(SequenceId id) {
  return absl::NotFoundError(absl::StrFormat(
      "sequence %d has no KV cache entry; create it first (or it was already freed)", id));
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvCacheManager>> KvCacheManager::Create(
    const KvCacheOptions& options) {
  if (options.num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KV cache num_blocks is %d; it must be positive (raise the KV memory budget)",
        options.num_blocks));
  }
  if (options.block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KV cache block_size is %d; it must be positive (16 is typical)", options.block_size));
  }
  return std::unique_ptr<KvCacheManager>(new KvCacheManager(options));
}

KvCacheManager::KvCacheManager(const KvCacheOptions& options)
    : options_(options), pool_(options.num_blocks) {}

absl::StatusOr<BlockTable*> KvCacheManager::MutableTable(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return UnknownSequence(id);
  return &it->second;
}

const BlockTable* KvCacheManager::FindTable(SequenceId id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : &it->second;
}

absl::Status KvCacheManager::CreateSequence(SequenceId id) {
  if (!sequences_.try_emplace(id, options_.block_size).second) {
    return absl::AlreadyExistsError(
        absl::StrFormat("sequence %d already has a KV cache entry; free it or use a new id", id));
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> KvCacheManager::BlocksToReserve(SequenceId id,
                                                        int64_t new_total_tokens) const {
  const BlockTable* table = FindTable(id);
  if (table == nullptr) return UnknownSequence(id);
  if (new_total_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sequence %d: cannot reserve %d tokens; the count must be >= 0", id, new_total_tokens));
  }
  const int64_t needed = BlocksForTokens(new_total_tokens, options_.block_size);
  return static_cast<int32_t>(needed > table->num_blocks() ? needed - table->num_blocks() : 0);
}

bool KvCacheManager::CanReserve(SequenceId id, int64_t new_total_tokens) const {
  absl::StatusOr<int32_t> blocks = BlocksToReserve(id, new_total_tokens);
  return blocks.ok() && *blocks <= pool_.num_free();
}

absl::Status KvCacheManager::Reserve(SequenceId id, int64_t new_total_tokens) {
  absl::StatusOr<int32_t> missing = BlocksToReserve(id, new_total_tokens);
  if (!missing.ok()) return missing.status();
  if (*missing == 0) return absl::OkStatus();
  absl::StatusOr<std::vector<int32_t>> blocks = pool_.Allocate(*missing);
  if (!blocks.ok()) {
    return absl::ResourceExhaustedError(absl::StrFormat("sequence %d needs %d tokens: %s", id,
                                                        new_total_tokens,
                                                        blocks.status().message()));
  }
  sequences_.at(id).AppendBlocks(*blocks);
  return absl::OkStatus();
}

absl::Status KvCacheManager::Append(SequenceId id, int32_t num_tokens) {
  if (num_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sequence %d: cannot append %d tokens; the count must be >= 0", id, num_tokens));
  }
  absl::StatusOr<BlockTable*> table = MutableTable(id);
  if (!table.ok()) return table.status();
  const int64_t new_length = static_cast<int64_t>((*table)->length()) + num_tokens;
  if (absl::Status status = Reserve(id, new_length); !status.ok()) return status;
  (*table)->set_length(static_cast<int32_t>(new_length));
  return absl::OkStatus();
}

absl::Status KvCacheManager::Truncate(SequenceId id, int32_t new_length) {
  absl::StatusOr<BlockTable*> table = MutableTable(id);
  if (!table.ok()) return table.status();
  if (new_length < 0 || new_length > (*table)->length()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sequence %d: cannot truncate to %d tokens; it holds %d", id, new_length,
                        (*table)->length()));
  }
  const int32_t keep = BlocksForTokens(new_length, options_.block_size);
  // Shared blocks are immutable (Fork shares only full ones); a partially kept shared block would
  // become the target of the next append and change what the other owners read.
  if (new_length % options_.block_size != 0 &&
      pool_.reference_count((*table)->blocks()[keep - 1]) > 1) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "sequence %d: truncating to %d tokens would leave a shared KV block partly writable; "
        "truncate to a multiple of the block size (%d)",
        id, new_length, options_.block_size));
  }
  (*table)->set_length(new_length);
  for (int32_t block : (*table)->TakeBlocksAfter(keep)) {
    if (absl::Status status = pool_.Release(block); !status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status KvCacheManager::Fork(SequenceId parent, SequenceId child) {
  const BlockTable* parent_table = FindTable(parent);
  if (parent_table == nullptr) return UnknownSequence(parent);
  if (absl::Status status = CreateSequence(child); !status.ok()) return status;
  const int32_t full_blocks = parent_table->length() / options_.block_size;
  std::span<const int32_t> shared = parent_table->blocks().first(full_blocks);
  for (int32_t block : shared) {
    if (absl::Status status = pool_.AddReference(block); !status.ok()) return status;
  }
  BlockTable& child_table = sequences_.at(child);
  child_table.AppendBlocks(shared);
  child_table.set_length(full_blocks * options_.block_size);
  return absl::OkStatus();
}

absl::Status KvCacheManager::Free(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return UnknownSequence(id);
  absl::Status first_error;
  for (int32_t block : it->second.blocks()) {
    first_error.Update(pool_.Release(block));
  }
  sequences_.erase(it);
  return first_error;
}

absl::StatusOr<int32_t> KvCacheManager::length(SequenceId id) const {
  const BlockTable* table = FindTable(id);
  if (table == nullptr) return UnknownSequence(id);
  return table->length();
}

absl::StatusOr<std::span<const int32_t>> KvCacheManager::block_table(SequenceId id) const {
  const BlockTable* table = FindTable(id);
  if (table == nullptr) return UnknownSequence(id);
  return table->blocks();
}

KvCacheUsage KvCacheManager::usage() const {
  KvCacheUsage usage;
  usage.total_blocks = pool_.num_blocks();
  usage.used_blocks = pool_.num_used();
  usage.free_blocks = pool_.num_free();
  usage.num_sequences = static_cast<int32_t>(sequences_.size());
  usage.block_bytes = options_.block_bytes;
  return usage;
}

std::vector<SequenceId> KvCacheManager::sequence_ids() const {
  std::vector<SequenceId> ids;
  ids.reserve(sequences_.size());
  for (const auto& [id, table] : sequences_) ids.push_back(id);
  return ids;
}

}  // namespace llm::kvcache
