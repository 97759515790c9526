// Wire <-> engine conversions for llm.v1.
#include "server/service/proto_conversion.h"

#include <mutex>
#include <random>

#include "kernels/dtype.h"

namespace llm::service {
namespace {

uint64_t RandomSeed() {
  static std::mutex mutex;
  static std::mt19937_64 generator{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mutex);
  return generator();
}

}  // namespace

SamplingParams FromProto(const v1::SamplingParams& sampling, int32_t num_top_logprobs) {
  SamplingParams params;
  params.temperature = sampling.temperature();
  params.top_k = sampling.top_k();
  params.top_p = sampling.has_top_p() ? sampling.top_p() : 1.0f;
  params.seed = sampling.has_seed() ? sampling.seed() : RandomSeed();
  params.num_top_logprobs = num_top_logprobs;
  return params;
}

void ToProto(const SampledToken& token, v1::SampledToken* out) {
  out->set_token_id(token.token);
  out->set_logprob(token.logprob);
  for (const auto& [id, logprob] : token.top_logprobs) {
    v1::TopLogprob* top = out->add_top_logprobs();
    top->set_token_id(id);
    top->set_logprob(logprob);
  }
}

v1::FinishReason ToProto(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case engine::FinishReason::kStopToken: return v1::FINISH_REASON_STOP_TOKEN;
    case engine::FinishReason::kEos: return v1::FINISH_REASON_EOS;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

absl::StatusOr<engine::PrefillWork> PrefillWorkFromProto(const v1::PrefillRequest& request,
                                                         PromptTokenizer tokenize) {
  engine::PrefillWork work;
  if (request.has_text()) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenize(request.text(), request.has_sequence_id());
    if (!ids.ok()) return ids.status();
    work.tokens = *std::move(ids);
  } else {
    work.tokens.assign(request.tokens().ids().begin(), request.tokens().ids().end());
  }
  if (request.has_sequence_id()) work.sequence_id = request.sequence_id();
  work.sampling = FromProto(request.sampling(), request.num_top_logprobs());
  return work;
}

engine::DecodeWork DecodeWorkFromProto(const v1::DecodeRequest& request) {
  engine::DecodeWork work;
  work.sequence_id = request.sequence_id();
  if (request.has_token_id()) work.token = request.token_id();
  if (request.has_num_top_logprobs()) work.num_top_logprobs = request.num_top_logprobs();
  if (request.has_sampling()) {
    work.sampling = FromProto(request.sampling(), request.num_top_logprobs());
  }
  return work;
}

absl::StatusOr<engine::GenerateWork> GenerateWorkFromProto(const v1::GenerateRequest& request,
                                                           PromptTokenizer tokenize,
                                                           int32_t default_max_tokens) {
  engine::GenerateWork work;
  if (request.has_text()) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenize(request.text(), /*continuing=*/false);
    if (!ids.ok()) return ids.status();
    work.tokens = *std::move(ids);
  } else {
    work.tokens.assign(request.tokens().ids().begin(), request.tokens().ids().end());
  }
  work.sampling = FromProto(request.sampling(), request.num_top_logprobs());
  work.max_tokens = request.max_tokens() != 0 ? request.max_tokens() : default_max_tokens;
  work.stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  work.ignore_eos = request.ignore_eos();
  return work;
}

v1::ModelInfo BuildModelInfo(const engine::Engine& engine, const std::string& model_path) {
  const ModelConfig& config = engine.config();
  const Transformer& model = engine.model();
  const kvcache::KvLayout& layout = engine.kv_layout();
  v1::ModelInfo info;
  info.set_architecture(config.architecture);
  info.set_vocab_size(config.vocab_size);
  info.set_hidden_size(config.hidden_size);
  info.set_intermediate_size(config.intermediate_size);
  info.set_num_layers(config.num_hidden_layers);
  info.set_num_attention_heads(config.num_attention_heads);
  info.set_num_kv_heads(config.num_key_value_heads);
  info.set_head_dim(config.head_dim);
  info.set_max_position_embeddings(config.max_position_embeddings);
  info.set_compute_dtype(std::string(DTypeName(engine.compute_dtype())));
  info.set_checkpoint_dtype(config.torch_dtype);
  info.set_backend(engine.backend_name());
  info.set_kv_block_size(layout.block_size);
  info.set_kv_num_blocks(layout.num_blocks);
  info.set_kv_cache_bytes(static_cast<int64_t>(model.kv_cache_bytes()));
  info.set_kv_capacity_tokens(static_cast<int64_t>(layout.num_blocks) * layout.block_size);
  info.set_weight_bytes(static_cast<int64_t>(model.weight_bytes()));
  info.set_max_batch_tokens(engine.options().max_batch_tokens);
  info.set_max_sequences(engine.options().max_running_sequences);
  for (int32_t eos : config.eos_token_ids) info.add_eos_token_ids(eos);
  info.set_bos_token_id(config.bos_token_id);
  info.set_model_path(model_path);
  return info;
}

}  // namespace llm::service
