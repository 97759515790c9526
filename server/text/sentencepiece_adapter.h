// A narrow, std-only view of sentencepiece. Two reasons keep sentencepiece behind it:
// - Debian's sentencepiece header declares its own `absl::string_view`, which collides with Abseil's
//   in any file that includes both;
// - Debian's libsentencepiece.so exports a private copy of protobuf that breaks a process which also
//   loads libprotobuf (see sentencepiece_plugin.cc), so it lives in a module loaded with
//   RTLD_LOCAL | RTLD_DEEPBIND (sentencepiece_adapter.cc) rather than being linked in.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace llm::internal {

class SentencePiece {
 public:
  // Returns nullptr and sets *error when the model cannot be loaded.
  static std::unique_ptr<SentencePiece> Load(const std::string& path, std::string* error);
  virtual ~SentencePiece() = default;
  virtual bool Encode(std::string_view text, std::vector<int>* ids, std::string* error) const = 0;
  virtual bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
};

}  // namespace llm::internal
