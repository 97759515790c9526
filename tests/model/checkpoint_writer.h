// Test-only writers for crafted checkpoint files: safetensors bytes built by hand (so malformed
// variants are easy to make), tiny Llama config.json texts and the tensor set they imply.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace llm::testing_files {

// 8-byte little-endian header length, the header text padded with spaces to a multiple of 8 bytes
// (as the reference writer does, so data is aligned), then the data section.
inline std::string SafetensorsBytes(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string bytes(8, '\0');
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return bytes + header + data;
}

struct TensorSpec {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", or anything else for negative tests
  std::vector<int64_t> shape;
  std::string data;  // raw little-endian element bytes
};

template <typename T>
std::string RawBytes(const std::vector<T>& values) {
  std::string bytes(values.size() * sizeof(T), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// A well-formed file: tensors packed in order, header padded with spaces to a multiple of 8 bytes
// as the reference writer does.
inline std::string BuildSafetensors(const std::vector<TensorSpec>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const TensorSpec& tensor : tensors) {
    header[tensor.name] = {{"dtype", tensor.dtype},
                           {"shape", tensor.shape},
                           {"data_offsets", {data.size(), data.size() + tensor.data.size()}}};
    data += tensor.data;
  }
  return SafetensorsBytes(header.dump(), data);
}

inline void WriteFile(const std::filesystem::path& path, const std::string& contents) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  ASSERT_TRUE(file.good()) << "cannot write " << path;
}

// A fresh, empty directory under the test temp dir, unique per test.
inline std::filesystem::path FreshTempDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "_" + info->name();
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const std::filesystem::path directory = std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::remove_all(directory);
  std::filesystem::create_directories(directory);
  return directory;
}

struct TinyLlama {
  int64_t hidden = 8, inter = 12, layers = 2, heads = 4, kv_heads = 2, head_dim = 2, vocab = 16;
  bool tie = false;

  nlohmann::json ConfigJson() const {
    return {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_size", hidden},
            {"intermediate_size", inter},
            {"num_hidden_layers", layers},
            {"num_attention_heads", heads},
            {"num_key_value_heads", kv_heads},
            {"head_dim", head_dim},
            {"vocab_size", vocab},
            {"max_position_embeddings", 128},
            {"rms_norm_eps", 1e-5},
            {"rope_theta", 10000.0},
            {"tie_word_embeddings", tie},
            {"bos_token_id", 1},
            {"eos_token_id", 2},
            {"torch_dtype", "float32"}};
  }

  // Every tensor of the architecture in F32; element k of each tensor holds k + tensor_index / 64
  // so that views into the right bytes are recognisable.
  std::vector<TensorSpec> Tensors() const {
    std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
        {"model.embed_tokens.weight", {vocab, hidden}}};
    for (int64_t i = 0; i < layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      shapes.push_back({p + "input_layernorm.weight", {hidden}});
      shapes.push_back({p + "self_attn.q_proj.weight", {heads * head_dim, hidden}});
      shapes.push_back({p + "self_attn.k_proj.weight", {kv_heads * head_dim, hidden}});
      shapes.push_back({p + "self_attn.v_proj.weight", {kv_heads * head_dim, hidden}});
      shapes.push_back({p + "self_attn.o_proj.weight", {hidden, heads * head_dim}});
      shapes.push_back({p + "post_attention_layernorm.weight", {hidden}});
      shapes.push_back({p + "mlp.gate_proj.weight", {inter, hidden}});
      shapes.push_back({p + "mlp.up_proj.weight", {inter, hidden}});
      shapes.push_back({p + "mlp.down_proj.weight", {hidden, inter}});
    }
    shapes.push_back({"model.norm.weight", {hidden}});
    if (!tie) shapes.push_back({"lm_head.weight", {vocab, hidden}});
    std::vector<TensorSpec> tensors;
    for (size_t t = 0; t < shapes.size(); ++t) {
      int64_t count = 1;
      for (int64_t d : shapes[t].second) count *= d;
      std::vector<float> values(static_cast<size_t>(count));
      for (int64_t k = 0; k < count; ++k) values[k] = static_cast<float>(k) + t / 64.0f;
      tensors.push_back({shapes[t].first, "F32", shapes[t].second, RawBytes(values)});
    }
    return tensors;
  }
};

}  // namespace llm::testing_files
