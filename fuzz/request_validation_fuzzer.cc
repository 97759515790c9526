// libFuzzer target for the request validation that Engine::SubmitPrefill, SubmitDecode and
// SubmitGenerate run on the caller's (gRPC handler's) thread.
//
// The validators are Engine members, so the target builds one Engine around the engine tests' fake
// model and shuts it down before fuzzing: from then on every Submit* validates and completes at
// once, with INVALID_ARGUMENT for a bad request and UNAVAILABLE ("shutting down") for one that
// passed validation, and nothing is queued. Each input is decoded (FuzzedDataProvider) into one
// work item, and the outcome is compared with an independent statement of the rules (the API
// contract in proto/ and engine.cc); a disagreement, a callback that runs twice or not at all, or
// another status code is a crash. A pure validator free function would remove the need for the
// engine here (docs/RELIABILITY.md, "Request validation").
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/engine/engine.h"
#include "tests/engine/fake_transformer.h"

namespace {

using llm::SamplingParams;
using llm::engine::DecodeWork;
using llm::engine::Engine;
using llm::engine::EngineOptions;
using llm::engine::GenerateWork;
using llm::engine::PrefillWork;

constexpr int32_t kVocabSize = 97;
constexpr int32_t kMaxPositionEmbeddings = 64;
constexpr int32_t kMaxTopLogprobs = 5;

void Require(bool condition) {
  if (!condition) std::abort();
}

Engine& ShutDownEngine() {
  static Engine* engine = [] {
    llm::engine::testing::FakeModelShape shape;
    shape.vocab_size = kVocabSize;
    shape.max_position_embeddings = kMaxPositionEmbeddings;
    EngineOptions options;
    options.max_top_logprobs = kMaxTopLogprobs;
    absl::StatusOr<std::unique_ptr<Engine>> created =
        Engine::Create(std::make_unique<llm::engine::testing::FakeTransformer>(shape), options);
    Require(created.ok());
    (*created)->Shutdown(absl::ZeroDuration());
    return created->release();  // lives for the process, like a server's engine
  }();
  return *engine;
}

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

// Runs `submit` with a done callback and checks it completed exactly once with the expected code.
template <typename Result, typename Submit>
void ExpectOutcome(bool valid, Submit submit) {
  int calls = 0;
  absl::StatusCode code = absl::StatusCode::kOk;
  submit([&](const absl::StatusOr<Result>& result) {
    ++calls;
    code = result.status().code();
  });
  Require(calls == 1);
  Require(code == (valid ? absl::StatusCode::kUnavailable : absl::StatusCode::kInvalidArgument));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Engine& engine = ShutDownEngine();
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
      ExpectOutcome<llm::engine::StepOutput>(valid, [&](auto done) {
        work.done = done;
        engine.SubmitPrefill(std::move(work));
      });
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
      ExpectOutcome<llm::engine::StepOutput>(valid, [&](auto done) {
        work.done = done;
        engine.SubmitDecode(std::move(work));
      });
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
      ExpectOutcome<llm::engine::GenerateSummary>(valid, [&](auto done) {
        work.done = done;
        engine.SubmitGenerate(std::move(work));
      });
      break;
    }
  }
  return 0;
}
