// RopeInverseFrequencies against transformers' own rope init functions (values recorded by
// tests/fixtures/make_hf_reference.py for a grid of 4.x and 5.x config forms) and against the
// closed forms of default, linear and llama3 RoPE.
#include <cmath>
#include <fstream>
#include <numbers>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/model_config.h"

namespace llm {
namespace {

using json = nlohmann::json;

ModelConfig ConfigWithHeadDim(int32_t head_dim, float theta) {
  ModelConfig config;
  config.head_dim = head_dim;
  config.rope_theta = theta;
  return config;
}

// torch's vectorised powf and libm's may round the last bit differently; nothing else may differ.
bool WithinOneUlp(float actual, float expected) {
  return actual == expected || std::nextafter(expected, actual) == actual;
}

TEST(RopeFrequenciesTest, MatchesTransformersForEveryRecordedConfigForm) {
  std::ifstream file(std::string(LLM_FIXTURES_DIR) + "/rope/rope_reference.json");
  ASSERT_TRUE(file) << "missing rope_reference.json; run tests/fixtures/make_hf_reference.py";
  std::stringstream text;
  text << file.rdbuf();
  const json reference = json::parse(text.str());
  ASSERT_GE(reference["cases"].size(), 8u);
  int exact = 0, total = 0;
  for (const json& c : reference["cases"]) {
    const std::string description = c["description"];
    absl::StatusOr<ModelConfig> config = ParseModelConfig(c["config_json"].dump(), description);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(c["attention_scaling"].get<double>(), 1.0) << description;
    const auto expected = c["inv_freq"].get<std::vector<float>>();
    const std::vector<float> actual = RopeInverseFrequencies(*config);
    ASSERT_EQ(actual.size(), expected.size()) << description;
    for (size_t i = 0; i < actual.size(); ++i) {
      EXPECT_TRUE(WithinOneUlp(actual[i], expected[i]))
          << description << ": inv_freq[" << i << "] = " << actual[i] << ", transformers "
          << expected[i];
      exact += actual[i] == expected[i];
      ++total;
    }
  }
  // One-ulp differences come only from pow; they must stay rare.
  EXPECT_GE(exact, total * 95 / 100) << exact << " of " << total << " bit-exact";
}

TEST(RopeFrequenciesTest, DefaultIsThetaToTheMinusTwoIOverDim) {
  const ModelConfig config = ConfigWithHeadDim(128, 500000.0f);
  const std::vector<float> inv_freq = RopeInverseFrequencies(config);
  ASSERT_EQ(inv_freq.size(), 64u);
  EXPECT_EQ(inv_freq[0], 1.0f);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const double exact = std::pow(500000.0, -2.0 * i / 128.0);
    EXPECT_NEAR(inv_freq[i], exact, 4e-7 * exact) << i;
  }
}

TEST(RopeFrequenciesTest, LinearDividesEveryFrequencyByTheFactor) {
  ModelConfig config = ConfigWithHeadDim(64, 10000.0f);
  const std::vector<float> base = RopeInverseFrequencies(config);
  config.rope_scaling.type = RopeScaling::Type::kLinear;
  config.rope_scaling.factor = 4.0f;
  const std::vector<float> scaled = RopeInverseFrequencies(config);
  ASSERT_EQ(scaled.size(), base.size());
  for (size_t i = 0; i < base.size(); ++i) EXPECT_EQ(scaled[i], base[i] / 4.0f) << i;
}

TEST(RopeFrequenciesTest, Llama3KeepsHighDividesLowAndBlendsMediumFrequencies) {
  ModelConfig config = ConfigWithHeadDim(128, 500000.0f);
  const std::vector<float> base = RopeInverseFrequencies(config);
  config.rope_scaling = {RopeScaling::Type::kLlama3, 8.0f, 1.0f, 4.0f, 8192};
  const std::vector<float> scaled = RopeInverseFrequencies(config);
  int high = 0, low = 0, medium = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double wavelength = 2 * std::numbers::pi / base[i];
    if (wavelength < 8192.0 / 4.0) {
      EXPECT_EQ(scaled[i], base[i]) << i;
      ++high;
    } else if (wavelength > 8192.0 / 1.0) {
      EXPECT_FLOAT_EQ(scaled[i], base[i] / 8.0f) << i;
      ++low;
    } else {
      const double smooth = (8192.0 / wavelength - 1.0) / (4.0 - 1.0);
      const double expected = (1 - smooth) * base[i] / 8.0 + smooth * base[i];
      EXPECT_NEAR(scaled[i], expected, 1e-6 * expected) << i;
      ++medium;
    }
  }
  // Llama 3.1's settings put frequencies in all three bands.
  EXPECT_GT(high, 0);
  EXPECT_GT(low, 0);
  EXPECT_GT(medium, 0);
}

}  // namespace
}  // namespace llm
