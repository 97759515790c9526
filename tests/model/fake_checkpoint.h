// An in-memory Checkpoint with seeded random weights for a given config, so transformer tests run
// without files. Weights are F32 and scaled like a freshly initialised model (std ~0.2 by default) so logits
// are spread out and differences show.
#pragma once

#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "server/model/checkpoint.h"

namespace llm::testing {

class FakeCheckpoint final : public Checkpoint {
 public:
  // projection_std: of every matrix but the embedding (std 1); wider models want less to keep
  // activations at the small models' scale.
  FakeCheckpoint(const ModelConfig& config, uint32_t seed, float projection_std = 0.2f)
      : config_(config) {
    std::mt19937 generator(seed);
    const float w = projection_std;
    const int64_t hidden = config.hidden_size, inter = config.intermediate_size;
    const int64_t q_rows = static_cast<int64_t>(config.num_attention_heads) * config.head_dim;
    const int64_t kv_rows = static_cast<int64_t>(config.num_key_value_heads) * config.head_dim;
    Add("model.embed_tokens.weight", {config.vocab_size, hidden}, 1.0f, 0.0f, generator);
    for (int32_t l = 0; l < config.num_hidden_layers; ++l) {
      const std::string prefix = absl::StrCat("model.layers.", l, ".");
      Add(prefix + "input_layernorm.weight", {hidden}, 0.2f, 1.0f, generator);
      Add(prefix + "self_attn.q_proj.weight", {q_rows, hidden}, w, 0.0f, generator);
      Add(prefix + "self_attn.k_proj.weight", {kv_rows, hidden}, w, 0.0f, generator);
      Add(prefix + "self_attn.v_proj.weight", {kv_rows, hidden}, w, 0.0f, generator);
      Add(prefix + "self_attn.o_proj.weight", {hidden, q_rows}, w, 0.0f, generator);
      Add(prefix + "post_attention_layernorm.weight", {hidden}, 0.2f, 1.0f, generator);
      Add(prefix + "mlp.gate_proj.weight", {inter, hidden}, w, 0.0f, generator);
      Add(prefix + "mlp.up_proj.weight", {inter, hidden}, w, 0.0f, generator);
      Add(prefix + "mlp.down_proj.weight", {hidden, inter}, w, 0.0f, generator);
    }
    Add("model.norm.weight", {hidden}, 0.2f, 1.0f, generator);
    if (!config.tie_word_embeddings) {
      Add("lm_head.weight", {config.vocab_size, hidden}, w, 0.0f, generator);
    }
  }

  const ModelConfig& config() const override { return config_; }
  const std::filesystem::path& directory() const override { return directory_; }
  absl::StatusOr<HostTensor> Tensor(std::string_view name) const override {
    const auto it = tensors_.find(std::string(name));
    if (it == tensors_.end()) {
      return absl::NotFoundError(absl::StrCat("fake checkpoint has no tensor ", std::string(name)));
    }
    return HostTensor{DType::kF32, it->second.shape, it->second.values.data()};
  }
  bool HasTensor(std::string_view name) const override {
    return tensors_.contains(std::string(name));
  }
  size_t stored_bytes() const override {
    size_t bytes = 0;
    for (const auto& [name, tensor] : tensors_) bytes += tensor.values.size() * sizeof(float);
    return bytes;
  }

  // Host copy of a tensor's values, for naive references in tests.
  const std::vector<float>& values(const std::string& name) const {
    return tensors_.at(name).values;
  }

  // Adds (or replaces) a tensor of zeros, and removes one: for tests of malformed checkpoints.
  void Put(const std::string& name, std::vector<int64_t> shape) {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    tensors_[name] = Stored{std::move(shape), std::vector<float>(count, 0.0f)};
  }
  void Remove(const std::string& name) { tensors_.erase(name); }

 private:
  struct Stored {
    std::vector<int64_t> shape;
    std::vector<float> values;
  };

  void Add(const std::string& name, std::vector<int64_t> shape, float std_dev, float mean,
           std::mt19937& generator) {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    std::normal_distribution<float> distribution(mean, std_dev);
    Stored stored{std::move(shape), std::vector<float>(count)};
    for (float& v : stored.values) v = distribution(generator);
    tensors_.emplace(name, std::move(stored));
  }

  ModelConfig config_;
  std::filesystem::path directory_ = "fake-checkpoint";
  std::map<std::string, Stored> tensors_;
};

// A small Llama config: 2 layers, GQA 4:2, head_dim 16.
inline ModelConfig SmallLlamaConfig() {
  ModelConfig config;
  config.architecture = "LlamaForCausalLM";
  config.hidden_size = 64;
  config.intermediate_size = 96;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 16;
  config.rms_norm_eps = 1e-5f;
  config.vocab_size = 100;
  config.max_position_embeddings = 256;
  config.rope_theta = 10000.0f;
  return config;
}

}  // namespace llm::testing
