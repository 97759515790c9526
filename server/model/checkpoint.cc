// Opening a Hugging Face checkpoint directory: config, single-file or sharded safetensors, and the
// check that every tensor the Llama architecture needs is present with its expected shape.
#include "server/model/checkpoint.h"

#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/model/safetensors.h"

namespace llm {
namespace {

using nlohmann::json;

constexpr std::string_view kSingleFile = "model.safetensors";
constexpr std::string_view kIndexFile = "model.safetensors.index.json";

class SafetensorsCheckpoint final : public Checkpoint {
 public:
  SafetensorsCheckpoint(std::filesystem::path directory, ModelConfig config)
      : directory_(std::move(directory)), config_(std::move(config)) {}

  const ModelConfig& config() const override { return config_; }
  const std::filesystem::path& directory() const override { return directory_; }

  absl::StatusOr<HostTensor> Tensor(std::string_view name) const override {
    const auto it = tensor_files_.find(name);
    if (it == tensor_files_.end()) {
      return absl::NotFoundError(absl::StrCat("tensor \"", std::string(name),
                                              "\" is not in checkpoint ", directory_.string()));
    }
    return it->second->Tensor(name);
  }

  bool HasTensor(std::string_view name) const override { return tensor_files_.contains(name); }

  size_t stored_bytes() const override {
    size_t total = 0;
    for (const auto& file : files_) total += file->stored_bytes();
    return total;
  }

  void AddFile(std::unique_ptr<SafetensorsFile> file) { files_.push_back(std::move(file)); }
  // Registers `name` as stored in `file` (already added). The index holds one file per tensor, so a
  // name is never registered twice.
  void AddTensor(const std::string& name, const SafetensorsFile* file) {
    tensor_files_.emplace(name, file);
  }
  const SafetensorsFile* FileOf(std::string_view name) const {
    const auto it = tensor_files_.find(name);
    return it == tensor_files_.end() ? nullptr : it->second;
  }

 private:
  std::filesystem::path directory_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*, std::less<>> tensor_files_;
};

absl::StatusOr<std::string> ReadText(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

absl::Status LoadSingleFile(const std::filesystem::path& path, SafetensorsCheckpoint& checkpoint) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  const SafetensorsFile* raw = file->get();
  checkpoint.AddFile(*std::move(file));
  for (const auto& [name, entry] : raw->header().tensors) {
    checkpoint.AddTensor(name, raw);
  }
  return absl::OkStatus();
}

// The index maps every tensor to the shard holding it; each shard must hold what the index says.
absl::Status LoadSharded(const std::filesystem::path& index_path,
                         SafetensorsCheckpoint& checkpoint) {
  absl::StatusOr<std::string> text = ReadText(index_path);
  if (!text.ok()) return text.status();
  json index;
  try {
    index = json::parse(*text);
  } catch (const json::exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path.string(), ": not valid JSON (", error.what(), ")"));
  }
  const auto weight_map = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || weight_map == index.end() || !weight_map->is_object() ||
      weight_map->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path.string(),
                     ": field \"weight_map\" is missing, empty or not an object of "
                     "tensor name -> shard file name"));
  }

  std::map<std::string, const SafetensorsFile*> shards;
  for (const auto& [tensor, shard_value] : weight_map->items()) {
    if (!shard_value.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": weight_map[\"", tensor, "\"] is not a file name"));
    }
    const std::string shard_name = shard_value.get<std::string>();
    // Shards live beside the index; a path component could reach files outside the checkpoint.
    if (shard_name.empty() || shard_name.find('/') != std::string::npos || shard_name == "." ||
        shard_name == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": weight_map[\"", tensor, "\"] = \"", shard_name,
                       "\" is not a plain file name in the directory"));
    }
    auto shard = shards.find(shard_name);
    if (shard == shards.end()) {
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
          SafetensorsFile::Open(index_path.parent_path() / shard_name);
      if (!file.ok()) {
        return absl::Status(file.status().code(),
                            absl::StrCat(file.status().message(), " (shard listed in ",
                                         index_path.filename().string(), ")"));
      }
      shard = shards.emplace(shard_name, file->get()).first;
      checkpoint.AddFile(*std::move(file));
    }
    if (!shard->second->header().tensors.contains(tensor)) {
      return absl::NotFoundError(absl::StrCat(index_path.string(), " says tensor \"", tensor,
                                              "\" is in ", shard_name, ", but that file lacks it"));
    }
    checkpoint.AddTensor(tensor, shard->second);
  }
  return absl::OkStatus();
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status ExpectTensor(const SafetensorsCheckpoint& checkpoint, const std::string& name,
                          const std::vector<int64_t>& expected_shape) {
  const SafetensorsFile* file = checkpoint.FileOf(name);
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "checkpoint ", checkpoint.directory().string(), " lacks tensor \"", name, "\" (expected ",
        ShapeString(expected_shape), " for ", checkpoint.config().architecture,
        "); the checkpoint is incomplete or not a Llama-family model"));
  }
  const SafetensorsEntry& entry = file->header().tensors.find(name)->second;
  if (entry.shape != expected_shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(file->path().string(), ": tensor \"", name, "\" has shape ",
                     ShapeString(entry.shape), " but config.json implies ",
                     ShapeString(expected_shape), "; the weights do not match the config"));
  }
  return absl::OkStatus();
}

