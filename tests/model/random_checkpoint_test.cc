// tools/make_random_checkpoint.py against this repository's loader: a tiny random checkpoint opens
// with Checkpoint::Open (every shape and dtype check passes), holds bf16 values with the asked-for
// statistics, runs on the CPU backend, and drives llm-bench-engine (when built) end to end.
// Skips when no python3 with numpy is found ($LLM_PYTHON, else python3 on PATH, else
// /usr/bin/python3).
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/dtype.h"
#include "nlohmann/json.hpp"
#include "server/model/checkpoint.h"
#include "server/model/transformer.h"

namespace llm {
namespace {

constexpr char kTinyShape[] =
    "--hidden_size 64 --num_hidden_layers 2 --num_attention_heads 4 --num_key_value_heads 2 "
    "--intermediate_size 96 --vocab_size 384 --max_position_embeddings 256";

bool HasNumpy(const std::string& python) {
  return std::system(absl::StrCat(python, " -c 'import numpy' > /dev/null 2>&1").c_str()) == 0;
}

// $LLM_PYTHON, else python3 on PATH, else the system's /usr/bin/python3 (where Debian's
// python3-numpy, from deploy/install-deps.sh, lives when PATH's python3 is another install).
std::string Python() {
  static const std::string python = [] {
    const char* from_env = std::getenv("LLM_PYTHON");
    if (from_env != nullptr && *from_env != '\0') return std::string(from_env);
    if (!HasNumpy("python3") && HasNumpy("/usr/bin/python3")) return std::string("/usr/bin/python3");
    return std::string("python3");
  }();
  return python;
}

bool PythonHasNumpy() { return HasNumpy(Python()); }

// Runs the script into a fresh directory under the test's temp dir; "" on success, else the
// command.
std::string MakeCheckpoint(const std::filesystem::path& directory, const std::string& extra_flags) {
  std::filesystem::remove_all(directory);
  const std::string command =
      absl::StrCat(Python(), " ", LLM_MAKE_RANDOM_CHECKPOINT, " --out ", directory.string(), " ",
                   kTinyShape, " ", extra_flags, " > ", directory.string(), ".log 2>&1");
  return std::system(command.c_str()) == 0 ? "" : command;
}

struct Moments {
  double mean = 0.0;
  double std = 0.0;
};

Moments Bf16Moments(const HostTensor& tensor) {
  const auto* bits = static_cast<const uint16_t*>(tensor.data);
  double sum = 0.0, sum_squares = 0.0;
  const int64_t n = tensor.num_elements();
  for (int64_t i = 0; i < n; ++i) {
    const double value = BF16ToFloat(bits[i]);
    sum += value;
    sum_squares += value * value;
  }
  const double mean = sum / n;
  return {mean, std::sqrt(sum_squares / n - mean * mean)};
}

class RandomCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PythonHasNumpy()) GTEST_SKIP() << Python() << " with numpy not found; set LLM_PYTHON";
    directory_ = std::filesystem::path(::testing::TempDir()) /
                 absl::StrCat("random_checkpoint_",
                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  std::filesystem::path directory_;
};

TEST_F(RandomCheckpointTest, LoadsWithTheRequestedShapeAndBf16Statistics) {
  ASSERT_EQ(MakeCheckpoint(directory_, "--seed 3"), "");
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const ModelConfig& config = (*checkpoint)->config();
  EXPECT_EQ(config.architecture, "LlamaForCausalLM");
  EXPECT_EQ(config.hidden_size, 64);
  EXPECT_EQ(config.num_hidden_layers, 2);
  EXPECT_EQ(config.num_attention_heads, 4);
  EXPECT_EQ(config.num_key_value_heads, 2);
  EXPECT_EQ(config.head_dim, 16);
  EXPECT_EQ(config.intermediate_size, 96);
  EXPECT_EQ(config.vocab_size, 384);
  EXPECT_EQ(config.max_position_embeddings, 256);
  EXPECT_FALSE(config.tie_word_embeddings);
  // Every tensor of the architecture, untied head included: 2 + 9 per layer + 2.
  const int64_t expected_values =
      2 * 384 * 64 + 64 + 2 * (2 * 64 + 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 96 * 64);
  EXPECT_EQ((*checkpoint)->stored_bytes(), static_cast<size_t>(expected_values * 2));
  for (const char* name :
       {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.self_attn.k_proj.weight",
        "model.layers.0.mlp.down_proj.weight"}) {
    absl::StatusOr<HostTensor> tensor = (*checkpoint)->Tensor(name);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ(tensor->dtype, DType::kBF16) << name;
    const Moments moments = Bf16Moments(*tensor);
    EXPECT_NEAR(moments.mean, 0.0, 0.004) << name;
    EXPECT_NEAR(moments.std, 0.02, 0.003) << name;
  }
  absl::StatusOr<HostTensor> norm = (*checkpoint)->Tensor("model.layers.1.input_layernorm.weight");
  ASSERT_TRUE(norm.ok()) << norm.status();
  EXPECT_NEAR(Bf16Moments(*norm).mean, 1.0, 0.02);
}

// Large checkpoints fill tensors from a pool of draws; the result must load the same way.
TEST_F(RandomCheckpointTest, PooledValuesLoadAndKeepTheirSpread) {
  ASSERT_EQ(MakeCheckpoint(directory_, "--independent_limit 0 --segment 64 --std 0.05"), "");
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  absl::StatusOr<HostTensor> tensor = (*checkpoint)->Tensor("model.layers.0.mlp.gate_proj.weight");
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  EXPECT_NEAR(Bf16Moments(*tensor).std, 0.05, 0.006);
}

TEST_F(RandomCheckpointTest, RunsAForwardStepOnTheCpuBackend) {
  ASSERT_EQ(MakeCheckpoint(directory_, ""), "");
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  std::unique_ptr<Backend> backend = CreateCpuBackend(1);
  absl::StatusOr<std::unique_ptr<Transformer>> model = Transformer::Create(
      **checkpoint, *backend, {.kv_num_blocks = 4, .kv_block_size = 16, .max_batch_tokens = 64});
  ASSERT_TRUE(model.ok()) << model.status();
  SequenceChunk chunk;
  chunk.tokens = {1, 17, 42, 383, 5};
  chunk.block_table = {0};
  absl::StatusOr<std::vector<ChunkResult>> results = (*model)->Forward({&chunk, 1});
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 1u);
  EXPECT_GE((*results)[0].sampled.token, 0);
  EXPECT_LT((*results)[0].sampled.token, 384);
  EXPECT_TRUE(std::isfinite((*results)[0].sampled.logprob));
}

