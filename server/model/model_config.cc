// Parsing and validation of a Llama-family config.json, and the RoPE inverse frequencies it
// implies.
//
// transformers has written RoPE settings two ways: 4.x puts `rope_theta` at the top level and the
// scaling in `rope_scaling` ({"rope_type" or "type", factor, ...}); 5.x puts everything, theta
// included, in `rope_parameters`. Both are accepted and normalised into ModelConfig.
#include "server/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numbers>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace llm {
namespace {

using nlohmann::json;

// The value as an error message shows it. Arrays and objects are named rather than printed, since
// json::dump recurses once per nesting level and a value nested a million deep overflowed the stack
// (docs/RELIABILITY.md); long values are cut so that a corrupt file cannot make a huge message.
std::string DescribeJsonValue(const json& value) {
  if (value.is_array()) return "an array";
  if (value.is_object()) return "an object";
  constexpr size_t kMaxChars = 64;
  std::string text = value.dump();
  if (text.size() > kMaxChars) text = absl::StrCat(text.substr(0, kMaxChars), "...");
  return text;
}

// Reads typed fields of one JSON object and turns problems into errors naming the file and field.
class FieldReader {
 public:
  FieldReader(const json& object, const std::string& source, std::string prefix = "")
      : object_(object), source_(source), prefix_(std::move(prefix)) {}

  bool Has(std::string_view key) const {
    const auto it = object_.find(key);
    return it != object_.end() && !it->is_null();
  }

  absl::Status Error(std::string_view key, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": field \"", prefix_, std::string(key), "\" ", std::string(what)));
  }

  absl::StatusOr<int32_t> Int(std::string_view key) const {
    if (!Has(key)) return Error(key, "is missing; it is required for Llama-family models");
    return IntValue(key, object_.find(key).value());
  }
  absl::StatusOr<int32_t> Int(std::string_view key, int32_t fallback) const {
    return Has(key) ? Int(key) : fallback;
  }
  absl::StatusOr<int32_t> IntValue(std::string_view key, const json& value) const {
    // An unsigned JSON integer above INT64_MAX would wrap to a negative value through get<int64_t>.
    const bool in_range = value.is_number_unsigned()
                              ? value.get<uint64_t>() <= static_cast<uint64_t>(INT32_MAX)
                              : value.is_number_integer() && value.get<int64_t>() >= INT32_MIN &&
                                    value.get<int64_t>() <= INT32_MAX;
    if (!in_range) {
      return Error(key,
                   absl::StrCat("is ", DescribeJsonValue(value), ", expected a 32-bit integer"));
    }
    return static_cast<int32_t>(value.get<int64_t>());
  }

  absl::StatusOr<double> Number(std::string_view key) const {
    if (!Has(key)) return Error(key, "is missing");
    const json& value = object_.find(key).value();
    if (!value.is_number())
      return Error(key, absl::StrCat("is ", DescribeJsonValue(value), ", expected a number"));
    return value.get<double>();
  }
  absl::StatusOr<double> Number(std::string_view key, double fallback) const {
    return Has(key) ? Number(key) : fallback;
  }

  absl::StatusOr<bool> Bool(std::string_view key, bool fallback) const {
    if (!Has(key)) return fallback;
    const json& value = object_.find(key).value();
    if (!value.is_boolean())
      return Error(key, absl::StrCat("is ", DescribeJsonValue(value), ", expected true/false"));
    return value.get<bool>();
  }

  absl::StatusOr<std::string> String(std::string_view key, std::string fallback) const {
    if (!Has(key)) return fallback;
    const json& value = object_.find(key).value();
    if (!value.is_string())
      return Error(key, absl::StrCat("is ", DescribeJsonValue(value), ", expected a string"));
    return value.get<std::string>();
  }

  const json& object() const { return object_; }

 private:
  const json& object_;
  std::string source_;
  std::string prefix_;
};

