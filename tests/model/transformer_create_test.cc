// Transformer::Create refuses checkpoints and options it cannot run, with errors that name the
// tensor or option to fix, instead of computing something else.
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/model/transformer.h"
#include "tests/model/fake_checkpoint.h"

namespace llm {
namespace {

TransformerOptions SmallOptions() {
  TransformerOptions options;
  options.kv_num_blocks = 8;
  options.kv_block_size = 16;
  options.max_batch_tokens = 16;
  options.max_batch_sequences = 2;
  return options;
}

absl::Status CreateStatus(const Checkpoint& checkpoint, const TransformerOptions& options) {
  std::unique_ptr<Backend> backend = CreateCpuBackend(1);
  return Transformer::Create(checkpoint, *backend, options).status();
}

TEST(TransformerCreateTest, AcceptsAWellFormedCheckpoint) {
  testing::FakeCheckpoint checkpoint(testing::SmallLlamaConfig(), 1);
  EXPECT_TRUE(CreateStatus(checkpoint, SmallOptions()).ok());
}

TEST(TransformerCreateTest, RejectsOptionsWithoutKvBlocks) {
  testing::FakeCheckpoint checkpoint(testing::SmallLlamaConfig(), 1);
  TransformerOptions options = SmallOptions();
  options.kv_num_blocks = 0;
  const absl::Status status = CreateStatus(checkpoint, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("kv_num_blocks"), std::string::npos) << status;
}

TEST(TransformerCreateTest, RejectsAttentionBiasItDoesNotApply) {
  testing::FakeCheckpoint checkpoint(testing::SmallLlamaConfig(), 1);
  checkpoint.Put("model.layers.0.self_attn.q_proj.bias", {64});
  const absl::Status status = CreateStatus(checkpoint, SmallOptions());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(status.message().find("q_proj.bias"), std::string::npos) << status;
}

TEST(TransformerCreateTest, RejectsAWeightWhoseShapeContradictsTheConfig) {
  testing::FakeCheckpoint checkpoint(testing::SmallLlamaConfig(), 1);
  checkpoint.Put("model.layers.1.mlp.up_proj.weight", {95, 64});  // intermediate_size is 96
  const absl::Status status = CreateStatus(checkpoint, SmallOptions());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("model.layers.1.mlp.up_proj.weight"), std::string::npos)
      << status;
}

TEST(TransformerCreateTest, UntiedModelWithoutLmHeadIsNotFound) {
  testing::FakeCheckpoint checkpoint(testing::SmallLlamaConfig(), 1);
  checkpoint.Remove("lm_head.weight");
  const absl::Status status = CreateStatus(checkpoint, SmallOptions());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(status.message().find("lm_head.weight"), std::string::npos) << status;
}

}  // namespace
}  // namespace llm
