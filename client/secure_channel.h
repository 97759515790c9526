// Channels to llm-server for llm-client and llm-bench: plaintext or TLS (optionally with a client
// certificate for mutual TLS), and an API key sent as `authorization: Bearer <key>` on every call.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"

namespace llm::client {

struct ChannelSecurity {
  bool tls = false;                // implied by any tls_* path below
  std::string tls_ca_path = {};    // PEM roots that verify the server; empty = the system's roots
  std::string tls_cert_path = {};  // PEM client certificate (mutual TLS)
  std::string tls_key_path = {};   // its private key
  std::string tls_server_name =
      {};                    // name to verify the server's certificate against; empty = host
  std::string api_key = {};  // empty = none
};

// Fails (naming the flag) when a file cannot be read or a client cert comes without its key.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ChannelSecurity& security);

// The same from the command line: --tls, --tls_ca, --tls_cert, --tls_key, --tls_server_name,
// --api_key (default $LLM_API_KEY, which keeps the key out of `ps`).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannelFromFlags(const std::string& target);

}  // namespace llm::client
