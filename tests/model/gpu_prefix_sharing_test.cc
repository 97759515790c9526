// Prefix sharing on the CUDA backend: a sequence that maps another sequence's full KV blocks (as the
// prefix cache does) and prefills only its own suffix gets the logits it would get with private
// blocks, also when the sharing prefill runs in one step with the owner's decode; and reading a
// shared block never changes it. Fixtures: tests/fixtures/hf (every one; skips without a GPU).
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "server/model/checkpoint.h"
#include "server/model/transformer.h"
#include "tests/kernels/gpu/gpu_test_util.h"

namespace llm {
namespace {

constexpr int32_t kBlockSize = 16;
constexpr double kTolerance = 1e-2;  // the kernels' bf16 tolerance: different batches, same math

std::filesystem::path Fixtures() {
  const std::filesystem::path built = std::filesystem::path(LLM_FIXTURES_DIR) / "hf";
  return std::filesystem::is_directory(built) ? built : std::filesystem::path("tests/fixtures/hf");
}

std::vector<float> Rows(const std::vector<float>& logits, int32_t vocab, int32_t first) {
  return std::vector<float>(logits.begin() + static_cast<size_t>(first) * vocab, logits.end());
}

SequenceChunk Chunk(std::vector<int32_t> tokens, int32_t start, std::vector<int32_t> table) {
  SequenceChunk chunk;
  chunk.tokens = std::move(tokens);
  chunk.start_position = start;
  chunk.block_table = std::move(table);
  chunk.sample = false;
  chunk.return_logits = true;
  return chunk;
}

TEST(GpuPrefixSharingTest, SharedFullBlocksGiveTheLogitsOfPrivateBlocks) {
  SKIP_WITHOUT_GPU();
  ASSERT_TRUE(std::filesystem::is_directory(Fixtures()));
  int fixtures = 0;
  for (const auto& entry : std::filesystem::directory_iterator(Fixtures())) {
    auto checkpoint = Checkpoint::Open(entry.path());
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    auto backend = CreateCudaBackend();
    ASSERT_TRUE(backend.ok()) << backend.status();
    auto model = Transformer::Create(**checkpoint, **backend,
                                     {.kv_num_blocks = 32, .kv_block_size = kBlockSize,
                                      .max_batch_tokens = 128, .max_batch_sequences = 4});
    ASSERT_TRUE(model.ok()) << model.status();
    Transformer& transformer = **model;
    const int32_t vocab = transformer.config().vocab_size;
    SCOPED_TRACE(entry.path().filename().string());
    ++fixtures;

    std::mt19937 rng(fixtures);
    std::uniform_int_distribution<int32_t> token(0, vocab - 1);
    std::vector<int32_t> owner(40), reader(52);
    for (auto& t : owner) t = token(rng);
    for (size_t i = 0; i < reader.size(); ++i) reader[i] = i < 32 ? owner[i] : token(rng);
    const std::vector<int32_t> reader_suffix(reader.begin() + 32, reader.end());

    // The owner fills blocks 0, 1 (full, shareable) and 2 (its partial tail).
    ASSERT_TRUE(transformer.Forward(std::vector{Chunk(owner, 0, {0, 1, 2})}).ok());
    const SequenceChunk owner_decode = Chunk({token(rng)}, 40, {0, 1, 2});
    auto owner_before = transformer.Forward(std::vector{owner_decode});
    ASSERT_TRUE(owner_before.ok());

    // The reader alone on private blocks: the reference.
    auto private_run = transformer.Forward(std::vector{Chunk(reader, 0, {20, 21, 22, 23})});
    ASSERT_TRUE(private_run.ok());
    const std::vector<float> want = Rows((*private_run)[0].logits, vocab, 32);

    // The reader maps the owner's two full blocks and prefills only its suffix.
    auto shared_run = transformer.Forward(std::vector{Chunk(reader_suffix, 32, {0, 1, 10, 11})});
    ASSERT_TRUE(shared_run.ok());
    EXPECT_LT(gpu_testing::RelativeError((*shared_run)[0].logits, want), kTolerance);

    // The same in one step with the owner's decode reading the same blocks.
    auto mixed = transformer.Forward(
        std::vector{owner_decode, Chunk(reader_suffix, 32, {0, 1, 12, 13})});
    ASSERT_TRUE(mixed.ok());
    EXPECT_LT(gpu_testing::RelativeError((*mixed)[1].logits, want), kTolerance);
    EXPECT_LT(gpu_testing::RelativeError((*mixed)[0].logits, (*owner_before)[0].logits), kTolerance);

    // Reading never wrote the shared blocks: the owner's decode (rewriting its own slot 40 in block 2
    // with the same K/V) is bit-identical to the one before any sharing.
    auto owner_after = transformer.Forward(std::vector{owner_decode});
    ASSERT_TRUE(owner_after.ok());
    EXPECT_EQ((*owner_after)[0].logits, (*owner_before)[0].logits);
  }
  EXPECT_GE(fixtures, 5);
}

}  // namespace
}  // namespace llm
