// llm-server's metrics, wired together.
#include "server/metrics/server_metrics.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "server/metrics/process_collector.h"
#include "server/metrics/refreshing_collectable.h"
#include "server/metrics/rpc_metrics_interceptor.h"

namespace llm::metrics {
namespace {

// The replica's name for the x-llm-replica header: the LLM_REPLICA_ID environment variable (the
// Kubernetes manifest sets it to the pod IP), else the host name.
std::string DefaultReplicaId() {
  if (const char* id = std::getenv("LLM_REPLICA_ID"); id != nullptr && *id != '\0') return id;
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "";
  return name;
}

}  // namespace

ServerMetrics::ServerMetrics(const ServerMetricsOptions& options)
    : registry_(std::make_shared<prometheus::Registry>()),
      serving_(std::make_unique<ServingMetrics>(registry_)),
      step_observer_(*serving_),
      replica_id_(options.replica_id.empty() ? DefaultReplicaId() : options.replica_id) {}

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Start(
    const ServerMetricsOptions& options) {
  // The constructor is private: make_unique cannot reach it.
  std::unique_ptr<ServerMetrics> metrics(new ServerMetrics(options));
  ServerMetrics* self = metrics.get();
  auto refreshed_registry =
      std::make_shared<RefreshingCollectable>([self] { self->Refresh(); }, metrics->registry_);
  absl::StatusOr<std::unique_ptr<MetricsExposer>> exposer = MetricsExposer::Start(
      options.bind_address, {refreshed_registry, std::make_shared<ProcessCollector>()});
  if (!exposer.ok()) return exposer.status();
  metrics->exposer_ = *std::move(exposer);
  return metrics;
}

void ServerMetrics::AttachEngine(const engine::Engine& engine, const ModelInfo& model_info,
                                 const MemorySample& memory) {
  ModelInfo info = model_info;
  if (info.server_version.empty()) info.server_version = LLM_METRICS_SERVER_VERSION;
  serving_->SetModelInfo(info);
  std::lock_guard<std::mutex> lock(mutex_);
  engine_ = &engine;
  stats_sync_ = std::make_unique<EngineStatsSync>(*serving_, memory, engine.kv_layout().block_size);
  stats_sync_->Sync(engine.stats());
}

void ServerMetrics::Refresh() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (engine_ != nullptr) stats_sync_->Sync(engine_->stats());
}

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
ServerMetrics::MakeInterceptors() {
  return MakeRpcMetricsInterceptors(*serving_, RpcMetricsOptions{.replica_id = replica_id_});
}

}  // namespace llm::metrics
