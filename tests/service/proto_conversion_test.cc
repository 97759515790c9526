// The wire-to-engine conversions of server/service/proto_conversion.h, without a server: what each
// request field becomes in the engine's work item, which text goes through the tokenizer (and with
// or without BOS), and that a tokenizer error comes back unchanged.
#include "server/service/proto_conversion.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace llm::service {
namespace {

using ::testing::ElementsAre;

// Records its calls; text "bad" fails, anything else becomes {length, continuing}.
struct FakeTokenizer {
  mutable std::vector<std::pair<std::string, bool>> calls;
  absl::StatusOr<std::vector<int32_t>> operator()(const std::string& text, bool continuing) const {
    calls.emplace_back(text, continuing);
    if (text == "bad") return absl::FailedPreconditionError("no tokenizer for \"bad\"");
    return std::vector<int32_t>{static_cast<int32_t>(text.size()), continuing ? 1 : 0};
  }
};

TEST(ProtoConversionTest, PrefillTakesTokenIdsOrTokenizedText) {
  FakeTokenizer tokenizer;
  v1::PrefillRequest request;
  request.mutable_tokens()->add_ids(7);
  request.mutable_tokens()->add_ids(9);
  request.mutable_sampling()->set_temperature(0.5f);
  request.set_num_top_logprobs(3);
  auto work = PrefillWorkFromProto(request, tokenizer);
  ASSERT_TRUE(work.ok()) << work.status();
  EXPECT_THAT(work->tokens, ElementsAre(7, 9));
  EXPECT_FALSE(work->sequence_id.has_value());
  EXPECT_FLOAT_EQ(work->sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(work->sampling.top_p, 1.0f);  // unset means 1
  EXPECT_EQ(work->sampling.num_top_logprobs, 3);
  EXPECT_TRUE(tokenizer.calls.empty());

  request.set_text("hello");  // a new sequence: the prompt path (BOS)
  work = PrefillWorkFromProto(request, tokenizer);
  ASSERT_TRUE(work.ok());
  EXPECT_THAT(work->tokens, ElementsAre(5, 0));
  request.set_sequence_id(42);  // extending: no BOS
  work = PrefillWorkFromProto(request, tokenizer);
  ASSERT_TRUE(work.ok());
  EXPECT_THAT(work->tokens, ElementsAre(5, 1));
  EXPECT_EQ(work->sequence_id, 42u);
  EXPECT_THAT(tokenizer.calls, ElementsAre(std::pair<std::string, bool>{"hello", false},
                                           std::pair<std::string, bool>{"hello", true}));

  request.set_text("bad");
  work = PrefillWorkFromProto(request, tokenizer);
  EXPECT_EQ(work.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(work.status().message(), "no tokenizer for \"bad\"");
}

TEST(ProtoConversionTest, DecodeCarriesOnlyTheFieldsThatAreSet) {
  v1::DecodeRequest request;
  request.set_sequence_id(3);
  engine::DecodeWork work = DecodeWorkFromProto(request);
  EXPECT_EQ(work.sequence_id, 3u);
  EXPECT_FALSE(work.token.has_value());
  EXPECT_FALSE(work.num_top_logprobs.has_value());
  EXPECT_FALSE(work.sampling.has_value());

  request.set_token_id(11);
  request.set_num_top_logprobs(2);
  request.mutable_sampling()->set_top_k(4);
  request.mutable_sampling()->set_seed(99);
  work = DecodeWorkFromProto(request);
  EXPECT_EQ(work.token, 11);
  EXPECT_EQ(work.num_top_logprobs, 2);
  ASSERT_TRUE(work.sampling.has_value());
  EXPECT_EQ(work.sampling->top_k, 4);
  EXPECT_EQ(work.sampling->seed, 99u);
  EXPECT_EQ(work.sampling->num_top_logprobs, 2);
}

TEST(ProtoConversionTest, GenerateDefaultsMaxTokensAndKeepsStopTokens) {
  FakeTokenizer tokenizer;
  v1::GenerateRequest request;
  request.set_text("four");
  request.add_stop_token_ids(5);
  request.add_stop_token_ids(6);
  request.set_ignore_eos(true);
  auto work = GenerateWorkFromProto(request, tokenizer, /*default_max_tokens=*/128);
  ASSERT_TRUE(work.ok()) << work.status();
  EXPECT_THAT(work->tokens, ElementsAre(4, 0));  // a prompt: never `continuing`
  EXPECT_EQ(work->max_tokens, 128);
  EXPECT_THAT(work->stop_token_ids, ElementsAre(5, 6));
  EXPECT_TRUE(work->ignore_eos);

  request.set_max_tokens(7);
  request.clear_text();
  request.mutable_tokens()->add_ids(1);
  work = GenerateWorkFromProto(request, tokenizer, 128);
  ASSERT_TRUE(work.ok());
  EXPECT_EQ(work->max_tokens, 7);
  EXPECT_THAT(work->tokens, ElementsAre(1));

  request.set_text("bad");
  EXPECT_EQ(GenerateWorkFromProto(request, tokenizer, 128).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace llm::service
