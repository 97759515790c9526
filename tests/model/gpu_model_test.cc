// The whole model on the CUDA backend (bf16) against the Hugging Face fixtures (tests/fixtures/hf,
// logits and greedy tokens computed by transformers in fp32) and against itself:
//  * one-shot prefill logits vs transformers: ||ours - ref|| / ||ref|| < kVsTransformersTolerance.
//    The fixtures are fp32 models with large weights (initializer_range 0.2, peaked softmaxes), so
//    bf16 costs more here than in a trained model. Measured on an H100 (2026-11-24): rounding the
//    weights to bf16 alone, on the fp32 CPU backend, moves the logits by up to 1.26e-2; bf16
//    activations alone (the llama_bf16 fixture, whose weights are bf16 already) by 1.27e-2;
//    together, on this backend, by at most 1.98e-2 (llama_llama3_rope). Hence 3e-2.
//  * chunked prefill (pieces of 5: mid-block, across blocks) and token-by-token prefill (pieces of
//    1: the decode kernel) vs our own one-shot prefill: the same bf16 model through different
//    kernels and chunkings, so the kernel tolerance (1e-2; measured at most 5.9e-3);
//  * greedy decoding, teacher-forced with transformers' tokens so one near-tie cannot derail the
//    rest: every step's argmax must equal transformers' token, except at a step whose reference
//    top-2 margin is below 2 * delta, delta = the largest |logit - transformers' logit| we measured
//    over that prompt's prefill: logits within delta of the reference can flip such a near-tie and
//    no other. Each flip is printed. (The fixtures are fp32 models with near-ties as close as
//    0.002; bf16 weights and activations put our logits ~0.1-0.25 from transformers', so exact
//    equality of every token is not a property bf16 inference has on them.)
//  * decode through CUDA graphs (DecodeGraphsMatchEagerAndSoloRuns, below); the tests above run
//    their single-token steps through graphs too (TransformerOptions' default).
// Fixture head dims 8..128 exercise both the flash kernels (64, 128) and the generic fallback.
// Skips without a GPU (label gpu).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/dtype.h"
#include "nlohmann/json.hpp"
#include "server/model/checkpoint.h"
#include "server/model/safetensors.h"
#include "server/model/transformer.h"
#include "tests/kernels/gpu/gpu_test_util.h"

