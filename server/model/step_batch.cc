// BuildStepBatch: validation first (every message says which chunk and what to change), then the
// flattening, with slots found through kvcache/kv_layout.h.
#include "server/model/step_batch.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kvcache/kv_layout.h"

namespace llm {
namespace {

int32_t BlocksFor(int32_t tokens, int32_t block_size) {
  return (tokens + block_size - 1) / block_size;
}

absl::Status ValidateChunk(const SequenceChunk& chunk, size_t index, const StepLimits& limits) {
  const std::string name = absl::StrCat("chunk ", index);
  if (chunk.tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " has no tokens; drop it from the batch"));
  }
  if (chunk.start_position < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " has negative start_position ", chunk.start_position));
  }
  const int64_t end_position = static_cast<int64_t>(chunk.start_position) + chunk.tokens.size();
  if (end_position > limits.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " reaches position ", end_position - 1, " but the model supports positions below ",
        limits.max_position_embeddings, " (max_position_embeddings); shorten the sequence"));
  }
  for (size_t t = 0; t < chunk.tokens.size(); ++t) {
    if (chunk.tokens[t] < 0 || chunk.tokens[t] >= limits.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " token ", t, " has id ", chunk.tokens[t],
                       " outside the vocabulary [0, ", limits.vocab_size, ")"));
    }
  }
  const int32_t blocks_needed = BlocksFor(static_cast<int32_t>(end_position), limits.kv_block_size);
  if (static_cast<int32_t>(chunk.block_table.size()) < blocks_needed) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " covers positions [0, ", end_position, ") which need ", blocks_needed,
                     " KV blocks of ", limits.kv_block_size, " slots, but its block_table has ",
                     chunk.block_table.size(), "; allocate the blocks before the step"));
  }
  for (int32_t b = 0; b < blocks_needed; ++b) {
    if (chunk.block_table[b] < 0 || chunk.block_table[b] >= limits.kv_num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " block_table[", b, "] = ", chunk.block_table[b],
                       " is outside the KV pool [0, ", limits.kv_num_blocks, ")"));
    }
  }
  if (chunk.sample) {
    const SamplingParams& s = chunk.sampling;
    if (!(s.temperature >= 0.0f) || !std::isfinite(s.temperature) ||
        !(s.top_p > 0.0f && s.top_p <= 1.0f) || s.top_k < 0 || s.num_top_logprobs < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, " has sampling parameters out of range (temperature ", s.temperature, ", top_p ",
          s.top_p, ", top_k ", s.top_k, ", num_top_logprobs ", s.num_top_logprobs,
          "); need a finite temperature >= 0, 0 < top_p <= 1, top_k >= 0, num_top_logprobs >= 0"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<StepBatch> BuildStepBatch(std::span<const SequenceChunk> chunks,
                                         const StepLimits& limits) {
  if (static_cast<int64_t>(chunks.size()) > limits.max_batch_sequences) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the step has ", chunks.size(), " chunks but the model was created for at most ",
        limits.max_batch_sequences, " (max_batch_sequences); split the batch"));
  }
  int64_t total_tokens = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (absl::Status status = ValidateChunk(chunks[c], c, limits); !status.ok()) return status;
    total_tokens += static_cast<int64_t>(chunks[c].tokens.size());
  }
  if (total_tokens > limits.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the step has ", total_tokens, " tokens but the model was created for at most ",
        limits.max_batch_tokens, " (max_batch_tokens); split the prefill into smaller chunks"));
  }

  StepBatch step;
  step.query_start.push_back(0);
  for (const SequenceChunk& chunk : chunks) {
    const int32_t kv_len = chunk.start_position + static_cast<int32_t>(chunk.tokens.size());
    step.block_table_stride =
        std::max(step.block_table_stride, BlocksFor(kv_len, limits.kv_block_size));
  }
  if (step.block_table_stride > limits.max_blocks_per_sequence) {
    return absl::InvalidArgumentError(absl::StrCat("a chunk needs ", step.block_table_stride,
                                                   " KV blocks but a sequence can hold at most ",
                                                   limits.max_blocks_per_sequence));
  }
  step.block_tables.assign(static_cast<size_t>(chunks.size()) * step.block_table_stride, 0);

  for (size_t c = 0; c < chunks.size(); ++c) {
    const SequenceChunk& chunk = chunks[c];
    const int32_t length = static_cast<int32_t>(chunk.tokens.size());
    const int32_t kv_len = chunk.start_position + length;
    const int32_t first_row = step.query_start.back();
    std::copy_n(chunk.block_table.begin(), BlocksFor(kv_len, limits.kv_block_size),
                step.block_tables.begin() + static_cast<int64_t>(c) * step.block_table_stride);
    for (int32_t t = 0; t < length; ++t) {
      const int32_t position = chunk.start_position + t;
      step.token_ids.push_back(chunk.tokens[t]);
      step.positions.push_back(position);
      step.slot_mapping.push_back(
          kvcache::FlatSlot(chunk.block_table.data(), limits.kv_block_size, position));
    }
    step.query_start.push_back(first_row + length);
    step.kv_lens.push_back(kv_len);
    step.max_query_len = std::max(step.max_query_len, length);
    step.min_query_len = c == 0 ? length : std::min(step.min_query_len, length);
    step.max_kv_len = std::max(step.max_kv_len, kv_len);
    if (chunk.sample) {
      step.logit_rows.push_back(first_row + length - 1);
      step.sample_chunk.push_back(static_cast<int32_t>(c));
      step.sample_params.push_back(chunk.sampling);
    }
  }
  step.num_sample_rows = static_cast<int32_t>(step.logit_rows.size());
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (!chunks[c].return_logits) continue;
    for (int32_t t = 0; t < static_cast<int32_t>(chunks[c].tokens.size()); ++t) {
      step.logit_rows.push_back(step.query_start[c] + t);
      step.logits_destination.emplace_back(static_cast<int32_t>(c), t);
    }
  }
  return step;
}

}  // namespace llm
