// Sequence-level KV block bookkeeping on top of the block pool.
#include "kvcache/kv_cache_manager.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "kvcache/block_hash.h"

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
    return absl::ResourceExhaustedError(absl::StrFormat(
        "sequence %d needs %d tokens: %s", id, new_total_tokens, blocks.status().message()));
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
  if (num_tokens > 0) (*table)->ForgetTokens();
  return absl::OkStatus();
}

absl::Status KvCacheManager::AppendTokens(SequenceId id, std::span<const int32_t> tokens) {
  absl::StatusOr<BlockTable*> table = MutableTable(id);
  if (!table.ok()) return table.status();
  const int64_t new_length = static_cast<int64_t>((*table)->length()) + tokens.size();
  if (absl::Status status = Reserve(id, new_length); !status.ok()) return status;
  (*table)->set_length(static_cast<int32_t>(new_length));
  if ((*table)->tokens_known()) {
    (*table)->AppendTokens(tokens);
    RegisterFullBlocks(**table);
  }
  return absl::OkStatus();
}

void KvCacheManager::RegisterFullBlocks(BlockTable& table) {
  if (!options_.enable_prefix_cache || !table.tokens_known()) return;
  const int32_t block_size = options_.block_size;
  const int32_t full_blocks = table.length() / block_size;
  for (int32_t i = static_cast<int32_t>(table.block_hashes().size()); i < full_blocks; ++i) {
    const uint64_t parent = i == 0 ? kRootBlockHash : table.block_hashes()[i - 1];
    const uint64_t hash = HashBlockTokens(
        parent, table.tokens().subspan(static_cast<size_t>(i) * block_size, block_size));
    table.AppendBlockHash(hash);
    // A block that another sequence already cached under this hash stays private.
    (void)pool_.RegisterHash(table.blocks()[i], hash);
  }
}

PrefixMatch KvCacheManager::MatchPrefix(std::span<const int32_t> tokens) const {
  PrefixMatch match;
  if (!options_.enable_prefix_cache || tokens.empty()) return match;
  const int32_t block_size = options_.block_size;
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / block_size;
  uint64_t hash = kRootBlockHash;
  for (int64_t i = 0; i < max_blocks; ++i) {
    hash = HashBlockTokens(hash, tokens.subspan(static_cast<size_t>(i) * block_size, block_size));
    std::optional<int32_t> block = pool_.FindCached(hash);
    if (!block.has_value()) break;
    ++match.num_blocks;
    if (pool_.reference_count(*block) == 0) ++match.unreferenced_blocks;
  }
  match.num_tokens = match.num_blocks * block_size;
  return match;
}

absl::StatusOr<int32_t> KvCacheManager::CreateSequenceWithPrefix(SequenceId id,
                                                                 std::span<const int32_t> tokens) {
  if (absl::Status status = CreateSequence(id); !status.ok()) return status;
  const PrefixMatch match = MatchPrefix(tokens);
  BlockTable& table = sequences_.at(id);
  const int32_t block_size = options_.block_size;
  uint64_t hash = kRootBlockHash;
  for (int32_t i = 0; i < match.num_blocks; ++i) {
    hash = HashBlockTokens(hash, tokens.subspan(static_cast<size_t>(i) * block_size, block_size));
    const int32_t block = *pool_.FindCached(hash);
    if (absl::Status status = pool_.AddReference(block); !status.ok()) {
      (void)Free(id);
      return status;
    }
    table.AppendBlocks({&block, 1});
    table.AppendBlockHash(hash);
  }
  table.AppendTokens(tokens.first(match.num_tokens));
  table.set_length(match.num_tokens);
  return match.num_tokens;
}

PrefixMatch KvCacheManager::MatchExtensionOf(const BlockTable& table,
                                             std::span<const int32_t> tokens,
                                             std::vector<int32_t>* blocks) const {
  PrefixMatch match;
  const int32_t block_size = options_.block_size;
  const int32_t length = table.length();
  const int32_t full = length / block_size;
  const int32_t held = length % block_size;  // positions in the partial last block
  if (!options_.enable_prefix_cache || tokens.empty() || !table.tokens_known() ||
      table.num_blocks() != BlocksForTokens(length, block_size) ||
      static_cast<int32_t>(table.block_hashes().size()) != full ||
      (held > 0 && pool_.reference_count(table.blocks()[full]) != 1)) {
    return match;
  }
  uint64_t hash = full == 0 ? kRootBlockHash : table.block_hashes()[full - 1];
  std::vector<int32_t> first_block(table.tokens().begin() + full * block_size,
                                   table.tokens().end());
  const int64_t computable = static_cast<int64_t>(tokens.size()) - 1;  // leave one to compute
  int64_t covered = 0;
  for (int32_t i = 0;; ++i) {
    const int32_t taken = block_size - (i == 0 ? held : 0);  // of `tokens`, by this block
    if (covered + taken > computable) break;
    std::span<const int32_t> block_tokens = tokens.subspan(static_cast<size_t>(covered), taken);
    if (i == 0 && held > 0) {
      first_block.insert(first_block.end(), block_tokens.begin(), block_tokens.end());
      block_tokens = first_block;
    }
    hash = HashBlockTokens(hash, block_tokens);
    const std::optional<int32_t> block = pool_.FindCached(hash);
    if (!block.has_value()) break;
    if (blocks != nullptr) blocks->push_back(*block);
    ++match.num_blocks;
    if (pool_.reference_count(*block) == 0) ++match.unreferenced_blocks;
    covered += taken;
  }
  match.num_tokens = static_cast<int32_t>(covered);
  match.set_aside_blocks = held > 0 && match.num_blocks > 0 ? 1 : 0;
  return match;
}

