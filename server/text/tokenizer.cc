#include "server/text/tokenizer.h"

#include "absl/strings/str_cat.h"
#include "server/text/sentencepiece_adapter.h"

namespace llm {

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::filesystem::path& model_file) {
  std::error_code error_code;
  if (!std::filesystem::is_regular_file(model_file, error_code)) {
    return absl::NotFoundError(
        absl::StrCat("tokenizer model ", model_file.string(), " does not exist or is not a file"));
  }
  std::string error;
  auto processor = internal::SentencePiece::Load(model_file.string(), &error);
  if (processor == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load sentencepiece model ", model_file.string(), ": ", error));
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(processor), model_file));
}

Tokenizer::Tokenizer(std::unique_ptr<internal::SentencePiece> processor, std::filesystem::path path)
    : processor_(std::move(processor)), path_(std::move(path)) {}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int> pieces;
  std::string error;
  if (!processor_->Encode(text, &pieces, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot tokenize text: ", error));
  }
  std::vector<int32_t> ids;
  ids.reserve(pieces.size() + 1);
  if (add_bos && bos_id() >= 0) ids.push_back(bos_id());
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids) const {
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " is outside the tokenizer's vocabulary [0, ", vocab_size(), ")"));
    }
  }
  std::string text, error;
  if (!processor_->Decode(std::vector<int>(ids.begin(), ids.end()), &text, &error)) {
    return absl::InternalError(absl::StrCat("cannot detokenize: ", error));
  }
  return text;
}

int32_t Tokenizer::vocab_size() const { return processor_->vocab_size(); }
int32_t Tokenizer::bos_id() const { return processor_->bos_id(); }
int32_t Tokenizer::eos_id() const { return processor_->eos_id(); }

}  // namespace llm
