// A Collectable that runs a refresh function before collecting another collectable, so values
// pulled from elsewhere (the engine's stats snapshot) are current at every scrape.
#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace llm::metrics {

class RefreshingCollectable final : public prometheus::Collectable {
 public:
  RefreshingCollectable(std::function<void()> refresh,
                        std::shared_ptr<prometheus::Collectable> inner)
      : refresh_(std::move(refresh)), inner_(std::move(inner)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    refresh_();
    return inner_->Collect();
  }

 private:
  std::function<void()> refresh_;
  std::shared_ptr<prometheus::Collectable> inner_;
};

}  // namespace llm::metrics
