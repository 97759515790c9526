// The transformer forward gives the same logits however a sequence's tokens are split into steps
// (one-shot, chunks ending mid-block, token by token), whatever else shares the step (batch
// invariance), and wherever its KV blocks physically live; and it rejects malformed chunks.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/model/transformer.h"
#include "tests/model/fake_checkpoint.h"

namespace llm {
namespace {

constexpr int32_t kBlockSize = 4;
constexpr int32_t kNumBlocks = 96;

// Hands out physical blocks in a shuffled order, so consecutive logical blocks are not adjacent.
class BlockSource {
 public:
  explicit BlockSource(uint32_t seed) : free_(kNumBlocks) {
    std::iota(free_.begin(), free_.end(), 0);
    std::shuffle(free_.begin(), free_.end(), std::mt19937(seed));
  }
  std::vector<int32_t> Take(int32_t tokens) {
    const int32_t blocks = (tokens + kBlockSize - 1) / kBlockSize;
    EXPECT_LE(blocks, static_cast<int32_t>(free_.size())) << "test ran out of KV blocks";
    std::vector<int32_t> table(free_.end() - blocks, free_.end());
    free_.resize(free_.size() - blocks);
    return table;
  }

 private:
  std::vector<int32_t> free_;
};

class TransformerConsistencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    checkpoint_ = std::make_unique<testing::FakeCheckpoint>(testing::SmallLlamaConfig(), 42);
    backend_ = CreateCpuBackend(2);
    transformer_ = NewTransformer();
  }

  // The options every model of these tests shares.
  static TransformerOptions Options(int32_t max_batch_tokens = 64,
                                    int32_t max_batch_sequences = 8) {
    TransformerOptions options;
    options.kv_num_blocks = kNumBlocks;
    options.kv_block_size = kBlockSize;
    options.max_batch_tokens = max_batch_tokens;
    options.max_batch_sequences = max_batch_sequences;
    return options;
  }

  std::unique_ptr<Transformer> NewTransformer(int32_t max_batch_tokens = 64,
                                              int32_t max_batch_sequences = 8) {
    const TransformerOptions options = Options(max_batch_tokens, max_batch_sequences);
    absl::StatusOr<std::unique_ptr<Transformer>> transformer =
        Transformer::Create(*checkpoint_, *backend_, options);
    EXPECT_TRUE(transformer.ok()) << transformer.status();
    return transformer.ok() ? std::move(*transformer) : nullptr;
  }

  std::vector<int32_t> Prompt(int32_t length, uint32_t seed) const {
    std::mt19937 generator(seed);
    std::uniform_int_distribution<int32_t> token(0, checkpoint_->config().vocab_size - 1);
    std::vector<int32_t> prompt(length);
    for (int32_t& t : prompt) t = token(generator);
    return prompt;
  }

  static SequenceChunk Chunk(const std::vector<int32_t>& prompt, int32_t begin, int32_t end,
                             const std::vector<int32_t>& block_table) {
    SequenceChunk chunk;
    chunk.tokens.assign(prompt.begin() + begin, prompt.begin() + end);
    chunk.start_position = begin;
    chunk.block_table = block_table;
    chunk.return_logits = true;
    return chunk;
  }

  // Prefills `prompt` into `block_table` in steps of the given sizes and returns all logits, in
  // order.
  std::vector<float> PrefillInPieces(Transformer& transformer, const std::vector<int32_t>& prompt,
                                     const std::vector<int32_t>& piece_sizes,
                                     const std::vector<int32_t>& block_table) {
    std::vector<float> logits;
    int32_t begin = 0;
    for (int32_t size : piece_sizes) {
      const SequenceChunk chunk = Chunk(prompt, begin, begin + size, block_table);
      absl::StatusOr<std::vector<ChunkResult>> result = transformer.Forward(std::span(&chunk, 1));
      EXPECT_TRUE(result.ok()) << result.status();
      if (!result.ok()) return {};
      logits.insert(logits.end(), (*result)[0].logits.begin(), (*result)[0].logits.end());
      begin += size;
    }
    EXPECT_EQ(begin, static_cast<int32_t>(prompt.size()));
    return logits;
  }

