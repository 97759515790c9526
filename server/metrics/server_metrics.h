// Everything llm-server needs for metrics, wired together: the registry and ServingMetrics, the
// engine step observer, scrape-time engine and process gauges, /metrics, and the RPC interceptor.
//
// main() needs three calls (docs/METRICS.md, "Wiring"):
//   auto metrics = ServerMetrics::Start(options, *engine);               // serves /metrics
//   engine->Start((*metrics)->engine_observer());
//   builder.experimental().SetInterceptorCreators((*metrics)->MakeInterceptors());
#pragma once

#include <memory>
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
  ModelInfo model_info;
  MemorySample memory;     // memory_sample.h: ToMemorySample(transformer) before the engine owns it
  std::string replica_id;  // x-llm-replica reply header; empty: the host name
};

class ServerMetrics {
 public:
  // Starts serving /metrics. `engine` must outlive the returned object; its stats() is read at
  // every scrape.
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Start(const ServerMetricsOptions& options,
                                                              const engine::Engine& engine);

  engine::EngineObserver* engine_observer() { return &step_observer_; }
  // Interceptor factories for grpc::ServerBuilder; the server must stop before this object dies.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
  MakeInterceptors();

  ServingObserver& observer() { return *serving_; }
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }
  int port() const { return exposer_->port(); }
  const std::string& replica_id() const { return replica_id_; }

 private:
  ServerMetrics(const ServerMetricsOptions& options, const engine::Engine& engine);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<ServingMetrics> serving_;
  EngineStepObserver step_observer_;
  EngineStatsSync stats_sync_;
  std::string replica_id_;
  std::unique_ptr<MetricsExposer> exposer_;  // last: its HTTP threads read the members above
};

}  // namespace llm::metrics
