// config.json parsing: the field forms transformers 4.x and 5.x write, defaults, and rejection of
// what the server cannot run, with messages that name the file and the field.
#include "server/model/model_config.h"

#include <string>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/model/checkpoint_writer.h"

namespace llm {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kSource[] = "/models/x/config.json";

// Llama-3.1-8B's config.json as transformers 4.x wrote it.
constexpr char kLlama31Config[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

json Minimal() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"hidden_size", 64},
          {"intermediate_size", 128},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"vocab_size", 100},
          {"max_position_embeddings", 256}};
}

absl::StatusOr<ModelConfig> Parse(const json& config) {
  return ParseModelConfig(config.dump(), kSource);
}

std::string ErrorOf(const json& config) {
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  EXPECT_FALSE(parsed.ok()) << "accepted: " << config.dump();
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

TEST(ModelConfigTest, ParsesLlama31ConfigWrittenByTransformers4) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(kLlama31Config, kSource);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "LlamaForCausalLM");
  EXPECT_EQ(config->hidden_size, 4096);
  EXPECT_EQ(config->intermediate_size, 14336);
  EXPECT_EQ(config->num_hidden_layers, 32);
  EXPECT_EQ(config->num_attention_heads, 32);
  EXPECT_EQ(config->num_key_value_heads, 8);
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_EQ(config->rms_norm_eps, 1e-5f);
  EXPECT_EQ(config->vocab_size, 128256);
  EXPECT_EQ(config->max_position_embeddings, 131072);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_EQ(config->bos_token_id, 128000);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_EQ(config->rope_theta, 500000.0f);
  EXPECT_EQ(config->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(config->rope_scaling.factor, 8.0f);
  EXPECT_EQ(config->rope_scaling.low_freq_factor, 1.0f);
  EXPECT_EQ(config->rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(config->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(config->torch_dtype, "bfloat16");
}

TEST(ModelConfigTest, ReadsTransformers5RopeParametersIncludingTheta) {
  json config = Minimal();
  config["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 250000.0},
                               {"factor", 32.0},          {"low_freq_factor", 2.0},
                               {"high_freq_factor", 8.0}, {"original_max_position_embeddings", 64}};
  config["dtype"] = "float32";
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rope_theta, 250000.0f);
  EXPECT_EQ(parsed->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(parsed->rope_scaling.factor, 32.0f);
  EXPECT_EQ(parsed->rope_scaling.low_freq_factor, 2.0f);
  EXPECT_EQ(parsed->rope_scaling.high_freq_factor, 8.0f);
  EXPECT_EQ(parsed->rope_scaling.original_max_position_embeddings, 64);
  EXPECT_EQ(parsed->torch_dtype, "float32");
}

TEST(ModelConfigTest, DefaultsWhenOptionalFieldsAreAbsent) {
  absl::StatusOr<ModelConfig> parsed = Parse(Minimal());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->num_key_value_heads, 4);  // = num_attention_heads
  EXPECT_EQ(parsed->head_dim, 16);            // = hidden / heads
  EXPECT_EQ(parsed->rope_theta, 10000.0f);
  EXPECT_EQ(parsed->rope_scaling.type, RopeScaling::Type::kDefault);
  EXPECT_EQ(parsed->rms_norm_eps, 1e-6f);
  EXPECT_EQ(parsed->bos_token_id, -1);
  EXPECT_TRUE(parsed->eos_token_ids.empty());
  EXPECT_FALSE(parsed->tie_word_embeddings);
}

TEST(ModelConfigTest, NullFieldsCountAsAbsent) {
  json config = Minimal();
  config["num_key_value_heads"] = nullptr;
  config["head_dim"] = nullptr;
  config["rope_scaling"] = nullptr;
  config["eos_token_id"] = nullptr;
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->num_key_value_heads, 4);
  EXPECT_EQ(parsed->head_dim, 16);
  EXPECT_EQ(parsed->rope_scaling.type, RopeScaling::Type::kDefault);
}

TEST(ModelConfigTest, ExplicitHeadDimOverridesHiddenOverHeads) {
  json config = Minimal();
  config["head_dim"] = 128;
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->head_dim, 128);
}

TEST(ModelConfigTest, EosTokenIdMayBeAnIntegerOrAList) {
  json config = Minimal();
  config["eos_token_id"] = 7;
  absl::StatusOr<ModelConfig> single = Parse(config);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_THAT(single->eos_token_ids, ElementsAre(7));
  config["eos_token_id"] = {3, 9};
  absl::StatusOr<ModelConfig> list = Parse(config);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_THAT(list->eos_token_ids, ElementsAre(3, 9));
}

