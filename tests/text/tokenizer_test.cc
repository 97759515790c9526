// The sentencepiece wrapper against what sentencepiece's Python binding produced for the same model
// (tests/fixtures/text/tokenizer_reference.json, written by make_tokenizer_reference.py).
#include "server/text/tokenizer.h"

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace llm {
namespace {

const std::filesystem::path kSourceDir = LLM_SOURCE_DIR;

nlohmann::json LoadReference() {
  std::ifstream in(kSourceDir / "tests/fixtures/text/tokenizer_reference.json");
  return nlohmann::json::parse(in);
}

std::unique_ptr<Tokenizer> LoadDefaultTokenizer() {
  auto tokenizer = Tokenizer::Load(kSourceDir / "models/default/tokenizer.model");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

TEST(TokenizerTest, EncodeAndDecodeMatchSentencepiecePython) {
  const auto tokenizer = LoadDefaultTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  const nlohmann::json reference = LoadReference();
  EXPECT_EQ(tokenizer->vocab_size(), reference["vocab_size"].get<int>());
  EXPECT_EQ(tokenizer->bos_id(), reference["bos_id"].get<int>());
  EXPECT_EQ(tokenizer->eos_id(), reference["eos_id"].get<int>());
  ASSERT_GE(reference["cases"].size(), 5u);
  for (const auto& c : reference["cases"]) {
    const std::string text = c["text"];
    const auto ids = tokenizer->Encode(text, /*add_bos=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>()) << "text: " << text;
    const auto decoded = tokenizer->Decode(c["ids"].get<std::vector<int32_t>>());
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, c["decoded"].get<std::string>());
  }
}

TEST(TokenizerTest, TextRoundTripsIncludingMultiByteCharacters) {
  const auto tokenizer = LoadDefaultTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  for (const std::string text : {"plain words", "tabs\tand\nnewlines", "\xC3\xA9t\xC3\xA9 \xE2\x82\xAC",
                                 "\xF0\x9F\x98\x80 grin", "  two leading spaces"}) {
    const auto ids = tokenizer->Encode(text, /*add_bos=*/false);
    ASSERT_TRUE(ids.ok());
    const auto decoded = tokenizer->Decode(*ids);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, text);
  }
}

TEST(TokenizerTest, AddsBosOnlyWhenAsked) {
  const auto tokenizer = LoadDefaultTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  const auto with_bos = tokenizer->Encode("hello", /*add_bos=*/true);
  const auto without_bos = tokenizer->Encode("hello", /*add_bos=*/false);
  ASSERT_TRUE(with_bos.ok() && without_bos.ok());
  ASSERT_EQ(with_bos->size(), without_bos->size() + 1);
  EXPECT_EQ(with_bos->front(), tokenizer->bos_id());
  EXPECT_TRUE(std::equal(without_bos->begin(), without_bos->end(), with_bos->begin() + 1));
}

TEST(TokenizerTest, RejectsIdsOutsideTheVocabulary) {
  const auto tokenizer = LoadDefaultTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<int32_t> ids = {5, tokenizer->vocab_size()};
  const auto decoded = tokenizer->Decode(ids);
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(decoded.status().message().find("outside"), std::string_view::npos);
}

TEST(TokenizerTest, MissingOrCorruptModelFileFailsNamingTheFile) {
  const auto missing = Tokenizer::Load("/nonexistent/tokenizer.model");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/tokenizer.model"), std::string_view::npos);

  const auto corrupt_path = std::filesystem::temp_directory_path() / "llm_corrupt_tokenizer.model";
  std::ofstream(corrupt_path) << "this is not a sentencepiece model";
  const auto corrupt = Tokenizer::Load(corrupt_path);
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(corrupt.status().message().find(corrupt_path.string()), std::string_view::npos);
  std::filesystem::remove(corrupt_path);
}

}  // namespace
}  // namespace llm
