// The /metrics HTTP endpoint: prometheus-cpp's Exposer (civetweb) behind an absl::Status API.
//
// Exposer reports failures (port in use, civetweb unable to start its threads) by throwing; Start()
// turns them into a status that names the address. See docs/METRICS.md for the civetweb/cuBLASLt
// thread-stack trap and why the CUDA backend is loaded with dlopen.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"

namespace llm::metrics {

class MetricsExposer {
 public:
  // Serves the collectables on http://<bind_address>/metrics, e.g. "0.0.0.0:9090"; port 0 picks a
  // free port (see port()).
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> Start(
      const std::string& bind_address,
      std::vector<std::shared_ptr<prometheus::Collectable>> collectables);

  // The port actually listened on.
  int port() const { return port_; }

 private:
  MetricsExposer(std::unique_ptr<prometheus::Exposer> exposer,
                 std::vector<std::shared_ptr<prometheus::Collectable>> collectables, int port)
      : collectables_(std::move(collectables)), exposer_(std::move(exposer)), port_(port) {}

  // Declared before exposer_ so the collectables outlive the HTTP threads that read them.
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_;
};

}  // namespace llm::metrics
