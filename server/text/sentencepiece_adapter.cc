#include "server/text/sentencepiece_adapter.h"

#include <sentencepiece_processor.h>

namespace llm::internal {
namespace {

class SentencePieceImpl final : public SentencePiece {
 public:
  bool Load(const std::string& path, std::string* error) {
    const auto status = processor_.Load(path);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool Encode(std::string_view text, std::vector<int>* ids, std::string* error) const override {
    const auto status = processor_.Encode(text, ids);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const override {
    const auto status = processor_.Decode(ids, text);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  int vocab_size() const override { return processor_.GetPieceSize(); }
  int bos_id() const override { return processor_.bos_id(); }
  int eos_id() const override { return processor_.eos_id(); }

 private:
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace

std::unique_ptr<SentencePiece> SentencePiece::Load(const std::string& path, std::string* error) {
  auto impl = std::make_unique<SentencePieceImpl>();
  if (!impl->Load(path, error)) return nullptr;
  return impl;
}

}  // namespace llm::internal
