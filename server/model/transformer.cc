// The Llama-family forward over the Backend ops, one engine step per Forward():
//   embed -> per layer [RMSNorm -> QKV -> RoPE + KV append -> paged attention -> O + residual ->
//   RMSNorm -> gate/up -> SwiGLU -> down + residual] -> final norm -> LM head (only rows that need
//   logits) -> sample.
// Residual adds are fused into the following RMSNorm (AddRmsNorm); the last layer's MLP residual is
// a plain Add because the final norm runs only on the gathered logit rows.
#include "server/model/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/model/llama_weights.h"
#include "server/model/step_batch.h"

namespace llm {
namespace {

#define LLM_RETURN_IF_ERROR(expr)                                     \
  do {                                                                \
    if (absl::Status _status = (expr); !_status.ok()) return _status; \
  } while (0)

// Backend buffers reused by every step, sized for the largest step the options allow.
struct StepBuffers {
  // Step metadata (int32).
  DeviceBuffer token_ids, positions, slot_mapping, query_start, kv_lens, block_tables, logit_rows;
  // Activations, [max_batch_tokens, width] in compute_dtype.
  DeviceBuffer residual, normed, qkv, attention_out, projection, gate_up, mlp_hidden;
  // LM head input and output for up to logit_rows_capacity rows; logits are F32.
  DeviceBuffer gathered, gathered_normed, logits;
};

// Not thread-safe: its step buffers and KV pool are reused by every Forward(), so one thread (the
// engine's) owns it.
class LlamaTransformer final : public Transformer {
 public:
  LlamaTransformer(const ModelConfig& config, Backend& backend, const TransformerOptions& options,
                   LlamaWeights weights)
      : config_(config), backend_(backend), options_(options), weights_(std::move(weights)) {
    kv_layout_ = kvcache::KvLayout{.num_layers = config.num_hidden_layers,
                                   .num_blocks = options.kv_num_blocks,
                                   .block_size = options.kv_block_size,
                                   .num_kv_heads = config.num_key_value_heads,
                                   .head_dim = config.head_dim};
    attention_shape_ =
        AttentionShape{config.num_attention_heads, config.num_key_value_heads, config.head_dim,
                       static_cast<float>(1.0 / std::sqrt(static_cast<double>(config.head_dim)))};
    limits_ = StepLimits{
        .vocab_size = config.vocab_size,
        .max_position_embeddings = config.max_position_embeddings,
        .kv_num_blocks = options.kv_num_blocks,
        .kv_block_size = options.kv_block_size,
        .max_batch_tokens = options.max_batch_tokens,
        .max_batch_sequences = options.max_batch_sequences,
        // A sequence's positions occupy distinct slots, so it never needs more
        // blocks than the pool holds.
        .max_blocks_per_sequence = std::min(
            options.kv_num_blocks,
            (config.max_position_embeddings + options.kv_block_size - 1) / options.kv_block_size)};
    // The LM head runs in groups of rows so that a step returning every row's logits does not need
    // a [max_batch_tokens, vocab] buffer.
    logit_rows_capacity_ =
        std::max(1, std::min(options.max_batch_tokens, options.max_batch_sequences));
    using Mode = TransformerOptions::DecodeGraphs;
    use_graphs_ = options.decode_graphs == Mode::kAuto && backend.SupportsGraphs();
    decode_plan_ = use_graphs_ || options.decode_graphs == Mode::kBucketedEager;
    // The padded decode plan needs one scratch KV block (the last, outside what the engine sees)
    // for its dummy rows.
    kernel_layout_ = kv_layout_;
    if (decode_plan_) ++kernel_layout_.num_blocks;
    for (int32_t bucket = 1;; bucket *= 2) {
      batch_buckets_.push_back(std::min(bucket, logit_rows_capacity_));
      if (bucket >= logit_rows_capacity_) break;
    }
  }

  ~LlamaTransformer() override {
    for (const auto& [key, id] : graph_ids_) backend_.DestroyGraph(id);
  }

  absl::Status Allocate() {
    const size_t element = DTypeSize(backend_.compute_dtype());
    const size_t tokens = options_.max_batch_tokens, sequences = options_.max_batch_sequences;
    const size_t hidden = config_.hidden_size, inter = config_.intermediate_size;
    const size_t q_width = static_cast<size_t>(config_.num_attention_heads) * config_.head_dim;
    const size_t qkv_width = q_width + 2ull * config_.num_key_value_heads * config_.head_dim;
    const size_t logit_rows = logit_rows_capacity_;

    absl::StatusOr<DeviceBuffer> pool =
        backend_.Allocate(static_cast<size_t>(kernel_layout_.total_elements()) * element);
    if (!pool.ok()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("allocating the KV pool of ", options_.kv_num_blocks,
                       " blocks: ", pool.status().message(), "; lower kv_num_blocks"));
    }
    kv_pool_ = std::move(*pool);

