// Checkpoint::Open over crafted directories: single-file and sharded layouts, tied embeddings, and
// the errors for missing, misshapen, duplicated or misplaced tensors and missing files.
#include "server/model/checkpoint.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/model/checkpoint_writer.h"

namespace llm {
namespace {

using ::llm::testing_files::BuildSafetensors;
using ::llm::testing_files::FreshTempDir;
using ::llm::testing_files::RawBytes;
using ::llm::testing_files::TensorSpec;
using ::llm::testing_files::TinyLlama;
using ::llm::testing_files::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;
using json = nlohmann::json;

void WriteSingleFile(const std::filesystem::path& directory, const TinyLlama& model,
                     const std::vector<TensorSpec>& tensors) {
  WriteFile(directory / "config.json", model.ConfigJson().dump());
  WriteFile(directory / "model.safetensors", BuildSafetensors(tensors));
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST(CheckpointTest, OpensSingleFileAndTensorsViewTheStoredValues) {
  const std::filesystem::path directory = FreshTempDir();
  const TinyLlama model;
  const std::vector<TensorSpec> tensors = model.Tensors();
  WriteSingleFile(directory, model, tensors);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->directory(), directory);
  EXPECT_EQ((*checkpoint)->config().num_key_value_heads, 2);
  size_t bytes = 0;
  for (const TensorSpec& spec : tensors) {
    ASSERT_TRUE((*checkpoint)->HasTensor(spec.name)) << spec.name;
    absl::StatusOr<HostTensor> tensor = (*checkpoint)->Tensor(spec.name);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ(tensor->shape, spec.shape) << spec.name;
    EXPECT_EQ(tensor->dtype, DType::kF32);
    EXPECT_EQ(std::memcmp(tensor->data, spec.data.data(), spec.data.size()), 0) << spec.name;
    bytes += spec.data.size();
  }
  EXPECT_EQ((*checkpoint)->stored_bytes(), bytes);
  absl::StatusOr<HostTensor> absent = (*checkpoint)->Tensor("model.layers.9.mlp.up_proj.weight");
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(absent.status()), HasSubstr("model.layers.9.mlp.up_proj.weight"));
  EXPECT_FALSE((*checkpoint)->HasTensor("model.layers.9.mlp.up_proj.weight"));
}

TEST(CheckpointTest, OpensShardedCheckpointThroughTheIndex) {
  const std::filesystem::path directory = FreshTempDir();
  const TinyLlama model;
  const std::vector<TensorSpec> tensors = model.Tensors();
  const size_t half = tensors.size() / 2;
  const std::vector<TensorSpec> first(tensors.begin(), tensors.begin() + half);
  const std::vector<TensorSpec> second(tensors.begin() + half, tensors.end());
  WriteFile(directory / "config.json", model.ConfigJson().dump());
  WriteFile(directory / "model-00001-of-00002.safetensors", BuildSafetensors(first));
  WriteFile(directory / "model-00002-of-00002.safetensors", BuildSafetensors(second));
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const TensorSpec& t : first)
    index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const TensorSpec& t : second)
    index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  WriteFile(directory / "model.safetensors.index.json", index.dump());

  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  size_t bytes = 0;
  for (const TensorSpec& spec : tensors) {
    absl::StatusOr<HostTensor> tensor = (*checkpoint)->Tensor(spec.name);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ(std::memcmp(tensor->data, spec.data.data(), spec.data.size()), 0) << spec.name;
    bytes += spec.data.size();
  }
  EXPECT_EQ((*checkpoint)->stored_bytes(), bytes);
}

TEST(CheckpointTest, TiedEmbeddingsNeedNoLmHeadButUseOneWhenStored) {
  TinyLlama model;
  model.tie = true;
  const std::filesystem::path directory = FreshTempDir();
  WriteSingleFile(directory, model, model.Tensors());
  absl::StatusOr<std::unique_ptr<Checkpoint>> tied = Checkpoint::Open(directory);
  ASSERT_TRUE(tied.ok()) << tied.status();
  EXPECT_TRUE((*tied)->config().tie_word_embeddings);
  EXPECT_FALSE((*tied)->HasTensor("lm_head.weight"));

  // A stored lm_head is checked like any other tensor.
  std::vector<TensorSpec> tensors = model.Tensors();
  tensors.push_back({"lm_head.weight",
                     "F32",
                     {model.vocab, model.hidden + 1},
                     std::string(model.vocab * (model.hidden + 1) * 4, '\0')});
  WriteSingleFile(directory, model, tensors);
  absl::StatusOr<std::unique_ptr<Checkpoint>> misshapen = Checkpoint::Open(directory);
  ASSERT_FALSE(misshapen.ok());
  EXPECT_THAT(Message(misshapen.status()), HasSubstr("lm_head.weight"));
}

