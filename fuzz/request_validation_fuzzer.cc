// libFuzzer target for the request validation (server/engine/request_validation.h) that
// Engine::SubmitPrefill, SubmitDecode and SubmitGenerate run on the caller's (gRPC handler's)
// thread. Each input is decoded (FuzzedDataProvider) into one work item, validated against fixed
// limits, and the outcome compared with an independent statement of the rules (the API contract in
// proto/): a disagreement, or an error other than INVALID_ARGUMENT, is a crash. The validators are
// pure functions, so no engine is involved.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "server/engine/request_validation.h"

namespace {

using llm::SamplingParams;
using llm::engine::DecodeWork;
using llm::engine::GenerateWork;
using llm::engine::PrefillWork;
using llm::engine::RequestLimits;

constexpr int32_t kVocabSize = 97;
constexpr int32_t kMaxPositionEmbeddings = 64;
constexpr int32_t kMaxTopLogprobs = 5;

void Require(bool condition) {
  if (!condition) std::abort();
}

constexpr RequestLimits kLimits{.vocab_size = kVocabSize,
                                .max_position_embeddings = kMaxPositionEmbeddings,
                                .max_top_logprobs = kMaxTopLogprobs};

// Mostly values around the limits, sometimes anything at all.
int32_t ConsumeTokenId(FuzzedDataProvider& input) {
  return input.ConsumeBool() ? input.ConsumeIntegralInRange<int32_t>(-2, kVocabSize + 1)
                             : input.ConsumeIntegral<int32_t>();
}

float ConsumeFloat(FuzzedDataProvider& input) {
  switch (input.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return input.ConsumeFloatingPointInRange<float>(-0.5f, 2.0f);
    case 1:
      return input.ConsumeFloatingPoint<float>();
    case 2:
      return input.ConsumeBool() ? NAN : (input.ConsumeBool() ? INFINITY : -INFINITY);
    default:
      return input.ConsumeBool() ? 0.0f : 1.0f;
  }
}

SamplingParams ConsumeSampling(FuzzedDataProvider& input) {
  SamplingParams sampling;
  sampling.temperature = ConsumeFloat(input);
  sampling.top_k = input.ConsumeBool() ? input.ConsumeIntegralInRange<int32_t>(-1, kVocabSize + 1)
                                       : input.ConsumeIntegral<int32_t>();
  sampling.top_p = ConsumeFloat(input);
  sampling.seed = input.ConsumeIntegral<uint64_t>();
  sampling.num_top_logprobs = input.ConsumeIntegralInRange<int32_t>(-1, kMaxTopLogprobs + 1);
  if (input.ConsumeBool()) sampling.num_top_logprobs = input.ConsumeIntegral<int32_t>();
  return sampling;
}

std::vector<int32_t> ConsumeTokens(FuzzedDataProvider& input) {
  std::vector<int32_t> tokens(input.ConsumeIntegralInRange<size_t>(0, 2 * kMaxPositionEmbeddings));
  for (int32_t& token : tokens) token = ConsumeTokenId(input);
  return tokens;
}

// The rules, written from the contract rather than from engine.cc.
bool TokensValid(const std::vector<int32_t>& tokens) {
  if (tokens.empty()) return false;
  for (int32_t token : tokens) {
    if (token < 0 || token >= kVocabSize) return false;
  }
  return true;
}

bool TopLogprobsValid(int32_t count) { return count >= 0 && count <= kMaxTopLogprobs; }

bool SamplingValid(const SamplingParams& sampling) {
  return std::isfinite(sampling.temperature) && sampling.temperature >= 0 && sampling.top_k >= 0 &&
         std::isfinite(sampling.top_p) && sampling.top_p > 0 && sampling.top_p <= 1 &&
         TopLogprobsValid(sampling.num_top_logprobs);
}

void ExpectOutcome(bool valid, const absl::Status& status) {
  Require(status.ok() == valid);
  Require(valid || status.code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  switch (input.ConsumeIntegralInRange<int>(0, 2)) {
    case 0: {
      PrefillWork work;
      if (input.ConsumeBool()) work.sequence_id = input.ConsumeIntegral<uint64_t>();
      work.sampling = ConsumeSampling(input);
      work.tokens = ConsumeTokens(input);
      // Extending a sequence is length-checked on the engine thread, where its length is known.
      const bool valid = TokensValid(work.tokens) && SamplingValid(work.sampling) &&
                         (work.sequence_id.has_value() ||
                          static_cast<int64_t>(work.tokens.size()) <= kMaxPositionEmbeddings);
      ExpectOutcome(valid, llm::engine::ValidatePrefill(work, kLimits));
      break;
    }
    case 1: {
      DecodeWork work;
      work.sequence_id = input.ConsumeIntegral<uint64_t>();
      if (input.ConsumeBool()) work.token = ConsumeTokenId(input);
      if (input.ConsumeBool()) {
        work.num_top_logprobs = input.ConsumeIntegralInRange<int32_t>(-1, kMaxTopLogprobs + 1);
      }
      if (input.ConsumeBool()) work.sampling = ConsumeSampling(input);
      bool valid = !work.token.has_value() || (*work.token >= 0 && *work.token < kVocabSize);
      // The decode's own num_top_logprobs (absent = 0) governs, whatever the sampling carries.
      valid = valid && TopLogprobsValid(work.num_top_logprobs.value_or(0));
      if (work.sampling.has_value()) {
        SamplingParams effective = *work.sampling;
        effective.num_top_logprobs = work.num_top_logprobs.value_or(0);
        valid = valid && SamplingValid(effective);
      }
      ExpectOutcome(valid, llm::engine::ValidateDecode(work, kLimits));
      break;
    }
    default: {
      GenerateWork work;
      work.sampling = ConsumeSampling(input);
      work.max_tokens = input.ConsumeBool()
                            ? input.ConsumeIntegralInRange<int32_t>(-1, kMaxPositionEmbeddings + 1)
                            : input.ConsumeIntegral<int32_t>();
      work.ignore_eos = input.ConsumeBool();
      work.stop_token_ids.resize(input.ConsumeIntegralInRange<size_t>(0, 4));
      for (int32_t& token : work.stop_token_ids) token = ConsumeTokenId(input);
      work.tokens = ConsumeTokens(input);
      const bool valid =
          TokensValid(work.tokens) && SamplingValid(work.sampling) && work.max_tokens >= 1 &&
          static_cast<int64_t>(work.tokens.size()) + work.max_tokens <= kMaxPositionEmbeddings;
      ExpectOutcome(valid, llm::engine::ValidateGenerate(work, kLimits));
      break;
    }
  }
  return 0;
}
