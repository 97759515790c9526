// Serializes collectables to the Prometheus text exposition format, as /metrics would serve them.
// Used by tests (no network) and for a one-off dump.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "prometheus/collectable.h"

namespace llm::metrics {

std::string SerializeToText(const std::vector<std::shared_ptr<prometheus::Collectable>>& sources);

}  // namespace llm::metrics