absl::StatusOr<PrefixMatch> KvCacheManager::MatchExtension(SequenceId id,
                                                           std::span<const int32_t> tokens) const {
  const BlockTable* table = FindTable(id);
  if (table == nullptr) return UnknownSequence(id);
  return MatchExtensionOf(*table, tokens, nullptr);
}

absl::StatusOr<int32_t> KvCacheManager::ExtendWithPrefix(SequenceId id,
                                                         std::span<const int32_t> tokens) {
  absl::StatusOr<BlockTable*> found = MutableTable(id);
  if (!found.ok()) return found.status();
  BlockTable& table = **found;
  if (absl::Status status = CommitExtension(id); !status.ok()) return status;
  std::vector<int32_t> blocks;
  const PrefixMatch match = MatchExtensionOf(table, tokens, &blocks);
  if (match.num_blocks == 0) return 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (absl::Status status = pool_.AddReference(blocks[i]); !status.ok()) {
      for (size_t j = 0; j < i; ++j) (void)pool_.Release(blocks[j]);
      return status;
    }
  }
  const int32_t length = table.length();
  std::span<const int32_t> appended = blocks;
  if (length % options_.block_size != 0) {
    // The mapped block holds the partial block's positions too; the partial one waits aside.
    table.SetAside(table.ReplaceBlock(length / options_.block_size, blocks[0]), length);
    appended = appended.subspan(1);
  }
  table.AppendBlocks(appended);
  table.AppendTokens(tokens.first(match.num_tokens));
  table.set_length(length + match.num_tokens);
  RegisterFullBlocks(table);  // the mapped blocks' own hashes: the index already has them
  return match.num_tokens;
}

absl::Status KvCacheManager::CommitExtension(SequenceId id) {
  absl::StatusOr<BlockTable*> table = MutableTable(id);
  if (!table.ok()) return table.status();
  const int32_t set_aside = (*table)->TakeSetAside();
  return set_aside >= 0 ? pool_.Release(set_aside) : absl::OkStatus();
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
  // A set-aside partial block (ExtendWithPrefix) comes back when the cut falls within the positions
  // it holds; it is released when the cut drops its block or keeps it past those positions.
  const int32_t set_aside = (*table)->set_aside_block();
  const int32_t set_aside_index = (*table)->set_aside_length() / options_.block_size;
  const bool restore =
      set_aside >= 0 && keep - 1 == set_aside_index && new_length <= (*table)->set_aside_length();
  // Shared blocks are immutable (Fork shares only full ones); a partially kept shared block would
  // become the target of the next append and change what the other owners read.
  if (!restore && new_length % options_.block_size != 0 &&
      pool_.reference_count((*table)->blocks()[keep - 1]) > 1) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "sequence %d: truncating to %d tokens would leave a shared KV block partly writable; "
        "truncate to a multiple of the block size (%d)",
        id, new_length, options_.block_size));
  }
  if (restore) {
    const int32_t mapped = (*table)->ReplaceBlock(set_aside_index, (*table)->TakeSetAside());
    if (absl::Status status = pool_.Release(mapped); !status.ok()) return status;
  } else if (set_aside >= 0 && new_length < (set_aside_index + 1) * options_.block_size) {
    if (absl::Status status = pool_.Release((*table)->TakeSetAside()); !status.ok()) return status;
  }
  (*table)->set_length(new_length);
  (*table)->TruncateTokens(new_length);
  (*table)->TruncateBlockHashes(new_length / options_.block_size);
  // The kept partial block will be written again: it no longer holds what its hash says.
  if (new_length % options_.block_size != 0) pool_.DropHash((*table)->blocks()[keep - 1]);
  std::vector<int32_t> dropped = (*table)->TakeBlocksAfter(keep);
  for (auto it = dropped.rbegin(); it != dropped.rend(); ++it) {
    if (absl::Status status = pool_.Release(*it); !status.ok()) return status;
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
  if (parent_table->tokens_known()) {
    child_table.AppendTokens(parent_table->tokens().first(child_table.length()));
    for (uint64_t hash : parent_table->block_hashes().first(
             std::min<size_t>(parent_table->block_hashes().size(), full_blocks))) {
      child_table.AppendBlockHash(hash);
    }
  } else {
    child_table.ForgetTokens();
  }
  return absl::OkStatus();
}

absl::Status KvCacheManager::Free(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return UnknownSequence(id);
  absl::Status first_error;
  if (const int32_t set_aside = it->second.TakeSetAside(); set_aside >= 0) {
    first_error.Update(pool_.Release(set_aside));
  }
  std::span<const int32_t> blocks = it->second.blocks();
  for (auto block = blocks.rbegin(); block != blocks.rend(); ++block) {
    first_error.Update(pool_.Release(*block));
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

absl::StatusOr<std::span<const int32_t>> KvCacheManager::tokens(SequenceId id) const {
  const BlockTable* table = FindTable(id);
  if (table == nullptr) return UnknownSequence(id);
  if (!table->tokens_known()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "sequence %d: some positions were appended by count, so its token ids are unknown", id));
  }
  return table->tokens();
}

KvCacheUsage KvCacheManager::usage() const {
  KvCacheUsage usage;
  usage.total_blocks = pool_.num_blocks();
  usage.used_blocks = pool_.num_used();
  usage.free_blocks = pool_.num_free();
  usage.num_sequences = static_cast<int32_t>(sequences_.size());
  usage.cached_blocks = pool_.num_cached();
  usage.evictable_blocks = pool_.num_evictable();
  usage.evictions_total = pool_.evictions_total();
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
