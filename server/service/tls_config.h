// Server transport security from files: plaintext, TLS (--tls_cert + --tls_key) or mutual TLS
// (also --tls_client_ca: clients must present a certificate signed by that CA).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace llm::service {

struct TlsFiles {
  std::string cert_path = {};  // PEM certificate chain of the server
  std::string key_path = {};   // PEM private key of that certificate
  std::string client_ca_path =
      {};  // PEM CA bundle; non-empty = require and verify client certificates
};

// Plaintext when every path is empty. A path that is set but unreadable, or not PEM, and a cert
// without a key (or the reverse) are errors that name the flag to fix.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

// Human-readable mode for the startup log: "plaintext", "TLS", "mutual TLS".
std::string TransportSecurityName(const TlsFiles& files);

// The whole file, or an error naming `flag` and the path.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& flag);

}  // namespace llm::service