TEST(ModelConfigTest, LegacyScalingAcceptsTheOlderTypeKey) {
  json config = Minimal();
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_EQ(parsed->rope_scaling.factor, 4.0f);
}

TEST(ModelConfigTest, Llama3OriginalContextDefaultsToMaxPositionEmbeddings) {
  json config = Minimal();
  config["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}};
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rope_scaling.original_max_position_embeddings, 256);
}

TEST(ModelConfigTest, AcceptsMistralWithFullAttention) {
  json config = Minimal();
  config["architectures"] = {"MistralForCausalLM"};
  config["sliding_window"] = nullptr;
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->architecture, "MistralForCausalLM");
  config["sliding_window"] = 4096;  // wider than the context: full attention
  absl::StatusOr<ModelConfig> wide = Parse(config);
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->max_position_embeddings, 256);
}

TEST(ModelConfigTest, SlidingWindowNarrowerThanTheContextCapsTheContext) {
  json config = Minimal();
  config["architectures"] = {"MistralForCausalLM"};
  config["sliding_window"] = 128;  // Mistral-7B-v0.1 style: window 4096, context 32768
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->max_position_embeddings, 128);
  config["sliding_window"] = 0;
  EXPECT_THAT(ErrorOf(config), AllOf(HasSubstr(kSource), HasSubstr("sliding_window")));
}

TEST(ModelConfigTest, RejectsUnsupportedArchitectureNamingItAndTheFile) {
  json config = Minimal();
  config["architectures"] = {"Qwen2ForCausalLM"};
  EXPECT_THAT(ErrorOf(config), AllOf(HasSubstr(kSource), HasSubstr("Qwen2ForCausalLM")));
  config.erase("architectures");
  EXPECT_THAT(ErrorOf(config), AllOf(HasSubstr(kSource), HasSubstr("architectures")));
}

TEST(ModelConfigTest, RejectsUnsupportedRopeTypesNamingTheType) {
  for (const char* type : {"yarn", "dynamic", "longrope"}) {
    json legacy = Minimal();
    legacy["rope_scaling"] = {{"rope_type", type}, {"factor", 2.0}};
    EXPECT_THAT(ErrorOf(legacy),
                AllOf(HasSubstr(kSource), HasSubstr("rope_scaling.rope_type"), HasSubstr(type)));
    json current = Minimal();
    current["rope_parameters"] = {{"rope_type", type}, {"rope_theta", 10000.0}, {"factor", 2.0}};
    EXPECT_THAT(ErrorOf(current), AllOf(HasSubstr("rope_parameters.rope_type"), HasSubstr(type)));
  }
}

TEST(ModelConfigTest, RejectsBiasesAndOtherActivations) {
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    json config = Minimal();
    config[key] = true;
    EXPECT_THAT(ErrorOf(config), AllOf(HasSubstr(kSource), HasSubstr(key)));
  }
  json config = Minimal();
  config["hidden_act"] = "gelu";
  EXPECT_THAT(ErrorOf(config), HasSubstr("hidden_act"));
}

TEST(ModelConfigTest, RejectsInconsistentSizesNamingTheField) {
  json config = Minimal();
  config["num_key_value_heads"] = 3;
  EXPECT_THAT(ErrorOf(config), AllOf(HasSubstr(kSource), HasSubstr("num_key_value_heads")));
  config = Minimal();
  config["hidden_size"] = 0;
  EXPECT_THAT(ErrorOf(config), HasSubstr("\"hidden_size\""));
  config = Minimal();
  config["num_attention_heads"] = 5;  // 64 / 5 is no head_dim
  EXPECT_THAT(ErrorOf(config), HasSubstr("head_dim"));
  config = Minimal();
  config["head_dim"] = 15;
  EXPECT_THAT(ErrorOf(config), HasSubstr("head_dim"));
  config = Minimal();
  config["rms_norm_eps"] = 0.0;
  EXPECT_THAT(ErrorOf(config), HasSubstr("rms_norm_eps"));
  config = Minimal();
  config["eos_token_id"] = {2, 100};  // vocab_size is 100
  EXPECT_THAT(ErrorOf(config), HasSubstr("eos_token_id"));
  config = Minimal();
  config["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 4.0},
                            {"high_freq_factor", 4.0}};
  EXPECT_THAT(ErrorOf(config), HasSubstr("high_freq_factor"));
}