    // rows * width elements of `bytes_per_element` each.
    const auto make = [&](DeviceBuffer& buffer, size_t count,
                          size_t bytes_per_element) -> absl::Status {
      absl::StatusOr<DeviceBuffer> allocated =
          backend_.Allocate(std::max<size_t>(1, count) * bytes_per_element);
      if (!allocated.ok()) {
        return absl::ResourceExhaustedError(
            absl::StrCat("allocating step buffers for max_batch_tokens ", options_.max_batch_tokens,
                         ": ", allocated.status().message(), "; lower max_batch_tokens"));
      }
      workspace_bytes_ += allocated->bytes();
      buffer = std::move(*allocated);
      return absl::OkStatus();
    };
    StepBuffers& b = buffers_;
    LLM_RETURN_IF_ERROR(make(b.token_ids, tokens, 4));
    LLM_RETURN_IF_ERROR(make(b.positions, tokens, 4));
    LLM_RETURN_IF_ERROR(make(b.slot_mapping, tokens, 4));
    LLM_RETURN_IF_ERROR(make(b.query_start, sequences + 1, 4));
    LLM_RETURN_IF_ERROR(make(b.kv_lens, sequences, 4));
    LLM_RETURN_IF_ERROR(make(b.block_tables, sequences * limits_.max_blocks_per_sequence, 4));
    LLM_RETURN_IF_ERROR(make(b.logit_rows, tokens + sequences, 4));
    LLM_RETURN_IF_ERROR(make(b.residual, tokens * hidden, element));
    LLM_RETURN_IF_ERROR(make(b.normed, tokens * hidden, element));
    LLM_RETURN_IF_ERROR(make(b.qkv, tokens * qkv_width, element));
    LLM_RETURN_IF_ERROR(make(b.attention_out, tokens * q_width, element));
    LLM_RETURN_IF_ERROR(make(b.projection, tokens * hidden, element));
    LLM_RETURN_IF_ERROR(make(b.gate_up, tokens * 2 * inter, element));
    LLM_RETURN_IF_ERROR(make(b.mlp_hidden, tokens * inter, element));
    LLM_RETURN_IF_ERROR(make(b.gathered, logit_rows * hidden, element));
    LLM_RETURN_IF_ERROR(make(b.gathered_normed, logit_rows * hidden, element));
    LLM_RETURN_IF_ERROR(make(b.logits, logit_rows * static_cast<size_t>(config_.vocab_size), 4));
    if (decode_plan_) {
      LLM_RETURN_IF_ERROR(
          make(decode_meta_, logit_rows * (6 + limits_.max_blocks_per_sequence) + 1, 4));
    }

    const std::vector<float> inv_freq = RopeInverseFrequencies(config_);
    if (static_cast<int32_t>(inv_freq.size()) != config_.head_dim / 2) {
      return absl::InternalError(absl::StrCat("RopeInverseFrequencies returned ", inv_freq.size(),
                                              " values for head_dim ", config_.head_dim));
    }
    // inv_freq stays F32 whatever the compute dtype (RopeParams says so), hence Allocate, not
    // UploadWeight.
    LLM_RETURN_IF_ERROR(make(inv_freq_, inv_freq.size(), sizeof(float)));
    LLM_RETURN_IF_ERROR(
        backend_.CopyToDevice(inv_freq_.data(), inv_freq.data(), inv_freq.size() * sizeof(float)));
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<ChunkResult>> Forward(std::span<const SequenceChunk> chunks) override {
    absl::StatusOr<StepBatch> step = BuildStepBatch(chunks, limits_);
    if (!step.ok()) return step.status();
    std::vector<ChunkResult> results(chunks.size());
    if (chunks.empty()) return results;
    if (decode_plan_ && IsDecodeStep(chunks)) {
      LLM_RETURN_IF_ERROR(ForwardDecode(*step, chunks, results));
      return results;
    }

    LLM_RETURN_IF_ERROR(UploadStep(*step));
    const AttentionBatch batch = DeviceAttentionBatch(*step);
    LLM_RETURN_IF_ERROR(RunLayers(batch, buffers_.token_ids.as<int32_t>()));
    LLM_RETURN_IF_ERROR(ComputeLogitsAndSample(*step, chunks, results));
    LLM_RETURN_IF_ERROR(backend_.Synchronize());
    return results;
  }

