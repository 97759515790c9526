// The block manager: which sequence owns which KV blocks.
//
// The engine asks it for room before a forward step (Reserve), records what the step wrote (Append),
// and gives a sequence's blocks back when it ends (Free). It is single-threaded by design: the
// engine thread owns it. It never touches KV memory, only block ids, so it is testable alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvcache/block_pool.h"
#include "kvcache/block_table.h"

namespace llm::kvcache {

using SequenceId = uint64_t;

struct KvCacheOptions {
  int32_t num_blocks = 0;
  int32_t block_size = 16;      // token slots per block
  size_t block_bytes = 0;       // bytes of one block across all layers (K and V); for accounting only
};

struct KvCacheUsage {
  int32_t total_blocks = 0;
  int32_t used_blocks = 0;
  int32_t free_blocks = 0;
  int32_t num_sequences = 0;
  size_t block_bytes = 0;
  size_t used_bytes() const { return static_cast<size_t>(used_blocks) * block_bytes; }
  size_t free_bytes() const { return static_cast<size_t>(free_blocks) * block_bytes; }
  size_t total_bytes() const { return static_cast<size_t>(total_blocks) * block_bytes; }
};

class KvCacheManager {
 public:
  // InvalidArgument when num_blocks or block_size is not positive.
  static absl::StatusOr<std::unique_ptr<KvCacheManager>> Create(const KvCacheOptions& options);

  KvCacheManager(const KvCacheManager&) = delete;
  KvCacheManager& operator=(const KvCacheManager&) = delete;

  // Registers an empty sequence. AlreadyExists when the id is live.
  absl::Status CreateSequence(SequenceId id);
  // Makes the sequence's table cover `new_total_tokens` positions. ResourceExhausted when there are
  // not enough free blocks; nothing is allocated in that case. Never shrinks.
  absl::Status Reserve(SequenceId id, int64_t new_total_tokens);
  // True when Reserve(id, new_total_tokens) would succeed now.
  bool CanReserve(SequenceId id, int64_t new_total_tokens) const;
  // Free blocks that Reserve(id, new_total_tokens) would take (0 when already covered).
  absl::StatusOr<int32_t> BlocksToReserve(SequenceId id, int64_t new_total_tokens) const;
  // Records that `num_tokens` more positions hold K/V, reserving blocks first when needed
  // (ResourceExhausted, nothing changed, when they are not free).
  absl::Status Append(SequenceId id, int32_t num_tokens);
  // Sets the length back to `new_length` (<= length) and releases blocks no longer needed; used to
  // undo a step that failed or to drop reserved-but-unused blocks. FailedPrecondition when the cut
  // falls inside a block shared with another sequence (shared blocks stay read-only).
  absl::Status Truncate(SequenceId id, int32_t new_length);
  // Creates `child` sharing the parent's full blocks (reference counted); the child's length is the
  // parent's length rounded down to a block boundary, so neither ever writes into a shared block.
  absl::Status Fork(SequenceId parent, SequenceId child);
  // Releases every block of the sequence and forgets it. NotFound when unknown.
  absl::Status Free(SequenceId id);

  bool Contains(SequenceId id) const { return sequences_.contains(id); }
  absl::StatusOr<int32_t> length(SequenceId id) const;
  absl::StatusOr<std::span<const int32_t>> block_table(SequenceId id) const;
  // The sequence's table, or nullptr when unknown. Valid until the next mutating call for that id.
  const BlockTable* FindTable(SequenceId id) const;

  int32_t block_size() const { return options_.block_size; }
  int32_t num_blocks() const { return options_.num_blocks; }
  int32_t num_free_blocks() const { return pool_.num_free(); }
  KvCacheUsage usage() const;
  const BlockPool& pool() const { return pool_; }
  // Sequence ids that are live, for invariant checks and stats (unordered).
  std::vector<SequenceId> sequence_ids() const;

 private:
  explicit KvCacheManager(const KvCacheOptions& options);
  absl::StatusOr<BlockTable*> MutableTable(SequenceId id);

  KvCacheOptions options_;
  BlockPool pool_;
  std::unordered_map<SequenceId, BlockTable> sequences_;
};

}  // namespace llm::kvcache
