#include "server/text/text_stream.h"

#include <algorithm>

namespace llm {
namespace {

// How many ids before the first generated one the decode window starts with.
constexpr size_t kContextWindow = 5;
constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

bool EndsWithIncompleteCharacter(const std::string& text) {
  return text.size() >= kReplacementCharacter.size() &&
         std::string_view(text).substr(text.size() - kReplacementCharacter.size()) ==
             kReplacementCharacter;
}

}  // namespace

TextStream::TextStream(const Tokenizer& tokenizer, std::span<const int32_t> context,
                       std::vector<std::string> stop_strings)
    : tokenizer_(tokenizer),
      ids_(context.begin(), context.end()),
      prefix_offset_(ids_.size() > kContextWindow ? ids_.size() - kContextWindow : 0),
      read_offset_(ids_.size()),
      stop_strings_(std::move(stop_strings)) {
  std::erase_if(stop_strings_, [](const std::string& s) { return s.empty(); });
}

absl::StatusOr<TextStream::Delta> TextStream::Push(int32_t id) {
  if (stopped_) return Delta{"", true};
  ids_.push_back(id);
  const std::span<const int32_t> all(ids_);
  auto prefix_text = tokenizer_.Decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_));
  if (!prefix_text.ok()) return prefix_text.status();
  auto window_text = tokenizer_.Decode(all.subspan(prefix_offset_));
  if (!window_text.ok()) return window_text.status();
  if (window_text->size() > prefix_text->size() && !EndsWithIncompleteCharacter(*window_text)) {
    pending_ += window_text->substr(prefix_text->size());
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
  }
  Delta delta;
  delta.text = Release(/*at_end=*/false);
  delta.stopped = stopped_;
  return delta;
}

std::string TextStream::Finish() {
  if (stopped_) return "";
  if (read_offset_ < ids_.size()) {
    const std::span<const int32_t> all(ids_);
    auto prefix_text = tokenizer_.Decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_));
    auto window_text = tokenizer_.Decode(all.subspan(prefix_offset_));
    if (prefix_text.ok() && window_text.ok() && window_text->size() > prefix_text->size()) {
      pending_ += window_text->substr(prefix_text->size());
    }
    read_offset_ = ids_.size();
  }
  return Release(/*at_end=*/true);
}

std::string TextStream::Release(bool at_end) {
  // The earliest stop string in the pending text ends the stream there.
  size_t stop_at = std::string::npos;
  for (const std::string& stop : stop_strings_) {
    stop_at = std::min(stop_at, pending_.find(stop));
  }
  std::string out;
  if (stop_at != std::string::npos) {
    out = pending_.substr(0, stop_at);
    pending_.clear();
    stopped_ = true;
  } else {
    // Hold back the longest tail that could still grow into a stop string.
    size_t hold = 0;
    if (!at_end) {
      for (const std::string& stop : stop_strings_) {
        for (size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n) {
          if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
            hold = n;
            break;
          }
        }
      }
    }
    out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
  }
  emitted_ += out;
  return out;
}

}  // namespace llm
