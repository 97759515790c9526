// Conversions between the llm.v1 wire messages and the engine's types.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
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

// What GetModelInfo reports for the engine's model.
v1::ModelInfo BuildModelInfo(const engine::Engine& engine, const std::string& model_path);

}  // namespace llm::service
