// BuildStepBatch: how a step's chunks become the flat arrays the attention ops read, and which rows
// get logits, checked against positions and slots worked out by hand.
#include <vector>

#include "gtest/gtest.h"
#include "server/model/step_batch.h"

namespace llm {
namespace {

StepLimits Limits() {
  return StepLimits{.vocab_size = 50,
                    .max_position_embeddings = 128,
                    .kv_num_blocks = 20,
                    .kv_block_size = 4,
                    .max_batch_tokens = 32,
                    .max_batch_sequences = 4,
                    .max_blocks_per_sequence = 32};
}

SequenceChunk MakeChunk(std::vector<int32_t> tokens, int32_t start, std::vector<int32_t> table,
                        bool sample, bool return_logits) {
  SequenceChunk chunk;
  chunk.tokens = std::move(tokens);
  chunk.start_position = start;
  chunk.block_table = std::move(table);
  chunk.sample = sample;
  chunk.return_logits = return_logits;
  return chunk;
}

TEST(StepBatchTest, FlattensChunksWithSlotsFromTheirBlockTables) {
  // Chunk 0: positions 6..8 of a sequence in blocks {7, 3, 11} (block size 4). Chunk 1: a decode at
  // position 2 in block {5}; its table carries an unused extra block.
  const std::vector<SequenceChunk> chunks = {MakeChunk({10, 11, 12}, 6, {7, 3, 11}, true, false),
                                             MakeChunk({13}, 2, {5, 9}, true, false)};
  absl::StatusOr<StepBatch> step = BuildStepBatch(chunks, Limits());
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(step->token_ids, (std::vector<int32_t>{10, 11, 12, 13}));
  EXPECT_EQ(step->positions, (std::vector<int32_t>{6, 7, 8, 2}));
  // position 6 -> block 3 slot 2 = 14; 7 -> 15; 8 -> block 11 slot 0 = 44; 2 -> block 5 slot 2
  // = 22.
  EXPECT_EQ(step->slot_mapping, (std::vector<int32_t>{14, 15, 44, 22}));
  EXPECT_EQ(step->query_start, (std::vector<int32_t>{0, 3, 4}));
  EXPECT_EQ(step->kv_lens, (std::vector<int32_t>{9, 3}));
  EXPECT_EQ(step->block_table_stride, 3);
  // Only the blocks covering each sequence are copied; the rest of a row is padded with block 0.
  EXPECT_EQ(step->block_tables, (std::vector<int32_t>{7, 3, 11, 5, 0, 0}));
  EXPECT_EQ(step->max_query_len, 3);
  EXPECT_EQ(step->min_query_len, 1);
  EXPECT_EQ(step->max_kv_len, 9);
}

TEST(StepBatchTest, SamplingRowsComeFirstThenEveryRowOfChunksReturningLogits) {
  const std::vector<SequenceChunk> chunks = {
      MakeChunk({1, 2, 3}, 0, {0}, true, true), MakeChunk({4, 5}, 0, {1}, false, false),
      MakeChunk({6, 7}, 0, {2}, true, false), MakeChunk({8, 9}, 0, {3}, false, true)};
  absl::StatusOr<StepBatch> step = BuildStepBatch(chunks, Limits());
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(step->num_sample_rows, 2);
  EXPECT_EQ(step->sample_chunk, (std::vector<int32_t>{0, 2}));
  // Rows: chunk 0 is 0..2, chunk 1 is 3..4, chunk 2 is 5..6, chunk 3 is 7..8.
  EXPECT_EQ(step->logit_rows, (std::vector<int32_t>{2, 6, 0, 1, 2, 7, 8}));
  const std::vector<std::pair<int32_t, int32_t>> destinations = {
      {0, 0}, {0, 1}, {0, 2}, {3, 0}, {3, 1}};
  EXPECT_EQ(step->logits_destination, destinations);
}

TEST(StepBatchTest, ErrorsNameTheChunkAndTheLimit) {
  const std::vector<SequenceChunk> chunks = {MakeChunk({1}, 0, {0}, true, false),
                                             MakeChunk({1, 2}, 3, {4}, true, false)};
  absl::StatusOr<StepBatch> step = BuildStepBatch(chunks, Limits());
  ASSERT_EQ(step.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(step.status().message().find("chunk 1"), std::string::npos) << step.status();
  EXPECT_NE(step.status().message().find("block_table"), std::string::npos) << step.status();
}

}  // namespace
}  // namespace llm
