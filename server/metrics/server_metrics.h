// Everything llm-server needs for metrics, wired together: the registry and ServingMetrics, the
// engine step observer, scrape-time engine and process gauges, /metrics, and the RPC interceptor.
//
// Two phases, because llm-server listens for gRPC before its model is loaded:
//   auto metrics = ServerMetrics::Start({.bind_address = "0.0.0.0:9090"});   // serves /metrics
//   ... grpc::ServerBuilder: builder.experimental().SetInterceptorCreators(
//           (*metrics)->MakeInterceptors());
//   ... after the model and engine exist:
//   (*metrics)->AttachEngine(*engine, model_info, ToMemorySample(transformer));
//   engine->Start((*metrics)->engine_observer());
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/registry.h"
#include "server/engine/engine.h"
#include "server/metrics/engine_state_sample.h"
#include "server/metrics/engine_stats_sync.h"
#include "server/metrics/engine_step_observer.h"
#include "server/metrics/metrics_exposer.h"
#include "server/metrics/serving_metrics.h"

namespace llm::metrics {

struct ServerMetricsOptions {
  std::string bind_address = "0.0.0.0:9090";  // where /metrics listens
  // x-llm-replica reply header; empty: $LLM_REPLICA_ID, else the host name.
  std::string replica_id;
};

class ServerMetrics {
 public:
  // Starts serving /metrics (process gauges and zeroed serving series until AttachEngine).
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Start(const ServerMetricsOptions& options);

  // Sets llm_model_info (server_version defaults to the project version). From now on every scrape
  // first reads `engine.stats()`; `engine` must outlive this object or the next AttachEngine.
  // `memory`: memory_sample.h, ToMemorySample(transformer) before the engine takes the transformer.
  void AttachEngine(const engine::Engine& engine, const ModelInfo& model_info,
                    const MemorySample& memory);

  // For engine::Engine::Start.
  engine::EngineObserver* engine_observer() { return &step_observer_; }
  // Interceptor factories for grpc::ServerBuilder; the gRPC server must stop before this object
  // dies.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
  MakeInterceptors();

  ServingObserver& observer() { return *serving_; }
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }
  int port() const { return exposer_->port(); }
  const std::string& replica_id() const { return replica_id_; }

 private:
  explicit ServerMetrics(const ServerMetricsOptions& options);
  // Runs before every scrape.
  void Refresh();

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<ServingMetrics> serving_;
  EngineStepObserver step_observer_;
  std::string replica_id_;

  std::mutex mutex_;
  const engine::Engine* engine_ = nullptr;
  std::unique_ptr<EngineStatsSync> stats_sync_;

  std::unique_ptr<MetricsExposer> exposer_;  // last: its HTTP threads read the members above
};

}  // namespace llm::metrics
