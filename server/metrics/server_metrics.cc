// llm-server's metrics, wired together.
#include "server/metrics/server_metrics.h"

#include <unistd.h>

#include <utility>

#include "server/metrics/process_collector.h"
#include "server/metrics/refreshing_collectable.h"
#include "server/metrics/rpc_metrics_interceptor.h"

namespace llm::metrics {
namespace {

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "";
  return name;
}

}  // namespace

ServerMetrics::ServerMetrics(const ServerMetricsOptions& options, const engine::Engine& engine)
    : registry_(std::make_shared<prometheus::Registry>()),
      serving_(std::make_unique<ServingMetrics>(registry_)),
      step_observer_(*serving_),
      stats_sync_(*serving_, options.memory, engine.kv_layout().block_size),
      replica_id_(options.replica_id.empty() ? HostName() : options.replica_id) {
  serving_->SetModelInfo(options.model_info);
  stats_sync_.Sync(engine.stats());
}

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Start(
    const ServerMetricsOptions& options, const engine::Engine& engine) {
  std::unique_ptr<ServerMetrics> metrics(new ServerMetrics(options, engine));
  ServerMetrics* self = metrics.get();
  auto refreshed_registry = std::make_shared<RefreshingCollectable>(
      [self, &engine] { self->stats_sync_.Sync(engine.stats()); }, metrics->registry_);
  absl::StatusOr<std::unique_ptr<MetricsExposer>> exposer = MetricsExposer::Start(
      options.bind_address, {refreshed_registry, std::make_shared<ProcessCollector>()});
  if (!exposer.ok()) return exposer.status();
  metrics->exposer_ = *std::move(exposer);
  return metrics;
}

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
ServerMetrics::MakeInterceptors() {
  return MakeRpcMetricsInterceptors(*serving_, RpcMetricsOptions{.replica_id = replica_id_});
}

}  // namespace llm::metrics
