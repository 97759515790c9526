// The llm-client subcommands, as functions over a channel, so that tests can run them in-process.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "grpcpp/channel.h"

namespace llm::client {

struct ClientOptions {
  std::chrono::milliseconds timeout{10000};
  std::vector<int32_t> tokens;           // prompt for prefill/generate
  std::optional<std::string> text;       // text prompt instead of tokens (needs a tokenizer)
  std::vector<std::string> stop_strings; // generate: stop at these strings (needs a tokenizer)
  std::optional<uint64_t> sequence_id;   // decode/release, or prefill to extend
  std::optional<int32_t> token_id;       // decode
  int32_t max_tokens = 16;
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  std::optional<uint64_t> seed;
  int32_t top_logprobs = 0;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
};

// Each prints a human-readable result to `out` and returns the RPC's status (as absl::Status).
absl::Status RunHealth(const std::shared_ptr<grpc::Channel>& channel, const ClientOptions& options,
                       std::ostream& out);
absl::Status RunInfo(const std::shared_ptr<grpc::Channel>& channel, const ClientOptions& options,
                     std::ostream& out);
absl::Status RunPrefill(const std::shared_ptr<grpc::Channel>& channel,
                        const ClientOptions& options, std::ostream& out);
absl::Status RunDecode(const std::shared_ptr<grpc::Channel>& channel, const ClientOptions& options,
                       std::ostream& out);
absl::Status RunGenerate(const std::shared_ptr<grpc::Channel>& channel,
                         const ClientOptions& options, std::ostream& out);
// Prints the ids of options.text (with BOS).
absl::Status RunTokenize(const std::shared_ptr<grpc::Channel>& channel,
                         const ClientOptions& options, std::ostream& out);
absl::Status RunRelease(const std::shared_ptr<grpc::Channel>& channel,
                        const ClientOptions& options, std::ostream& out);
// Exercises every RPC and the main error codes against a running server; prints one line per check
// and returns an error naming every check that failed.
absl::Status RunSmoke(const std::shared_ptr<grpc::Channel>& channel, const ClientOptions& options,
                      std::ostream& out);

}  // namespace llm::client