absl::Status ValidateArchitecture(const SafetensorsCheckpoint& checkpoint) {
  const ModelConfig& c = checkpoint.config();
  const int64_t hidden = c.hidden_size;
  const int64_t q_features = int64_t{c.num_attention_heads} * c.head_dim;
  const int64_t kv_features = int64_t{c.num_key_value_heads} * c.head_dim;
  const int64_t inter = c.intermediate_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"model.embed_tokens.weight", {c.vocab_size, hidden}},
  };
  for (int32_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    expected.push_back({prefix + "input_layernorm.weight", {hidden}});
    expected.push_back({prefix + "self_attn.q_proj.weight", {q_features, hidden}});
    expected.push_back({prefix + "self_attn.k_proj.weight", {kv_features, hidden}});
    expected.push_back({prefix + "self_attn.v_proj.weight", {kv_features, hidden}});
    expected.push_back({prefix + "self_attn.o_proj.weight", {hidden, q_features}});
    expected.push_back({prefix + "post_attention_layernorm.weight", {hidden}});
    expected.push_back({prefix + "mlp.gate_proj.weight", {inter, hidden}});
    expected.push_back({prefix + "mlp.up_proj.weight", {inter, hidden}});
    expected.push_back({prefix + "mlp.down_proj.weight", {hidden, inter}});
  }
  expected.push_back({"model.norm.weight", {hidden}});
  // Tied checkpoints usually omit lm_head; when one is stored anyway it is used, so check it too.
  if (!c.tie_word_embeddings || checkpoint.HasTensor("lm_head.weight")) {
    expected.push_back({"lm_head.weight", {c.vocab_size, hidden}});
  }
  for (const auto& [name, shape] : expected) {
    if (absl::Status status = ExpectTensor(checkpoint, name, shape); !status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(
    const std::filesystem::path& directory) {
  std::error_code error;
  if (!std::filesystem::is_directory(directory, error)) {
    return absl::NotFoundError(absl::StrCat("checkpoint directory ", directory.string(),
                                            " does not exist or is not a directory"));
  }
  absl::StatusOr<ModelConfig> config = LoadModelConfig(directory / "config.json");
  if (!config.ok()) return config.status();
  auto checkpoint = std::make_unique<SafetensorsCheckpoint>(directory, *std::move(config));

  const std::filesystem::path index_path = directory / kIndexFile;
  const std::filesystem::path single_path = directory / kSingleFile;
  absl::Status status;
  if (std::filesystem::exists(index_path, error)) {
    status = LoadSharded(index_path, *checkpoint);
  } else if (std::filesystem::exists(single_path, error)) {
    status = LoadSingleFile(single_path, *checkpoint);
  } else {
    status = absl::NotFoundError(absl::StrCat(
        "checkpoint directory ", directory.string(), " has neither ", std::string(kSingleFile),
        " nor ", std::string(kIndexFile), "; only safetensors checkpoints are supported"));
  }
  if (!status.ok()) return status;
  if (status = ValidateArchitecture(*checkpoint); !status.ok()) return status;
  return checkpoint;
}

}  // namespace llm