#define LLM_ASSIGN_OR_RETURN(lhs, expression)                   \
  do {                                                          \
    auto status_or_value = (expression);                        \
    if (!status_or_value.ok()) return status_or_value.status(); \
    lhs = *std::move(status_or_value);                          \
  } while (false)

absl::Status ParseArchitecture(const FieldReader& fields, const std::string& source,
                               ModelConfig& config) {
  const auto it = fields.object().find("architectures");
  if (it == fields.object().end() || !it->is_array() || it->empty() || !(*it)[0].is_string()) {
    return fields.Error("architectures",
                        "is missing or not a list of names; expected [\"LlamaForCausalLM\"] or "
                        "[\"MistralForCausalLM\"]");
  }
  config.architecture = (*it)[0].get<std::string>();
  if (config.architecture != "LlamaForCausalLM" && config.architecture != "MistralForCausalLM") {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": architecture \"", config.architecture,
        "\" is not supported; this server runs LlamaForCausalLM and MistralForCausalLM only"));
  }
  return absl::OkStatus();
}

absl::Status ParseTokenIds(const FieldReader& fields, ModelConfig& config) {
  LLM_ASSIGN_OR_RETURN(config.bos_token_id, fields.Int("bos_token_id", -1));
  config.eos_token_ids.clear();
  if (fields.Has("eos_token_id")) {
    const json& eos = fields.object().find("eos_token_id").value();
    if (eos.is_array()) {
      for (const json& id : eos) {
        int32_t value = 0;
        LLM_ASSIGN_OR_RETURN(value, fields.IntValue("eos_token_id", id));
        config.eos_token_ids.push_back(value);
      }
    } else {
      int32_t value = 0;
      LLM_ASSIGN_OR_RETURN(value, fields.IntValue("eos_token_id", eos));
      config.eos_token_ids.push_back(value);
    }
  }
  return absl::OkStatus();
}

// Fills rope_theta and rope_scaling from one RoPE parameter object (4.x rope_scaling or 5.x
// rope_parameters); `rope` may be null for "no scaling".
absl::Status ParseRopeObject(const json* rope, const std::string& object_name,
                             const std::string& source, ModelConfig& config) {
  if (rope == nullptr) return absl::OkStatus();
  const FieldReader fields(*rope, source, absl::StrCat(object_name, "."));
  std::string type;
  // transformers reads "rope_type" first and falls back to the older "type" key.
  LLM_ASSIGN_OR_RETURN(type, fields.String("rope_type", ""));
  if (type.empty()) LLM_ASSIGN_OR_RETURN(type, fields.String("type", "default"));
  if (fields.Has("rope_theta")) {
    double theta = 0;
    LLM_ASSIGN_OR_RETURN(theta, fields.Number("rope_theta"));
    config.rope_theta = static_cast<float>(theta);
  }
  double partial_rotary_factor = 1.0;
  LLM_ASSIGN_OR_RETURN(partial_rotary_factor, fields.Number("partial_rotary_factor", 1.0));
  if (partial_rotary_factor != 1.0) {
    return fields.Error("partial_rotary_factor",
                        "is not 1; partial rotary embeddings are not supported by Llama models");
  }

  RopeScaling& scaling = config.rope_scaling;
  scaling = RopeScaling{};
  if (type == "default") return absl::OkStatus();
  double factor = 0;
  LLM_ASSIGN_OR_RETURN(factor, fields.Number("factor"));
  // Checked after narrowing too: a double beyond float's range becomes inf.
  if (!(factor >= 1.0) || !std::isfinite(static_cast<float>(factor))) {
    return fields.Error("factor",
                        absl::StrCat("is ", factor, ", expected >= 1 (and within float32)"));
  }
  scaling.factor = static_cast<float>(factor);
  if (type == "linear") {
    scaling.type = RopeScaling::Type::kLinear;
    return absl::OkStatus();
  }
  if (type == "llama3") {
    scaling.type = RopeScaling::Type::kLlama3;
    double low = 0, high = 0;
    LLM_ASSIGN_OR_RETURN(low, fields.Number("low_freq_factor"));
    LLM_ASSIGN_OR_RETURN(high, fields.Number("high_freq_factor"));
    // Compared as the float32 values RopeInverseFrequencies computes with: doubles that round to 0,
    // to inf or to one same float would make its smoothing divide by zero or give NaN.
    const auto low_float = static_cast<float>(low);
    const auto high_float = static_cast<float>(high);
    if (!(low_float > 0) || !(high_float > low_float) || !std::isfinite(high_float)) {
      return fields.Error(
          "high_freq_factor",
          absl::StrCat("is ", high, " with low_freq_factor ", low,
                       "; llama3 RoPE needs 0 < low_freq_factor < high_freq_factor (distinct and "
                       "finite in float32)"));
    }
    scaling.low_freq_factor = low_float;
    scaling.high_freq_factor = high_float;
    // As transformers does, the pre-training context defaults to max_position_embeddings.
    LLM_ASSIGN_OR_RETURN(
        scaling.original_max_position_embeddings,
        fields.Int("original_max_position_embeddings", config.max_position_embeddings));
    if (scaling.original_max_position_embeddings <= 0) {
      return fields.Error("original_max_position_embeddings", "must be positive");
    }
    return absl::OkStatus();
  }
  return fields.Error(fields.Has("rope_type") ? "rope_type" : "type",
                      absl::StrCat("is \"", type,
                                   "\", which is not supported; supported RoPE types are default, "
                                   "linear and llama3"));
}

