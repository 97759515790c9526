// The CPU paged attention against a naive contiguous attention (double precision) over a grid of
// head dims (36 exercises the non-multiple-of-8/16 tails), GQA ratios and block sizes, on ragged
// batches that mix a fresh prefill, prefill chunks starting mid-block and mid-sequence, and decode
// tokens, with shuffled physical block tables.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/paged_attention.h"
#include "kvcache/kv_layout.h"
#include "tests/kernels/random_tensors.h"

namespace llm::cpu {
namespace {

using kvcache::KvKind;
using kvcache::KvLayout;

// One sequence of the batch: `cached` tokens already in the cache, `new_tokens` queried this step.
struct SequenceSpec {
  int32_t cached;
  int32_t new_tokens;
};

// softmax(q . k_p * scale) v over p <= position, on contiguous per-sequence K/V [p][kv_head][dim].
std::vector<double> NaiveAttention(const std::vector<float>& q, int32_t position,
                                   const std::vector<float>& keys, const std::vector<float>& values,
                                   int32_t num_kv_heads, int32_t kv_head, int32_t head_dim,
                                   double scale) {
  std::vector<double> scores(position + 1);
  double max_score = -1e300;
  for (int32_t p = 0; p <= position; ++p) {
    double dot = 0.0;
    for (int32_t d = 0; d < head_dim; ++d) {
      dot += static_cast<double>(q[d]) *
             keys[(static_cast<size_t>(p) * num_kv_heads + kv_head) * head_dim + d];
    }
    scores[p] = dot * scale;
    max_score = std::max(max_score, scores[p]);
  }
  double denominator = 0.0;
  for (double& s : scores) denominator += (s = std::exp(s - max_score));
  std::vector<double> out(head_dim, 0.0);
  for (int32_t p = 0; p <= position; ++p) {
    for (int32_t d = 0; d < head_dim; ++d) {
      out[d] += scores[p] / denominator *
                values[(static_cast<size_t>(p) * num_kv_heads + kv_head) * head_dim + d];
    }
  }
  return out;
}

class PagedAttentionTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(PagedAttentionTest, MatchesNaiveContiguousAttention) {
  const auto [head_dim, group_size, block_size] = GetParam();
  const int32_t num_kv_heads = 2;
  const int32_t num_q_heads = num_kv_heads * group_size;
  const int32_t tested_layer = 1;  // layer > 0 so the layer offset is exercised
  const std::vector<SequenceSpec> sequences = {
      {0, 7},   // fresh prefill
      {13, 9},  // chunk starting mid-block, mid-sequence
      {40, 1},  // decode
      {31, 1},  // decode into the first slot of a block (for block_size 16/32)
      {0, 1},   // one-token prompt
      {5, 20},  // chunk spanning several blocks
      {64, 3},  // chunk starting exactly on a block boundary
  };
  const uint32_t seed = head_dim * 1000 + group_size * 100 + block_size;
  std::mt19937 generator(seed);

  // Physical blocks: enough for every sequence plus spares, handed out in shuffled order.
  int32_t total_blocks = 4;
  for (const SequenceSpec& s : sequences)
    total_blocks += (s.cached + s.new_tokens + block_size - 1) / block_size;
  std::vector<int32_t> free_blocks(total_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), generator);

  KvLayout layout{.num_layers = 2,
                  .num_blocks = total_blocks,
                  .block_size = block_size,
                  .num_kv_heads = num_kv_heads,
                  .head_dim = head_dim};
  std::vector<float> pool_memory(layout.total_elements(), 0.0f);
  // Poison the other layer so reading the wrong layer shows.
  std::fill(pool_memory.begin(), pool_memory.begin() + layout.layer_offset(1, KvKind::kKey), 1e6f);

  const int32_t qkv_width = (num_q_heads + 2 * num_kv_heads) * head_dim;
  int32_t num_tokens = 0, max_blocks = 0;
  for (const SequenceSpec& s : sequences) {
    num_tokens += s.new_tokens;
    max_blocks = std::max(max_blocks, (s.cached + s.new_tokens + block_size - 1) / block_size);
  }
  std::vector<float> qkv =
      testing::RandomFloats(static_cast<size_t>(num_tokens) * qkv_width, seed + 1, -2.0f, 2.0f);
  std::vector<int32_t> positions, query_start = {0}, kv_lens;
  std::vector<int32_t> block_tables(sequences.size() * max_blocks, -1);
  std::vector<std::vector<float>> keys(sequences.size()), values(sequences.size());

  size_t next_free = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const int32_t length = sequences[s].cached + sequences[s].new_tokens;
    int32_t* table = &block_tables[s * max_blocks];
    for (int32_t b = 0; b < (length + block_size - 1) / block_size; ++b)
      table[b] = free_blocks[next_free++];
    keys[s] = testing::RandomFloats(static_cast<size_t>(length) * num_kv_heads * head_dim,
                                    seed + 10 + s, -2.0f, 2.0f);
    values[s] =
        testing::RandomFloats(static_cast<size_t>(length) * num_kv_heads * head_dim, seed + 50 + s);
    for (int32_t p = 0; p < length; ++p) {
      const kvcache::PagedPosition where = kvcache::LocatePosition(table, block_size, p);
      for (int32_t h = 0; h < num_kv_heads; ++h) {
        for (int32_t d = 0; d < head_dim; ++d) {
          const size_t source = (static_cast<size_t>(p) * num_kv_heads + h) * head_dim + d;
          const int64_t in_layer = layout.offset_in_layer(where.block, h, where.slot, d);
          pool_memory[layout.layer_offset(tested_layer, KvKind::kKey) + in_layer] = keys[s][source];
          pool_memory[layout.layer_offset(tested_layer, KvKind::kValue) + in_layer] =
              values[s][source];
        }
      }
    }
    for (int32_t i = 0; i < sequences[s].new_tokens; ++i)
      positions.push_back(sequences[s].cached + i);
    query_start.push_back(query_start.back() + sequences[s].new_tokens);
    kv_lens.push_back(length);
  }

