// Every Hugging Face fixture checkpoint (tests/fixtures/hf, written by transformers through
// make_hf_reference.py) and the embedded default model opens, its config reads back the values
// transformers itself read, and its tensors hold the values the safetensors library read (digests
// in reference.json).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "nlohmann/json.hpp"
#include "server/model/checkpoint.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"

namespace llm {
namespace {

using nlohmann::json;

std::filesystem::path FixtureRoot() { return std::filesystem::path(LLM_FIXTURES_DIR) / "hf"; }

std::vector<std::string> FixtureNames() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(FixtureRoot())) {
    if (std::filesystem::exists(entry.path() / "reference.json")) {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

json ReadJson(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return json::parse(text.str());
}

std::vector<float> ToFloat(const HostTensor& tensor) {
  std::vector<float> values(static_cast<size_t>(tensor.num_elements()));
  ConvertToFloat(tensor.dtype, tensor.data, values.size(), values.data());
  return values;
}

struct Fixture {
  std::string name;
  std::filesystem::path checkpoint;  // the checkpoint directory
  std::filesystem::path reference;   // where reference.json / reference.safetensors live
};

std::vector<Fixture> AllFixtures() {
  std::vector<Fixture> fixtures;
  for (const std::string& name : FixtureNames()) {
    fixtures.push_back({name, FixtureRoot() / name, FixtureRoot() / name});
  }
  fixtures.push_back({"default_model", LLM_DEFAULT_MODEL_DIR,
                      std::filesystem::path(LLM_FIXTURES_DIR) / "default_model"});
  return fixtures;
}

class HfFixtureTest : public testing::TestWithParam<Fixture> {
 protected:
  std::filesystem::path directory() const { return GetParam().checkpoint; }
  std::filesystem::path reference_directory() const { return GetParam().reference; }
  json reference() const { return ReadJson(reference_directory() / "reference.json"); }
};

TEST_P(HfFixtureTest, ConfigMatchesWhatTransformersRead) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const ModelConfig& config = (*checkpoint)->config();
  const json expected = reference()["config"];
  EXPECT_EQ(config.architecture, expected["architecture"].get<std::string>());
  EXPECT_EQ(config.hidden_size, expected["hidden_size"].get<int>());
  EXPECT_EQ(config.intermediate_size, expected["intermediate_size"].get<int>());
  EXPECT_EQ(config.num_hidden_layers, expected["num_hidden_layers"].get<int>());
  EXPECT_EQ(config.num_attention_heads, expected["num_attention_heads"].get<int>());
  EXPECT_EQ(config.num_key_value_heads, expected["num_key_value_heads"].get<int>());
  EXPECT_EQ(config.head_dim, expected["head_dim"].get<int>());
  EXPECT_EQ(config.rms_norm_eps, static_cast<float>(expected["rms_norm_eps"].get<double>()));
  EXPECT_EQ(config.vocab_size, expected["vocab_size"].get<int>());
  EXPECT_EQ(config.max_position_embeddings, expected["max_position_embeddings"].get<int>());
  EXPECT_EQ(config.tie_word_embeddings, expected["tie_word_embeddings"].get<bool>());
  EXPECT_EQ(config.bos_token_id, expected["bos_token_id"].get<int>());
  EXPECT_EQ(config.eos_token_ids, expected["eos_token_ids"].get<std::vector<int32_t>>());
  EXPECT_EQ(config.rope_theta, static_cast<float>(expected["rope_theta"].get<double>()));
  const std::string rope_type = expected["rope_type"].get<std::string>();
  const RopeScaling::Type expected_type = rope_type == "llama3"   ? RopeScaling::Type::kLlama3
                                          : rope_type == "linear" ? RopeScaling::Type::kLinear
                                                                  : RopeScaling::Type::kDefault;
  EXPECT_EQ(config.rope_scaling.type, expected_type) << rope_type;
  if (expected_type != RopeScaling::Type::kDefault) {
    EXPECT_EQ(config.rope_scaling.factor,
              static_cast<float>(expected["rope_factor"].get<double>()));
  }
  if (expected_type == RopeScaling::Type::kLlama3) {
    EXPECT_EQ(config.rope_scaling.low_freq_factor,
              static_cast<float>(expected["rope_low_freq_factor"].get<double>()));
    EXPECT_EQ(config.rope_scaling.high_freq_factor,
              static_cast<float>(expected["rope_high_freq_factor"].get<double>()));
    EXPECT_EQ(config.rope_scaling.original_max_position_embeddings,
              expected["rope_original_max_position_embeddings"].get<int>());
  }
}

TEST_P(HfFixtureTest, TensorsHoldTheValuesSafetensorsRead) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const json tensors = reference()["tensors"];
  ASSERT_FALSE(tensors.empty());
  size_t expected_bytes = 0;
  for (const auto& [name, digest] : tensors.items()) {
    absl::StatusOr<HostTensor> tensor = (*checkpoint)->Tensor(name);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ(tensor->shape, digest["shape"].get<std::vector<int64_t>>()) << name;
    const std::string dtype = digest["dtype"].get<std::string>();
    EXPECT_EQ(tensor->dtype, dtype == "bfloat16"  ? DType::kBF16
                             : dtype == "float16" ? DType::kF16
                                                  : DType::kF32)
        << name;
    expected_bytes += tensor->num_elements() * DTypeSize(tensor->dtype);
    const std::vector<float> values = ToFloat(*tensor);
    const auto first = digest["first"].get<std::vector<double>>();
    for (size_t i = 0; i < first.size(); ++i) {
      EXPECT_EQ(values[i], static_cast<float>(first[i])) << name << "[" << i << "]";
    }
    double sum = 0;
    double magnitude = 0;
    for (float v : values) {
      sum += v;
      magnitude += std::fabs(v);
    }
    // Summation order differs from torch's; the bound is a few double roundings per element.
    EXPECT_NEAR(sum, digest["sum"].get<double>(), 1e-12 * magnitude + 1e-300) << name;
  }
  EXPECT_EQ((*checkpoint)->stored_bytes(), expected_bytes);
}

TEST_P(HfFixtureTest, RopeInverseFrequenciesMatchTransformersWithinOneUlp) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(reference_directory() / "reference.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<HostTensor> reference = (*file)->Tensor("rope_inv_freq");
  ASSERT_TRUE(reference.ok()) << reference.status();
  const std::vector<float> expected = ToFloat(*reference);
  const std::vector<float> actual = RopeInverseFrequencies((*checkpoint)->config());
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_LE(std::fabs(actual[i] - expected[i]),
              std::nextafter(expected[i], INFINITY) - expected[i])
        << "inv_freq[" << i << "]";
  }
}

