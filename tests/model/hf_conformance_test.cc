// Conformance with Hugging Face transformers: for every fixture under tests/fixtures/hf (tiny
// random checkpoints written by transformers, with the logits and greedy tokens transformers
// computed; see tests/fixtures/make_hf_reference.py) and for the embedded default model
// (models/default against tests/fixtures/default_model), the checkpoint loaded through
// Checkpoint::Open and run on the CPU backend must give the reference logits at every prompt
// position (max |diff| < 1e-3), prefilled in one shot and in chunks, and the same greedy
// continuation when decoding token by token.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/dtype.h"
#include "nlohmann/json.hpp"
#include "server/model/checkpoint.h"
#include "server/model/safetensors.h"
#include "server/model/transformer.h"

namespace llm {
namespace {

constexpr double kLogitTolerance = 1e-3;

std::filesystem::path FixtureRoot() { return std::filesystem::path(LLM_FIXTURES_DIR) / "hf"; }

// The embedded default model keeps its checkpoint in models/default and its reference outputs in
// tests/fixtures/default_model; every other fixture holds both in tests/fixtures/hf/<name>.
constexpr char kDefaultModel[] = "default_model";

std::vector<std::string> FixtureNames() {
  std::vector<std::string> names;
  if (std::filesystem::is_directory(FixtureRoot())) {
    for (const auto& entry : std::filesystem::directory_iterator(FixtureRoot())) {
      if (std::filesystem::exists(entry.path() / "reference.json") &&
          std::filesystem::exists(entry.path() / "reference.safetensors")) {
        names.push_back(entry.path().filename().string());
      }
    }
  }
  std::sort(names.begin(), names.end());
  if (std::filesystem::exists(std::filesystem::path(LLM_FIXTURES_DIR) / kDefaultModel /
                              "reference.json")) {
    names.push_back(kDefaultModel);
  }
  return names;
}

std::filesystem::path CheckpointDirectory(const std::string& name) {
  return name == kDefaultModel ? std::filesystem::path(LLM_DEFAULT_MODEL_DIR)
                               : FixtureRoot() / name;
}

std::filesystem::path ReferenceDirectory(const std::string& name) {
  return name == kDefaultModel ? std::filesystem::path(LLM_FIXTURES_DIR) / kDefaultModel
                               : FixtureRoot() / name;
}

nlohmann::json ReadJson(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return nlohmann::json::parse(text.str());
}

// Largest difference seen over every fixture and mode, reported at the end of the run.
double& LargestDiffSeen() {
  static double largest = 0.0;
  return largest;
}

class HfConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  static constexpr int32_t kBlockSize = 16;

  void SetUp() override {
    const std::filesystem::path reference_directory = ReferenceDirectory(GetParam());
    reference_ = ReadJson(reference_directory / "reference.json");
    absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint =
        Checkpoint::Open(CheckpointDirectory(GetParam()));
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = std::move(*checkpoint);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> logits =
        SafetensorsFile::Open(reference_directory / "reference.safetensors");
    ASSERT_TRUE(logits.ok()) << logits.status();
    reference_logits_ = std::move(*logits);
    backend_ = CreateCpuBackend(2);
    TransformerOptions options;
    options.kv_num_blocks = 64;
    options.kv_block_size = kBlockSize;
    options.max_batch_tokens = 64;
    options.max_batch_sequences = 4;
    absl::StatusOr<std::unique_ptr<Transformer>> transformer =
        Transformer::Create(*checkpoint_, *backend_, options);
    ASSERT_TRUE(transformer.ok()) << transformer.status();
    transformer_ = std::move(*transformer);
  }

  std::vector<std::vector<int32_t>> Prompts() const {
    return reference_["prompts"].get<std::vector<std::vector<int32_t>>>();
  }

  std::vector<float> ReferenceLogits(size_t prompt_index) const {
    absl::StatusOr<HostTensor> tensor =
        reference_logits_->Tensor("logits_prompt" + std::to_string(prompt_index));
    EXPECT_TRUE(tensor.ok()) << tensor.status();
    if (!tensor.ok()) return {};
    std::vector<float> values(static_cast<size_t>(tensor->num_elements()));
    ConvertToFloat(tensor->dtype, tensor->data, values.size(), values.data());
    return values;
  }

  // Fresh, distinct blocks for every sequence this test creates, so nothing stale is ever attended.
  std::vector<int32_t> NewBlockTable(int32_t tokens) {
    std::vector<int32_t> table;
    for (int32_t b = 0; b < (tokens + kBlockSize - 1) / kBlockSize; ++b)
      table.push_back(next_block_++);
    return table;
  }

