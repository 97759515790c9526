// RoPE + KV append against the Hugging Face rotate-half formula evaluated in double, plus the
// property RoPE exists for: q(m) . k(n) depends only on m - n.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/rope.h"
#include "kvcache/kv_layout.h"
#include "tests/kernels/random_tensors.h"

namespace llm::cpu {
namespace {

using kvcache::KvKind;
using kvcache::KvLayout;

std::vector<float> DefaultInverseFrequencies(int32_t head_dim, double theta) {
  std::vector<float> inv_freq(head_dim / 2);
  for (int32_t i = 0; i < head_dim / 2; ++i) {
    inv_freq[i] = static_cast<float>(1.0 / std::pow(theta, 2.0 * i / head_dim));
  }
  return inv_freq;
}

// q*cos + rotate_half(q)*sin with rotate_half(x) = [-x2, x1]; the angle is rounded to fp32 as in
// transformers (inv_freq @ position in fp32), everything else in double.
std::vector<double> NaiveRope(const float* x, int32_t head_dim, int32_t position,
                              const std::vector<float>& inv_freq, double scaling) {
  const int32_t half = head_dim / 2;
  std::vector<double> out(head_dim);
  for (int32_t j = 0; j < head_dim; ++j) {
    const int32_t i = j % half;
    const double angle = static_cast<float>(position) * inv_freq[i];
    const double rotated = j < half ? -static_cast<double>(x[j + half]) : x[j - half];
    out[j] = x[j] * std::cos(angle) * scaling + rotated * std::sin(angle) * scaling;
  }
  return out;
}

TEST(RopeAppendKvTest, RotatesQueryAndKeyHeadsAndWritesKeyValueToTheirSlots) {
  for (int32_t head_dim : {32, 64, 80, 128}) {
    const int32_t num_q_heads = 4, num_kv_heads = 2, block_size = 16, num_tokens = 6;
    const int32_t width = (num_q_heads + 2 * num_kv_heads) * head_dim;
    const std::vector<float> inv_freq = DefaultInverseFrequencies(head_dim, 500000.0);
    const float scaling = head_dim == 80 ? 1.25f : 1.0f;  // exercise attention_scaling too
    const std::vector<int32_t> positions = {0, 1, 17, 255, 4095, 131000};
    const std::vector<int32_t> slot_mapping = {5 * 16 + 0,  5 * 16 + 1, 2 * 16 + 1,
                                               0 * 16 + 15, 7 * 16 + 9, 3 * 16 + 4};
    const std::vector<float> original =
        testing::RandomFloats(static_cast<size_t>(num_tokens) * width, head_dim);
    std::vector<float> qkv = original;
    KvLayout layout{.num_layers = 3,
                    .num_blocks = 8,
                    .block_size = block_size,
                    .num_kv_heads = num_kv_heads,
                    .head_dim = head_dim};
    std::vector<float> pool_memory(layout.total_elements(), 0.0f);
    AttentionBatch batch;
    batch.num_tokens = num_tokens;
    batch.positions = positions.data();
    batch.slot_mapping = slot_mapping.data();
    AttentionShape shape{num_q_heads, num_kv_heads, head_dim, 1.0f};
    RopeParams rope{inv_freq.data(), scaling};
    ThreadPool pool(2);
    const int32_t layer = 2;
    RopeAppendKv(pool, qkv.data(), batch, shape, rope, KvCacheView{pool_memory.data(), layout},
                 layer);

    for (int32_t t = 0; t < num_tokens; ++t) {
      const float* source_row = &original[static_cast<size_t>(t) * width];
      const float* row = &qkv[static_cast<size_t>(t) * width];
      for (int32_t h = 0; h < num_q_heads + num_kv_heads; ++h) {
        const std::vector<double> expected =
            NaiveRope(source_row + h * head_dim, head_dim, positions[t], inv_freq, scaling);
        for (int32_t d = 0; d < head_dim; ++d) {
          ASSERT_NEAR(row[h * head_dim + d], expected[d], 2e-6)
              << "head_dim " << head_dim << " token " << t << " head " << h << " dim " << d;
        }
      }
      const int32_t block = slot_mapping[t] / block_size, slot = slot_mapping[t] % block_size;
      for (int32_t kv_head = 0; kv_head < num_kv_heads; ++kv_head) {
        for (int32_t d = 0; d < head_dim; ++d) {
          const int64_t in_layer = layout.offset_in_layer(block, kv_head, slot, d);
          const int32_t k_column = (num_q_heads + kv_head) * head_dim + d;
          const int32_t v_column = (num_q_heads + num_kv_heads + kv_head) * head_dim + d;
          ASSERT_EQ(pool_memory[layout.layer_offset(layer, KvKind::kKey) + in_layer],
                    row[k_column]);
          ASSERT_EQ(pool_memory[layout.layer_offset(layer, KvKind::kValue) + in_layer],
                    source_row[v_column]);
          ASSERT_EQ(row[v_column], source_row[v_column]) << "V must not be rotated";
        }
      }
    }
    // Nothing but the written slots of the tested layer changed.
    int64_t nonzero = 0;
    for (float v : pool_memory) nonzero += v != 0.0f;
    EXPECT_EQ(nonzero, 2LL * num_tokens * num_kv_heads * head_dim);
  }
}

TEST(RopeAppendKvTest, QueryKeyDotProductDependsOnlyOnRelativePosition) {
  const int32_t head_dim = 64;
  const std::vector<float> inv_freq = DefaultInverseFrequencies(head_dim, 10000.0);
  const std::vector<float> q = testing::RandomFloats(head_dim, 1),
                           k = testing::RandomFloats(head_dim, 2);
  const auto rotated_dot = [&](int32_t q_position, int32_t k_position) {
    std::vector<float> q_rotated = q, k_rotated = k;
    RotateHalf(q_rotated.data(), head_dim, q_position, inv_freq.data(), 1.0f);
    RotateHalf(k_rotated.data(), head_dim, k_position, inv_freq.data(), 1.0f);
    double dot = 0.0;
    for (int32_t d = 0; d < head_dim; ++d) dot += static_cast<double>(q_rotated[d]) * k_rotated[d];
    return dot;
  };
  EXPECT_NEAR(rotated_dot(10, 3), rotated_dot(107, 100), 1e-4);
  EXPECT_NEAR(rotated_dot(5, 5), rotated_dot(0, 0), 1e-4);
  EXPECT_GT(std::abs(rotated_dot(10, 3) - rotated_dot(10, 4)), 1e-3)
      << "a different offset must change the score";
}

}  // namespace
}  // namespace llm::cpu
