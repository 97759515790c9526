// The Llama-family transformer forward, written once against the Backend op interface.
//
// One Forward() call runs one engine step: a batch that mixes prefill chunks and decode tokens of
// different sequences. Each chunk appends its tokens at absolute positions
// [start_position, start_position + tokens.size()) of its sequence; the KV blocks for those
// positions must already be in the chunk's block table (the engine allocates them through
// kvcache/).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/sampling.h"
#include "kvcache/kv_layout.h"
#include "server/model/checkpoint.h"
#include "server/model/model_config.h"

namespace llm {

struct TransformerOptions {
  int32_t kv_num_blocks = 0;
  int32_t kv_block_size = 16;
  int32_t max_batch_tokens = 2048;  // most query tokens in one Forward()
  int32_t max_batch_sequences = 256;
  // Decode steps (every chunk one token that samples) on a backend that records graphs (CUDA): the
  // batch is padded to a bucket (1, 2, 4, ... up to min(max_batch_sequences, max_batch_tokens))
  // with dummy rows that write a scratch KV block, the KV length is rounded up to a power of two
  // (at least 64), and each (bucket, KV length) shape is recorded once as a graph (all layers,
  // final norm, LM head) and replayed; sampling and prefill stay eager.
  //   kAuto: graphs where the backend supports them, else the plain eager path.
  //   kOff: the plain eager path (no padding).
  //   kBucketedEager: the padded plan run eagerly, the same kernels on the same inputs as the
  //   graphs (tests compare the two exactly).
  enum class DecodeGraphs : int32_t { kAuto = 0, kOff, kBucketedEager };
  DecodeGraphs decode_graphs = DecodeGraphs::kAuto;
  // Steps of few tokens (decode) run their matrix products through Backend::FusedMatmul where the
  // backend has it: the norm before qkv / gate_up / the LM head, RoPE + KV append after qkv, SwiGLU
  // after gate_up and the residual adds after o / down are folded into the products (6 launches a
  // layer instead of 10).
  // false: the plain ops (tests compare the two).
  bool fused_matmul = true;
  // The RMSNorm gains before qkv and gate_up folded into those weights (W diag(gain), rounded once
  // on upload), the norm's row scale applied by the op after the product (RopeAppendKv, SiluMul;
  // RowRmsScale in kernels/backend.h) and the residual adds done by the products (MatmulAdd): a
  // layer of the plain path runs no norm kernel. The GEMV path keeps its norm prologue, with unit
  // gains. Same result up to rounding (tests compare the two).
  //   kAuto: folded where the backend asks for it (Backend::FoldsNormGains: CUDA), else separate.
  enum class NormGains : int32_t { kAuto = 0, kSeparate, kFolded };
  NormGains norm_gains = NormGains::kAuto;
};

struct SequenceChunk {
  std::vector<int32_t> tokens;  // new tokens, appended at start_position onwards
  int32_t start_position = 0;   // tokens already cached for this sequence
  std::vector<int32_t>
      block_table;     // physical blocks covering positions [0, start_position + tokens.size())
  bool sample = true;  // sample the token that follows the chunk's last token
  SamplingParams sampling;
  bool return_logits = false;  // return F32 logits of every token of the chunk (tests, scoring)
};

struct ChunkResult {
  SampledToken sampled;       // valid when the chunk asked to sample
  std::vector<float> logits;  // [tokens.size(), vocab] when the chunk asked for them
};

class Transformer {
 public:
  virtual ~Transformer() = default;
  // Uploads the checkpoint's weights to the backend and allocates the KV pool and step buffers.
  static absl::StatusOr<std::unique_ptr<Transformer>> Create(const Checkpoint& checkpoint,
                                                             Backend& backend,
                                                             const TransformerOptions& options);

  virtual absl::StatusOr<std::vector<ChunkResult>> Forward(
      std::span<const SequenceChunk> chunks) = 0;

  virtual const ModelConfig& config() const = 0;
  virtual const kvcache::KvLayout& kv_layout() const = 0;
  virtual size_t weight_bytes() const = 0;
  virtual size_t kv_cache_bytes() const = 0;
  virtual size_t workspace_bytes() const = 0;
  virtual Backend& backend() = 0;
};

// Bytes one KV block takes across all layers (K and V) in `dtype`.
size_t KvBlockBytes(const ModelConfig& config, int32_t block_size, DType dtype);

}  // namespace llm
