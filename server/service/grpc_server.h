// The gRPC server around LlmServiceImpl: listening port, standard health service (SERVING only
// once an engine with a warm model is attached), server reflection, and orderly draining.
//
// Used by llm-server's main and by the in-process service tests, so both run the same wiring.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/engine/engine.h"
#include "server/service/access_guard.h"
#include "server/service/llm_service.h"

namespace llm::service {

// Transport and access settings of the listening port (docs/SECURITY.md).
struct GrpcServerOptions {
  std::shared_ptr<grpc::ServerCredentials> credentials;  // null = plaintext
  int max_message_bytes = 4 << 20;  // largest request message; larger ones fail RESOURCE_EXHAUSTED
  AccessPolicy access;              // API keys and per-client / per-request limits
};

class GrpcServer {
 public:
  using InterceptorFactories =
      std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>;

  // Listens on `address` ("host:port"; port 0 picks a free one). The service answers UNAVAILABLE and
  // health says NOT_SERVING until AttachEngine. `interceptors` (e.g. the metrics module's) see every
  // call; their owners must outlive this server.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const std::string& address,
                                                           InterceptorFactories interceptors = {},
                                                           GrpcServerOptions options = {});
  ~GrpcServer();

  int port() const { return port_; }
  const AccessGuard& access_guard() const { return *guard_; }
  // Publishes the engine (already warm and started) and flips health to SERVING.
  // `tokenizer` (nullptr when the checkpoint has none) must outlive the server.
  void AttachEngine(engine::Engine* engine, const std::string& model_path,
                    const Tokenizer* tokenizer = nullptr);
  // Health NOT_SERVING, the engine stops accepting and finishes (or after `grace` fails) its work,
  // then the gRPC server shuts down. The engine may be destroyed afterwards.
  void Drain(absl::Duration grace);

 private:
  GrpcServer() = default;

  LlmServiceImpl service_;
  std::unique_ptr<AccessGuard> guard_;
  std::unique_ptr<GuardedLlmService> guarded_service_;
  std::unique_ptr<grpc::Server> server_;
  engine::Engine* engine_ = nullptr;
  int port_ = 0;
  bool drained_ = false;
};

}  // namespace llm::service
