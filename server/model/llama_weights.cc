// UploadLlamaWeights: fused projections are concatenated along the output-feature rows on the host
// (a byte concatenation when the parts share a dtype), then converted by the backend on upload.
// Folding a norm's gain into the product after it multiplies in F32 and rounds once on upload.
#include "server/model/llama_weights.h"

#include <cstring>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace llm {
namespace {

absl::StatusOr<HostTensor> ShapedTensor(const Checkpoint& checkpoint, const std::string& name,
                                        std::vector<int64_t> expected_shape) {
  absl::StatusOr<HostTensor> tensor = checkpoint.Tensor(name);
  if (!tensor.ok()) return tensor.status();
  if (tensor->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", name, " in ", checkpoint.directory().string(), " has shape [",
        absl::StrJoin(tensor->shape, ", "), "] but config.json implies [",
        absl::StrJoin(expected_shape, ", "), "]; the checkpoint and its config do not match"));
  }
  return tensor;
}

// Stacks 2-D tensors with equal column counts along rows and uploads the result; with
// column_gain ([columns]), every row is first multiplied by it element-wise in F32 (W diag(gain):
// a norm's gain folded into the product that follows it).
absl::StatusOr<DeviceBuffer> UploadStackedRows(Backend& backend,
                                               const std::vector<HostTensor>& parts,
                                               const HostTensor* column_gain = nullptr) {
  const int64_t columns = parts.front().shape[1];
  int64_t rows = 0;
  bool same_dtype = column_gain == nullptr;
  for (const HostTensor& part : parts) {
    rows += part.shape[0];
    same_dtype &= part.dtype == parts.front().dtype;
  }
  // Mixed dtypes (or a gain to apply) are widened to F32 first so the stacked tensor has one dtype.
  const DType dtype = same_dtype ? parts.front().dtype : DType::kF32;
  const size_t element_size = DTypeSize(dtype);
  std::vector<unsigned char> stacked(static_cast<size_t>(rows * columns) * element_size);
  size_t offset = 0;
  for (const HostTensor& part : parts) {
    const size_t count = static_cast<size_t>(part.num_elements());
    if (same_dtype) {
      std::memcpy(stacked.data() + offset, part.data, count * element_size);
    } else {
      ConvertToFloat(part.dtype, part.data, count,
                     reinterpret_cast<float*>(stacked.data() + offset));
    }
    offset += count * element_size;
  }
  if (column_gain != nullptr) {
    std::vector<float> gain(static_cast<size_t>(columns));
    ConvertToFloat(column_gain->dtype, column_gain->data, gain.size(), gain.data());
    auto* values = reinterpret_cast<float*>(stacked.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < columns; ++c) values[r * columns + c] *= gain[c];
    }
  }
  return backend.UploadWeight(HostTensor{dtype, {rows, columns}, stacked.data()});
}

class WeightUploader {
 public:
  WeightUploader(const Checkpoint& checkpoint, Backend& backend, LlamaWeights& weights)
      : checkpoint_(checkpoint), backend_(backend), weights_(weights) {}

  absl::Status Upload(const std::string& name, std::vector<int64_t> shape,
                      DeviceBuffer& destination) {
    absl::StatusOr<HostTensor> tensor = ShapedTensor(checkpoint_, name, std::move(shape));
    if (!tensor.ok()) return tensor.status();
    return Keep(backend_.UploadWeight(*tensor), name, destination);
  }

  // With gain_name (a [columns] norm weight), the stacked rows are multiplied by that gain.
  absl::Status UploadStacked(const std::vector<std::pair<std::string, std::vector<int64_t>>>& parts,
                             DeviceBuffer& destination, const std::string& gain_name = "") {
    std::vector<HostTensor> tensors;
    for (const auto& [name, shape] : parts) {
      absl::StatusOr<HostTensor> tensor = ShapedTensor(checkpoint_, name, shape);
      if (!tensor.ok()) return tensor.status();
      tensors.push_back(*tensor);
    }
    std::optional<HostTensor> gain;
    if (!gain_name.empty()) {
      absl::StatusOr<HostTensor> tensor =
          ShapedTensor(checkpoint_, gain_name, {tensors.front().shape[1]});
      if (!tensor.ok()) return tensor.status();
      gain = *tensor;
    }
    return Keep(UploadStackedRows(backend_, tensors, gain ? &*gain : nullptr), parts.front().first,
                destination);
  }

