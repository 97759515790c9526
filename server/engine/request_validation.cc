#include "server/engine/request_validation.h"

#include <cmath>
#include <span>
#include <string_view>

#include "absl/strings/str_format.h"

namespace llm::engine {
namespace {

absl::Status ValidateTokens(std::span<const int32_t> tokens, std::string_view field,
                            const RequestLimits& limits) {
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is empty; send at least one token id", field));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= limits.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s[%d] = %d is outside the vocabulary; token ids must be in [0, %d)",
                          field, i, tokens[i], limits.vocab_size));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateTopLogprobs(int32_t count, const RequestLimits& limits) {
  if (count < 0 || count > limits.max_top_logprobs) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "num_top_logprobs = %d; it must be in [0, %d]", count, limits.max_top_logprobs));
  }
  return absl::OkStatus();
}

absl::Status ValidateSampling(const SamplingParams& sampling, const RequestLimits& limits) {
  if (!std::isfinite(sampling.temperature) || sampling.temperature < 0.0f) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sampling.temperature = %g; it must be >= 0 (0 = greedy)", sampling.temperature));
  }
  if (sampling.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sampling.top_k = %d; it must be >= 0 (0 = no top-k cut)", sampling.top_k));
  }
  if (!std::isfinite(sampling.top_p) || sampling.top_p <= 0.0f || sampling.top_p > 1.0f) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sampling.top_p = %g; it must be in (0, 1] (leave it unset for 1)", sampling.top_p));
  }
  return ValidateTopLogprobs(sampling.num_top_logprobs, limits);
}

}  // namespace

absl::Status ValidatePrefill(const PrefillWork& work, const RequestLimits& limits) {
  absl::Status status = ValidateTokens(work.tokens, "tokens", limits);
  if (status.ok()) status = ValidateSampling(work.sampling, limits);
  if (status.ok() && !work.sequence_id.has_value() &&
      static_cast<int64_t>(work.tokens.size()) > limits.max_position_embeddings) {
    status = absl::InvalidArgumentError(absl::StrFormat(
        "prompt has %d tokens; the model's max_position_embeddings is %d, shorten the prompt",
        work.tokens.size(), limits.max_position_embeddings));
  }
  return status;
}

absl::Status ValidateDecode(const DecodeWork& work, const RequestLimits& limits) {
  absl::Status status;
  if (work.token.has_value()) status = ValidateTokens({&*work.token, 1}, "token_id", limits);
  // The decode's own num_top_logprobs (absent: 0) governs, whatever the sampling carries.
  if (status.ok() && work.sampling.has_value()) {
    SamplingParams sampling = *work.sampling;
    sampling.num_top_logprobs = work.num_top_logprobs.value_or(0);
    status = ValidateSampling(sampling, limits);
  }
  if (status.ok() && work.num_top_logprobs.has_value()) {
    status = ValidateTopLogprobs(*work.num_top_logprobs, limits);
  }
  return status;
}

absl::Status ValidateGenerate(const GenerateWork& work, const RequestLimits& limits) {
  absl::Status status = ValidateTokens(work.tokens, "tokens", limits);
  if (status.ok()) status = ValidateSampling(work.sampling, limits);
  if (status.ok() && work.max_tokens < 1) {
    status = absl::InvalidArgumentError(
        absl::StrFormat("max_tokens = %d; it must be >= 1", work.max_tokens));
  }
  if (status.ok() && static_cast<int64_t>(work.tokens.size()) + work.max_tokens >
                         limits.max_position_embeddings) {
    status = absl::InvalidArgumentError(absl::StrFormat(
        "prompt (%d tokens) + max_tokens (%d) exceeds the model's max_position_embeddings (%d); "
        "shorten the prompt or lower max_tokens",
        work.tokens.size(), work.max_tokens, limits.max_position_embeddings));
  }
  return status;
}

}  // namespace llm::engine