namespace llm {
namespace {

constexpr double kVsTransformersTolerance = 3e-2;
constexpr double kSelfConsistencyTolerance = 1e-2;
constexpr int32_t kBlockSize = 16;

// The fixtures: $LLM_FIXTURES_DIR, else the source tree's, else ./tests/fixtures (the GPU machine
// runs from a copy of the tree at another path).
std::filesystem::path FixtureRoot() {
  if (const char* env = std::getenv("LLM_FIXTURES_DIR")) return std::filesystem::path(env) / "hf";
  const std::filesystem::path built = std::filesystem::path(LLM_FIXTURES_DIR) / "hf";
  if (std::filesystem::is_directory(built)) return built;
  return std::filesystem::path("tests/fixtures/hf");
}

std::vector<std::string> FixtureNames() {
  std::vector<std::string> names;
  if (!std::filesystem::is_directory(FixtureRoot())) return names;
  for (const auto& entry : std::filesystem::directory_iterator(FixtureRoot())) {
    if (std::filesystem::exists(entry.path() / "reference.json"))
      names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class GpuModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    const std::filesystem::path directory = FixtureRoot() / GetParam();
    std::ifstream file(directory / "reference.json");
    std::stringstream text;
    text << file.rdbuf();
    reference_ = nlohmann::json::parse(text.str());
    auto checkpoint = Checkpoint::Open(directory);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = std::move(*checkpoint);
    auto logits = SafetensorsFile::Open(directory / "reference.safetensors");
    ASSERT_TRUE(logits.ok()) << logits.status();
    reference_logits_ = std::move(*logits);
    auto backend = CreateCudaBackend();
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    TransformerOptions options;
    options.kv_num_blocks = 64;
    options.kv_block_size = kBlockSize;
    options.max_batch_tokens = 64;
    options.max_batch_sequences = 4;
    auto transformer = Transformer::Create(*checkpoint_, *backend_, options);
    ASSERT_TRUE(transformer.ok()) << transformer.status();
    transformer_ = std::move(*transformer);
  }

  std::vector<std::vector<int32_t>> Prompts() const {
    return reference_["prompts"].get<std::vector<std::vector<int32_t>>>();
  }

  std::vector<float> ReferenceLogits(size_t prompt) const {
    auto tensor = reference_logits_->Tensor("logits_prompt" + std::to_string(prompt));
    EXPECT_TRUE(tensor.ok()) << tensor.status();
    if (!tensor.ok()) return {};
    std::vector<float> values(static_cast<size_t>(tensor->num_elements()));
    ConvertToFloat(tensor->dtype, tensor->data, values.size(), values.data());
    return values;
  }

  std::vector<int32_t> NewBlockTable(int32_t tokens) {
    std::vector<int32_t> table;
    for (int32_t b = 0; b < (tokens + kBlockSize - 1) / kBlockSize; ++b)
      table.push_back(next_block_++ % 64);
    return table;
  }

  // Prefills `prompt` in pieces of `piece` tokens; returns every position's logits.
  std::vector<float> Prefill(const std::vector<int32_t>& prompt, int32_t piece) {
    const std::vector<int32_t> table = NewBlockTable(prompt.size());
    std::vector<float> logits;
    for (int32_t begin = 0; begin < static_cast<int32_t>(prompt.size()); begin += piece) {
      SequenceChunk chunk;
      const int32_t end = std::min<int32_t>(begin + piece, prompt.size());
      chunk.tokens.assign(prompt.begin() + begin, prompt.begin() + end);
      chunk.start_position = begin;
      chunk.block_table = table;
      chunk.return_logits = true;
      auto result = transformer_->Forward(std::span(&chunk, 1));
      EXPECT_TRUE(result.ok()) << result.status();
      if (!result.ok()) return {};
      logits.insert(logits.end(), (*result)[0].logits.begin(), (*result)[0].logits.end());
    }
    return logits;
  }

  void ExpectClose(const std::vector<float>& actual, const std::vector<float>& expected,
                   const std::string& what, double tolerance) {
    ASSERT_EQ(actual.size(), expected.size()) << what;
    EXPECT_EQ(gpu_testing::CountNonFinite(actual), 0u) << what;
    double max_diff = 0;
    for (size_t i = 0; i < actual.size(); ++i)
      max_diff = std::max(max_diff, std::abs(double(actual[i]) - expected[i]));
    const double error = gpu_testing::RelativeError(actual, expected);
    std::printf("    %-22s %-28s relative error %.3e, max |diff| %.4f\n", GetParam().c_str(),
                what.c_str(), error, max_diff);
    EXPECT_LT(error, tolerance) << GetParam() << " " << what;
  }

  nlohmann::json reference_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<SafetensorsFile> reference_logits_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Transformer> transformer_;
  int32_t next_block_ = 0;
};

TEST_P(GpuModelTest, PrefillLogitsMatchTransformersAndEachOther) {
  const auto prompts = Prompts();
  ASSERT_FALSE(prompts.empty());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<float> one_shot = Prefill(prompts[i], prompts[i].size());
    ExpectClose(one_shot, ReferenceLogits(i), "prompt" + std::to_string(i) + " one-shot vs HF",
                kVsTransformersTolerance);
    ExpectClose(Prefill(prompts[i], 5), one_shot,
                "prompt" + std::to_string(i) + " pieces of 5 vs one-shot",
                kSelfConsistencyTolerance);
    ExpectClose(Prefill(prompts[i], 1), one_shot,
                "prompt" + std::to_string(i) + " token-by-token vs one-shot",
                kSelfConsistencyTolerance);
  }
}

TEST_P(GpuModelTest, GreedyTokensMatchTransformers) {
  const auto prompts = Prompts();
  const auto expected = reference_["greedy_tokens"].get<std::vector<std::vector<int32_t>>>();
  const auto margins = reference_["greedy_top2_margins"].get<std::vector<std::vector<double>>>();
  int flips = 0, steps = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int32_t> table = NewBlockTable(prompts[i].size() + expected[i].size());
    const std::vector<float> reference = ReferenceLogits(i);
    int32_t position = 0;
    double delta = 0;
    for (size_t step = 0; step < expected[i].size(); ++step) {
      SequenceChunk chunk;
      if (step == 0) {
        chunk.tokens = prompts[i];
        chunk.return_logits = true;
      } else {
        chunk.tokens = {expected[i][step - 1]};  // teacher forcing with transformers' tokens
      }
      chunk.start_position = position;
      chunk.block_table = table;
      auto result = transformer_->Forward(std::span(&chunk, 1));
      ASSERT_TRUE(result.ok()) << result.status();
      if (step == 0) {
        const std::vector<float>& logits = (*result)[0].logits;
        ASSERT_EQ(logits.size(), reference.size());
        for (size_t k = 0; k < logits.size(); ++k)
          delta = std::max(delta, std::abs(double(logits[k]) - reference[k]));
      }
      position += chunk.tokens.size();
      ++steps;
      const int32_t ours = (*result)[0].sampled.token;
      if (ours != expected[i][step]) {
        ++flips;
        std::printf(
            "    %s prompt %zu step %zu: ours %d, transformers %d (reference top-2 margin %.4f, "
            "2 * delta %.4f)\n",
            GetParam().c_str(), i, step, ours, expected[i][step], margins[i][step], 2 * delta);
        EXPECT_LT(margins[i][step], 2 * delta) << GetParam() << " prompt " << i << " step " << step
                                               << ": greedy token differs at a clear margin";
      }
    }
  }
  std::printf("    %-22s greedy steps %d, near-tie flips %d\n", GetParam().c_str(), steps, flips);
}

