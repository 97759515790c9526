// Conversions between the llm.v1 wire messages and the engine's types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"
#include "kernels/sampling.h"
#include "llm/v1/llm.pb.h"
#include "server/engine/engine.h"

namespace llm::service {

// absl and gRPC share the canonical code numbering.
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// Unset top_p means 1 and unset seed a fresh random seed, so two unseeded requests differ.
SamplingParams FromProto(const v1::SamplingParams& sampling, int32_t num_top_logprobs);
void ToProto(const SampledToken& token, v1::SampledToken* out);
v1::FinishReason ToProto(engine::FinishReason reason);

// Token ids of a text prompt; `continuing` is true when the text extends a sequence (no BOS then).
// FAILED_PRECONDITION when the model has no tokenizer.
using PromptTokenizer =
    absl::FunctionRef<absl::StatusOr<std::vector<int32_t>>(const std::string& text, bool continuing)>;

// The engine work a request asks for: everything but the callbacks and the request control, which
// the handler adds. Text prompts go through `tokenize`; the engine validates the rest
// (server/engine/request_validation.h).
absl::StatusOr<engine::PrefillWork> PrefillWorkFromProto(const v1::PrefillRequest& request,
                                                         PromptTokenizer tokenize);
engine::DecodeWork DecodeWorkFromProto(const v1::DecodeRequest& request);
// An unset (0) max_tokens takes `default_max_tokens`.
absl::StatusOr<engine::GenerateWork> GenerateWorkFromProto(const v1::GenerateRequest& request,
                                                           PromptTokenizer tokenize,
                                                           int32_t default_max_tokens);

// What GetModelInfo reports for the engine's model.
v1::ModelInfo BuildModelInfo(const engine::Engine& engine, const std::string& model_path);

}  // namespace llm::service