  // Prefills `prompt` in pieces of at most `piece` tokens and returns every position's logits.
  std::vector<float> Prefill(const std::vector<int32_t>& prompt, int32_t piece,
                             const std::vector<int32_t>& table) {
    std::vector<float> logits;
    for (int32_t begin = 0; begin < static_cast<int32_t>(prompt.size()); begin += piece) {
      SequenceChunk chunk;
      const int32_t end = std::min<int32_t>(begin + piece, prompt.size());
      chunk.tokens.assign(prompt.begin() + begin, prompt.begin() + end);
      chunk.start_position = begin;
      chunk.block_table = table;
      chunk.return_logits = true;
      absl::StatusOr<std::vector<ChunkResult>> result = transformer_->Forward(std::span(&chunk, 1));
      EXPECT_TRUE(result.ok()) << result.status();
      if (!result.ok()) return {};
      logits.insert(logits.end(), (*result)[0].logits.begin(), (*result)[0].logits.end());
    }
    return logits;
  }

  void ExpectLogitsMatch(const std::vector<float>& actual, const std::vector<float>& expected,
                         const std::string& what) {
    ASSERT_EQ(actual.size(), expected.size()) << what;
    double max_diff = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < actual.size(); ++i) {
      const double diff = std::abs(static_cast<double>(actual[i]) - expected[i]);
      if (diff > max_diff) max_diff = diff, worst = i;
    }
    const int32_t vocab = checkpoint_->config().vocab_size;
    LargestDiffSeen() = std::max(LargestDiffSeen(), max_diff);
    RecordProperty(what + "_max_abs_diff", std::to_string(max_diff));
    EXPECT_LT(max_diff, kLogitTolerance)
        << GetParam() << " " << what << ": worst at position " << worst / vocab << " token "
        << worst % vocab << " (ours " << actual[worst] << ", transformers " << expected[worst]
        << ")";
  }

  nlohmann::json reference_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<SafetensorsFile> reference_logits_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Transformer> transformer_;
  int32_t next_block_ = 0;
};

TEST_P(HfConformanceTest, OneShotPrefillLogitsMatchTransformers) {
  const std::vector<std::vector<int32_t>> prompts = Prompts();
  ASSERT_FALSE(prompts.empty());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int32_t> table = NewBlockTable(prompts[i].size());
    ExpectLogitsMatch(Prefill(prompts[i], prompts[i].size(), table), ReferenceLogits(i),
                      "prompt" + std::to_string(i) + "_one_shot");
  }
}

TEST_P(HfConformanceTest, ChunkedPrefillLogitsMatchTransformers) {
  const std::vector<std::vector<int32_t>> prompts = Prompts();
  for (size_t i = 0; i < prompts.size(); ++i) {
    // Pieces of 5 end mid-block (block size 16) and cross block boundaries; pieces of 1 are decode
    // steps.
    for (int32_t piece : {5, 1}) {
      const std::vector<int32_t> table = NewBlockTable(prompts[i].size());
      ExpectLogitsMatch(Prefill(prompts[i], piece, table), ReferenceLogits(i),
                        "prompt" + std::to_string(i) + "_pieces_of_" + std::to_string(piece));
    }
  }
}

TEST_P(HfConformanceTest, GreedyDecodingTokenByTokenMatchesTransformers) {
  const std::vector<std::vector<int32_t>> prompts = Prompts();
  const auto expected_tokens = reference_["greedy_tokens"].get<std::vector<std::vector<int32_t>>>();
  ASSERT_EQ(expected_tokens.size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (int32_t piece : {static_cast<int32_t>(prompts[i].size()), 5}) {
      const int32_t total = prompts[i].size() + expected_tokens[i].size();
      const std::vector<int32_t> table = NewBlockTable(total);
      std::vector<int32_t> generated;
      int32_t position = 0;
      while (generated.size() < expected_tokens[i].size()) {
        SequenceChunk chunk;
        if (position < static_cast<int32_t>(prompts[i].size())) {
          const int32_t end = std::min<int32_t>(position + piece, prompts[i].size());
          chunk.tokens.assign(prompts[i].begin() + position, prompts[i].begin() + end);
        } else {
          chunk.tokens = {generated.back()};
        }
        chunk.start_position = position;
        chunk.block_table = table;
        chunk.sample = true;  // greedy: default SamplingParams have temperature 0
        absl::StatusOr<std::vector<ChunkResult>> result =
            transformer_->Forward(std::span(&chunk, 1));
        ASSERT_TRUE(result.ok()) << result.status();
        position += chunk.tokens.size();
        if (position >= static_cast<int32_t>(prompts[i].size()))
          generated.push_back((*result)[0].sampled.token);
      }
      EXPECT_EQ(generated, expected_tokens[i])
          << GetParam() << " prompt " << i << " prefilled in pieces of " << piece;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfConformanceTest, ::testing::ValuesIn(FixtureNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST(HfConformanceFixturesTest, FixturesArePresent) {
  EXPECT_FALSE(FixtureNames().empty())
      << "no fixtures under " << FixtureRoot() << "; run tests/fixtures/make_hf_reference.py";
}

// Prints the largest logit difference of the whole run, for the record.
class LargestDiffReporter : public ::testing::EmptyTestEventListener {
  void OnTestProgramEnd(const ::testing::UnitTest&) override {
    std::cout << "[ hf conformance ] largest |logit - transformers logit| seen: "
              << LargestDiffSeen() << "\n";
  }
};
const bool kReporterInstalled = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new LargestDiffReporter);
  return true;
}();

}  // namespace
}  // namespace llm
