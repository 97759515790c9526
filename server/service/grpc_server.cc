// Builds and drains the gRPC server: service, health, reflection.
#include "server/service/grpc_server.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace llm::service {
namespace {
constexpr char kServiceName[] = "llm.v1.LlmService";
}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const std::string& address,
                                                             InterceptorFactories interceptors,
                                                             GrpcServerOptions options) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto server = std::unique_ptr<GrpcServer>(new GrpcServer());
  // Every LlmService call passes the access guard (authentication, limits) before the service.
  server->guard_ = std::make_unique<AccessGuard>(std::move(options.access));
  server->guarded_service_ =
      std::make_unique<GuardedLlmService>(&server->service_, server->guard_.get());
  interceptors.push_back(server->guard_->MakeInterceptorFactory());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address,
                           options.credentials != nullptr ? options.credentials
                                                          : grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.RegisterService(server->guarded_service_.get());
  if (options.max_message_bytes > 0) builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "could not listen on ", address,
        "; is the port in use or the host name wrong? Pick another --port or --host"));
  }
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  return server;
}

GrpcServer::~GrpcServer() { Drain(absl::ZeroDuration()); }

void GrpcServer::AttachEngine(engine::Engine* engine, const std::string& model_path,
                              const Tokenizer* tokenizer) {
  engine_ = engine;
  service_.AttachEngine(engine, model_path, tokenizer);
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(kServiceName, true);
}

void GrpcServer::Drain(absl::Duration grace) {
  if (drained_) return;
  drained_ = true;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  // The engine fails new work with UNAVAILABLE from here on and completes or fails what it holds.
  const absl::Time deadline = absl::Now() + grace;
  if (engine_ != nullptr) engine_->Shutdown(grace);
  // Its replies may still be on their way out (a stream writes one message at a time): wait until
  // every call has finished, then give clients a moment to read the last bytes before the
  // connections close. A connection closed while the client's frames are unread is reset, and the
  // reset can overtake a stream's last messages ("Connection reset by peer" at the client; seen
  // about once in 100-300 drains of a 200-token stream before this wait). Both within the grace.
  service_.WaitForCalls(deadline);
  absl::SleepFor(
      std::min(absl::Milliseconds(50), std::max(deadline - absl::Now(), absl::ZeroDuration())));
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_->Wait();
  service_.AttachEngine(nullptr, "");
}

}  // namespace llm::service