  static double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    double diff = 0.0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
      diff = std::max(diff, std::abs(double(a[i]) - b[i]));
    return diff;
  }

  std::unique_ptr<testing::FakeCheckpoint> checkpoint_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Transformer> transformer_;
};

TEST_F(TransformerConsistencyTest, ChunkedAndTokenByTokenPrefillMatchOneShot) {
  const std::vector<int32_t> prompt = Prompt(19, 1);
  BlockSource blocks(7);
  const std::vector<float> one_shot = PrefillInPieces(*transformer_, prompt, {19}, blocks.Take(19));
  ASSERT_EQ(one_shot.size(), 19u * 100);
  // Pieces ending mid-block (block size 4): 5 | 6 | 3 | 5.
  const std::vector<float> chunked =
      PrefillInPieces(*transformer_, prompt, {5, 6, 3, 5}, blocks.Take(19));
  const std::vector<float> token_by_token =
      PrefillInPieces(*transformer_, prompt, std::vector<int32_t>(19, 1), blocks.Take(19));
  EXPECT_LT(MaxAbsDiff(chunked, one_shot), 1e-4);
  EXPECT_LT(MaxAbsDiff(token_by_token, one_shot), 1e-4);
  // The logits are not trivially equal across positions (the comparison above means something).
  EXPECT_GT(MaxAbsDiff(std::vector<float>(one_shot.begin(), one_shot.begin() + 100),
                       std::vector<float>(one_shot.begin() + 100, one_shot.begin() + 200)),
            0.1);
}

TEST_F(TransformerConsistencyTest, MixedBatchMatchesEachSequenceAlone) {
  const std::vector<int32_t> a = Prompt(11, 2), b = Prompt(6, 3), c = Prompt(9, 4);
  BlockSource blocks(8);

  // Reference: each sequence alone, a and b prefilled up to their last token, which is then
  // decoded.
  std::vector<float> a_alone = PrefillInPieces(*transformer_, a, {10, 1}, blocks.Take(11));
  std::vector<float> b_alone = PrefillInPieces(*transformer_, b, {5, 1}, blocks.Take(6));
  const std::vector<float> c_alone = PrefillInPieces(*transformer_, c, {9}, blocks.Take(9));

  // Batched: a and b prefilled (together) up to their last token, then one step with a's decode,
  // c's whole prefill and b's decode.
  const std::vector<int32_t> a_table = blocks.Take(11), b_table = blocks.Take(6),
                             c_table = blocks.Take(9);
  std::vector<SequenceChunk> prefill = {Chunk(a, 0, 10, a_table), Chunk(b, 0, 5, b_table)};
  ASSERT_TRUE(transformer_->Forward(prefill).ok());
  std::vector<SequenceChunk> mixed = {Chunk(a, 10, 11, a_table), Chunk(c, 0, 9, c_table),
                                      Chunk(b, 5, 6, b_table)};
  absl::StatusOr<std::vector<ChunkResult>> result = transformer_->Forward(mixed);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LT(MaxAbsDiff((*result)[0].logits, std::vector<float>(a_alone.end() - 100, a_alone.end())),
            1e-4);
  EXPECT_LT(MaxAbsDiff((*result)[1].logits, c_alone), 1e-4);
  EXPECT_LT(MaxAbsDiff((*result)[2].logits, std::vector<float>(b_alone.end() - 100, b_alone.end())),
            1e-4);
  // Sampled tokens answer their own chunk: greedy = argmax of that chunk's last logits row.
  for (size_t i = 0; i < mixed.size(); ++i) {
    const std::vector<float>& logits = (*result)[i].logits;
    const auto last_row = logits.end() - 100;
    EXPECT_EQ((*result)[i].sampled.token, std::max_element(last_row, logits.end()) - last_row)
        << "chunk " << i;
  }
}

