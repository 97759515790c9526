// The one place that says where a token's K and V live in the paged KV pool.
//
// The pool is a single allocation shared by all layers. Element order (outermost first):
//   [layer][kind: 0 = K, 1 = V][block][kv_head][slot][dim]
// i.e. "HND" inside a block: one (block, kv_head) pair is a contiguous block_size x head_dim tile,
// which is what the attention kernels load. Logical position p of a sequence lives in block
// block_table[p / block_size], slot p % block_size. Both the CPU reference and the CUDA kernels
// use these functions; there is no second copy of this arithmetic.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define KV_HOST_DEVICE inline
#endif

namespace llm::kvcache {

enum class KvKind : int32_t { kKey = 0, kValue = 1 };

struct KvLayout {
  int32_t num_layers = 0;
  int32_t num_blocks = 0;
  int32_t block_size = 16;  // token slots per block
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;

  // Elements of one (block, kv_head) tile.
  KV_HOST_DEVICE int64_t head_tile_elements() const {
    return static_cast<int64_t>(block_size) * head_dim;
  }
  // Elements of one block of one kind (K or V) of one layer.
  KV_HOST_DEVICE int64_t block_elements() const { return head_tile_elements() * num_kv_heads; }
  // Elements of one kind (K or V) of one layer: the base of a layer's K (or V) array.
  KV_HOST_DEVICE int64_t layer_kind_elements() const { return block_elements() * num_blocks; }
  KV_HOST_DEVICE int64_t total_elements() const {
    return layer_kind_elements() * 2 * num_layers;
  }
  // Offset of the K (or V) array of one layer inside the pool.
  KV_HOST_DEVICE int64_t layer_offset(int32_t layer, KvKind kind) const {
    return (static_cast<int64_t>(layer) * 2 + static_cast<int32_t>(kind)) * layer_kind_elements();
  }
  // Offset, relative to a layer's K (or V) base, of element `dim` of `kv_head` in slot `slot` of `block`.
  KV_HOST_DEVICE int64_t offset_in_layer(int32_t block, int32_t kv_head, int32_t slot,
                                         int32_t dim) const {
    return ((static_cast<int64_t>(block) * num_kv_heads + kv_head) * block_size + slot) * head_dim +
           dim;
  }
  // Offset, relative to a layer's K (or V) base, of the (block, kv_head) tile.
  KV_HOST_DEVICE int64_t tile_offset_in_layer(int32_t block, int32_t kv_head) const {
    return offset_in_layer(block, kv_head, 0, 0);
  }
};

// Logical position -> physical (block, slot) through a sequence's block table.
struct PagedPosition {
  int32_t block;
  int32_t slot;
};

KV_HOST_DEVICE PagedPosition LocatePosition(const int32_t* block_table, int32_t block_size,
                                            int32_t position) {
  return PagedPosition{block_table[position / block_size], position % block_size};
}

// A flat slot index (block * block_size + slot), used to tell the append op where each new token goes.
KV_HOST_DEVICE int32_t FlatSlot(const int32_t* block_table, int32_t block_size, int32_t position) {
  const PagedPosition p = LocatePosition(block_table, block_size, position);
  return p.block * block_size + p.slot;
}

}  // namespace llm::kvcache