absl::Status ParseRope(const FieldReader& fields, const std::string& source, ModelConfig& config) {
  config.rope_theta = 10000.0f;  // transformers' default for Llama and Mistral
  const json& root = fields.object();
  if (fields.Has("rope_theta")) {
    double theta = 0;
    LLM_ASSIGN_OR_RETURN(theta, fields.Number("rope_theta"));
    config.rope_theta = static_cast<float>(theta);
  }
  const json* rope = nullptr;
  std::string object_name;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (!fields.Has(key)) continue;
    const json& value = root.find(key).value();
    if (!value.is_object()) return fields.Error(key, "is not a JSON object");
    // 5.x models with several attention types nest one parameter object per layer type.
    for (const auto& [name, item] : value.items()) {
      if (item.is_object()) {
        return fields.Error(key, absl::StrCat("has per-layer-type RoPE parameters (\"", name,
                                              "\"), which Llama-family models do not use"));
      }
    }
    rope = &value;
    object_name = key;
    break;  // rope_parameters (5.x) wins when a file carries both
  }
  absl::Status status = ParseRopeObject(rope, object_name, source, config);
  if (!status.ok()) return status;
  // The base of the rotary frequencies theta^(-2i/head_dim): at or below 1 they grow with i instead
  // of falling, and a denormal theta (5e-40, found by fuzz/) makes them overflow to inf.
  if (!(config.rope_theta > 1) || !std::isfinite(config.rope_theta)) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": RoPE theta ", config.rope_theta,
                                                   " must be a finite number above 1"));
  }
  return absl::OkStatus();
}