TEST_F(TransformerConsistencyTest, PhysicalBlockPlacementDoesNotChangeResults) {
  const std::vector<int32_t> prompt = Prompt(14, 5);
  BlockSource first(100), second(200);
  const std::vector<int32_t> table_one = first.Take(14), table_two = second.Take(14);
  ASSERT_NE(table_one, table_two);
  const std::vector<float> one = PrefillInPieces(*transformer_, prompt, {9, 5}, table_one);
  const std::vector<float> two = PrefillInPieces(*transformer_, prompt, {9, 5}, table_two);
  EXPECT_EQ(one, two);  // same arithmetic, only addresses differ: bit-identical
}

TEST_F(TransformerConsistencyTest, SampledTokenFollowsGreedyArgmaxAndReportsRawLogprob) {
  const std::vector<int32_t> prompt = Prompt(8, 6);
  BlockSource blocks(9);
  SequenceChunk chunk = Chunk(prompt, 0, 8, blocks.Take(8));
  chunk.sampling.num_top_logprobs = 3;
  absl::StatusOr<std::vector<ChunkResult>> result = transformer_->Forward(std::span(&chunk, 1));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::vector<float> last((*result)[0].logits.end() - 100, (*result)[0].logits.end());
  const int32_t argmax =
      static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
  double sum = 0.0;
  for (float l : last) sum += std::exp(double(l) - last[argmax]);
  EXPECT_EQ((*result)[0].sampled.token, argmax);
  EXPECT_NEAR((*result)[0].sampled.logprob, -std::log(sum), 1e-5);
  ASSERT_EQ((*result)[0].sampled.top_logprobs.size(), 3u);
  EXPECT_EQ((*result)[0].sampled.top_logprobs[0].first, argmax);
}

TEST_F(TransformerConsistencyTest, StepsLargerThanTheLogitBufferReturnEveryRow) {
  // max_batch_sequences 2 makes the LM head run in groups of 2 rows; 7 logit rows need 4 groups.
  std::unique_ptr<Transformer> small_groups = NewTransformer(64, 2);
  const std::vector<int32_t> prompt = Prompt(7, 10);
  BlockSource blocks(11);
  const std::vector<float> grouped = PrefillInPieces(*small_groups, prompt, {7}, blocks.Take(7));
  const std::vector<float> reference = PrefillInPieces(*transformer_, prompt, {7}, blocks.Take(7));
  EXPECT_LT(MaxAbsDiff(grouped, reference), 1e-5);
}

TEST_F(TransformerConsistencyTest, InvalidChunksAreRejectedWithInvalidArgument) {
  BlockSource blocks(12);
  const std::vector<int32_t> table = blocks.Take(64);
  const auto expect_invalid = [&](std::vector<SequenceChunk> chunks, const char* what) {
    absl::StatusOr<std::vector<ChunkResult>> result = transformer_->Forward(chunks);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
        << what << ": " << result.status();
  };
  SequenceChunk good;
  good.tokens = {1, 2, 3};
  good.block_table = table;
  ASSERT_TRUE(transformer_->Forward(std::vector<SequenceChunk>{good}).ok());

  SequenceChunk bad = good;
  bad.tokens = {1, 100};
  expect_invalid({bad}, "token id equal to vocab_size");
  bad.tokens = {-1};
  expect_invalid({bad}, "negative token id");
  bad = good;
  bad.tokens.clear();
  expect_invalid({bad}, "empty chunk");
  bad = good;
  bad.start_position = 3;
  bad.block_table = {table[0]};  // positions 0..5 need 2 blocks of 4
  expect_invalid({bad}, "block table too short");
  bad.block_table = {table[0], kNumBlocks};
  expect_invalid({bad}, "block id outside the pool");
  bad = good;
  bad.start_position = 255;  // positions 255..257 with max_position_embeddings 256
  expect_invalid({bad}, "beyond max_position_embeddings");
  bad = good;
  bad.tokens.assign(65, 1);  // max_batch_tokens is 64
  expect_invalid({bad}, "too many tokens in one chunk");
  expect_invalid(std::vector<SequenceChunk>(9, good), "more chunks than max_batch_sequences");
  std::vector<SequenceChunk> too_many_tokens(3, good);
  for (SequenceChunk& c : too_many_tokens) c.tokens.assign(22, 1);
  expect_invalid(too_many_tokens, "66 tokens over three chunks");
  bad = good;
  bad.sampling.temperature = 1.0f;
  bad.sampling.top_p = 0.0f;
  expect_invalid({bad}, "top_p of zero");
}