TEST_P(HfFixtureTest, ReferenceLogitsHaveOneRowPerPromptPosition) {
  const json ref = reference();
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(reference_directory() / "reference.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const auto prompts = ref["prompts"].get<std::vector<std::vector<int32_t>>>();
  ASSERT_EQ(prompts.size(), 2u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    absl::StatusOr<HostTensor> logits = (*file)->Tensor("logits_prompt" + std::to_string(i));
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_EQ(logits->dtype, DType::kF32);
    EXPECT_EQ(logits->shape, (std::vector<int64_t>{static_cast<int64_t>(prompts[i].size()),
                                                   ref["config"]["vocab_size"].get<int64_t>()}));
    EXPECT_GE(ref["greedy_tokens"][i].size(), 16u);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfFixtureTest, testing::ValuesIn(AllFixtures()),
                         [](const testing::TestParamInfo<Fixture>& info) {
                           return info.param.name;
                         });

TEST(HfFixtureSetTest, CoversTheRequiredVariants) {
  bool mha = false, gqa = false, mqa = false, tied = false, explicit_head_dim = false,
       llama3 = false, non_default_theta = false, mistral = false, bf16 = false, sharded = false,
       legacy = false;
  for (const std::string& name : FixtureNames()) {
    const json ref = ReadJson(FixtureRoot() / name / "reference.json");
    const json& c = ref["config"];
    const int heads = c["num_attention_heads"], kv = c["num_key_value_heads"];
    mha |= heads == kv && heads > 1;
    gqa |= kv > 1 && heads > kv;
    mqa |= kv == 1 && heads > 1;
    tied |= c["tie_word_embeddings"].get<bool>();
    explicit_head_dim |= c["head_dim"].get<int>() * heads != c["hidden_size"].get<int>();
    llama3 |= c["rope_type"] == "llama3";
    non_default_theta |= c["rope_theta"].get<double>() != 10000.0;
    mistral |= c["architecture"] == "MistralForCausalLM";
    bf16 |= ref["saved_dtype"] == "bfloat16";
    sharded |= ref["sharded"].get<bool>();
    legacy |= ref["legacy_config_form"].get<bool>();
  }
  EXPECT_TRUE(mha && gqa && mqa && tied && explicit_head_dim && llama3 && non_default_theta &&
              mistral && bf16 && sharded && legacy);
}

}  // namespace
}  // namespace llm