  AttentionBatch batch;
  batch.num_tokens = num_tokens;
  batch.num_seqs = static_cast<int32_t>(sequences.size());
  batch.positions = positions.data();
  batch.query_start = query_start.data();
  batch.kv_lens = kv_lens.data();
  batch.block_tables = block_tables.data();
  batch.block_table_stride = max_blocks;
  AttentionShape shape{num_q_heads, num_kv_heads, head_dim,
                       1.0f / std::sqrt(static_cast<float>(head_dim))};
  KvCacheView cache{pool_memory.data(), layout};

  ThreadPool pool(2);
  std::vector<float> out(static_cast<size_t>(num_tokens) * num_q_heads * head_dim, -7.0f);
  PagedAttention(pool, qkv.data(), batch, shape, cache, tested_layer, out.data());

  for (size_t s = 0; s < sequences.size(); ++s) {
    for (int32_t t = query_start[s]; t < query_start[s + 1]; ++t) {
      for (int32_t h = 0; h < num_q_heads; ++h) {
        std::vector<float> q(qkv.begin() + static_cast<size_t>(t) * qkv_width + h * head_dim,
                             qkv.begin() + static_cast<size_t>(t) * qkv_width + (h + 1) * head_dim);
        const std::vector<double> expected =
            NaiveAttention(q, positions[t], keys[s], values[s], num_kv_heads, h / group_size,
                           head_dim, 1.0 / std::sqrt(static_cast<double>(head_dim)));
        const float* actual = &out[(static_cast<size_t>(t) * num_q_heads + h) * head_dim];
        ASSERT_LT(testing::RelativeError(actual, expected), 1e-5)
            << "sequence " << s << " token " << t << " (position " << positions[t] << ") head "
            << h;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(HeadDimGroupBlock, PagedAttentionTest,
                         ::testing::Combine(::testing::Values(32, 36, 64, 80, 128),
                                            ::testing::Values(1, 2, 4, 8),
                                            ::testing::Values(1, 16, 32)),
                         [](const ::testing::TestParamInfo<PagedAttentionTest::ParamType>& info) {
                           return "HeadDim" + std::to_string(std::get<0>(info.param)) + "_Group" +
                                  std::to_string(std::get<1>(info.param)) + "_Block" +
                                  std::to_string(std::get<2>(info.param));
                         });

// Only positions <= the query's own position are visible, even when later tokens of the same chunk
// are already in the cache: the last token's K/V must not influence the first token's output.
TEST(PagedAttentionCausalTest, LaterTokensInTheChunkDoNotChangeEarlierOutputs) {
  const int32_t head_dim = 16, block_size = 4, length = 10;
  KvLayout layout{.num_layers = 1,
                  .num_blocks = 3,
                  .block_size = block_size,
                  .num_kv_heads = 1,
                  .head_dim = head_dim};
  std::vector<float> pool_memory = testing::RandomFloats(layout.total_elements(), 3);
  std::vector<float> qkv = testing::RandomFloats(static_cast<size_t>(length) * 3 * head_dim, 4);
  std::vector<int32_t> positions(length);
  std::iota(positions.begin(), positions.end(), 0);
  std::vector<int32_t> query_start = {0, length}, kv_lens = {length}, table = {2, 0, 1};
  AttentionBatch batch;
  batch.num_tokens = length;
  batch.num_seqs = 1;
  batch.positions = positions.data();
  batch.query_start = query_start.data();
  batch.kv_lens = kv_lens.data();
  batch.block_tables = table.data();
  batch.block_table_stride = 3;
  AttentionShape shape{1, 1, head_dim, 0.25f};
  ThreadPool pool(2);
  std::vector<float> before(static_cast<size_t>(length) * head_dim);
  PagedAttention(pool, qkv.data(), batch, shape, KvCacheView{pool_memory.data(), layout}, 0,
                 before.data());
  // Overwrite the K/V of the last position (block 1, slot 1).
  for (int32_t d = 0; d < head_dim; ++d) {
    pool_memory[layout.layer_offset(0, KvKind::kKey) + layout.offset_in_layer(1, 0, 1, d)] = 50.0f;
    pool_memory[layout.layer_offset(0, KvKind::kValue) + layout.offset_in_layer(1, 0, 1, d)] =
        50.0f;
  }
  std::vector<float> after(before.size());
  PagedAttention(pool, qkv.data(), batch, shape, KvCacheView{pool_memory.data(), layout}, 0,
                 after.data());
  for (int32_t t = 0; t < length - 1; ++t) {
    for (int32_t d = 0; d < head_dim; ++d) {
      ASSERT_EQ(before[t * head_dim + d], after[t * head_dim + d]) << "token " << t;
    }
  }
  bool last_changed = false;
  for (int32_t d = 0; d < head_dim; ++d)
    last_changed |= before[(length - 1) * head_dim + d] != after[(length - 1) * head_dim + d];
  EXPECT_TRUE(last_changed) << "the last token must see its own K/V";
}

}  // namespace
}  // namespace llm::cpu