TEST(ModelConfigTest, RejectsMissingAndMistypedFields) {
  json config = Minimal();
  config.erase("vocab_size");
  EXPECT_THAT(ErrorOf(config), AllOf(HasSubstr(kSource), HasSubstr("\"vocab_size\" is missing")));
  config = Minimal();
  config["hidden_size"] = "64";
  EXPECT_THAT(ErrorOf(config), HasSubstr("\"hidden_size\""));
  config = Minimal();
  config["intermediate_size"] = 1.5;
  EXPECT_THAT(ErrorOf(config), HasSubstr("\"intermediate_size\""));
  config = Minimal();
  config["tie_word_embeddings"] = "yes";
  EXPECT_THAT(ErrorOf(config), HasSubstr("\"tie_word_embeddings\""));
  config = Minimal();
  config["rope_scaling"] = {{"rope_type", "linear"}};
  EXPECT_THAT(ErrorOf(config), HasSubstr("rope_scaling.factor"));
}

TEST(ModelConfigTest, RejectsTextThatIsNotAJsonObject) {
  for (const char* text : {"{\"hidden_size\": 4", "[1, 2]", ""}) {
    absl::StatusOr<ModelConfig> parsed = ParseModelConfig(text, kSource);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(kSource));
  }
}

// Found by fuzz/model_config_fuzzer (seeds fuzz/corpus/model_config_fuzzer/regression-*): values
// that pass a check as JSON numbers but change on their way into the config's int32/float fields.
TEST(ModelConfigTest, RejectsUnsignedIntegersThatWouldWrapToNegative) {
  json config = Minimal();
  config["bos_token_id"] = 18446744073709551615ull;  // read as -1 ("absent") before the fix
  EXPECT_THAT(ErrorOf(config), AllOf(HasSubstr("\"bos_token_id\""), HasSubstr("32-bit integer")));
  config = Minimal();
  config["hidden_size"] = 18446744073709551552ull;
  EXPECT_THAT(ErrorOf(config), HasSubstr("\"hidden_size\""));
}

TEST(ModelConfigTest, RejectsNumbersThatOverflowOrCollapseInFloat32) {
  json config = Minimal();
  config["rms_norm_eps"] = 1e300;  // inf as a float
  EXPECT_THAT(ErrorOf(config), HasSubstr("\"rms_norm_eps\""));
  config = Minimal();
  config["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 1e300}};
  EXPECT_THAT(ErrorOf(config), HasSubstr("rope_scaling.factor"));
  const json llama3 = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 64}};
  // A denormal theta: its inverse frequencies overflowed to inf.
  config = Minimal();
  config["rope_theta"] = 5.0000001e-40;
  EXPECT_THAT(ErrorOf(config), HasSubstr("RoPE theta"));
  config["rope_theta"] = 1.0;
  EXPECT_THAT(ErrorOf(config), HasSubstr("RoPE theta"));
  // low rounds to 0, high to inf, and two distinct doubles to one float (a zero denominator).
  for (const auto& [low, high] : {std::pair{1e-300, 4.0}, {1.0, 1e300}, {1.0, 1.00000001}}) {
    config = Minimal();
    config["rope_scaling"] = llama3;
    config["rope_scaling"]["low_freq_factor"] = low;
    config["rope_scaling"]["high_freq_factor"] = high;
    EXPECT_THAT(ErrorOf(config), HasSubstr("rope_scaling.high_freq_factor")) << low << " " << high;
  }
}

// Found by fuzz/: the message printed the value, and json::dump recurses once per nesting level.
TEST(ModelConfigTest, DeeplyNestedValueFailsWithoutPrintingIt) {
  const std::string nested = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  absl::StatusOr<ModelConfig> parsed = ParseModelConfig(
      R"({"architectures": ["LlamaForCausalLM"], "hidden_size": )" + nested + "}", kSource);
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()),
              AllOf(HasSubstr("\"hidden_size\""), HasSubstr("an array")));
}

TEST(ModelConfigTest, LoadReadsTheFileAndNamesAMissingOne) {
  const std::filesystem::path directory = testing_files::FreshTempDir();
  testing_files::WriteFile(directory / "config.json", kLlama31Config);
  absl::StatusOr<ModelConfig> loaded = LoadModelConfig(directory / "config.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->num_key_value_heads, 8);
  absl::StatusOr<ModelConfig> missing = LoadModelConfig(directory / "nope.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.json"));
  testing_files::WriteFile(directory / "bad.json", "{\"architectures\": [\"GPT2LMHeadModel\"]}");
  absl::StatusOr<ModelConfig> bad = LoadModelConfig(directory / "bad.json");
  EXPECT_THAT(std::string(bad.status().message()),
              AllOf(HasSubstr("bad.json"), HasSubstr("GPT2LMHeadModel")));
}

}  // namespace
}  // namespace llm