TEST(CheckpointTest, UntiedCheckpointWithoutLmHeadIsRejected) {
  const TinyLlama model;
  std::vector<TensorSpec> tensors = model.Tensors();
  std::erase_if(tensors, [](const TensorSpec& t) { return t.name == "lm_head.weight"; });
  const std::filesystem::path directory = FreshTempDir();
  WriteSingleFile(directory, model, tensors);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(checkpoint.status()),
              AllOf(HasSubstr("lm_head.weight"), HasSubstr(directory.string())));
}

TEST(CheckpointTest, EveryRequiredTensorIsCheckedForPresence) {
  const TinyLlama model;
  const std::vector<TensorSpec> all = model.Tensors();
  for (size_t drop = 0; drop < all.size(); ++drop) {
    std::vector<TensorSpec> tensors = all;
    tensors.erase(tensors.begin() + drop);
    const std::filesystem::path directory = FreshTempDir();
    WriteSingleFile(directory, model, tensors);
    absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
    ASSERT_FALSE(checkpoint.ok()) << "opened without " << all[drop].name;
    EXPECT_THAT(Message(checkpoint.status()), HasSubstr("\"" + all[drop].name + "\""));
  }
}

TEST(CheckpointTest, WrongShapeNamesFileTensorAndBothShapes) {
  const TinyLlama model;
  std::vector<TensorSpec> tensors = model.Tensors();
  for (TensorSpec& t : tensors) {
    if (t.name == "model.layers.1.self_attn.k_proj.weight") {
      t.shape = {model.hidden, model.kv_heads * model.head_dim};  // transposed
    }
  }
  const std::filesystem::path directory = FreshTempDir();
  WriteSingleFile(directory, model, tensors);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      Message(checkpoint.status()),
      AllOf(HasSubstr("model.safetensors"), HasSubstr("model.layers.1.self_attn.k_proj.weight"),
            HasSubstr("[8, 4]"), HasSubstr("[4, 8]")));
}

TEST(CheckpointTest, UnsupportedDtypeNamesTensorAndFile) {
  const TinyLlama model;
  std::vector<TensorSpec> tensors = model.Tensors();
  tensors[0].dtype = "I32";  // same element size, so only the dtype is wrong
  const std::filesystem::path directory = FreshTempDir();
  WriteSingleFile(directory, model, tensors);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(Message(checkpoint.status()),
              AllOf(HasSubstr("model.safetensors"), HasSubstr("model.embed_tokens.weight"),
                    HasSubstr("I32")));
}

TEST(CheckpointTest, ConfigMismatchingTheWeightsIsRejected) {
  TinyLlama written;
  TinyLlama claimed = written;
  claimed.inter = 16;
  const std::filesystem::path directory = FreshTempDir();
  WriteFile(directory / "config.json", claimed.ConfigJson().dump());
  WriteFile(directory / "model.safetensors", BuildSafetensors(written.Tensors()));
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(Message(checkpoint.status()), HasSubstr("mlp.gate_proj.weight"));
}

TEST(CheckpointTest, MissingFilesAreNotFoundNamingWhatIsExpected) {
  const std::filesystem::path directory = FreshTempDir();
  absl::StatusOr<std::unique_ptr<Checkpoint>> no_config = Checkpoint::Open(directory);
  EXPECT_EQ(no_config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(no_config.status()), HasSubstr("config.json"));

  WriteFile(directory / "config.json", TinyLlama().ConfigJson().dump());
  absl::StatusOr<std::unique_ptr<Checkpoint>> no_weights = Checkpoint::Open(directory);
  EXPECT_EQ(no_weights.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(no_weights.status()),
              AllOf(HasSubstr("model.safetensors"), HasSubstr("model.safetensors.index.json")));

  absl::StatusOr<std::unique_ptr<Checkpoint>> no_directory = Checkpoint::Open(directory / "absent");
  EXPECT_EQ(no_directory.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(no_directory.status()), HasSubstr("absent"));
}

