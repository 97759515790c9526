// The sentencepiece side of the adapter, built as a separately loaded module (libllm_sentencepiece.so).
//
// Debian's libsentencepiece.so.0 carries its own copy of protobuf-lite and exports those symbols. In a
// process that also loads libprotobuf.so.32 (every gRPC server here), the two copies bind to each
// other's functions and the process crashes while registering descriptors at start-up. Loading this
// module with RTLD_LOCAL | RTLD_DEEPBIND (sentencepiece_adapter.cc) keeps sentencepiece's protobuf to
// itself and out of the global symbol scope.
#include <sentencepiece_processor.h>

#include "server/text/sentencepiece_adapter.h"

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
}  // namespace llm::internal

// The module's one entry point; returns nullptr and sets *error when the model cannot be loaded.
extern "C" __attribute__((visibility("default"))) llm::internal::SentencePiece*
llm_sentencepiece_load(const std::string* path, std::string* error) {
  auto impl = std::make_unique<llm::internal::SentencePieceImpl>();
  if (!impl->Load(*path, error)) return nullptr;
  return impl.release();
}