#ifdef LLM_BENCH_ENGINE_BINARY
TEST_F(RandomCheckpointTest, LlmBenchEngineGeneratesEveryRequestedToken) {
  ASSERT_EQ(MakeCheckpoint(directory_, ""), "");
  const std::filesystem::path json_path = directory_.string() + ".json";
  const std::string command = absl::StrCat(
      LLM_BENCH_ENGINE_BINARY, " --model=", directory_.string(),
      " --backend=cpu --threads=1 --concurrency=4 --requests=10 --prompt_len=20 --output_len=6",
      " --duration=60s --json_out=", json_path.string(), " > ", directory_.string(),
      ".bench.log 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  nlohmann::json report = nlohmann::json::parse(std::ifstream(json_path));
  EXPECT_EQ(report["requests_ok"], 10);
  EXPECT_EQ(report["generated_tokens"], 60);
  EXPECT_EQ(report["backend"], "cpu");
  EXPECT_GT(report["generated_tokens_per_second"].get<double>(), 0.0);
  EXPECT_GT(report["decode_step_seconds"]["count"].get<int>(), 0);
  EXPECT_GT(report["decode_batch_sequences_mean"].get<double>(), 1.0);
  EXPECT_EQ(report["inter_token_seconds"]["count"], 10 * 5);
}
#endif

}  // namespace
}  // namespace llm