// Decode through CUDA graphs. A batch of 3 sequences (padded to the bucket of 4) decodes greedily
// for kDecodeSteps steps on three models over the same weights and block tables: graphs (kAuto),
// the same padded plan run eagerly (kBucketedEager) and the plain eager path (kOff).
//  * graphs vs padded eager: the same kernels on the same inputs, so tokens and logits are equal
//    bit for bit, on the first step of a shape (eager run, then recorded) and on replays;
//  * graphs vs plain eager (unfused ops: RmsNorm, Matmul, SiluMul, Add, where graphs fold them
//    into FusedMatmul) and vs each sequence decoded alone (bucket 1, its own graph): other
//    matmul shapes and split counts, so logits within the kernel tolerance, and the same greedy
//    token unless the top-2 margin is below 2 * the largest logit difference of that step.
TEST_P(GpuModelTest, DecodeGraphsMatchEagerAndSoloRuns) {
  constexpr int kDecodeSteps = 12;
  constexpr int kSequences = 3;
  const auto prompts = Prompts();
  ASSERT_FALSE(prompts.empty());
  using Mode = TransformerOptions::DecodeGraphs;
  auto make = [&](Mode mode, bool fused_matmul = true) {
    TransformerOptions options;
    options.fused_matmul = fused_matmul;
    options.kv_num_blocks = 64;
    options.kv_block_size = kBlockSize;
    options.max_batch_tokens = 64;
    options.max_batch_sequences = 4;
    options.decode_graphs = mode;
    auto transformer = Transformer::Create(*checkpoint_, *backend_, options);
    EXPECT_TRUE(transformer.ok()) << transformer.status();
    return transformer.ok() ? std::move(*transformer) : nullptr;
  };
  // solo decodes each sequence alone (bucket 1) with its own KV pool, so that its slightly
  // different values never reach the batched models' caches.
  std::unique_ptr<Transformer> graphs = make(Mode::kAuto), padded = make(Mode::kBucketedEager),
                               plain = make(Mode::kOff, /*fused_matmul=*/false),
                               solo = make(Mode::kAuto);
  ASSERT_TRUE(graphs && padded && plain && solo);
  // Prompts of different lengths (prompt i, cut to differ) so the rows have different KV lengths.
  std::vector<std::vector<int32_t>> contexts(kSequences);
  std::vector<std::vector<int32_t>> tables(kSequences);
  for (int s = 0; s < kSequences; ++s) {
    contexts[s] = prompts[s % prompts.size()];
    if (contexts[s].size() > 2 + static_cast<size_t>(s)) contexts[s].resize(contexts[s].size() - s);
    tables[s] = NewBlockTable(contexts[s].size() + kDecodeSteps + 1);
  }
  std::vector<int32_t> next(kSequences);
  for (Transformer* model : {graphs.get(), padded.get(), plain.get(), solo.get()}) {
    for (int s = 0; s < kSequences; ++s) {
      SequenceChunk chunk;
      chunk.tokens = contexts[s];
      chunk.block_table = tables[s];
      auto result = model->Forward(std::span(&chunk, 1));
      ASSERT_TRUE(result.ok()) << result.status();
      next[s] = (*result)[0].sampled.token;
    }
  }
  auto top2_margin = [](const std::vector<float>& logits) {
    float first = -INFINITY, second = -INFINITY;
    for (float v : logits) {
      if (v > first) {
        second = first;
        first = v;
      } else if (v > second) {
        second = v;
      }
    }
    return double(first) - second;
  };
  int flips = 0;
  double worst_plain = 0, worst_solo = 0;
  for (int step = 0; step < kDecodeSteps; ++step) {
    std::vector<SequenceChunk> chunks(kSequences);
    for (int s = 0; s < kSequences; ++s) {
      chunks[s].tokens = {next[s]};
      chunks[s].start_position = static_cast<int32_t>(contexts[s].size()) + step;
      chunks[s].block_table = tables[s];
      chunks[s].return_logits = true;
    }
    auto g = graphs->Forward(chunks);
    auto p = padded->Forward(chunks);
    auto e = plain->Forward(chunks);
    ASSERT_TRUE(g.ok() && p.ok() && e.ok()) << g.status() << p.status() << e.status();
    for (int s = 0; s < kSequences; ++s) {
      const ChunkResult& ours = (*g)[s];
      ASSERT_EQ(ours.logits.size(), (*p)[s].logits.size());
      EXPECT_EQ(gpu_testing::CountNonFinite(ours.logits), 0u);
      EXPECT_EQ(ours.sampled.token, (*p)[s].sampled.token) << "step " << step << " seq " << s;
      EXPECT_TRUE(ours.logits == (*p)[s].logits)
          << GetParam() << " step " << step << " seq " << s
          << ": graph replay logits differ from the padded eager plan";
      SequenceChunk single = chunks[s];
      auto alone = solo->Forward(std::span(&single, 1));
      ASSERT_TRUE(alone.ok()) << alone.status();
      for (const ChunkResult* other : {&(*e)[s], &(*alone)[0]}) {
        const double error = gpu_testing::RelativeError(other->logits, ours.logits);
        double delta = 0;
        for (size_t k = 0; k < ours.logits.size(); ++k)
          delta = std::max(delta, std::abs(double(other->logits[k]) - ours.logits[k]));
        double& worst = other == &(*e)[s] ? worst_plain : worst_solo;
        worst = std::max(worst, error);
        EXPECT_LT(error, kSelfConsistencyTolerance) << GetParam() << " step " << step;
        if (other->sampled.token != ours.sampled.token) {
          ++flips;
          EXPECT_LT(top2_margin(ours.logits), 2 * delta)
              << GetParam() << " step " << step << " seq " << s
              << ": token differs at a clear margin";
        }
      }
      next[s] = ours.sampled.token;
    }
  }
  std::printf(
      "    %-22s graphs == padded eager over %d steps x %d seqs; vs plain eager rel. err. "
      "<= %.3e, vs solo <= %.3e, near-tie flips %d\n",
      GetParam().c_str(), kDecodeSteps, kSequences, worst_plain, worst_solo, flips);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuModelTest, ::testing::ValuesIn(FixtureNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace llm