  const ModelConfig& config() const override { return config_; }
  const kvcache::KvLayout& kv_layout() const override { return kv_layout_; }
  size_t weight_bytes() const override { return weights_.bytes; }
  size_t kv_cache_bytes() const override { return kv_pool_.bytes(); }
  size_t workspace_bytes() const override { return workspace_bytes_; }
  Backend& backend() override { return backend_; }

 private:
  absl::Status Copy(DeviceBuffer& destination, const std::vector<int32_t>& source) {
    return backend_.CopyToDevice(destination.data(), source.data(),
                                 source.size() * sizeof(int32_t));
  }

  absl::Status UploadStep(const StepBatch& step) {
    LLM_RETURN_IF_ERROR(Copy(buffers_.token_ids, step.token_ids));
    LLM_RETURN_IF_ERROR(Copy(buffers_.positions, step.positions));
    LLM_RETURN_IF_ERROR(Copy(buffers_.slot_mapping, step.slot_mapping));
    LLM_RETURN_IF_ERROR(Copy(buffers_.query_start, step.query_start));
    LLM_RETURN_IF_ERROR(Copy(buffers_.kv_lens, step.kv_lens));
    LLM_RETURN_IF_ERROR(Copy(buffers_.block_tables, step.block_tables));
    return Copy(buffers_.logit_rows, step.logit_rows);
  }

  AttentionBatch DeviceAttentionBatch(const StepBatch& step) const {
    AttentionBatch batch;
    batch.num_tokens = step.num_tokens();
    batch.num_seqs = step.num_sequences();
    batch.positions = buffers_.positions.as<int32_t>();
    batch.slot_mapping = buffers_.slot_mapping.as<int32_t>();
    batch.query_start = buffers_.query_start.as<int32_t>();
    batch.kv_lens = buffers_.kv_lens.as<int32_t>();
    batch.block_tables = buffers_.block_tables.as<int32_t>();
    batch.block_table_stride = step.block_table_stride;
    batch.max_query_len = step.max_query_len;
    batch.min_query_len = step.min_query_len;
    batch.max_kv_len = step.max_kv_len;
    return batch;
  }

  bool IsDecodeStep(std::span<const SequenceChunk> chunks) const {
    if (static_cast<int32_t>(chunks.size()) > logit_rows_capacity_) return false;
    for (const SequenceChunk& chunk : chunks) {
      if (chunk.tokens.size() != 1 || !chunk.sample) return false;
    }
    return true;
  }