 private:
  absl::Status Keep(absl::StatusOr<DeviceBuffer> buffer, const std::string& name,
                    DeviceBuffer& destination) {
    if (!buffer.ok()) {
      return absl::Status(buffer.status().code(),
                          absl::StrCat("uploading ", name, ": ", buffer.status().message()));
    }
    weights_.bytes += buffer->bytes();
    destination = std::move(*buffer);
    return absl::OkStatus();
  }

  const Checkpoint& checkpoint_;
  Backend& backend_;
  LlamaWeights& weights_;
};

}  // namespace

absl::StatusOr<LlamaWeights> UploadLlamaWeights(const Checkpoint& checkpoint, Backend& backend,
                                                bool fold_norm_gains) {
  const ModelConfig& config = checkpoint.config();
  const int64_t hidden = config.hidden_size, inter = config.intermediate_size;
  const int64_t q_rows = static_cast<int64_t>(config.num_attention_heads) * config.head_dim;
  const int64_t kv_rows = static_cast<int64_t>(config.num_key_value_heads) * config.head_dim;
  const int64_t vocab = config.vocab_size;

  for (const char* projection : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    const std::string bias = absl::StrCat("model.layers.0.self_attn.", projection, ".bias");
    if (checkpoint.HasTensor(bias)) {
      return absl::UnimplementedError(absl::StrCat(
          "checkpoint ", checkpoint.directory().string(), " has ", bias,
          " (attention_bias); this forward implements bias-free Llama/Mistral projections only"));
    }
  }

  LlamaWeights weights;
  weights.norm_gains_folded = fold_norm_gains;
  WeightUploader uploader(checkpoint, backend, weights);
  if (absl::Status s =
          uploader.Upload("model.embed_tokens.weight", {vocab, hidden}, weights.embed_tokens);
      !s.ok())
    return s;
  weights.layers.resize(config.num_hidden_layers);
  for (int32_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string prefix = absl::StrCat("model.layers.", l, ".");
    LlamaLayerWeights& layer = weights.layers[l];
    absl::Status status =
        uploader.Upload(prefix + "input_layernorm.weight", {hidden}, layer.input_norm);
    if (status.ok()) {
      status = uploader.UploadStacked({{prefix + "self_attn.q_proj.weight", {q_rows, hidden}},
                                       {prefix + "self_attn.k_proj.weight", {kv_rows, hidden}},
                                       {prefix + "self_attn.v_proj.weight", {kv_rows, hidden}}},
                                      layer.qkv_proj,
                                      fold_norm_gains ? prefix + "input_layernorm.weight" : "");
    }
    if (status.ok())
      status = uploader.Upload(prefix + "self_attn.o_proj.weight", {hidden, q_rows}, layer.o_proj);
    if (status.ok()) {
      status = uploader.Upload(prefix + "post_attention_layernorm.weight", {hidden},
                               layer.post_attention_norm);
    }
    if (status.ok()) {
      status = uploader.UploadStacked(
          {{prefix + "mlp.gate_proj.weight", {inter, hidden}},
           {prefix + "mlp.up_proj.weight", {inter, hidden}}},
          layer.gate_up_proj, fold_norm_gains ? prefix + "post_attention_layernorm.weight" : "");
    }
    if (status.ok())
      status = uploader.Upload(prefix + "mlp.down_proj.weight", {hidden, inter}, layer.down_proj);
    if (!status.ok()) return status;
  }
  if (absl::Status s = uploader.Upload("model.norm.weight", {hidden}, weights.final_norm); !s.ok())
    return s;
  // Tied checkpoints use the embedding matrix as the LM head (transformers ties them even when a
  // lm_head.weight copy is stored).
  if (!config.tie_word_embeddings) {
    if (absl::Status s = uploader.Upload("lm_head.weight", {vocab, hidden}, weights.lm_head);
        !s.ok())
      return s;
  }
  return weights;
}

}  // namespace llm
