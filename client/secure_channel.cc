// Client channels: TLS credentials from PEM files, API key metadata through a client interceptor
// (call credentials would only travel over TLS; the key must also work on plaintext loopback).
#include "client/secure_channel.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/client_interceptor.h"

ABSL_FLAG(bool, tls, false,
          "Connect with TLS, verifying the server against the system's roots (or --tls_ca).");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle that signed the server's certificate; implies --tls.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate for mutual TLS; implies --tls.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name the server's certificate must carry when it differs from the --target host.");
ABSL_FLAG(
    std::string, api_key, "",
    "API key sent as `authorization: Bearer <key>`; default $LLM_API_KEY (keeps it out of ps).");

namespace llm::client {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot read ", path, " given as --", flag));
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

class ApiKeyInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit ApiKeyInterceptor(const std::string* header_value) : header_value_(header_value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_value_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_value_;
};

class ApiKeyInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ApiKeyInterceptorFactory(const std::string& key)
      : header_value_(absl::StrCat("Bearer ", key)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new ApiKeyInterceptor(&header_value_);
  }

 private:
  const std::string header_value_;  // the channel owns the factory, which outlives every call
};

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ChannelSecurity& security) {
  grpc::ChannelArguments arguments;
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  const bool tls = security.tls || !security.tls_ca_path.empty() ||
                   !security.tls_cert_path.empty() || !security.tls_key_path.empty();
  if (tls) {
    grpc::SslCredentialsOptions options;
    if (!security.tls_ca_path.empty()) {
      absl::StatusOr<std::string> roots = ReadFile(security.tls_ca_path, "tls_ca");
      if (!roots.ok()) return roots.status();
      options.pem_root_certs = *std::move(roots);
    }
    if (security.tls_cert_path.empty() != security.tls_key_path.empty()) {
      return absl::InvalidArgumentError("a client certificate needs both --tls_cert and --tls_key");
    }
    if (!security.tls_cert_path.empty()) {
      absl::StatusOr<std::string> cert = ReadFile(security.tls_cert_path, "tls_cert");
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadFile(security.tls_key_path, "tls_key");
      if (!key.ok()) return key.status();
      options.pem_cert_chain = *std::move(cert);
      options.pem_private_key = *std::move(key);
    }
    credentials = grpc::SslCredentials(options);
    if (!security.tls_server_name.empty()) {
      arguments.SetSslTargetNameOverride(security.tls_server_name);
    }
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!security.api_key.empty()) {
    interceptors.push_back(std::make_unique<ApiKeyInterceptorFactory>(security.api_key));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, arguments,
                                                                 std::move(interceptors));
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannelFromFlags(const std::string& target) {
  ChannelSecurity security{.tls = absl::GetFlag(FLAGS_tls),
                           .tls_ca_path = absl::GetFlag(FLAGS_tls_ca),
                           .tls_cert_path = absl::GetFlag(FLAGS_tls_cert),
                           .tls_key_path = absl::GetFlag(FLAGS_tls_key),
                           .tls_server_name = absl::GetFlag(FLAGS_tls_server_name),
                           .api_key = absl::GetFlag(FLAGS_api_key)};
  if (security.api_key.empty()) {
    if (const char* env = std::getenv("LLM_API_KEY"); env != nullptr) security.api_key = env;
  }
  return MakeChannel(target, security);
}

}  // namespace llm::client
