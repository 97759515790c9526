// libFuzzer target for ParseModelConfig (config.json) and RopeInverseFrequencies.
//
// A config that parses must keep the promises the rest of the server relies on (model_config.h and
// the checks in Validate): positive sizes, an even head_dim, KV heads dividing attention heads,
// token ids inside the vocabulary, finite positive RoPE theta and scaling factors. Integer fields
// are also compared with an independent read of the same JSON, so a value that wraps on its way
// into an int32 (rather than being refused) is a crash. For configs that parse, the RoPE inverse
// frequencies must all be finite and positive.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/model/model_config.h"

namespace {

using nlohmann::json;

// RopeInverseFrequencies allocates head_dim / 2 floats; the parser accepts any positive int32
// head_dim (see docs/RELIABILITY.md), so bound the work per input to keep the fuzzer fast.
constexpr int32_t kMaxHeadDimForRope = 1 << 16;

void Require(bool condition) {
  if (!condition) std::abort();
}

// When `key` holds a JSON integer at the top level, the parsed value must equal it exactly.
void RequireSameInteger(const json& root, const char* key, int64_t parsed) {
  const auto it = root.find(key);
  if (it == root.end() || !it->is_number_integer()) return;
  if (it->is_number_unsigned()) {
    Require(it->get<uint64_t>() == static_cast<uint64_t>(parsed) && parsed >= 0);
  } else {
    Require(it->get<int64_t>() == parsed);
  }
}

void CheckAcceptedConfig(std::string_view text, const llm::ModelConfig& config) {
  Require(config.hidden_size > 0 && config.intermediate_size > 0);
  Require(config.num_hidden_layers > 0 && config.vocab_size > 0);
  Require(config.num_attention_heads > 0 && config.num_key_value_heads > 0);
  Require(config.num_attention_heads % config.num_key_value_heads == 0);
  Require(config.head_dim > 0 && config.head_dim % 2 == 0);
  Require(config.max_position_embeddings > 0);
  Require(std::isfinite(config.rms_norm_eps) && config.rms_norm_eps > 0);
  Require(config.bos_token_id >= -1 && config.bos_token_id < config.vocab_size);
  for (int32_t id : config.eos_token_ids) Require(id >= 0 && id < config.vocab_size);
  Require(std::isfinite(config.rope_theta) && config.rope_theta > 1);
  const llm::RopeScaling& scaling = config.rope_scaling;
  if (scaling.type != llm::RopeScaling::Type::kDefault) {
    Require(std::isfinite(scaling.factor) && scaling.factor >= 1.0f);
  }
  if (scaling.type == llm::RopeScaling::Type::kLlama3) {
    Require(std::isfinite(scaling.low_freq_factor) && scaling.low_freq_factor > 0);
    Require(std::isfinite(scaling.high_freq_factor) &&
            scaling.high_freq_factor > scaling.low_freq_factor);
    Require(scaling.original_max_position_embeddings > 0);
  }

  // The independent read: the text parsed once already, so this cannot throw.
  const json root = json::parse(text);
  RequireSameInteger(root, "hidden_size", config.hidden_size);
  RequireSameInteger(root, "intermediate_size", config.intermediate_size);
  RequireSameInteger(root, "num_hidden_layers", config.num_hidden_layers);
  RequireSameInteger(root, "num_attention_heads", config.num_attention_heads);
  RequireSameInteger(root, "num_key_value_heads", config.num_key_value_heads);
  RequireSameInteger(root, "head_dim", config.head_dim);
  RequireSameInteger(root, "vocab_size", config.vocab_size);
  RequireSameInteger(root, "bos_token_id", config.bos_token_id);

  if (config.head_dim > kMaxHeadDimForRope) return;
  const std::vector<float> inv_freq = llm::RopeInverseFrequencies(config);
  Require(inv_freq.size() == static_cast<size_t>(config.head_dim / 2));
  for (float value : inv_freq) Require(std::isfinite(value) && value > 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<llm::ModelConfig> config = llm::ParseModelConfig(text, "fuzz/config.json");
  if (config.ok()) {
    CheckAcceptedConfig(text, *config);
  } else {
    Require(!config.status().message().empty());
  }
  return 0;
}
