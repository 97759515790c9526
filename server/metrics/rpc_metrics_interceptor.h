// A gRPC server interceptor that times every RPC for the metrics and tags replies with the replica.
//
// It sees each call from the server's side without any code in the handlers:
// - every RPC: llm_requests_total{rpc,code} and llm_request_duration_seconds{rpc} when its status
//   is sent (CANCELLED when the call ends without one);
// - Prefill: time to first token = time to its reply;
// - Generate: time to first token = time to the first streamed token message, inter-token latency
//   = time between token messages (the final "finished" message is not a token);
// - Decode: inter-token latency = the Decode call's server-side duration, the server's part of the
//   gap between a decode-loop client's tokens.
// It also adds the `x-llm-replica` initial-metadata header to every reply, naming the replica that
// served it, so a client can pin a sequence's later Decode calls to it (docs/DEPLOY.md, affinity).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "grpcpp/support/server_interceptor.h"
#include "server/metrics/serving_observer.h"

namespace llm::metrics {

inline constexpr char kReplicaHeader[] = "x-llm-replica";

struct RpcMetricsOptions {
  // Value of the x-llm-replica reply header; empty leaves the header out.
  std::string replica_id;
};

// "/llm.v1.LlmService/Generate" -> "Generate".
std::string RpcShortName(const char* full_method);

class RpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `observer` must outlive the gRPC server.
  RpcMetricsInterceptorFactory(ServingObserver& observer, RpcMetricsOptions options)
      : observer_(observer), options_(std::move(options)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  ServingObserver& observer_;
  const RpcMetricsOptions options_;
};

// The one-line hook for a grpc::ServerBuilder:
//   builder.experimental().SetInterceptorCreators(MakeRpcMetricsInterceptors(observer, options));
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MakeRpcMetricsInterceptors(ServingObserver& observer, RpcMetricsOptions options);

}  // namespace llm::metrics