  // A decode step through the padded plan: the step's metadata padded to (bucket, KV bucket) and
  // uploaded in one copy into decode_meta_ (fixed addresses per shape), the layers + final norm +
  // LM head replayed from a graph (recorded after the first eager run of the shape), then greedy or
  // host sampling of the real rows.
  absl::Status ForwardDecode(const StepBatch& step, std::span<const SequenceChunk> chunks,
                             std::vector<ChunkResult>& results) {
    const int32_t n = step.num_sequences();
    const int32_t bucket = *std::lower_bound(batch_buckets_.begin(), batch_buckets_.end(), n);
    const int32_t block_size = kv_layout_.block_size;
    const int32_t kv_capacity = limits_.max_blocks_per_sequence * block_size;
    int32_t kv_bucket = 64;
    while (kv_bucket < step.max_kv_len) kv_bucket *= 2;
    kv_bucket = std::max(step.max_kv_len, std::min(kv_bucket, kv_capacity));
    const int32_t stride = (kv_bucket + block_size - 1) / block_size;
    const int32_t scratch_block = kv_layout_.num_blocks;  // kernel_layout_'s extra block

    // [token_ids | positions | slot_mapping | query_start (bucket + 1) | kv_lens | logit_rows |
    //  block_tables (bucket x stride)]
    std::vector<int32_t>& h = decode_host_;
    h.assign(static_cast<size_t>(bucket) * (6 + stride) + 1, 0);
    int32_t* token_ids = h.data();
    int32_t* positions = token_ids + bucket;
    int32_t* slots = positions + bucket;
    int32_t* query_start = slots + bucket;
    int32_t* kv_lens = query_start + bucket + 1;
    int32_t* logit_rows = kv_lens + bucket;
    int32_t* tables = logit_rows + bucket;
    for (int32_t i = 0; i < bucket; ++i) {
      int32_t* table = tables + static_cast<size_t>(i) * stride;
      if (i < n) {
        token_ids[i] = step.token_ids[i];
        positions[i] = step.positions[i];
        slots[i] = step.slot_mapping[i];
        kv_lens[i] = step.kv_lens[i];
        std::copy_n(step.block_tables.begin() + static_cast<size_t>(i) * step.block_table_stride,
                    std::min(step.block_table_stride, stride), table);
      } else {  // dummy row: token 0 at position 0 of the scratch block, attending to itself
        slots[i] = scratch_block * block_size;
        kv_lens[i] = 1;
        std::fill_n(table, stride, scratch_block);
      }
      query_start[i] = i;
      logit_rows[i] = i;
    }
    query_start[bucket] = bucket;
    LLM_RETURN_IF_ERROR(
        backend_.CopyToDevice(decode_meta_.data(), h.data(), h.size() * sizeof(int32_t)));
    const int32_t* device = decode_meta_.as<int32_t>();
    const auto at = [&](const int32_t* host) { return device + (host - h.data()); };
    AttentionBatch batch;
    batch.num_tokens = bucket;
    batch.num_seqs = bucket;
    batch.positions = at(positions);
    batch.slot_mapping = at(slots);
    batch.query_start = at(query_start);
    batch.kv_lens = at(kv_lens);
    batch.block_tables = at(tables);
    batch.block_table_stride = stride;
    batch.max_query_len = 1;
    batch.min_query_len = 1;
    batch.max_kv_len = kv_bucket;
    const int32_t* device_tokens = at(token_ids);

    bool replayed = false;
    const int64_t key = (static_cast<int64_t>(bucket) << 32) | kv_bucket;
    if (use_graphs_) {
      if (auto it = graph_ids_.find(key); it != graph_ids_.end()) {
        absl::StatusOr<bool> replay = backend_.ReplayGraph(it->second);
        if (!replay.ok()) return replay.status();
        replayed = *replay;
        if (!replayed) graph_ids_.erase(it);  // dropped by the backend: record again below
      }
    }
    if (!replayed) {
      LLM_RETURN_IF_ERROR(RunDecodeBody(batch, device_tokens));
      if (use_graphs_) RecordDecodeGraph(key, batch, device_tokens);
    }

    // Sampling and returned logits: rows [0, n) of b.logits are the chunks in order.
    const int32_t vocab = config_.vocab_size;
    std::vector<SampledToken> sampled(n);
    LLM_RETURN_IF_ERROR(
        backend_.Sample(buffers_.logits.as<float>(), n, vocab, step.sample_params, sampled));
    for (int32_t c = 0; c < n; ++c) {
      results[c].sampled = std::move(sampled[c]);
      if (!chunks[c].return_logits) continue;
      results[c].logits.resize(vocab);
      LLM_RETURN_IF_ERROR(backend_.CopyToHost(
          results[c].logits.data(), buffers_.logits.as<float>() + static_cast<size_t>(c) * vocab,
          static_cast<size_t>(vocab) * sizeof(float)));
    }
    return backend_.Synchronize();
  }

  // Layers, final norm and LM head of a padded decode step (every row is a logit row).
  absl::Status RunDecodeBody(const AttentionBatch& batch, const int32_t* token_ids) {
    StepBuffers& b = buffers_;
    LLM_RETURN_IF_ERROR(RunLayers(batch, token_ids));
    if (UseFusedMatmul(batch.num_tokens)) {
      FusedMatmulArgs head =
          NormedProduct(b.residual.data(), weights_.final_norm.data(), weights_.lm_head_data(),
                        batch.num_tokens, config_.vocab_size, b.logits.data());
      head.out_f32 = true;
      return backend_.FusedMatmul(head);
    }
    LLM_RETURN_IF_ERROR(backend_.RmsNorm(b.residual.data(), weights_.final_norm.data(),
                                         batch.num_tokens, config_.hidden_size,
                                         config_.rms_norm_eps, b.gathered_normed.data()));
    return backend_.Matmul(b.gathered_normed.data(), weights_.lm_head_data(), batch.num_tokens,
                           config_.vocab_size, config_.hidden_size, b.logits.data(),
                           /*out_f32=*/true);
  }

