// Incremental detokenization: streamed deltas are whole UTF-8 characters, concatenate to the full
// decode, and stop strings cut the text before them.
#include "server/text/text_stream.h"

#include <random>

#include <gtest/gtest.h>

namespace llm {
namespace {

const std::filesystem::path kSourceDir = LLM_SOURCE_DIR;

// True when `text` is a sequence of whole, well-formed UTF-8 characters.
bool IsCompleteUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3
                                                               : (lead >> 3) == 0x1E ? 4 : 0;
    if (length == 0 || i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
    }
    i += length;
  }
  return true;
}

class TextStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tokenizer = Tokenizer::Load(kSourceDir / "models/default/tokenizer.model");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }
  std::vector<int32_t> Encode(const std::string& text) { return *tokenizer_->Encode(text, false); }
  // What the generated ids mean after the context: the full decode minus the context's decode.
  std::string ExpectedContinuation(const std::vector<int32_t>& context,
                                   const std::vector<int32_t>& generated) {
    std::vector<int32_t> all = context;
    all.insert(all.end(), generated.begin(), generated.end());
    return tokenizer_->Decode(all)->substr(tokenizer_->Decode(context)->size());
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(TextStreamTest, DeltasAreWholeCharactersAndConcatenateToTheFullDecode) {
  const std::vector<std::string> texts = {
      "The meaning of life is\n\t-- someone",
      " caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80\xF0\x9F\x9A\x80 done",
      " multiple   spaces\tand tabs",
  };
  const auto context = Encode("Prompt words here:");
  for (const std::string& text : texts) {
    const auto generated = Encode(text);
    TextStream stream(*tokenizer_, context, {});
    std::string streamed;
    int deltas_held_back = 0;
    for (int32_t id : generated) {
      const auto delta = stream.Push(id);
      ASSERT_TRUE(delta.ok()) << delta.status();
      EXPECT_TRUE(IsCompleteUtf8(delta->text)) << "broken character in delta of " << text;
      EXPECT_FALSE(delta->stopped);
      if (delta->text.empty()) ++deltas_held_back;
      streamed += delta->text;
    }
    streamed += stream.Finish();
    EXPECT_EQ(streamed, ExpectedContinuation(context, generated));
    EXPECT_EQ(stream.text(), streamed);
    if (text.find('\xF0') != std::string::npos) {
      // The emoji are byte-fallback pieces: the stream must have held some deltas back.
      EXPECT_GT(deltas_held_back, 0);
    }
  }
}

TEST_F(TextStreamTest, RandomIdSequencesStreamToTheFullDecode) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> id(3, tokenizer_->vocab_size() - 1);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<int32_t> context(1 + trial % 7), generated(1 + trial % 23);
    for (auto& x : context) x = id(rng);
    for (auto& x : generated) x = id(rng);
    TextStream stream(*tokenizer_, context, {});
    std::string streamed;
    for (int32_t x : generated) streamed += stream.Push(x)->text;
    streamed += stream.Finish();
    EXPECT_EQ(streamed, ExpectedContinuation(context, generated)) << "trial " << trial;
  }
}

TEST_F(TextStreamTest, StopStringCutsTheTextBeforeItEvenAcrossPieces) {
  const auto context = Encode("Q:");
  const auto generated = Encode(" Why is the sky blue?\nA: Because it is.\nQ: Next");
  TextStream stream(*tokenizer_, context, {"\nA:", "never"});
  std::string streamed;
  bool stopped = false;
  size_t pushed = 0;
  for (int32_t id : generated) {
    const auto delta = stream.Push(id);
    ASSERT_TRUE(delta.ok());
    streamed += delta->text;
    ++pushed;
    if (delta->stopped) {
      stopped = true;
      break;
    }
  }
  EXPECT_TRUE(stopped);
  EXPECT_LT(pushed, generated.size());
  const std::string full = ExpectedContinuation(context, generated);
  ASSERT_NE(full.find("\nA:"), std::string::npos);
  EXPECT_EQ(streamed, full.substr(0, full.find("\nA:")));
  EXPECT_NE(streamed.find("sky blue?"), std::string::npos);
  EXPECT_EQ(stream.Finish(), "");
  EXPECT_TRUE(stream.Push(generated.back())->stopped);
}

TEST_F(TextStreamTest, PartialStopStringIsReleasedWhenItDoesNotComplete) {
  const auto context = Encode("x");
  const auto generated = Encode(" the end is near");
  TextStream stream(*tokenizer_, context, {" endgame"});
  std::string streamed;
  for (int32_t id : generated) {
    const auto delta = stream.Push(id);
    ASSERT_TRUE(delta.ok());
    EXPECT_FALSE(delta->stopped);
    streamed += delta->text;
  }
  streamed += stream.Finish();
  EXPECT_EQ(streamed, ExpectedContinuation(context, generated));
}

}  // namespace
}  // namespace llm
