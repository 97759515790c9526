// The architecture of a Llama-family checkpoint, as read from its Hugging Face config.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace llm {

struct RopeScaling {
  enum class Type { kDefault, kLinear, kLlama3 };
  Type type = Type::kDefault;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;   // llama3
  float high_freq_factor = 4.0f;  // llama3
  int32_t original_max_position_embeddings = 0;  // llama3
};

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM" or "MistralForCausalLM"
  int32_t hidden_size = 0;
  int32_t intermediate_size = 0;
  int32_t num_hidden_layers = 0;
  int32_t num_attention_heads = 0;
  int32_t num_key_value_heads = 0;
  int32_t head_dim = 0;  // config's head_dim when present, else hidden_size / num_attention_heads
  float rms_norm_eps = 1e-6f;
  int32_t vocab_size = 0;
  int32_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  int32_t bos_token_id = -1;              // -1 when absent
  std::vector<int32_t> eos_token_ids;     // config's eos_token_id, an int or a list
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  std::string torch_dtype;  // "float32", "bfloat16", ... as written (informational)
};

// Parses and validates config.json text. `source` names the file in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source);
// Reads and parses `path` (a config.json).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& path);

// Per-pair inverse frequencies [head_dim / 2] for RoPE with the config's theta and scaling, computed
// step by step in float32 as transformers 5.x's rope init functions do (within 1 ulp of torch's pow).
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace llm
