// The identity of a full KV block in the prefix cache: a chain hash of its tokens and of every
// token before it.
//
// Block i of a sequence hashes (hash of block i-1, the block_size token ids of block i); block 0
// chains from kRootBlockHash. Two blocks get the same hash only when their whole prefixes are
// equal (up to 64-bit collisions), and since K/V at a position depend only on the tokens up to it
// and the position, equal hashes mean equal K/V: such a block can be shared read-only.
#pragma once

#include <cstdint>
#include <span>

namespace llm::kvcache {

inline constexpr uint64_t kRootBlockHash = 0x6a09e667f3bcc908ull;

// splitmix64's finaliser: every input bit affects every output bit.
constexpr uint64_t MixBits(uint64_t value) {
  value ^= value >> 30;
  value *= 0xbf58476d1ce4e5b9ull;
  value ^= value >> 27;
  value *= 0x94d049bb133111ebull;
  value ^= value >> 31;
  return value;
}

// Hash of a full block whose predecessor hashed to `parent_hash`.
inline uint64_t HashBlockTokens(uint64_t parent_hash, std::span<const int32_t> tokens) {
  uint64_t hash = MixBits(parent_hash ^ 0x9e3779b97f4a7c15ull);
  for (int32_t token : tokens) {
    hash = MixBits(hash + 0x9e3779b97f4a7c15ull + static_cast<uint32_t>(token));
  }
  return MixBits(hash ^ static_cast<uint64_t>(tokens.size()));
}

}  // namespace llm::kvcache