  // Records the decode body for `key` (the eager run of the same shape came first, so workspaces
  // and matmul plans exist). A failure turns graphs off for this model, with one line on stderr.
  void RecordDecodeGraph(int64_t key, const AttentionBatch& batch, const int32_t* token_ids) {
    absl::Status status = backend_.BeginGraphCapture();
    if (status.ok()) {
      status = RunDecodeBody(batch, token_ids);
      absl::StatusOr<int64_t> id = backend_.EndGraphCapture(status.ok());
      if (status.ok() && !id.ok()) status = id.status();
      if (status.ok() && *id > 0) graph_ids_[key] = *id;
    }
    if (!status.ok()) {
      std::fprintf(stderr, "transformer: decode graphs turned off (recording failed: %s)\n",
                   status.ToString().c_str());
      use_graphs_ = false;
    }
  }

  // Whether a step of `tokens` query tokens takes Backend::FusedMatmul for its products.
  bool UseFusedMatmul(int32_t tokens) const {
    return options_.fused_matmul && backend_.SupportsFusedMatmul(tokens, config_.hidden_size) &&
           backend_.SupportsFusedMatmul(tokens, config_.num_attention_heads * config_.head_dim) &&
           backend_.SupportsFusedMatmul(tokens, config_.intermediate_size);
  }

  // out = RmsNorm(x, norm_weight) W^T with x [tokens, hidden].
  FusedMatmulArgs NormedProduct(const void* x, const void* norm_weight, const void* w,
                                int32_t tokens, int32_t n, void* out) const {
    FusedMatmulArgs args;
    args.x = x;
    args.prologue = MatmulPrologue::kRmsNorm;
    args.norm_weight = norm_weight;
    args.eps = config_.rms_norm_eps;
    args.w = w;
    args.m = tokens;
    args.n = n;
    args.k = config_.hidden_size;
    args.out = out;
    return args;
  }

  // residual += x W^T with x [tokens, k].
  FusedMatmulArgs ResidualProduct(const void* x, const void* w, int32_t tokens, int32_t k) {
    FusedMatmulArgs args;
    args.x = x;
    args.w = w;
    args.m = tokens;
    args.n = config_.hidden_size;
    args.k = k;
    args.out = buffers_.residual.data();
    args.epilogue = MatmulEpilogue::kAdd;
    return args;
  }

  // The layers with the norms, RoPE + KV append, SwiGLU and residual adds folded into the products
  // (UseFusedMatmul): per layer qkv (input norm; RoPE + append), attention, o (+= residual),
  // gate_up (post-attention norm; SwiGLU), down (+= residual).
  absl::Status RunFusedLayers(const AttentionBatch& batch, const int32_t* token_ids) {
    const int32_t tokens = batch.num_tokens;
    const int32_t hidden = config_.hidden_size, inter = config_.intermediate_size;
    const int32_t q_width = config_.num_attention_heads * config_.head_dim;
    const int32_t qkv_width = q_width + 2 * config_.num_key_value_heads * config_.head_dim;
    const KvCacheView cache{kv_pool_.data(), kernel_layout_};
    const RopeParams rope{inv_freq_.as<float>(), 1.0f};
    StepBuffers& b = buffers_;

    LLM_RETURN_IF_ERROR(
        backend_.Embed(token_ids, tokens, weights_.embed_tokens.data(), hidden, b.residual.data()));
    for (int32_t l = 0; l < config_.num_hidden_layers; ++l) {
      const LlamaLayerWeights& layer = weights_.layers[l];
      FusedMatmulArgs qkv =
          LayerNormedProduct(b.residual.data(), layer.input_norm, layer.qkv_proj.data(), tokens,
                             qkv_width, b.qkv.data());
      qkv.epilogue = MatmulEpilogue::kRopeAppendKv;
      qkv.batch = &batch;
      qkv.shape = &attention_shape_;
      qkv.rope = &rope;
      qkv.cache = &cache;
      qkv.layer = l;
      LLM_RETURN_IF_ERROR(backend_.FusedMatmul(qkv));
      LLM_RETURN_IF_ERROR(backend_.PagedAttention(b.qkv.data(), batch, attention_shape_, cache, l,
                                                  b.attention_out.data()));
      LLM_RETURN_IF_ERROR(backend_.FusedMatmul(
          ResidualProduct(b.attention_out.data(), layer.o_proj.data(), tokens, q_width)));
      FusedMatmulArgs gate_up =
          LayerNormedProduct(b.residual.data(), layer.post_attention_norm,
                             layer.gate_up_proj.data(), tokens, inter, b.mlp_hidden.data());
      gate_up.epilogue = MatmulEpilogue::kSiluMul;
      LLM_RETURN_IF_ERROR(backend_.FusedMatmul(gate_up));
      LLM_RETURN_IF_ERROR(backend_.FusedMatmul(
          ResidualProduct(b.mlp_hidden.data(), layer.down_proj.data(), tokens, inter)));
    }
    return absl::OkStatus();
  }

