// What the engine checks of a request before queuing it, as pure functions of the work item and
// the model's limits: Engine::SubmitPrefill / SubmitDecode / SubmitGenerate call them on the
// caller's (gRPC handler's) thread and complete the request with the status when it is not OK.
// Each error is INVALID_ARGUMENT with a message naming the field, its value and the allowed range.
// A Prefill that extends a sequence is length-checked later, on the engine thread, where the
// sequence's length is known.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "server/engine/requests.h"

namespace llm::engine {

struct RequestLimits {
  int32_t vocab_size = 0;               // token ids are in [0, vocab_size)
  int32_t max_position_embeddings = 0;  // most positions a sequence may reach
  int32_t max_top_logprobs = 0;         // num_top_logprobs is in [0, max_top_logprobs]
};

absl::Status ValidatePrefill(const PrefillWork& work, const RequestLimits& limits);
absl::Status ValidateDecode(const DecodeWork& work, const RequestLimits& limits);
absl::Status ValidateGenerate(const GenerateWork& work, const RequestLimits& limits);

}  // namespace llm::engine
