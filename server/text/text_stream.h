// Turns a stream of generated token ids into text deltas that are always whole UTF-8 characters, and
// stops at stop strings.
//
// Why not decode token by token: sentencepiece pieces are not independent. A byte-fallback piece may
// hold half of a multi-byte character, and a piece's leading "▁" becomes a space only when something
// precedes it. So each step decodes a short window of recent ids (starting a few tokens back, so
// spacing is right) and emits only what the window adds beyond the text already emitted, holding back
// a tail that ends in an incomplete character (decoded as U+FFFD) until the next piece completes it.
// Text that could be the start of a stop string is held back too, so a stop string never leaks out.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/tokenizer.h"

namespace llm {

class TextStream {
 public:
  // `context` are ids before the generated ones (the prompt): they set the spacing of the first
  // generated piece and are never emitted.
  TextStream(const Tokenizer& tokenizer, std::span<const int32_t> context,
             std::vector<std::string> stop_strings);

  struct Delta {
    std::string text;          // new text to emit (may be empty while characters are incomplete)
    bool stopped = false;      // a stop string was reached; text ends before it
  };
  // Adds one generated id.
  absl::StatusOr<Delta> Push(int32_t id);
  // At the end of generation: whatever was held back (an incomplete character becomes U+FFFD),
  // unless a stop string already ended the stream.
  std::string Finish();

  const std::string& text() const { return emitted_; }  // all text emitted so far

 private:
  // Emits from pending_ what cannot be the start of a stop string; sets stopped_ on a match.
  std::string Release(bool at_end);

  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // window start
  size_t read_offset_ = 0;    // ids before this are already turned into text
  std::vector<std::string> stop_strings_;
  std::string pending_;  // decoded, complete characters not yet emitted (stop-string look-behind)
  std::string emitted_;
  bool stopped_ = false;
};

}  // namespace llm
