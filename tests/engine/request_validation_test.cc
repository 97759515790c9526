// The request rules of server/engine/request_validation.h, value by value at each boundary, with
// no engine: every rejection is INVALID_ARGUMENT and its message names the field. (The same rules
// through Engine::Submit* are covered by engine_test.cc and the request_validation_fuzzer.)
#include "server/engine/request_validation.h"

#include <cmath>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llm::engine {
namespace {

using ::testing::HasSubstr;

constexpr RequestLimits kLimits{.vocab_size = 100, .max_position_embeddings = 32,
                                .max_top_logprobs = 5};

void ExpectRejected(const absl::Status& status, const std::string& field) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(field));
}

PrefillWork Prefill(std::vector<int32_t> tokens) {
  PrefillWork work;
  work.tokens = std::move(tokens);
  return work;
}

GenerateWork Generate(std::vector<int32_t> tokens, int32_t max_tokens) {
  GenerateWork work;
  work.tokens = std::move(tokens);
  work.max_tokens = max_tokens;
  return work;
}

TEST(RequestValidationTest, TokensMustBeNonEmptyAndInsideTheVocabulary) {
  EXPECT_TRUE(ValidatePrefill(Prefill({0, 99}), kLimits).ok());
  ExpectRejected(ValidatePrefill(Prefill({}), kLimits), "tokens is empty");
  ExpectRejected(ValidatePrefill(Prefill({5, 100}), kLimits), "tokens[1] = 100");
  ExpectRejected(ValidatePrefill(Prefill({-1}), kLimits), "tokens[0] = -1");
  ExpectRejected(ValidateGenerate(Generate({}, 1), kLimits), "tokens is empty");
  ExpectRejected(ValidateGenerate(Generate({100}, 1), kLimits), "outside the vocabulary");
}

TEST(RequestValidationTest, SamplingFieldsHaveTheirRanges) {
  struct Case {
    SamplingParams sampling;
    const char* field;  // nullptr: valid
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto with = [](auto change) {
    SamplingParams sampling;
    change(sampling);
    return sampling;
  };
  const Case cases[] = {
      {with([](SamplingParams&) {}), nullptr},
      {with([](SamplingParams& s) { s.temperature = 0.f; }), nullptr},
      {with([](SamplingParams& s) { s.temperature = -0.001f; }), "temperature"},
      {with([&](SamplingParams& s) { s.temperature = nan; }), "temperature"},
      {with([&](SamplingParams& s) { s.temperature = inf; }), "temperature"},
      {with([](SamplingParams& s) { s.top_k = 0; }), nullptr},
      {with([](SamplingParams& s) { s.top_k = -1; }), "top_k"},
      {with([](SamplingParams& s) { s.top_p = 1.f; }), nullptr},
      {with([](SamplingParams& s) { s.top_p = 1e-6f; }), nullptr},
      {with([](SamplingParams& s) { s.top_p = 0.f; }), "top_p"},
      {with([](SamplingParams& s) { s.top_p = 1.0001f; }), "top_p"},
      {with([&](SamplingParams& s) { s.top_p = nan; }), "top_p"},
      {with([](SamplingParams& s) { s.num_top_logprobs = 5; }), nullptr},
      {with([](SamplingParams& s) { s.num_top_logprobs = 6; }), "num_top_logprobs"},
      {with([](SamplingParams& s) { s.num_top_logprobs = -1; }), "num_top_logprobs"},
  };
  for (const Case& c : cases) {
    PrefillWork prefill = Prefill({1});
    prefill.sampling = c.sampling;
    GenerateWork generate = Generate({1}, 1);
    generate.sampling = c.sampling;
    for (const absl::Status& status :
         {ValidatePrefill(prefill, kLimits), ValidateGenerate(generate, kLimits)}) {
      if (c.field == nullptr) {
        EXPECT_TRUE(status.ok()) << status;
      } else {
        ExpectRejected(status, c.field);
      }
    }
  }
}

TEST(RequestValidationTest, NewPromptsFitTheModelExtensionsAreCheckedLater) {
  EXPECT_TRUE(ValidatePrefill(Prefill(std::vector<int32_t>(32, 1)), kLimits).ok());
  ExpectRejected(ValidatePrefill(Prefill(std::vector<int32_t>(33, 1)), kLimits),
                 "max_position_embeddings is 32");
  PrefillWork extension = Prefill(std::vector<int32_t>(33, 1));
  extension.sequence_id = 7;  // the sequence's length is known on the engine thread only
  EXPECT_TRUE(ValidatePrefill(extension, kLimits).ok());
}

TEST(RequestValidationTest, GenerateNeedsRoomForItsTokens) {
  EXPECT_TRUE(ValidateGenerate(Generate({1, 2}, 30), kLimits).ok());
  ExpectRejected(ValidateGenerate(Generate({1, 2}, 31), kLimits), "exceeds");
  ExpectRejected(ValidateGenerate(Generate({1}, 0), kLimits), "max_tokens = 0");
  ExpectRejected(ValidateGenerate(Generate({1}, -3), kLimits), "max_tokens = -3");
  // Far past int32 when added: no overflow into "fits".
  ExpectRejected(ValidateGenerate(Generate({1}, std::numeric_limits<int32_t>::max()), kLimits),
                 "exceeds");
}

TEST(RequestValidationTest, DecodeChecksOnlyWhatItCarries) {
  DecodeWork work;
  EXPECT_TRUE(ValidateDecode(work, kLimits).ok());  // continue with the engine's own token
  work.token = 99;
  EXPECT_TRUE(ValidateDecode(work, kLimits).ok());
  work.token = 100;
  ExpectRejected(ValidateDecode(work, kLimits), "token_id[0] = 100");
  work.token.reset();
  work.num_top_logprobs = 6;
  ExpectRejected(ValidateDecode(work, kLimits), "num_top_logprobs = 6");
  // The decode's own num_top_logprobs governs the sampling's.
  work.num_top_logprobs = 2;
  SamplingParams sampling;
  sampling.num_top_logprobs = 50;
  work.sampling = sampling;
  EXPECT_TRUE(ValidateDecode(work, kLimits).ok());
  work.sampling->top_p = 2.f;
  ExpectRejected(ValidateDecode(work, kLimits), "top_p");
}

}  // namespace
}  // namespace llm::engine
