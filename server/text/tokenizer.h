// Text <-> token ids through the checkpoint's sentencepiece model (tokenizer.model).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace llm {
namespace internal {
class SentencePiece;
}

class Tokenizer {
 public:
  // Loads a sentencepiece model; the error names the file when it is missing or not a model.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::filesystem::path& model_file);
  ~Tokenizer();

  // Ids of `text`, with the BOS id first when add_bos is true and the model has one.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const;
  // Text of `ids` (BOS/EOS and other control ids decode to nothing).
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the model has none
  int32_t eos_id() const;  // -1 when the model has none
  const std::filesystem::path& path() const { return path_; }

 private:
  Tokenizer(std::unique_ptr<internal::SentencePiece> processor, std::filesystem::path path);
  std::unique_ptr<internal::SentencePiece> processor_;
  std::filesystem::path path_;
};

}  // namespace llm
