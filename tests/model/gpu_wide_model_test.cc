// The CUDA backend's decode path at realistic widths against the CPU backend's fp32 forward of the
// same random model (the independent reference). The HF fixtures are 64 wide; here the products
// spread over every SM (GEMV blocks, cuBLASLt tiles) and the contexts reach the split-KV and
// cluster-merge choices of flash decode. Shapes: head_dim 64 and 128, GQA 4:1 and MQA. Per shape,
// sequences are prefilled to contexts on both sides of the KV buckets (1 to 2116 tokens), then
// decoded greedily, every model fed the reference's token:
//  * each sequence alone (batch 1: fused GEMVs, flash decode with its split choice);
//  * all sequences in one step (batch 3 through the fused GEMVs, batch 6 through cuBLASLt), all
//    through CUDA graphs (TransformerOptions' defaults).
// Per step: logits within 3e-2 of the reference (relative; bf16 weights and activations against
// fp32, the tolerance of the transformers fixtures' tests), and the same greedy token unless the
// reference's top-2 margin is below twice the largest logit difference. The weights' scale keeps
// the models about as sensitive as the fixtures: measured on an H100 (2026-11-24) at most
// 1.15e-2. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "server/model/transformer.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/model/fake_checkpoint.h"

namespace llm {
namespace {

constexpr double kVsReferenceTolerance = 3e-2;
constexpr int32_t kBlockSize = 16;
constexpr int kSteps = 8;

struct Shape {
  const char* name;
  int32_t hidden, inter, q_heads, kv_heads, head_dim, vocab, layers;
  float projection_std;
  std::vector<int32_t> prompt_lengths;  // one sequence each
};

void PrintTo(const Shape& shape, std::ostream* os) { *os << shape.name; }

class GpuWideModelTest : public ::testing::TestWithParam<Shape> {};

ModelConfig ConfigFor(const Shape& shape) {
  ModelConfig config = testing::SmallLlamaConfig();
  config.hidden_size = shape.hidden;
  config.intermediate_size = shape.inter;
  config.num_attention_heads = shape.q_heads;
  config.num_key_value_heads = shape.kv_heads;
  config.head_dim = shape.head_dim;
  config.vocab_size = shape.vocab;
  config.num_hidden_layers = shape.layers;
  config.max_position_embeddings = 8192;
  return config;
}

// Compares one step's results row by row; counts near-tie token flips.
void ExpectClose(const std::vector<ChunkResult>& ours, const std::vector<ChunkResult>& expected,
                 const std::string& what, double& worst, int& flips) {
  ASSERT_EQ(ours.size(), expected.size());
  for (size_t i = 0; i < ours.size(); ++i) {
    const std::vector<float>& a = ours[i].logits;
    const std::vector<float>& ref = expected[i].logits;
    ASSERT_EQ(a.size(), ref.size()) << what;
    EXPECT_EQ(gpu_testing::CountNonFinite(a), 0u) << what;
    const double error = gpu_testing::RelativeError(a, ref);
    worst = std::max(worst, error);
    EXPECT_LT(error, kVsReferenceTolerance) << what << " row " << i;
    if (ours[i].sampled.token == expected[i].sampled.token) continue;
    ++flips;
    double delta = 0, first = -INFINITY, second = -INFINITY;
    for (size_t k = 0; k < a.size(); ++k) {
      delta = std::max(delta, std::abs(double(a[k]) - ref[k]));
      if (ref[k] > first) {
        second = first;
        first = ref[k];
      } else if (ref[k] > second) {
        second = ref[k];
      }
    }
    EXPECT_LT(first - second, 2 * delta) << what << " row " << i << ": token differs at a clear margin";
  }
}

TEST_P(GpuWideModelTest, DecodeMatchesCpuReference) {
  SKIP_WITHOUT_GPU();
  const Shape& shape = GetParam();
  const ModelConfig config = ConfigFor(shape);
  auto backend = CreateCudaBackend();
  ASSERT_TRUE(backend.ok()) << backend.status();
  testing::FakeCheckpoint checkpoint(config, /*seed=*/11, shape.projection_std);
  const int32_t sequences = static_cast<int32_t>(shape.prompt_lengths.size());
  const int32_t longest = *std::max_element(shape.prompt_lengths.begin(), shape.prompt_lengths.end());
  const int32_t blocks_per_sequence = (longest + 2 * kSteps + kBlockSize) / kBlockSize;
  std::unique_ptr<Backend> cpu =
      CreateCpuBackend(static_cast<int>(std::max(2u, std::thread::hardware_concurrency())));
  auto make = [&](Backend& on) {
    TransformerOptions options;
    options.kv_num_blocks = blocks_per_sequence * sequences;
    options.kv_block_size = kBlockSize;
    options.max_batch_tokens = longest;
    options.max_batch_sequences = 8;
    auto transformer = Transformer::Create(checkpoint, on, options);
    EXPECT_TRUE(transformer.ok()) << transformer.status();
    return transformer.ok() ? std::move(*transformer) : nullptr;
  };
  std::unique_ptr<Transformer> cuda = make(**backend), reference = make(*cpu);
  ASSERT_TRUE(cuda && reference);

  // Blocks of each sequence in reverse order, so neighbouring positions sit in non-adjacent blocks.
  std::vector<std::vector<int32_t>> tables(sequences, std::vector<int32_t>(blocks_per_sequence));
  std::vector<int32_t> next(sequences), length(sequences);
  std::mt19937 generator(3);
  std::uniform_int_distribution<int32_t> token(0, shape.vocab - 1);
  for (int32_t s = 0; s < sequences; ++s) {
    for (int32_t b = 0; b < blocks_per_sequence; ++b) {
      tables[s][b] = s * blocks_per_sequence + blocks_per_sequence - 1 - b;
    }
    SequenceChunk prompt;
    for (int32_t i = 0; i < shape.prompt_lengths[s]; ++i) prompt.tokens.push_back(token(generator));
    prompt.block_table = tables[s];
    for (Transformer* model : {cuda.get(), reference.get()}) {
      auto result = model->Forward(std::span(&prompt, 1));
      ASSERT_TRUE(result.ok()) << result.status();
      next[s] = (*result)[0].sampled.token;  // the reference's, run last
    }
    length[s] = shape.prompt_lengths[s];
  }
  auto step = [&](std::vector<int32_t> rows, const std::string& what, double& worst, int& flips) {
    std::vector<SequenceChunk> chunks;
    for (int32_t s : rows) {
      SequenceChunk chunk;
      chunk.tokens = {next[s]};
      chunk.start_position = length[s];
      chunk.block_table = tables[s];
      chunk.return_logits = true;
      chunks.push_back(std::move(chunk));
    }
    auto ours = cuda->Forward(chunks);
    auto expected = reference->Forward(chunks);
    ASSERT_TRUE(ours.ok() && expected.ok()) << ours.status() << expected.status();
    ExpectClose(*ours, *expected, what, worst, flips);
    for (size_t i = 0; i < rows.size(); ++i) {
      next[rows[i]] = (*expected)[i].sampled.token;
      ++length[rows[i]];
    }
  };
  double worst_alone = 0, worst_batched = 0;
  int flips = 0;
  for (int32_t s = 0; s < sequences; ++s) {
    for (int i = 0; i < kSteps; ++i) {
      step({s}, std::string(shape.name) + " alone, context " + std::to_string(length[s]),
           worst_alone, flips);
    }
  }
  std::vector<int32_t> all(sequences);
  for (int32_t s = 0; s < sequences; ++s) all[s] = s;
  for (int i = 0; i < kSteps; ++i) {
    step(all, std::string(shape.name) + " batch of " + std::to_string(sequences), worst_batched,
         flips);
  }
  std::printf(
      "    %-10s %d sequences, %d steps alone + %d together: relative error vs the CPU reference "
      "<= %.3e alone, %.3e together; near-tie flips %d\n",
      shape.name, sequences, kSteps, kSteps, worst_alone, worst_batched, flips);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuWideModelTest,
    ::testing::Values(
        // 1024 wide, GQA 16:4, head_dim 64; 6 sequences decode together through cuBLASLt.
        Shape{"d64_gqa4", 1024, 2816, 16, 4, 64, 8000, 3, 0.03f, {5, 300, 500, 1000, 33, 64}},
        // head_dim 128, GQA 8:2, odd lengths up to 2116 (long-context split-KV); 3 together.
        Shape{"d128_gqa4", 512, 1408, 8, 2, 128, 4000, 2, 0.045f, {1, 77, 2100}},
        // One kv head (MQA 4:1).
        Shape{"d64_mqa", 256, 768, 4, 1, 64, 1000, 2, 0.06f, {40, 1500}}),
    [](const ::testing::TestParamInfo<Shape>& info) { return info.param.name; });

}  // namespace
}  // namespace llm