absl::Status Validate(const FieldReader& fields, const ModelConfig& config) {
  const std::pair<std::string_view, int32_t> positive[] = {
      {"hidden_size", config.hidden_size},
      {"intermediate_size", config.intermediate_size},
      {"num_hidden_layers", config.num_hidden_layers},
      {"num_attention_heads", config.num_attention_heads},
      {"num_key_value_heads", config.num_key_value_heads},
      {"head_dim", config.head_dim},
      {"vocab_size", config.vocab_size},
      {"max_position_embeddings", config.max_position_embeddings},
  };
  for (const auto& [name, value] : positive) {
    if (value <= 0) return fields.Error(name, absl::StrCat("is ", value, ", expected > 0"));
  }
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    return fields.Error(
        "num_key_value_heads",
        absl::StrCat("is ", config.num_key_value_heads,
                     ", which does not divide num_attention_heads ", config.num_attention_heads));
  }
  if (config.head_dim % 2 != 0) {
    return fields.Error("head_dim", absl::StrCat("is ", config.head_dim,
                                                 "; rotary embeddings need an even head_dim"));
  }
  // After narrowing to float: 1e300 in the file is inf here.
  if (!(config.rms_norm_eps > 0) || !std::isfinite(config.rms_norm_eps)) {
    return fields.Error("rms_norm_eps", absl::StrCat("is ", config.rms_norm_eps,
                                                     ", expected > 0 and finite in float32"));
  }
  if (config.bos_token_id < -1 || config.bos_token_id >= config.vocab_size) {
    return fields.Error("bos_token_id",
                        absl::StrCat("is ", config.bos_token_id, ", outside the vocabulary of ",
                                     config.vocab_size));
  }
  for (int32_t id : config.eos_token_ids) {
    if (id < 0 || id >= config.vocab_size) {
      return fields.Error("eos_token_id", absl::StrCat("holds ", id, ", outside the vocabulary of ",
                                                       config.vocab_size));
    }
  }
  return absl::OkStatus();
}

// Features of the Llama family that this implementation does not compute; accepting them would give
// silently wrong outputs.
absl::Status RejectUnsupportedFeatures(const FieldReader& fields) {
  for (std::string_view key : {"attention_bias", "mlp_bias"}) {
    bool enabled = false;
    LLM_ASSIGN_OR_RETURN(enabled, fields.Bool(key, false));
    if (enabled) {
      return fields.Error(key, "is true; biases in attention/MLP projections are not supported");
    }
  }
  std::string activation;
  LLM_ASSIGN_OR_RETURN(activation, fields.String("hidden_act", "silu"));
  if (activation != "silu") {
    return fields.Error("hidden_act",
                        absl::StrCat("is \"", activation, "\"; only silu (SwiGLU) is supported"));
  }
  return absl::OkStatus();
}

// Mistral's sliding window lets a query see the keys at distance < sliding_window
// (transformers' mask: kv_idx > q_idx - sliding_window). Within a context no longer than the window
// that is exactly full causal attention, so the model is served with its context capped at the
// window instead of being computed wrongly beyond it; longer requests are refused by the server's
// length checks.
absl::Status CapContextAtSlidingWindow(const FieldReader& fields, ModelConfig& config) {
  if (!fields.Has("sliding_window")) return absl::OkStatus();
  int32_t window = 0;
  LLM_ASSIGN_OR_RETURN(window, fields.Int("sliding_window"));
  if (window <= 0)
    return fields.Error("sliding_window", absl::StrCat("is ", window, ", expected > 0"));
  config.max_position_embeddings = std::min(config.max_position_embeddings, window);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view source_view) {
  // This Abseil build's StrCat does not take std::string_view.
  const std::string source(source_view);
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON (", error.what(),
                                                   "); check the file is a config.json"));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": top level is not a JSON object"));
  }
  const FieldReader fields(root, source);
  ModelConfig config;
  absl::Status status = ParseArchitecture(fields, source, config);
  if (!status.ok()) return status;

  LLM_ASSIGN_OR_RETURN(config.hidden_size, fields.Int("hidden_size"));
  LLM_ASSIGN_OR_RETURN(config.intermediate_size, fields.Int("intermediate_size"));
  LLM_ASSIGN_OR_RETURN(config.num_hidden_layers, fields.Int("num_hidden_layers"));
  LLM_ASSIGN_OR_RETURN(config.num_attention_heads, fields.Int("num_attention_heads"));
  LLM_ASSIGN_OR_RETURN(config.num_key_value_heads,
                       fields.Int("num_key_value_heads", config.num_attention_heads));
  LLM_ASSIGN_OR_RETURN(config.vocab_size, fields.Int("vocab_size"));
  LLM_ASSIGN_OR_RETURN(config.max_position_embeddings, fields.Int("max_position_embeddings"));
  if (fields.Has("head_dim")) {
    LLM_ASSIGN_OR_RETURN(config.head_dim, fields.Int("head_dim"));
  } else {
    if (config.num_attention_heads <= 0 || config.hidden_size % config.num_attention_heads != 0) {
      return fields.Error("head_dim",
                          absl::StrCat("is absent and hidden_size ", config.hidden_size,
                                       " is not a multiple of num_attention_heads ",
                                       config.num_attention_heads, "; add an explicit head_dim"));
    }
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }
  double eps = 0;
  LLM_ASSIGN_OR_RETURN(eps, fields.Number("rms_norm_eps", 1e-6));
  config.rms_norm_eps = static_cast<float>(eps);
  LLM_ASSIGN_OR_RETURN(config.tie_word_embeddings, fields.Bool("tie_word_embeddings", false));
  // 5.x writes "dtype", 4.x "torch_dtype".
  LLM_ASSIGN_OR_RETURN(config.torch_dtype, fields.String("torch_dtype", ""));
  LLM_ASSIGN_OR_RETURN(config.torch_dtype, fields.String("dtype", config.torch_dtype));

  if (status = ParseTokenIds(fields, config); !status.ok()) return status;
  if (status = ParseRope(fields, source, config); !status.ok()) return status;
  if (status = Validate(fields, config); !status.ok()) return status;
  if (status = RejectUnsupportedFeatures(fields); !status.ok()) return status;
  if (status = CapContextAtSlidingWindow(fields, config); !status.ok()) return status;
  return config;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot read model config ", path.string(),
                                            "; a checkpoint directory needs a config.json"));
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) {
    return absl::DataLossError(absl::StrCat("error while reading model config ", path.string()));
  }
  return ParseModelConfig(text.str(), path.string());
}

