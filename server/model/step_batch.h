// The host-side plan of one Forward() step: the chunks validated against the model's limits and
// flattened into the arrays that AttentionBatch points at, plus which rows need logits and why.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/sampling.h"
#include "server/model/transformer.h"

namespace llm {

struct StepLimits {
  int32_t vocab_size = 0;
  int32_t max_position_embeddings = 0;
  int32_t kv_num_blocks = 0;
  int32_t kv_block_size = 0;
  int32_t max_batch_tokens = 0;
  int32_t max_batch_sequences = 0;
  int32_t max_blocks_per_sequence = 0;  // capacity of one row of the block-table buffer
};

struct StepBatch {
  // Per query token, in chunk order.
  std::vector<int32_t> token_ids;
  std::vector<int32_t> positions;
  std::vector<int32_t> slot_mapping;
  // Per chunk (= sequence of the step).
  std::vector<int32_t> query_start;   // [num_chunks + 1]
  std::vector<int32_t> kv_lens;       // [num_chunks]
  std::vector<int32_t> block_tables;  // [num_chunks, block_table_stride], padded with block 0
  int32_t block_table_stride = 0;
  int32_t max_query_len = 0;
  int32_t min_query_len = 0;
  int32_t max_kv_len = 0;

  // Token rows whose logits are computed: first one row per sampling chunk (its last token), then
  // every row of each chunk that returns logits. Sampling rows first so they form one Sample call.
  std::vector<int32_t> logit_rows;
  int32_t num_sample_rows = 0;
  std::vector<int32_t> sample_chunk;  // [num_sample_rows] chunk that each sample row answers
  std::vector<SamplingParams> sample_params;  // [num_sample_rows]
  // For the remaining logit rows: (chunk, token index inside the chunk).
  std::vector<std::pair<int32_t, int32_t>> logits_destination;

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_sequences() const { return static_cast<int32_t>(kv_lens.size()); }
};

// InvalidArgument, naming the chunk and what to fix, when a chunk is empty, has a token outside the
// vocabulary, reaches beyond max_position_embeddings, has a block table that does not cover its
// positions or names a block outside the pool, has sampling parameters out of range, or when the
// step holds more tokens or chunks than the model was sized for.
absl::StatusOr<StepBatch> BuildStepBatch(std::span<const SequenceChunk> chunks,
                                         const StepLimits& limits);

}  // namespace llm