  // A layer's normed product (qkv, gate_up): the norm as the GEMV's prologue, or, where the gains
  // are folded into the weights, the row scale after the product (kRmsScale), as RunFoldedLayers'
  // RopeAppendKv / SiluMul apply it.
  FusedMatmulArgs LayerNormedProduct(const void* x, const DeviceBuffer& norm_weight, const void* w,
                                     int32_t tokens, int32_t n, void* out) const {
    FusedMatmulArgs args = NormedProduct(x, norm_weight.data(), w, tokens, n, out);
    if (weights_.norm_gains_folded) {
      args.prologue = MatmulPrologue::kRmsScale;
      args.norm_weight = nullptr;
    }
    return args;
  }

  // The plain path with the norm gains folded into qkv_proj and gate_up_proj: per layer qkv,
  // RoPE + append (scaled by the input norm's row scale) and attention (one launch for decode steps
  // on CUDA: Backend::RopeAppendAttention), o (+= residual), gate_up,
  // SwiGLU (scaled by the post-attention norm's row scale), down (+= residual). The row scales are
  // taken from the residual as it stands when the product reads it.
  absl::Status RunFoldedLayers(const AttentionBatch& batch, const int32_t* token_ids) {
    const int32_t tokens = batch.num_tokens;
    const int32_t hidden = config_.hidden_size, inter = config_.intermediate_size;
    const int32_t q_width = config_.num_attention_heads * config_.head_dim;
    const int32_t qkv_width = q_width + 2 * config_.num_key_value_heads * config_.head_dim;
    const KvCacheView cache{kv_pool_.data(), kernel_layout_};
    StepBuffers& b = buffers_;
    const RowRmsScale row_scale{b.residual.data(), hidden, config_.rms_norm_eps};
    const RopeParams rope{inv_freq_.as<float>(), 1.0f, row_scale};

    LLM_RETURN_IF_ERROR(
        backend_.Embed(token_ids, tokens, weights_.embed_tokens.data(), hidden, b.residual.data()));
    for (int32_t l = 0; l < config_.num_hidden_layers; ++l) {
      const LlamaLayerWeights& layer = weights_.layers[l];
      LLM_RETURN_IF_ERROR(backend_.Matmul(b.residual.data(), layer.qkv_proj.data(), tokens,
                                          qkv_width, hidden, b.qkv.data()));
      LLM_RETURN_IF_ERROR(backend_.RopeAppendAttention(b.qkv.data(), batch, attention_shape_, rope,
                                                       cache, l, b.attention_out.data()));
      LLM_RETURN_IF_ERROR(backend_.MatmulAdd(b.attention_out.data(), layer.o_proj.data(), tokens,
                                             hidden, q_width, b.residual.data()));
      LLM_RETURN_IF_ERROR(backend_.Matmul(b.residual.data(), layer.gate_up_proj.data(), tokens,
                                          2 * inter, hidden, b.gate_up.data()));
      LLM_RETURN_IF_ERROR(
          backend_.SiluMul(b.gate_up.data(), tokens, inter, row_scale, b.mlp_hidden.data()));
      LLM_RETURN_IF_ERROR(backend_.MatmulAdd(b.mlp_hidden.data(), layer.down_proj.data(), tokens,
                                             hidden, inter, b.residual.data()));
    }
    return absl::OkStatus();
  }

