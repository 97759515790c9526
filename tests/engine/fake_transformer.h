// A stand-in for the Transformer that makes the engine's bookkeeping observable.
//
// Its "KV cache" is one int per slot: Forward writes each chunk's tokens into the slots its block
// table names (through kv_layout.h, like the real kernels), then derives the sampled token from the
// tokens it reads back through the table for positions [0, end). A wrong block table, a block shared
// by two live sequences or a position off by one therefore changes the token, and the tests compare
// against ExpectedNextToken(history) computed from what the client sent. It also records every step's
// chunks, can hold a step (Pause/Resume) so a test can line up concurrent requests, and can fail a step.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/cpu_backend.h"
#include "kvcache/kv_layout.h"
#include "server/model/transformer.h"

namespace llm::engine::testing {

struct FakeModelShape {
  int32_t vocab_size = 97;
  int32_t max_position_embeddings = 256;
  int32_t num_blocks = 64;
  int32_t block_size = 4;
  std::vector<int32_t> eos_token_ids = {};
};

// The token the fake model samples (greedily) after `history`.
inline int32_t ExpectedNextToken(std::span<const int32_t> history, int32_t vocab_size) {
  uint64_t hash = 1469598103934665603ull;
  for (size_t p = 0; p < history.size(); ++p) {
    hash = (hash ^ static_cast<uint64_t>(history[p] + 7 * p)) * 1099511628211ull;
  }
  return static_cast<int32_t>(hash % static_cast<uint64_t>(vocab_size));
}

struct RecordedChunk {
  int32_t start_position = 0;
  int32_t num_tokens = 0;
  bool sample = false;
};

class FakeTransformer final : public Transformer {
 public:
  explicit FakeTransformer(const FakeModelShape& shape) : backend_(CreateCpuBackend(1)) {
    config_.architecture = "FakeForTests";
    config_.vocab_size = shape.vocab_size;
    config_.max_position_embeddings = shape.max_position_embeddings;
    config_.hidden_size = 8;
    config_.num_hidden_layers = 1;
    config_.num_attention_heads = 1;
    config_.num_key_value_heads = 1;
    config_.head_dim = 8;
    config_.eos_token_ids = shape.eos_token_ids;
    layout_ = {.num_layers = 1, .num_blocks = shape.num_blocks, .block_size = shape.block_size,
               .num_kv_heads = 1, .head_dim = 1};
    slots_.assign(static_cast<size_t>(shape.num_blocks) * shape.block_size, -1);
  }

  absl::StatusOr<std::vector<ChunkResult>> Forward(std::span<const SequenceChunk> chunks) override {
    std::unique_lock<std::mutex> lock(mutex_);
    ++entered_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return !paused_; });
    std::vector<RecordedChunk> step;
    for (const SequenceChunk& chunk : chunks) {
      step.push_back({chunk.start_position, static_cast<int32_t>(chunk.tokens.size()), chunk.sample});
    }
    steps_.push_back(step);
    if (fail_next_) {
      fail_next_ = false;
      return absl::InternalError("injected forward failure");
    }
    std::vector<ChunkResult> results(chunks.size());
    for (size_t c = 0; c < chunks.size(); ++c) {
      const SequenceChunk& chunk = chunks[c];
      const int32_t end = chunk.start_position + static_cast<int32_t>(chunk.tokens.size());
      if (static_cast<int64_t>(chunk.block_table.size()) * layout_.block_size < end) {
        return absl::InternalError("block table does not cover the chunk");
      }
      for (size_t i = 0; i < chunk.tokens.size(); ++i) {
        const int32_t position = chunk.start_position + static_cast<int32_t>(i);
        slots_[kvcache::FlatSlot(chunk.block_table.data(), layout_.block_size, position)] =
            chunk.tokens[i];
      }
      if (!chunk.sample) continue;
      std::vector<int32_t> history(end);
      for (int32_t p = 0; p < end; ++p) {
        history[p] = slots_[kvcache::FlatSlot(chunk.block_table.data(), layout_.block_size, p)];
      }
      results[c].sampled.token = ExpectedNextToken(history, config_.vocab_size);
      results[c].sampled.logprob = -1.0f;
      for (int32_t k = 0; k < chunk.sampling.num_top_logprobs; ++k) {
        results[c].sampled.top_logprobs.push_back({(results[c].sampled.token + k) % config_.vocab_size,
                                                   -1.0f - k});
      }
    }
    return results;
  }

  // Holds the next Forward calls at their start until Resume().
  void Pause() {
    std::lock_guard<std::mutex> lock(mutex_);
    paused_ = true;
  }
  void Resume() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      paused_ = false;
    }
    changed_.notify_all();
  }
  // Blocks until Forward has been entered `count` times in total.
  void WaitUntilEntered(int count) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return entered_ >= count; });
  }
  int entered() {
    std::lock_guard<std::mutex> lock(mutex_);
    return entered_;
  }
  void FailNextForward() {
    std::lock_guard<std::mutex> lock(mutex_);
    fail_next_ = true;
  }
  std::vector<std::vector<RecordedChunk>> steps() {
    std::lock_guard<std::mutex> lock(mutex_);
    return steps_;
  }

  const ModelConfig& config() const override { return config_; }
  const kvcache::KvLayout& kv_layout() const override { return layout_; }
  size_t weight_bytes() const override { return 0; }
  size_t kv_cache_bytes() const override { return slots_.size() * sizeof(int32_t); }
  size_t workspace_bytes() const override { return 0; }
  Backend& backend() override { return *backend_; }

 private:
  std::unique_ptr<Backend> backend_;
  ModelConfig config_;
  kvcache::KvLayout layout_;
  std::vector<int32_t> slots_;

  std::mutex mutex_;
  std::condition_variable changed_;
  bool paused_ = false;
  bool fail_next_ = false;
  int entered_ = 0;
  std::vector<std::vector<RecordedChunk>> steps_;
};

}  // namespace llm::engine::testing
