// A Hugging Face checkpoint directory: config.json plus model.safetensors or sharded
// model-0000N-of-0000M.safetensors with model.safetensors.index.json. Files are memory-mapped;
// tensors are views into the maps. Open() validates that every tensor the architecture needs is
// present with the right shape and a supported dtype, and fails naming the file and the tensor.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "server/model/model_config.h"

namespace llm {

class Checkpoint {
 public:
  virtual ~Checkpoint() = default;
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::filesystem::path& directory);

  virtual const ModelConfig& config() const = 0;
  virtual const std::filesystem::path& directory() const = 0;
  // NotFound naming the tensor and the directory when absent.
  virtual absl::StatusOr<HostTensor> Tensor(std::string_view name) const = 0;
  virtual bool HasTensor(std::string_view name) const = 0;
  // Total bytes of all tensors as stored.
  virtual size_t stored_bytes() const = 0;
};

}  // namespace llm