  absl::Status RunLayers(const AttentionBatch& batch, const int32_t* token_ids) {
    if (UseFusedMatmul(batch.num_tokens)) return RunFusedLayers(batch, token_ids);
    if (weights_.norm_gains_folded) return RunFoldedLayers(batch, token_ids);
    const int32_t tokens = batch.num_tokens;
    const int32_t hidden = config_.hidden_size, inter = config_.intermediate_size;
    const int32_t q_width = config_.num_attention_heads * config_.head_dim;
    const int32_t qkv_width = q_width + 2 * config_.num_key_value_heads * config_.head_dim;
    const float eps = config_.rms_norm_eps;
    const KvCacheView cache{kv_pool_.data(), kernel_layout_};
    // attention_scaling is 1 for every RoPE type ModelConfig admits (default, linear, llama3).
    const RopeParams rope{inv_freq_.as<float>(), 1.0f};
    StepBuffers& b = buffers_;

    LLM_RETURN_IF_ERROR(
        backend_.Embed(token_ids, tokens, weights_.embed_tokens.data(), hidden, b.residual.data()));
    LLM_RETURN_IF_ERROR(backend_.RmsNorm(b.residual.data(), weights_.layers[0].input_norm.data(),
                                         tokens, hidden, eps, b.normed.data()));
    for (int32_t l = 0; l < config_.num_hidden_layers; ++l) {
      const LlamaLayerWeights& layer = weights_.layers[l];
      // Attention half: b.normed holds input_layernorm(residual).
      LLM_RETURN_IF_ERROR(backend_.Matmul(b.normed.data(), layer.qkv_proj.data(), tokens, qkv_width,
                                          hidden, b.qkv.data()));
      LLM_RETURN_IF_ERROR(backend_.RopeAppendAttention(b.qkv.data(), batch, attention_shape_, rope,
                                                       cache, l, b.attention_out.data()));
      LLM_RETURN_IF_ERROR(backend_.Matmul(b.attention_out.data(), layer.o_proj.data(), tokens,
                                          hidden, q_width, b.projection.data()));
      LLM_RETURN_IF_ERROR(backend_.AddRmsNorm(b.residual.data(), b.projection.data(),
                                              layer.post_attention_norm.data(), tokens, hidden, eps,
                                              b.normed.data()));
      // MLP half.
      LLM_RETURN_IF_ERROR(backend_.Matmul(b.normed.data(), layer.gate_up_proj.data(), tokens,
                                          2 * inter, hidden, b.gate_up.data()));
      LLM_RETURN_IF_ERROR(
          backend_.SiluMul(b.gate_up.data(), tokens, inter, RowRmsScale{}, b.mlp_hidden.data()));
      LLM_RETURN_IF_ERROR(backend_.Matmul(b.mlp_hidden.data(), layer.down_proj.data(), tokens,
                                          hidden, inter, b.projection.data()));
      if (l + 1 < config_.num_hidden_layers) {
        LLM_RETURN_IF_ERROR(backend_.AddRmsNorm(b.residual.data(), b.projection.data(),
                                                weights_.layers[l + 1].input_norm.data(), tokens,
                                                hidden, eps, b.normed.data()));
      } else {
        LLM_RETURN_IF_ERROR(backend_.Add(b.residual.data(), b.projection.data(),
                                         static_cast<int64_t>(tokens) * hidden));
      }
    }
    return absl::OkStatus();
  }

  // Final norm + LM head over step.logit_rows in groups of logit_rows_capacity_, sampling the first
  // num_sample_rows rows and copying the rest back as returned logits.
  absl::Status ComputeLogitsAndSample(const StepBatch& step, std::span<const SequenceChunk> chunks,
                                      std::vector<ChunkResult>& results) {
    const int32_t hidden = config_.hidden_size, vocab = config_.vocab_size;
    for (size_t c = 0; c < chunks.size(); ++c) {
      if (chunks[c].return_logits)
        results[c].logits.resize(chunks[c].tokens.size() * static_cast<size_t>(vocab));
    }
    std::vector<SampledToken> sampled(step.num_sample_rows);
    const int32_t total_rows = static_cast<int32_t>(step.logit_rows.size());
    StepBuffers& b = buffers_;
    for (int32_t first = 0; first < total_rows; first += logit_rows_capacity_) {
      const int32_t rows = std::min(logit_rows_capacity_, total_rows - first);
      LLM_RETURN_IF_ERROR(backend_.GatherRows(b.residual.data(), b.logit_rows.as<int32_t>() + first,
                                              rows, hidden, b.gathered.data()));
      LLM_RETURN_IF_ERROR(backend_.RmsNorm(b.gathered.data(), weights_.final_norm.data(), rows,
                                           hidden, config_.rms_norm_eps, b.gathered_normed.data()));
      LLM_RETURN_IF_ERROR(backend_.Matmul(b.gathered_normed.data(), weights_.lm_head_data(), rows,
                                          vocab, hidden, b.logits.data(), /*out_f32=*/true));
      // Rows [first, first + rows) of the logit list: a prefix may be sampling rows.
      const int32_t sample_end = std::min(first + rows, step.num_sample_rows);
      if (first < sample_end) {
        const int32_t count = sample_end - first;
        LLM_RETURN_IF_ERROR(backend_.Sample(
            b.logits.as<float>(), count, vocab,
            std::span<const SamplingParams>(step.sample_params).subspan(first, count),
            std::span<SampledToken>(sampled).subspan(first, count)));
      }
      // The remaining rows are returned logits; consecutive rows of one chunk go back in one copy.
      int32_t row = std::max(first, step.num_sample_rows);
      while (row < first + rows) {
        const auto [chunk, token] = step.logits_destination[row - step.num_sample_rows];
        int32_t run = 1;
        while (row + run < first + rows &&
               step.logits_destination[row + run - step.num_sample_rows].first == chunk) {
          ++run;
        }
        LLM_RETURN_IF_ERROR(
            backend_.CopyToHost(results[chunk].logits.data() + static_cast<size_t>(token) * vocab,
                                b.logits.as<float>() + static_cast<size_t>(row - first) * vocab,
                                static_cast<size_t>(run) * vocab * sizeof(float)));
        row += run;
      }
    }
    for (int32_t i = 0; i < step.num_sample_rows; ++i) {
      results[step.sample_chunk[i]].sampled = std::move(sampled[i]);
    }
    return absl::OkStatus();
  }