TEST(KvBlockBytesTest, CountsKeyAndValueOfEveryLayer) {
  const ModelConfig config = testing::SmallLlamaConfig();
  // 2 (K, V) x 2 layers x 2 kv heads x 16 dims x 4 slots x 4 bytes.
  EXPECT_EQ(KvBlockBytes(config, 4, DType::kF32), 2u * 2 * 2 * 16 * 4 * 4);
  EXPECT_EQ(KvBlockBytes(config, 16, DType::kBF16), 2u * 2 * 2 * 16 * 16 * 2);
}

TEST_F(TransformerConsistencyTest, ReportsKvCacheBytesFromItsLayout) {
  EXPECT_EQ(transformer_->kv_cache_bytes(),
            kNumBlocks * KvBlockBytes(checkpoint_->config(), kBlockSize, DType::kF32));
  EXPECT_EQ(transformer_->kv_layout().num_blocks, kNumBlocks);
  EXPECT_EQ(transformer_->kv_layout().block_size, kBlockSize);
  EXPECT_EQ(transformer_->weight_bytes(), checkpoint_->stored_bytes());  // F32 stored, F32 on CPU
  EXPECT_GT(transformer_->workspace_bytes(), 0u);
}

// The RMSNorm gains folded into qkv_proj / gate_up_proj (the CUDA backend's default) give the
// separate norms' logits up to fp32 rounding: prefill in pieces (the plain path) and decode steps
// of a batch of two, where the fake checkpoint's gains (0.2 spread around 1) make a wrong fold
// show.
TEST_F(TransformerConsistencyTest, FoldedNormGainsMatchSeparateNorms) {
  TransformerOptions options = Options();
  options.norm_gains = TransformerOptions::NormGains::kSeparate;
  auto separate = Transformer::Create(*checkpoint_, *backend_, options);
  ASSERT_TRUE(separate.ok()) << separate.status();
  options.norm_gains = TransformerOptions::NormGains::kFolded;
  auto folded = Transformer::Create(*checkpoint_, *backend_, options);
  ASSERT_TRUE(folded.ok()) << folded.status();

  BlockSource blocks(11);
  const std::vector<int32_t> first = Prompt(33, 21), second = Prompt(12, 22);
  const std::vector<int32_t> first_table = blocks.Take(33), second_table = blocks.Take(12);
  const std::vector<float> separate_logits =
      PrefillInPieces(**separate, std::vector<int32_t>(first.begin(), first.begin() + 30),
                      {13, 1, 16}, first_table);
  const std::vector<float> folded_logits = PrefillInPieces(
      **folded, std::vector<int32_t>(first.begin(), first.begin() + 30), {13, 1, 16}, first_table);
  double largest = 0.0;
  for (float v : separate_logits) largest = std::max(largest, double{std::abs(v)});
  ASSERT_GT(largest, 0.1);
  EXPECT_LT(MaxAbsDiff(folded_logits, separate_logits), 1e-4 * largest);

  // The second prompt's prefill, then three steps decoding both sequences together.
  for (Transformer* model : {separate->get(), folded->get()}) {
    const SequenceChunk chunk = Chunk(second, 0, 9, second_table);
    ASSERT_TRUE(model->Forward(std::span(&chunk, 1)).ok());
  }
  for (int32_t step = 0; step < 3; ++step) {
    const std::vector<SequenceChunk> chunks = {Chunk(first, 30 + step, 31 + step, first_table),
                                               Chunk(second, 9 + step, 10 + step, second_table)};
    auto a = (*separate)->Forward(chunks);
    auto b = (*folded)->Forward(chunks);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    for (size_t s = 0; s < chunks.size(); ++s) {
      EXPECT_LT(MaxAbsDiff((*b)[s].logits, (*a)[s].logits), 1e-4 * largest)
          << "step " << step << " sequence " << s;
    }
  }
}

