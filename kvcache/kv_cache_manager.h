// The block manager: which sequence owns which KV blocks.
//
// The engine asks it for room before a forward step (Reserve), records what the step wrote
// (AppendTokens), and gives a sequence's blocks back when it ends (Free). It is single-threaded by
// design: the engine thread owns it. It never touches KV memory, only block ids, so it is testable
// alone.
//
// Prefix cache: every full block written through AppendTokens is registered in the pool under its
// chain hash (block_hash.h). CreateSequenceWithPrefix maps the longest run of cached full blocks
// that starts a new prompt into the new table (reference counted, read-only), so only the rest is
// prefilled. Only full blocks are ever shared, and a full block is never written again (appends go
// to positions >= length; Truncate forgets the hash of a block it makes partial), so no
// copy-on-write is needed. Released hashed blocks stay cached until Allocate evicts them (LRU).
// ExtendWithPrefix does the same for tokens appended to a live sequence (a prompt sent in parts,
// or an extension recomputed after a preemption).
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
  int32_t block_size = 16;  // token slots per block
  size_t block_bytes = 0;   // bytes of one block across all layers (K and V); for accounting only
  // Register full blocks by hash and reuse them for new prompts and for extensions.
  bool enable_prefix_cache = true;
};

// What the prefix cache holds for the start of a prompt.
struct PrefixMatch {
  int32_t num_blocks = 0;  // leading full blocks of the prompt found in the cache
  // Tokens of the prompt they cover: num_blocks * block_size for a new sequence; for an extension
  // less the positions the sequence's partial last block already held.
  int32_t num_tokens = 0;
  // Of those, blocks no sequence holds now: mapping them takes them out of the free count.
  int32_t unreferenced_blocks = 0;
  // An extension's first block replaces the sequence's partial last block, which stays allocated
  // (set aside) until the extension is committed or undone: 1 then, else 0.
  int32_t set_aside_blocks = 0;
  // Free blocks that mapping the match takes on top of what reserving the tokens without it would.
  int32_t extra_free_blocks_taken() const {
    return unreferenced_blocks + set_aside_blocks - num_blocks;
  }
};

struct KvCacheUsage {
  int32_t total_blocks = 0;
  int32_t used_blocks = 0;
  int32_t free_blocks = 0;
  int32_t num_sequences = 0;
  int32_t cached_blocks = 0;     // findable by prefix hash (used or not)
  int32_t evictable_blocks = 0;  // cached with no owner: counted in free_blocks
  int64_t evictions_total = 0;   // cached blocks reused for other contents
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
  // (ResourceExhausted, nothing changed, when they are not free). The tokens are unknown, so the
  // sequence's later blocks never enter the prefix cache; the engine uses AppendTokens.
  absl::Status Append(SequenceId id, int32_t num_tokens);
  // Like Append, with the token ids written at positions [length, length + tokens.size()); every
  // block this completes is registered in the prefix cache.
  absl::Status AppendTokens(SequenceId id, std::span<const int32_t> tokens);

  // The cached full blocks that start `tokens`, stopping one token short of the end so that a
  // prompt always leaves at least its last token to compute (it needs logits to sample from).
  PrefixMatch MatchPrefix(std::span<const int32_t> tokens) const;
  // Registers a sequence whose table starts with MatchPrefix(tokens)'s blocks (shared, reference
  // counted) and whose length is their token count, which it returns. AlreadyExists when the id
  // is live. The caller prefills tokens[length..] and reserves their blocks as usual.
  absl::StatusOr<int32_t> CreateSequenceWithPrefix(SequenceId id, std::span<const int32_t> tokens);
  // The cached full blocks that continue sequence `id` with `tokens` (chain hashes from the
  // sequence's own), again one token short of the end. When the sequence ends inside a block, the
  // first match is the full block of that block's tokens and the first of `tokens`. Empty when
  // the prefix cache is off, the sequence's token ids are unknown (Append by count), or it holds
  // blocks reserved past its length. NotFound for an unknown id.
  absl::StatusOr<PrefixMatch> MatchExtension(SequenceId id, std::span<const int32_t> tokens) const;
  // Maps MatchExtension(id, tokens)'s blocks into the table (shared, reference counted) and moves
  // the length over them; returns how many of `tokens` they cover. A replaced partial last block
  // is set aside, not released: Truncate back into its positions restores it (undoing the
  // extension), CommitExtension releases it. A block still set aside by an earlier extension is
  // released first.
  absl::StatusOr<int32_t> ExtendWithPrefix(SequenceId id, std::span<const int32_t> tokens);
  // The extension will not be undone: releases the block it set aside, if any.
  absl::Status CommitExtension(SequenceId id);
  // Sets the length back to `new_length` (<= length) and releases blocks no longer needed; used to
  // undo a step that failed or to drop reserved-but-unused blocks. FailedPrecondition when the cut
  // falls inside a block shared with another sequence (shared blocks stay read-only), unless the
  // block set aside by ExtendWithPrefix holds those positions: then it comes back in place of the
  // mapped block (which is released and stays cached). A set-aside block whose positions the cut
  // drops, or keeps only in part beyond what it held, is released.
  absl::Status Truncate(SequenceId id, int32_t new_length);
  // Creates `child` sharing the parent's full blocks (reference counted); the child's length is the
  // parent's length rounded down to a block boundary, so neither ever writes into a shared block.
  absl::Status Fork(SequenceId parent, SequenceId child);
  // Releases every block of the sequence and forgets it, last block first, so that the tail of a
  // cached prompt is evicted before its head. NotFound when unknown.
  absl::Status Free(SequenceId id);

  bool Contains(SequenceId id) const { return sequences_.contains(id); }
  absl::StatusOr<int32_t> length(SequenceId id) const;
  absl::StatusOr<std::span<const int32_t>> block_table(SequenceId id) const;
  // Token ids of positions [0, length). FailedPrecondition when some were appended by count only.
  absl::StatusOr<std::span<const int32_t>> tokens(SequenceId id) const;
  // The sequence's table, or nullptr when unknown. Valid until the next mutating call for that id.
  const BlockTable* FindTable(SequenceId id) const;

  int32_t block_size() const { return options_.block_size; }
  int32_t num_blocks() const { return options_.num_blocks; }
  // Blocks an allocation can take now: free plus cached-unreferenced.
  int32_t num_free_blocks() const { return pool_.num_free(); }
  bool prefix_cache_enabled() const { return options_.enable_prefix_cache; }
  KvCacheUsage usage() const;
  const BlockPool& pool() const { return pool_; }
  // Sequence ids that are live, for invariant checks and stats (unordered).
  std::vector<SequenceId> sequence_ids() const;

 private:
  explicit KvCacheManager(const KvCacheOptions& options);
  absl::StatusOr<BlockTable*> MutableTable(SequenceId id);
  // Hashes the table's full blocks not hashed yet and registers them in the pool.
  void RegisterFullBlocks(BlockTable& table);
  // MatchExtension's walk; with `blocks` the cached blocks found, in order.
  PrefixMatch MatchExtensionOf(const BlockTable& table, std::span<const int32_t> tokens,
                               std::vector<int32_t>* blocks) const;

  KvCacheOptions options_;
  BlockPool pool_;
  std::unordered_map<SequenceId, BlockTable> sequences_;
};

}  // namespace llm::kvcache