  const ModelConfig config_;
  Backend& backend_;
  const TransformerOptions options_;
  LlamaWeights weights_;
  kvcache::KvLayout kv_layout_;
  AttentionShape attention_shape_;
  StepLimits limits_;
  int32_t logit_rows_capacity_ = 0;
  DeviceBuffer kv_pool_;
  DeviceBuffer inv_freq_;
  StepBuffers buffers_;
  size_t workspace_bytes_ = 0;
  // Padded decode plan and its graphs (ForwardDecode).
  bool use_graphs_ = false;
  bool decode_plan_ = false;
  kvcache::KvLayout kernel_layout_;  // kv_layout_ plus the scratch block when decode_plan_
  std::vector<int32_t> batch_buckets_;
  DeviceBuffer decode_meta_;
  std::vector<int32_t> decode_host_;
  std::unordered_map<int64_t, int64_t> graph_ids_;  // (bucket << 32 | KV bucket) -> graph id
};

absl::Status ValidateOptions(const ModelConfig& config, const TransformerOptions& options) {
  if (options.kv_num_blocks <= 0 || options.kv_block_size <= 0 || options.max_batch_tokens <= 0 ||
      options.max_batch_sequences <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TransformerOptions need positive kv_num_blocks, kv_block_size, max_batch_tokens and "
        "max_batch_sequences; got ",
        options.kv_num_blocks, ", ", options.kv_block_size, ", ", options.max_batch_tokens, ", ",
        options.max_batch_sequences));
  }
  if (config.num_attention_heads <= 0 || config.num_key_value_heads <= 0 ||
      config.num_attention_heads % config.num_key_value_heads != 0 || config.head_dim <= 0 ||
      config.head_dim % 2 != 0 || config.hidden_size <= 0 || config.intermediate_size <= 0 ||
      config.num_hidden_layers <= 0 || config.vocab_size <= 0 ||
      config.max_position_embeddings <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config is not a usable Llama architecture: num_attention_heads ",
                     config.num_attention_heads, " must be a multiple of num_key_value_heads ",
                     config.num_key_value_heads, ", head_dim ", config.head_dim,
                     " must be even, and sizes must be positive"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::Create(
    const Checkpoint& checkpoint, Backend& backend, const TransformerOptions& options) {
  const ModelConfig& config = checkpoint.config();
  LLM_RETURN_IF_ERROR(ValidateOptions(config, options));
  using NormGains = TransformerOptions::NormGains;
  const bool fold_norm_gains = options.norm_gains == NormGains::kFolded ||
                               (options.norm_gains == NormGains::kAuto && backend.FoldsNormGains());
  absl::StatusOr<LlamaWeights> weights = UploadLlamaWeights(checkpoint, backend, fold_norm_gains);
  if (!weights.ok()) return weights.status();
  auto transformer =
      std::make_unique<LlamaTransformer>(config, backend, options, std::move(*weights));
  LLM_RETURN_IF_ERROR(transformer->Allocate());
  return transformer;
}

size_t KvBlockBytes(const ModelConfig& config, int32_t block_size, DType dtype) {
  return 2ull * config.num_hidden_layers * config.num_key_value_heads * config.head_dim *
         block_size * DTypeSize(dtype);
}

}  // namespace llm
