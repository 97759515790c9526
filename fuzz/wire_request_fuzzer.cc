// libFuzzer target for what an RPC handler does with the bytes of a request before the engine sees
// it: protobuf parses them into a PrefillRequest, DecodeRequest or GenerateRequest (the first input
// byte picks which), server/service/proto_conversion turns the message into engine work, and the
// engine's validators (server/engine/request_validation.h) accept or reject it. The oracle: the
// work carries the message's fields as the API contract in proto/llm/v1/llm.proto states them
// (token ids or the tokenizer's ids, sequence id, sampling with top_p 1 and a random seed when
// unset, max_tokens 0 meaning the default, ...); the validators answer OK or INVALID_ARGUMENT only,
// and OK only for token ids inside the vocabulary. Anything else aborts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/stubs/logging.h"
#include "llm/v1/llm.pb.h"
#include "server/engine/request_validation.h"
#include "server/service/proto_conversion.h"

namespace {

using llm::engine::RequestLimits;

constexpr int32_t kVocabSize = 97;
constexpr int32_t kDefaultMaxTokens = 16;
constexpr RequestLimits kLimits{
    .vocab_size = kVocabSize, .max_position_embeddings = 64, .max_top_logprobs = 5};

void Require(bool condition) {
  if (!condition) std::abort();
}

// A stand-in tokenizer: one id per byte (so ids past the vocabulary occur), and "no tokenizer"
// (FAILED_PRECONDITION) for a text starting with '!'.
absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text, bool /*continuing*/) {
  if (!text.empty() && text[0] == '!') return absl::FailedPreconditionError("no tokenizer");
  return std::vector<int32_t>(text.begin(), text.end());
}

std::vector<int32_t> ExpectedPrompt(bool has_text, const std::string& text,
                                    const llm::v1::TokenIds& ids) {
  if (has_text) return *Tokenize(text, false);
  return std::vector<int32_t>(ids.ids().begin(), ids.ids().end());
}

void CheckSampling(const llm::v1::SamplingParams& wire, const llm::SamplingParams& params,
                   int32_t num_top_logprobs) {
  // Compared as bits: NaN must pass through as NaN for the validators to reject it.
  const float temperature = wire.temperature();
  Require(std::memcmp(&params.temperature, &temperature, sizeof(float)) == 0);
  Require(params.top_k == wire.top_k());
  if (wire.has_top_p()) {
    const float top_p = wire.top_p();
    Require(std::memcmp(&params.top_p, &top_p, sizeof(float)) == 0);
  } else {
    Require(params.top_p == 1.0f);
  }
  if (wire.has_seed()) Require(params.seed == wire.seed());
  Require(params.num_top_logprobs == num_top_logprobs);
}

// Validators answer OK or INVALID_ARGUMENT; OK only with every prompt id in the vocabulary.
void CheckVerdict(const absl::Status& status, const std::vector<int32_t>& tokens) {
  Require(status.ok() || status.code() == absl::StatusCode::kInvalidArgument);
  if (!status.ok()) return;
  for (int32_t id : tokens) Require(id >= 0 && id < kVocabSize);
}

// A prompt request's conversion: the stand-in tokenizer's failure comes back unchanged, else the
// work's tokens are the text's ids or the message's. True when there is work to check further.
template <typename Request, typename Work>
bool CheckPrompt(const Request& request, const absl::StatusOr<Work>& work) {
  const bool tokenizer_fails = request.has_text() && !Tokenize(request.text(), false).ok();
  Require(work.ok() != tokenizer_fails);
  if (!work.ok()) {
    Require(work.status().code() == absl::StatusCode::kFailedPrecondition);
    return false;
  }
  Require(work->tokens == ExpectedPrompt(request.has_text(), request.text(), request.tokens()));
  return true;
}

void FuzzPrefill(const llm::v1::PrefillRequest& request) {
  absl::StatusOr<llm::engine::PrefillWork> work =
      llm::service::PrefillWorkFromProto(request, Tokenize);
  if (!CheckPrompt(request, work)) return;
  Require(work->sequence_id.has_value() == request.has_sequence_id());
  if (request.has_sequence_id()) Require(*work->sequence_id == request.sequence_id());
  CheckSampling(request.sampling(), work->sampling, request.num_top_logprobs());
  CheckVerdict(llm::engine::ValidatePrefill(*work, kLimits), work->tokens);
}

void FuzzDecode(const llm::v1::DecodeRequest& request) {
  const llm::engine::DecodeWork work = llm::service::DecodeWorkFromProto(request);
  Require(work.sequence_id == request.sequence_id());
  Require(work.token.has_value() == request.has_token_id());
  if (request.has_token_id()) Require(*work.token == request.token_id());
  Require(work.num_top_logprobs.has_value() == request.has_num_top_logprobs());
  Require(work.sampling.has_value() == request.has_sampling());
  if (request.has_sampling()) {
    CheckSampling(request.sampling(), *work.sampling, request.num_top_logprobs());
  }
  std::vector<int32_t> tokens;
  if (work.token.has_value()) tokens.push_back(*work.token);
  CheckVerdict(llm::engine::ValidateDecode(work, kLimits), tokens);
}

void FuzzGenerate(const llm::v1::GenerateRequest& request) {
  absl::StatusOr<llm::engine::GenerateWork> work =
      llm::service::GenerateWorkFromProto(request, Tokenize, kDefaultMaxTokens);
  if (!CheckPrompt(request, work)) return;
  Require(work->max_tokens ==
          (request.max_tokens() != 0 ? request.max_tokens() : kDefaultMaxTokens));
  Require(work->stop_token_ids ==
          std::vector<int32_t>(request.stop_token_ids().begin(), request.stop_token_ids().end()));
  Require(work->ignore_eos == request.ignore_eos());
  CheckSampling(request.sampling(), work->sampling, request.num_top_logprobs());
  CheckVerdict(llm::engine::ValidateGenerate(*work, kLimits), work->tokens);
}

}  // namespace

// Protobuf logs every string field that is not UTF-8 (the parse then fails): silenced, it would
// slow the run to its stderr writes.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t kind = data[0] % 3;
  const void* wire = data + 1;
  const int wire_size = static_cast<int>(size - 1);
  if (kind == 0) {
    llm::v1::PrefillRequest request;
    if (request.ParseFromArray(wire, wire_size)) FuzzPrefill(request);
  } else if (kind == 1) {
    llm::v1::DecodeRequest request;
    if (request.ParseFromArray(wire, wire_size)) FuzzDecode(request);
  } else {
    llm::v1::GenerateRequest request;
    if (request.ParseFromArray(wire, wire_size)) FuzzGenerate(request);
  }
  return 0;
}
