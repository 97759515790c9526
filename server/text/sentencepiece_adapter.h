// A narrow, std-only view of sentencepiece. Debian's sentencepiece header declares its own
// `absl::string_view`, which collides with Abseil's in any file that includes both, so only
// sentencepiece_adapter.cc includes it and everything else goes through these functions.
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