class ShardedIndexTest : public testing::Test {
 protected:
  void SetUp() override {
    directory_ = FreshTempDir();
    tensors_ = model_.Tensors();
    WriteFile(directory_ / "config.json", model_.ConfigJson().dump());
    WriteFile(directory_ / "model-00001-of-00001.safetensors", BuildSafetensors(tensors_));
    for (const TensorSpec& t : tensors_)
      index_["weight_map"][t.name] = "model-00001-of-00001.safetensors";
  }
  absl::Status OpenWithIndex() {
    WriteFile(directory_ / "model.safetensors.index.json", index_.dump());
    return Checkpoint::Open(directory_).status();
  }

  TinyLlama model_;
  std::vector<TensorSpec> tensors_;
  std::filesystem::path directory_;
  json index_;
};

TEST_F(ShardedIndexTest, OpensWhenTheIndexMatchesTheShards) { EXPECT_TRUE(OpenWithIndex().ok()); }

TEST_F(ShardedIndexTest, MissingShardFileIsNamed) {
  index_["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors";
  const absl::Status status = OpenWithIndex();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(status), HasSubstr("model-00002-of-00002.safetensors"));
}

TEST_F(ShardedIndexTest, TensorAbsentFromItsShardIsNamed) {
  index_["weight_map"]["model.extra.weight"] = "model-00001-of-00001.safetensors";
  const absl::Status status = OpenWithIndex();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(Message(status), AllOf(HasSubstr("model.extra.weight"),
                                     HasSubstr("model-00001-of-00001.safetensors")));
}

TEST_F(ShardedIndexTest, TheIndexDecidesWhichStoredCopyIsRead) {
  TensorSpec replacement = tensors_[0];
  std::vector<float> values(replacement.data.size() / 4, -3.5f);
  replacement.data = RawBytes(values);
  WriteFile(directory_ / "extra.safetensors", BuildSafetensors({replacement}));
  index_["weight_map"][replacement.name] = "extra.safetensors";
  WriteFile(directory_ / "model.safetensors.index.json", index_.dump());
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  absl::StatusOr<HostTensor> tensor = (*checkpoint)->Tensor(replacement.name);
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  EXPECT_EQ(std::memcmp(tensor->data, replacement.data.data(), replacement.data.size()), 0);
}

TEST_F(ShardedIndexTest, ShardNamesMayNotLeaveTheDirectory) {
  index_["weight_map"]["model.norm.weight"] = "../model-00001-of-00001.safetensors";
  const absl::Status status = OpenWithIndex();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(Message(status), HasSubstr("not a plain file name"));
}

TEST_F(ShardedIndexTest, MalformedIndexIsNamed) {
  WriteFile(directory_ / "model.safetensors.index.json", "{\"weight_map\": [");
  absl::Status status = Checkpoint::Open(directory_).status();
  EXPECT_THAT(Message(status), AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("JSON")));
  WriteFile(directory_ / "model.safetensors.index.json", "{\"metadata\": {}}");
  status = Checkpoint::Open(directory_).status();
  EXPECT_THAT(Message(status), HasSubstr("weight_map"));
}

TEST(DefaultModelTest, EmbeddedDefaultCheckpointOpensAsBf16Llama) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(LLM_DEFAULT_MODEL_DIR);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const ModelConfig& config = (*checkpoint)->config();
  EXPECT_EQ(config.architecture, "LlamaForCausalLM");
  EXPECT_EQ(config.head_dim, 64);
  EXPECT_LT(config.num_key_value_heads, config.num_attention_heads);
  absl::StatusOr<HostTensor> embed = (*checkpoint)->Tensor("model.embed_tokens.weight");
  ASSERT_TRUE(embed.ok()) << embed.status();
  EXPECT_EQ(embed->dtype, DType::kBF16);
  // The embedded model travels in the repository and the image: it must stay small (<= 25 MB).
  EXPECT_LT((*checkpoint)->stored_bytes(), size_t{25} << 20);
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(LLM_DEFAULT_MODEL_DIR) / "tokenizer.model"));
}

}  // namespace
}  // namespace llm