// The padded decode plan (what the CUDA backend records as graphs), run eagerly on the CPU: a
// decode batch of 3 (padded to 4, dummy rows in the scratch block) and each sequence alone give the
// plain path's logits and tokens, also past a KV-length bucket boundary (64).
TEST_F(TransformerConsistencyTest, PaddedDecodePlanMatchesThePlainPath) {
  TransformerOptions options = Options();
  options.decode_graphs = TransformerOptions::DecodeGraphs::kBucketedEager;
  auto padded = Transformer::Create(*checkpoint_, *backend_, options);
  ASSERT_TRUE(padded.ok()) << padded.status();
  options.decode_graphs = TransformerOptions::DecodeGraphs::kOff;
  auto plain = Transformer::Create(*checkpoint_, *backend_, options);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ((*padded)->kv_layout().num_blocks, kNumBlocks);  // the scratch block stays internal

  BlockSource blocks(7);
  constexpr int32_t kSteps = 6;
  const std::vector<int32_t> lengths = {60, 9, 23};  // 60 + 6 crosses the 64-token KV bucket
  std::vector<std::vector<int32_t>> prompts, tables;
  for (size_t s = 0; s < lengths.size(); ++s) {
    prompts.push_back(Prompt(lengths[s] + kSteps, 100 + s));
    tables.push_back(blocks.Take(lengths[s] + kSteps));
  }
  for (Transformer* model : {padded->get(), plain->get()}) {
    for (size_t s = 0; s < lengths.size(); ++s) {
      const SequenceChunk chunk = Chunk(prompts[s], 0, lengths[s], tables[s]);
      ASSERT_TRUE(model->Forward(std::span(&chunk, 1)).ok());
    }
  }
  for (int32_t step = 0; step < kSteps; ++step) {
    std::vector<SequenceChunk> chunks;
    for (size_t s = 0; s < lengths.size(); ++s) {
      chunks.push_back(Chunk(prompts[s], lengths[s] + step, lengths[s] + step + 1, tables[s]));
    }
    auto a = (*padded)->Forward(chunks);
    auto b = (*plain)->Forward(chunks);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    for (size_t s = 0; s < chunks.size(); ++s) {
      EXPECT_LT(MaxAbsDiff((*a)[s].logits, (*b)[s].logits), 1e-4) << "step " << step;
      EXPECT_EQ((*a)[s].sampled.token, (*b)[s].sampled.token);
    }
  }
  // Alone (bucket 1) on the padded model: rewrites the last step's slots with the same tokens.
  const SequenceChunk last =
      Chunk(prompts[1], lengths[1] + kSteps - 1, lengths[1] + kSteps, tables[1]);
  auto alone = (*padded)->Forward(std::span(&last, 1));
  auto reference = (*plain)->Forward(std::span(&last, 1));
  ASSERT_TRUE(alone.ok() && reference.ok());
  EXPECT_LT(MaxAbsDiff((*alone)[0].logits, (*reference)[0].logits), 1e-4);
}

}  // namespace
}  // namespace llm