// Mirrors transformers 5.17 (`compute_default_rope_parameters`, `_compute_linear_scaling_rope_
// parameters`, `_compute_llama3_parameters`): every step runs in float32 as torch does there, with
// Python scalars rounded to float32 when they meet a float32 tensor. torch's vectorised powf may
// differ from libm's correctly rounded one by 1 ulp on some elements; nothing else differs.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config) {
  const int32_t dim = config.head_dim;
  const float base = config.rope_theta;
  std::vector<float> inv_freq(static_cast<size_t>(dim / 2));
  for (int32_t i = 0; i < dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv_freq[i] = 1.0f / std::pow(base, exponent);
  }
  const RopeScaling& scaling = config.rope_scaling;
  switch (scaling.type) {
    case RopeScaling::Type::kDefault:
      break;
    case RopeScaling::Type::kLinear:
      for (float& value : inv_freq) value /= scaling.factor;
      break;
    case RopeScaling::Type::kLlama3: {
      const double old_context = scaling.original_max_position_embeddings;
      // Computed as Python floats (double), compared against the float32 wavelengths as float32.
      const auto low_freq_wavelen = static_cast<float>(old_context / scaling.low_freq_factor);
      const auto high_freq_wavelen = static_cast<float>(old_context / scaling.high_freq_factor);
      const auto two_pi = static_cast<float>(2.0 * std::numbers::pi);
      const auto smooth_denominator =
          static_cast<float>(static_cast<double>(scaling.high_freq_factor) -
                             static_cast<double>(scaling.low_freq_factor));
      const auto old_context_f = static_cast<float>(old_context);
      for (float& value : inv_freq) {
        // `2 * math.pi / inv_freq` is torch's reciprocal-then-multiply.
        const float wavelen = (1.0f / value) * two_pi;
        const float scaled = wavelen > low_freq_wavelen ? value / scaling.factor : value;
        const float smooth =
            ((1.0f / wavelen) * old_context_f - scaling.low_freq_factor) / smooth_denominator;
        const float smoothed = (1.0f - smooth) * scaled / scaling.factor + smooth * scaled;
        const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
        value = medium ? smoothed : scaled;
      }
      break;
    }
  }
  return inv_freq;
}

#undef LLM_ASSIGN_OR_RETURN

}  // namespace llm
